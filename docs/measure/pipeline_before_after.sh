#!/bin/bash
# tf.data training input images/s (keras-solo profile --pipeline 30: AUTOTUNE parallel loads, 2 cores) of
# the edge and paper presets on the cityscapes5 train frames: the code before (a worktree at OLD_WORKTREE)
# vs this checkout, two interleaved rounds.
#   PATH=$PWD/.venv/bin:$PATH bash docs/measure/pipeline_before_after.sh OLD_WORKTREE
OLD=${1:?give the worktree of the code before}
for round in 1 2; do
  for tree in "$OLD" "$PWD"; do
    for config in training/edge.yaml training/solo_r50_attention.yaml; do
      echo "round $round $tree $config $(cd "$tree" && PYTHONPATH="$tree" python -m keras_solo.cli profile \
        --config $config --set data.train_images=../shared/data/cityscapes5 --pipeline 30 2>/dev/null \
        | grep -o '"pipeline_images_per_s": [0-9.]*')"
    done
  done
done
