#!/usr/bin/env bash
# A trained edge model against YOLO11n-seg / YOLO26n-seg (docs/RESULTS.md, "Against YOLO-seg"):
#   bash benchmarks/edge_vs_peers.sh MODEL.keras TAG [EXPORT_ARGS...]
#   e.g. bash benchmarks/edge_vs_peers.sh runs/edge_bn_e12/best.keras new --top-k 50 --set eval.mask_downsample=2
# 1. int8 + fp32 TFLite export (int8 calibrated on 100 cityscapes5 training frames); EXPORT_ARGS go to
#    both exports
# 2. mask AP of both on val_all (419 frames) through the runner's engine (`keras-solo benchmark --data`)
# 3. per-block profile of the int8 file (`benchmark --profile`, 1 thread, CPU time)
# 4. the int8 whole call (letterbox + network + decode) beside the peers' int8 networks, 3 interleaved
#    rounds of 100 runs, 2 threads, on the busiest val frame (11 detections) and the median one (5);
#    then exported at 640x640 against the 640x640 peers
# Writes OUT/TAG_{int8,fp32}.tflite, OUT/TAG_640_int8.tflite, OUT/ap_TAG_{int8,fp32}.json,
# OUT/profile_TAG_int8.json, OUT/compare_TAG_int8{,_median,_640}.json.
# Paths relative to the checkout root (the script runs there). Env: OUT (default runs/export),
#   DATA (cityscapes5 images, default ../shared/data/cityscapes5), PEERS (the peers' .onnx files,
#   default ../shared/peers: yolo11n-seg_320x640.int8.onnx, yolo26n-seg_320x640.int8.onnx and the
#   _640x640 ones), TRAIN (default data/cityscapes5/instances_train.json),
#   VAL_ALL (default data/cityscapes5/instances_val_all.json), K (default .venv/bin/keras-solo),
#   ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:?usage: bash benchmarks/edge_vs_peers.sh MODEL.keras TAG [EXPORT_ARGS...]}
T=${2:?usage: bash benchmarks/edge_vs_peers.sh MODEL.keras TAG [EXPORT_ARGS...]}
shift 2
OUT=${OUT:-runs/export}
DATA=${DATA:-../shared/data/cityscapes5}
PEERS=${PEERS:-../shared/peers}
TRAIN=${TRAIN:-data/cityscapes5/instances_train.json}
VAL_ALL=${VAL_ALL:-data/cityscapes5/instances_val_all.json}
K=${K:-.venv/bin/keras-solo}
ROUNDS=${ROUNDS:-3}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
quiet() { tr "\r" "\n" | grep -v "^[WIE]0000\|^WARNING\|fully_quantize\|^INFO\|^evaluate:" || true; }
run() { echo "+ $*"; "$@" 2>&1 | quiet; }
BUSY=$(ls "$DATA"/val/images/zurich_000072_000019_leftImg8bit_png.rf.*.jpg | head -1)      # 11 detections > 0.3
MEDIAN=$(ls "$DATA"/val/images/monchengladbach_000000_007695_*.jpg | head -1)           # 5: the median of the 50
CAL=(--calib-data "$TRAIN" --calib-root "$DATA" --calib-images 100)
PEERS_320=("$PEERS/yolo11n-seg_320x640.int8.onnx" "$PEERS/yolo26n-seg_320x640.int8.onnx")
PEERS_640=("$PEERS/yolo11n-seg_640x640.int8.onnx" "$PEERS/yolo26n-seg_640x640.int8.onnx")
TIMING=(--threads 2 --warmup 10 --runs 100 --rounds "$ROUNDS")
mkdir -p "$OUT"
for q in int8 fp32; do
  run "$K" export --model "$M" --format tflite --quant $q "$@" "${CAL[@]}" --out "$OUT/${T}_$q.tflite" --overwrite
done
for q in int8 fp32; do
  run "$K" benchmark "$OUT/${T}_$q.tflite" --runs 1 --warmup 0 --data "$VAL_ALL" --images "$DATA" \
      --overwrite --json "$OUT/ap_${T}_$q.json"
done
run "$K" benchmark "$OUT/${T}_int8.tflite" --profile --source "$BUSY" --overwrite --json "$OUT/profile_${T}_int8.json"
echo "+ cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); uptime: $(uptime)"
run "$K" benchmark "$OUT/${T}_int8.tflite" "${TIMING[@]}" --source "$BUSY" --compare "${PEERS_320[@]}" \
    --overwrite --json "$OUT/compare_${T}_int8.json"
run "$K" benchmark "$OUT/${T}_int8.tflite" "${TIMING[@]}" --source "$MEDIAN" --compare "${PEERS_320[@]}" \
    --overwrite --json "$OUT/compare_${T}_int8_median.json"
run "$K" export --model "$M" --format tflite --quant int8 --imgsz 640x640 "$@" "${CAL[@]}" \
    --out "$OUT/${T}_640_int8.tflite" --overwrite
echo "+ uptime: $(uptime)"
run "$K" benchmark "$OUT/${T}_640_int8.tflite" "${TIMING[@]}" --source "$BUSY" --compare "${PEERS_640[@]}" \
    --overwrite --json "$OUT/compare_${T}_640_int8.json"
