#!/usr/bin/env bash
# Paper preset (training/solo_r50_attention.yaml, untrained, 1344x672): fp32 TFLite / ONNX / Keras, int8 TFLite.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
PY=.venv/bin/python
O=runs/export
echo "+ make $O/paper_untrained.keras"
$PY -c "
from keras_solo.config import load_config; from keras_solo.builders import build_model
build_model(load_config('training/solo_r50_attention.yaml', ['model.backbone_weights=none'])).save('$O/paper_untrained.keras')
" 2>&1 | { grep -v "^[WI]0000\|^WARNING" || true; }
echo "+ $K export --model $O/paper_untrained.keras --format tflite --quant fp32 --top-k 100 --out $O/paper_fp32.tflite --overwrite"
$K export --model $O/paper_untrained.keras --format tflite --quant fp32 --top-k 100 --out $O/paper_fp32.tflite --overwrite 2>&1 | { grep -v "^[WI]0000\|^WARNING" || true; }
echo "+ $K export --model $O/paper_untrained.keras --format onnx --top-k 100 --out $O/paper.onnx --overwrite"
$K export --model $O/paper_untrained.keras --format onnx --top-k 100 --out $O/paper.onnx --overwrite 2>&1 | { grep -v "^[WI]0000\|^WARNING\|tf2onnx" || true; }
echo "+ $K export --model $O/paper_untrained.keras --format tflite --quant int8 --top-k 100 --calib-data data/synthetic/instances_train.json --calib-images 16 --out $O/paper_int8.tflite --overwrite"
$K export --model $O/paper_untrained.keras --format tflite --quant int8 --top-k 100 --calib-data data/synthetic/instances_train.json --calib-images 16 --out $O/paper_int8.tflite --overwrite 2>&1 | { grep -v "^[WI]0000\|^WARNING\|fully_quantize" || true; }
for X in $O/paper_fp32.tflite $O/paper_int8.tflite $O/paper.onnx $O/paper_untrained.keras; do
  echo "+ uptime: $(uptime)"
  echo "+ $K benchmark $X --threads 2 --warmup 3 --runs 20 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/bench_paper_$(basename $X).json"
  $K benchmark $X --threads 2 --warmup 3 --runs 20 --source $O/road_1280x640.png --top-k 100 --overwrite --json $O/bench_paper_$(basename $X).json 2>&1 | { grep -v "^[WI]0000\|^WARNING\|^E0000" || true; }
done
