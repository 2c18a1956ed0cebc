#!/usr/bin/env bash
# Edge preset trained on cityscapes5 (default: the attention row of the Cityscapes
# ablation, ImageNet backbone, 3 epochs; or MODEL TAG, e.g.
# runs/edge_cs5_e12_imagenet/best.keras edge_cs5_e12): int8 / fp32 TFLite export, then
# latency at 640x320 with 2 threads and mask AP of each format on the 50 val frames.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
M=${1:-runs/ablation_cityscapes5/attention/seed0/best.keras}
T=${2:-edge_cs5}   # output name prefix
O=runs/export
mkdir -p $O
for q in int8 fp32; do
  echo "+ $K export --model $M --format tflite --quant $q --top-k 100 --calib-images 100 --out $O/${T}_$q.tflite --overwrite"
  $K export --model $M --format tflite --quant $q --top-k 100 --calib-images 100 --out $O/${T}_$q.tflite --overwrite 2>&1 | { grep -v "^[WI]0000\|^WARNING\|fully_quantize\|^E0000" || true; }
done
for X in $O/${T}_int8.tflite $O/${T}_fp32.tflite $M; do
  echo "+ uptime: $(uptime)"
  echo "+ $K benchmark $X --threads 2 --warmup 10 --runs 100 --source $O/road_1280x640.png --top-k 100 --data data/cityscapes5/instances_val.json --images ../shared/data/cityscapes5 --overwrite --json $O/bench_${T}_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 10 --runs 100 --source $O/road_1280x640.png --top-k 100 --data data/cityscapes5/instances_val.json --images ../shared/data/cityscapes5 --overwrite --json $O/bench_${T}_$(basename $X).json 2>&1 | { grep -v "^[WI]0000\|^WARNING\|^E0000\|^INFO" || true; }
done
echo "+ .venv/bin/python export/litert_runner.py benchmark $O/${T}_int8.tflite --threads 2 --runs 100"
.venv/bin/python export/litert_runner.py benchmark $O/${T}_int8.tflite --threads 2 --runs 100
