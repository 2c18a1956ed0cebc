#!/usr/bin/env bash
# Demo model: export every format, then latency + mask AP of each (2 threads).
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
M=runs/demo/best.keras
O=runs/export
for q in fp32 fp16 int8-dynamic int8; do
  echo "+ $K export --model $M --format tflite --quant $q --out $O/demo_$q.tflite --overwrite"
  $K export --model $M --format tflite --quant $q --out $O/demo_$q.tflite --overwrite 2>&1 | grep -v "^[WI]0000\|^WARNING\|fully_quantize"
done
echo "+ $K export --model $M --format onnx --out $O/demo.onnx --overwrite"
$K export --model $M --format onnx --out $O/demo.onnx --overwrite 2>&1 | grep -v "^[WI]0000\|^WARNING\|tf2onnx"
for X in $M $O/demo_fp32.tflite $O/demo_fp16.tflite $O/demo_int8-dynamic.tflite $O/demo_int8.tflite $O/demo.onnx; do
  echo "+ uptime: $(uptime)"
  echo "+ $K benchmark $X --threads 2 --warmup 10 --runs 200 --source data/synthetic/val/000321.png --data data/synthetic/instances_val.json --overwrite --json $O/bench_demo_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 10 --runs 200 --source data/synthetic/val/000321.png --data data/synthetic/instances_val.json --overwrite --json $O/bench_demo_$(basename $X).json 2>&1 | grep -v "^[WI]0000\|^WARNING\|^E0000\|evaluate:"
done
