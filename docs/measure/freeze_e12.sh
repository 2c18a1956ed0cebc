#!/bin/bash
# Runs from a worktree of the measured commit at /work/wt_tput (git worktree add /work/wt_tput HEAD; data/
# linked), writes /work/runs/NAME; the venv is /work/main/.venv.
# The edge preset, 12 epochs: nothing fixed vs C2 fixed (BatchNorm training); then val_all AP.
#   bash docs/measure/freeze_e12.sh [SEED]   (seed 0: runs e12_*; seed N > 0: runs e12sN_*)
SEED=${1:-0}
PREFIX=e12; [ "$SEED" != 0 ] && PREFIX=e12s$SEED
cd /work/wt_tput
export PYTHONPATH=/work/wt_tput TF_CPP_MIN_LOG_LEVEL=3
PY=/work/main/.venv/bin/python
for setting in "${PREFIX}_none none" "${PREFIX}_c2 C2"; do
  set -- $setting
  $PY -m keras_solo.cli train --config training/edge.yaml --out /work/runs/$1 --overwrite --set train.epochs=12 \
      --set train.freeze_backbone=$2 --set train.backbone_norm=train --set train.seed=$SEED > /work/runs/$1.log 2>&1
  $PY -m keras_solo.cli evaluate --model /work/runs/$1/best.keras --data data/cityscapes5/instances_val_all.json \
      --images ../shared/data/cityscapes5 --out /work/runs/$1/eval_val_all --overwrite > /work/runs/$1.eval.log 2>&1
  echo "$1 done $(date)"
done
