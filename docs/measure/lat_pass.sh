#!/usr/bin/env bash
# Latency of every demo and edge format, one after the other (2 threads, decode of detections > 0.3).
set -uo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
O=runs/export
for X in runs/demo/best.keras $O/demo_fp32.tflite $O/demo_fp16.tflite $O/demo_int8-dynamic.tflite $O/demo_int8.tflite $O/demo.onnx; do
  echo "+ $K benchmark $X --threads 2 --warmup 10 --runs 300 --source data/synthetic/val/000321.png --overwrite --json $O/lat_demo_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 10 --runs 300 --source data/synthetic/val/000321.png --overwrite --json $O/lat_demo_$(basename $X).json 2>&1 | { grep -v "^[WI]0000\|^WARNING\|^E0000\|^INFO" || true; }
done
for X in $O/edge_int8.tflite $O/edge_fp32.tflite $O/edge.onnx $O/edge_imagenet_backbone.keras; do
  echo "+ $K benchmark $X --threads 2 --warmup 10 --runs 200 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/lat_edge_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 10 --runs 200 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/lat_edge_$(basename $X).json 2>&1 | { grep -v "^[WI]0000\|^WARNING\|^E0000\|^INFO" || true; }
done
