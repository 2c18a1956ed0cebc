#!/usr/bin/env bash
# Paper preset latency (few runs: ~550 GFLOPs per image).
set -uo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
O=runs/export
for X in $O/paper_int8.tflite $O/paper_fp32.tflite $O/paper.onnx $O/paper_untrained.keras; do
  echo "+ $K benchmark $X --threads 2 --warmup 1 --runs 5 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/bench_paper_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 1 --runs 5 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/bench_paper_$(basename $X).json 2>&1 | { grep -v "^[WI]0000\|^WARNING\|^E0000" || true; }
done
