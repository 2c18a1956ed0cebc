#!/bin/bash
# On the GPU machine, from the repository root, after training/gpu/prepare.sh
# (carry .whl and .gpu_data): trains the edge preset with Keras on JAX (CUDA)
# for at most MINUTES (default 8), then evaluates the last checkpoint on the
# 50 val frames. Writes to OUT (default $OUT, else runs/gpu): run/ (the
# .keras files, log.csv), metrics.json, train.log, images_per_s.txt.
# The .keras it writes loads and exports under TensorFlow elsewhere.
set -uo pipefail
out=${OUT:-runs/gpu}; minutes=${MINUTES:-8}; epochs=${EPOCHS:-24}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$out/train.log"
d=.gpu_data
start=$(date +%s)
timeout $((minutes * 60)) python3 -m keras_solo.cli train --config training/edge.yaml --out "$out/run" \
  --set data.train_json=$d/instances_train.json --set data.train_images=$d/cityscapes5 \
  --set data.val_json=$d/instances_val.json --set data.val_images=$d/cityscapes5 \
  --set train.epochs=$epochs 2>&1 | tee -a "$out/train.log"
echo "training wall s: $(( $(date +%s) - start ))" | tee -a "$out/train.log"
# images/s of the finished epochs (450 frames, batch 4: 112 steps x 4 images), from Keras' per-epoch lines
grep -oE "^[0-9]+/[0-9]+ - [0-9]+s" "$out/train.log" | sed -E 's#^([0-9]+)/[0-9]+ - ([0-9]+)s#\1 \2#' \
  | awk '{print $1 * 4 / $2 " images/s"}' > "$out/images_per_s.txt"
model="$out/run/best.keras"; [ -f "$model" ] || model="$out/run/last.keras"
python3 -m keras_solo.cli evaluate --model "$model" --data $d/instances_val.json --images $d/cityscapes5 \
  --out "$out/eval" 2>&1 | tail -20 | tee -a "$out/train.log"
cp "$out/eval/metrics.json" "$out/metrics.json" 2>/dev/null || true
