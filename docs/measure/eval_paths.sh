#!/bin/bash
# The evaluation loop before (985adc3: batched tf.data letterbox, network, decode) and after the
# runtime's one dataset loop (read in a thread, Engine letterbox -> network -> to_original),
# same model and data, interleaved: bash docs/measure/eval_paths.sh MODEL.keras VAL.json OLD_WORKTREE
# (OLD_WORKTREE: `git worktree add ../wt_old 985adc3`). Prints AP and wall seconds per run.
set -e
MODEL=$1 DATA=$2 OLD=$3
for round in 1 2; do
  for side in old new; do
    if [ $side = old ]; then PP=$OLD; else PP=$(pwd); fi
    start=$(date +%s.%N)
    ap=$(PYTHONPATH=$PP TF_CPP_MIN_LOG_LEVEL=3 python -m keras_solo.cli evaluate --model "$MODEL" --data "$DATA" \
         --out /tmp/eval_paths_$side --overwrite 2>/dev/null | grep "^| segm | [0-9]")
    echo "round $round $side: $(echo "$start $(date +%s.%N)" | awk '{printf "%.1f s", $2 - $1}')  $ap"
  done
done
