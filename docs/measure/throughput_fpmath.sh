#!/bin/bash
# Edge preset training images/s (keras-solo profile --throughput 40), interleaved rounds: float32 as is
# vs oneDNN's bf16 math inside the float32 ops (TF_SET_ONEDNN_FPMATH_MODE=BF16).
#   PATH=$PWD/.venv/bin:$PATH bash docs/measure/throughput_fpmath.sh
run() {
  env "$@" python -m keras_solo.cli profile --config training/edge.yaml --throughput 40 2>/dev/null \
    | grep -o '"train_images_per_s": [0-9.]*'
}
for round in 1 2; do
  echo "round $round float32       $(run)"
  echo "round $round fpmath BF16   $(run TF_SET_ONEDNN_FPMATH_MODE=BF16)"
done
