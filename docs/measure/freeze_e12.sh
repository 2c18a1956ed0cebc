#!/bin/bash
# Runs in a worktree of the measured commit at $WT (default: here; git worktree add $WT HEAD; data/
# linked), writes RUNS/NAME (default runs; the runs in RESULTS were under /work/runs).
# The edge preset, 12 epochs: nothing fixed vs C2 fixed (BatchNorm training); then val_all AP.
#   bash docs/measure/freeze_e12.sh [SEED]   (seed 0: runs e12_*; seed N > 0: runs e12sN_*)
# Env: WT (worktree), RUNS, PY (default python), SETTINGS (default "none C2"), PREFIX (default e12 / e12sN).
SEED=${1:-0}
WT=${WT:-$PWD}
RUNS=${RUNS:-$WT/runs}
DEFAULT_PREFIX=e12; [ "$SEED" != 0 ] && DEFAULT_PREFIX=e12s$SEED
PREFIX=${PREFIX:-$DEFAULT_PREFIX}
cd $WT
export PYTHONPATH=$WT TF_CPP_MIN_LOG_LEVEL=3
PY=${PY:-python}
mkdir -p $RUNS
for freeze in ${SETTINGS:-none C2}; do
  name=${PREFIX}_$(echo $freeze | tr A-Z a-z)
  $PY -m keras_solo.cli train --config training/edge.yaml --out $RUNS/$name --overwrite --set train.epochs=12 \
      --set train.freeze_backbone=$freeze --set train.backbone_norm=train --set train.seed=$SEED > $RUNS/$name.log 2>&1
  $PY -m keras_solo.cli evaluate --model $RUNS/$name/best.keras --data data/cityscapes5/instances_val_all.json \
      --images ../shared/data/cityscapes5 --out $RUNS/$name/eval_val_all --overwrite > $RUNS/$name.eval.log 2>&1
  echo "$name done $(date)"
done
