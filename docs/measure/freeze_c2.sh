#!/bin/bash
# Runs in a worktree of the measured commit at WT (default: here; git worktree add WT HEAD; data/ linked),
# writes RUNS/NAME (default runs; the runs in RESULTS were under /work/runs); env PY (default python).
# 3 epochs of the 12-epoch edge schedule (seed 0): today's default vs C2 fixed with BatchNorm training.
WT=${WT:-$PWD}; RUNS=${RUNS:-$WT/runs}; mkdir -p $RUNS
cd $WT
run() {
  name=$1; shift
  PYTHONPATH=$WT TF_CPP_MIN_LOG_LEVEL=3 ${PY:-python} -m keras_solo.cli train \
    --config training/edge.yaml --out $RUNS/$name --overwrite --set train.epochs=12 "$@" > $RUNS/$name.log 2>&1 &
  pid=$!
  start=$(date +%s)
  while kill -0 $pid 2>/dev/null; do
    if [ -f $RUNS/$name/log.csv ] && [ $(wc -l < $RUNS/$name/log.csv) -ge 4 ]; then kill $pid; break; fi
    sleep 5
  done
  wait $pid 2>/dev/null
  echo "$name: $(( $(date +%s) - start )) s; epoch 3: $(sed -n 4p $RUNS/$name/log.csv)"
}
run c2_default
run c2_freeze --set train.freeze_backbone=C2 --set train.backbone_norm=train
