#!/usr/bin/env bash
# Edge preset (training/edge.yaml, ImageNet EfficientNet-Lite0 backbone, heads untrained), 640x320.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
PY=.venv/bin/python
O=runs/export
echo "+ make $O/edge_imagenet_backbone.keras and $O/road_1280x640.png"
$PY -c "
from keras_solo.config import load_config; from keras_solo.builders import build_model
build_model(load_config('training/edge.yaml')).save('$O/edge_imagenet_backbone.keras')
import cv2; cv2.imwrite('$O/road_1280x640.png', cv2.resize(cv2.imread('data/synthetic/val/000321.png'), (1280, 640), interpolation=cv2.INTER_CUBIC))
" 2>&1 | { grep -v "^[WI]0000\|^WARNING" || true; }
for q in int8 fp32; do
  echo "+ $K export --model $O/edge_imagenet_backbone.keras --format tflite --quant $q --top-k 100 --calib-data data/synthetic/instances_train.json --calib-images 32 --out $O/edge_$q.tflite --overwrite"
  $K export --model $O/edge_imagenet_backbone.keras --format tflite --quant $q --top-k 100 --calib-data data/synthetic/instances_train.json --calib-images 32 --out $O/edge_$q.tflite --overwrite 2>&1 | { grep -v "^[WI]0000\|^WARNING\|fully_quantize" || true; }
done
echo "+ $K export --model $O/edge_imagenet_backbone.keras --format onnx --top-k 100 --out $O/edge.onnx --overwrite"
$K export --model $O/edge_imagenet_backbone.keras --format onnx --top-k 100 --out $O/edge.onnx --overwrite 2>&1 | { grep -v "^[WI]0000\|^WARNING\|tf2onnx" || true; }
for X in $O/edge_int8.tflite $O/edge_fp32.tflite $O/edge.onnx $O/edge_imagenet_backbone.keras; do
  echo "+ uptime: $(uptime)"
  echo "+ $K benchmark $X --threads 2 --warmup 10 --runs 200 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/bench_edge_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 10 --runs 200 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/bench_edge_$(basename $X).json 2>&1 | { grep -v "^[WI]0000\|^WARNING\|^E0000" || true; }
done
