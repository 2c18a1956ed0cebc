#!/bin/bash
# The six ablation runs, one after another (from a git worktree of this commit, PYTHONPATH set to it).
# Env: PY (default python), RUNS (default runs; the runs in RESULTS were under /work/runs).
RUNS=${RUNS:-runs}
for seed in 0 1; do
  for v in attention solo no_coords; do
    case $v in
      attention) sw="--set model.use_coords=true --set model.use_attention=true";;
      solo) sw="--set model.use_coords=true --set model.use_attention=false";;
      no_coords) sw="--set model.use_coords=false --set model.use_attention=false";;
    esac
    out=$RUNS/abl12/$v/seed$seed
    [ -f $out/DONE ] && continue
    echo "== $(date +%T) $v seed $seed"
    ${PY:-python} -m keras_solo.cli train --config training/ablation_cityscapes5.yaml $sw --set train.seed=$seed --out $out
  done
done
echo "== $(date +%T) all done"
