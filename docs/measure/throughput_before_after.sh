#!/bin/bash
# Interleaved: today's code (d85ddaa, a worktree at OLD) vs this checkout, keras-solo profile --throughput,
# edge and demo presets.   PATH=$PWD/.venv/bin:$PATH bash docs/measure/throughput_before_after.sh OLD
OLD=${1:?give the worktree of the code before}
for round in 1 2; do
  for side in old main; do
    d=$OLD; [ $side = main ] && d=$PWD
    for preset in demo edge; do
      r=$(cd $d && PYTHONPATH=$d python -m keras_solo.cli profile --config training/$preset.yaml --throughput 20 2>/dev/null | grep -o '"train_images_per_s": [0-9.]*')
      echo "round $round $side $preset $r"
    done
  done
done
