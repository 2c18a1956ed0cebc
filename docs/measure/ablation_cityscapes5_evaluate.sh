#!/bin/bash
# Evaluate each ablation run on val_all as soon as it is DONE (the tables grow); at the end also on val (50).
# Run from a worktree of this commit with its data/ (PYTHONPATH set to it). Env: PY (default python),
# RUNS (default runs; the runs in RESULTS were under /work/runs).
RUNS=${RUNS:-runs}
K="${PY:-python} -m keras_solo.cli"
seen=""
while true; do
  now=$(ls $RUNS/abl12/*/seed*/DONE 2>/dev/null | sort | tr '\n' ' ')
  if [ "$now" != "$seen" ]; then
    echo "== $(date +%T) evaluate: $now"
    $K ablation --config training/ablation_cityscapes5.yaml --seeds 1 --variants attention --out $RUNS/abl12 --eval-json data/cityscapes5/instances_val_all.json 2>&1 | tr '\r' '\n' | grep -v "^evaluate:"
    seen=$now
  fi
  grep -q "all done" $RUNS/abl12.log && [ "$(ls $RUNS/abl12/*/seed*/DONE | wc -l)" = 6 ] && break
  sleep 30
done
cp $RUNS/abl12/ablation.json $RUNS/abl12/ablation_val_all.json; cp $RUNS/abl12/ablation.md $RUNS/abl12/ablation_val_all.md; cp $RUNS/abl12/ablation.png $RUNS/abl12/ablation_val_all.png
echo "== $(date +%T) val (50)"
$K ablation --config training/ablation_cityscapes5.yaml --seeds 1 --variants attention --out $RUNS/abl12 --eval-json data/cityscapes5/instances_val.json 2>&1 | tr '\r' '\n' | grep -v "^evaluate:"
cp $RUNS/abl12/ablation.json $RUNS/abl12/ablation_val.json; cp $RUNS/abl12/ablation.md $RUNS/abl12/ablation_val.md
echo "== $(date +%T) queue done"
