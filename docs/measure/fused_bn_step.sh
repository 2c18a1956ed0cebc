#!/bin/bash
# One fixed batch of the edge preset, nothing fixed: s/step before (a worktree at OLD_WORKTREE: b369e48)
# and after the fused-kernel BatchNorm, two interleaved rounds; then the per-op profile of each.
#   PATH=$PWD/.venv/bin:$PATH bash docs/measure/fused_bn_step.sh OLD_WORKTREE
OLD=${1:?give the worktree of the code before}
NEW=$PWD
for round in 1 2; do
  for tree in "$OLD" "$NEW"; do
    echo "round $round $tree: $(cd "$tree" && PYTHONPATH="$tree" python "$NEW/docs/measure/train_step_settings.py" none 2>/dev/null | grep s/step)"
  done
done
for tree in "$OLD" "$NEW"; do
  echo "== $tree"
  (cd "$tree" && PYTHONPATH="$tree" python "$NEW/docs/measure/grad_step_ops.py" none 2>/dev/null | head -26)
done
