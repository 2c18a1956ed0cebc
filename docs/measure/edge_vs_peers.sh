#!/usr/bin/env bash
# Edge latency against YOLO-seg (issue: edge latency), two trained edge models:
#   MODEL TAG [EXTRA_EXPORT_ARGS...], e.g.
#   bash docs/measure/edge_vs_peers.sh runs/edge_bn_e12/best.keras new --top-k 50 --set eval.mask_downsample=2
#   bash docs/measure/edge_vs_peers.sh runs/edge_base_e12/best.keras old --top-k 100
# 1. int8 + fp32 TFLite export (int8 calibrated on 100 cityscapes5 training frames)
# 2. mask AP of both on val_all (419 frames) through the runner's engine
# 3. per-block profile of the int8 file
# 4. whole call of the int8 model beside YOLO11n-seg / YOLO26n-seg int8 (network only),
#    3 interleaved rounds, 2 threads, a real val frame; then 640x640 against the 640 peers.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
K=.venv/bin/keras-solo
M=$1; T=$2; shift 2
O=runs/export
P=../shared/peers
D=../shared/data/cityscapes5
IMG=$(ls $D/val/images/zurich_000072_000019_leftImg8bit_png.rf.*.jpg | head -1)  # 11 detections > 0.3 (median of the 50 val frames: 5)
CAL="--calib-data data/cityscapes5/instances_train.json --calib-root $D --calib-images 100"
quiet() { tr "\r" "\n" | grep -v "^[WIE]0000\|^WARNING\|fully_quantize\|^INFO\|^evaluate:" || true; }
mkdir -p $O
for q in int8 fp32; do
  echo "+ $K export --model $M --format tflite --quant $q $* $CAL --out $O/${T}_$q.tflite --overwrite"
  $K export --model $M --format tflite --quant $q "$@" $CAL --out $O/${T}_$q.tflite --overwrite 2>&1 | quiet
done
for q in int8 fp32; do
  echo "+ $K benchmark $O/${T}_$q.tflite --runs 1 --warmup 0 --data data/cityscapes5/instances_val_all.json --images $D --overwrite --json $O/ap_${T}_$q.json"
  $K benchmark $O/${T}_$q.tflite --runs 1 --warmup 0 --data data/cityscapes5/instances_val_all.json --images $D \
      --overwrite --json $O/ap_${T}_$q.json 2>&1 | quiet
done
echo "+ $K benchmark $O/${T}_int8.tflite --profile --source IMG --overwrite --json $O/profile_${T}_int8.json"
$K benchmark $O/${T}_int8.tflite --profile --source $IMG --overwrite --json $O/profile_${T}_int8.json 2>&1 | quiet
echo "+ uptime: $(uptime)"
echo "+ $K benchmark $O/${T}_int8.tflite --threads 2 --warmup 10 --runs 100 --rounds 3 --source IMG --compare $P/yolo11n-seg_320x640.int8.onnx $P/yolo26n-seg_320x640.int8.onnx"
$K benchmark $O/${T}_int8.tflite --threads 2 --warmup 10 --runs 100 --rounds 3 --source $IMG \
    --compare $P/yolo11n-seg_320x640.int8.onnx $P/yolo26n-seg_320x640.int8.onnx \
    --overwrite --json $O/compare_${T}_int8.json 2>&1 | quiet
MEDIAN=$(ls $D/val/images/monchengladbach_000000_007695_*.jpg | head -1)  # 5 detections: the median frame
$K benchmark $O/${T}_int8.tflite --threads 2 --warmup 10 --runs 100 --rounds 3 --source $MEDIAN \
    --compare $P/yolo11n-seg_320x640.int8.onnx $P/yolo26n-seg_320x640.int8.onnx \
    --overwrite --json $O/compare_${T}_int8_median.json 2>&1 | quiet
echo "+ $K export --model $M --format tflite --quant int8 --imgsz 640x640 $* ... --out $O/${T}_640_int8.tflite"
$K export --model $M --format tflite --quant int8 --imgsz 640x640 "$@" $CAL --out $O/${T}_640_int8.tflite --overwrite 2>&1 | quiet
echo "+ uptime: $(uptime)"
$K benchmark $O/${T}_640_int8.tflite --threads 2 --warmup 10 --runs 100 --rounds 3 --source $IMG \
    --compare $P/yolo11n-seg_640x640.int8.onnx $P/yolo26n-seg_640x640.int8.onnx \
    --overwrite --json $O/compare_${T}_640_int8.json 2>&1 | quiet
