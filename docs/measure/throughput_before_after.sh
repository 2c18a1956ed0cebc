#!/bin/bash
# Interleaved: today's code (d85ddaa) vs this commit, keras-solo profile --throughput, edge and demo presets.
for round in 1 2; do
  for side in old main; do
    d=/work/wt_$side; [ $side = main ] && d=/work/main
    for preset in demo edge; do
      r=$(cd $d && PYTHONPATH=$d /work/main/.venv/bin/python -m keras_solo.cli profile --config training/$preset.yaml --throughput 20 2>/dev/null | grep -o '"train_images_per_s": [0-9.]*')
      echo "round $round $side $preset $r"
    done
  done
done
