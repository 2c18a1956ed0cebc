#!/bin/bash
# Edge preset training images/s (keras-solo profile --throughput 40, the issue's measure), interleaved
# rounds: the code before the fused-kernel BatchNorm (a worktree at OLD_WORKTREE: b369e48) vs this
# checkout, nothing fixed (the default), and this checkout with C2 fixed (BatchNorm training).
#   PATH=$PWD/.venv/bin:$PATH bash docs/measure/throughput_fused_bn.sh OLD_WORKTREE
OLD=${1:?give the worktree of the code before}
NEW=$PWD
run() {  # folder, freeze_backbone
  (cd "$1" && PYTHONPATH="$1" python -m keras_solo.cli profile --config training/edge.yaml --throughput 40 \
     --set train.freeze_backbone=$2 --set train.backbone_norm=train 2>/dev/null | grep -o '"train_images_per_s": [0-9.]*')
}
for round in 1 2; do
  echo "round $round before     none $(run "$OLD" none)"
  echo "round $round fused-BN   none $(run "$NEW" none)"
  echo "round $round fused-BN   C2   $(run "$NEW" C2)"
done
