#!/bin/bash
# Runs from a worktree of the measured commit at $WT (default /work/wt_tput; git worktree add $WT HEAD;
# data/ linked), writes /work/runs/NAME; the venv is /work/main/.venv.
# The edge preset, 12 epochs: nothing fixed vs C2 fixed (BatchNorm training); then val_all AP.
#   bash docs/measure/freeze_e12.sh [SEED]   (seed 0: runs e12_*; seed N > 0: runs e12sN_*)
# Env: WT (worktree), SETTINGS (default "none C2"), PREFIX (default e12 / e12sN).
SEED=${1:-0}
WT=${WT:-/work/wt_tput}
DEFAULT_PREFIX=e12; [ "$SEED" != 0 ] && DEFAULT_PREFIX=e12s$SEED
PREFIX=${PREFIX:-$DEFAULT_PREFIX}
cd $WT
export PYTHONPATH=$WT TF_CPP_MIN_LOG_LEVEL=3
PY=/work/main/.venv/bin/python
for freeze in ${SETTINGS:-none C2}; do
  name=${PREFIX}_$(echo $freeze | tr A-Z a-z)
  $PY -m keras_solo.cli train --config training/edge.yaml --out /work/runs/$name --overwrite --set train.epochs=12 \
      --set train.freeze_backbone=$freeze --set train.backbone_norm=train --set train.seed=$SEED > /work/runs/$name.log 2>&1
  $PY -m keras_solo.cli evaluate --model /work/runs/$name/best.keras --data data/cityscapes5/instances_val_all.json \
      --images ../shared/data/cityscapes5 --out /work/runs/$name/eval_val_all --overwrite > /work/runs/$name.eval.log 2>&1
  echo "$name done $(date)"
done
