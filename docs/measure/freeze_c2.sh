#!/bin/bash
# Runs from a worktree of the measured commit at /work/wt_tput (git worktree add /work/wt_tput HEAD; data/
# linked), writes /work/runs/NAME; the venv is /work/main/.venv.
# 3 epochs of the 12-epoch edge schedule (seed 0): today's default vs C2 fixed with BatchNorm training.
cd /work/wt_tput
run() {
  name=$1; shift
  PYTHONPATH=/work/wt_tput TF_CPP_MIN_LOG_LEVEL=3 /work/main/.venv/bin/python -m keras_solo.cli train \
    --config training/edge.yaml --out /work/runs/$name --overwrite --set train.epochs=12 "$@" > /work/runs/$name.log 2>&1 &
  pid=$!
  start=$(date +%s)
  while kill -0 $pid 2>/dev/null; do
    if [ -f /work/runs/$name/log.csv ] && [ $(wc -l < /work/runs/$name/log.csv) -ge 4 ]; then kill $pid; break; fi
    sleep 5
  done
  wait $pid 2>/dev/null
  echo "$name: $(( $(date +%s) - start )) s; epoch 3: $(sed -n 4p /work/runs/$name/log.csv)"
}
run c2_default
run c2_freeze --set train.freeze_backbone=C2 --set train.backbone_norm=train
