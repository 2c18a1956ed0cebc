#!/bin/bash
# Edge preset training images/s (keras-solo profile --throughput 20), interleaved rounds:
# nothing fixed (the default before), C2 fixed with BatchNorm training, C2 fixed + frozen BatchNorm.
#   PATH=.venv/bin:$PATH bash docs/measure/throughput_freeze.sh
for round in 1 2; do
  for setting in "none train" "C2 train" "C2 frozen"; do
    set -- $setting
    r=$(python -m keras_solo.cli profile --config training/edge.yaml --throughput 20 \
        --set train.freeze_backbone=$1 --set train.backbone_norm=$2 2>/dev/null | grep -o '"train_images_per_s": [0-9.]*')
    echo "round $round freeze_backbone=$1 backbone_norm=$2 $r"
  done
done
