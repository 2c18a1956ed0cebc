#!/bin/bash
# load_example ms/frame (40 cityscapes5 train frames, training augmentation) at the edge preset's 640x320 and
# the paper preset's 1344x672: the code before (a worktree at OLD_WORKTREE) vs this checkout, two interleaved
# rounds.   PATH=$PWD/.venv/bin:$PATH bash docs/measure/load_example_before_after.sh OLD_WORKTREE
OLD=${1:?give the worktree of the code before}
SCRIPT=$PWD/docs/measure/load_example_profile.py
for round in 1 2; do
  for tree in "$OLD" "$PWD"; do
    for config in training/edge.yaml training/solo_r50_attention.yaml; do
      echo "round $round $tree $config $(cd "$tree" && PYTHONPATH="$tree" python "$SCRIPT" $config 2>/dev/null | grep ms/img)"
    done
  done
done
