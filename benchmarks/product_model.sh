#!/usr/bin/env bash
# What a trained run of the product recipe (training/edge_cityscapes5.yaml) reaches on val_all:
#   bash benchmarks/product_model.sh RUN_DIR OUT_DIR [ROUNDS]
# 1. Keras fp32 segm AP of last.keras (the EMA weights) and, when present, last_raw.keras (the
#    optimizer's own weights: what EMA bought at the same images seen), on val_all (419 frames)
# 2. int8 TFLite export (calibrated on 100 training frames of the run's config) and its AP through
#    the TF-free runtime (benchmark --data)
# 3. with ROUNDS > 0 (default 3): the int8 whole call beside YOLO11n-seg / YOLO26n-seg int8
#    (network only), interleaved rounds on the median val frame, and the CPU it ran on
# Writes OUT_DIR/{ema,raw}_val_all.json, int8_val_all.json, compare_int8.json, log.csv.
# Env: DATA (default ../shared/data/cityscapes5), VAL_ALL (default data/cityscapes5/instances_val_all.json),
#      PEERS (default ../shared/peers), K (default .venv/bin/keras-solo),
#      SETS (inference settings over the run's config for evaluate and export, e.g.
#      "eval.mask_downsample=1 eval.nms_pool=2"; default none),
#      TOP_K, EXPORT_POOL (the export's candidates and Matrix NMS pooling; default the run's config:
#      a run trained before the recipe set them takes TOP_K=100 EXPORT_POOL=2 to export as it now does).
set -euo pipefail
RUN=$1; OUT=$2; ROUNDS=${3:-3}
DATA=${DATA:-../shared/data/cityscapes5}
VAL_ALL=${VAL_ALL:-data/cityscapes5/instances_val_all.json}
PEERS=${PEERS:-../shared/peers}
K=${K:-.venv/bin/keras-solo}
export TF_CPP_MIN_LOG_LEVEL=3
SET_ARGS=(); for s in ${SETS:-}; do SET_ARGS+=(--set "$s"); done
TOPK_ARGS=(); [ -n "${TOP_K:-}" ] && TOPK_ARGS=(--top-k "$TOP_K")
[ -n "${EXPORT_POOL:-}" ] && TOPK_ARGS+=(--set "eval.nms_pool=$EXPORT_POOL")
quiet() { tr "\r" "\n" | grep -v "^[WIE]0000\|^WARNING\|fully_quantize\|^INFO\|^evaluate:\|it/s\]$" || true; }
mkdir -p "$OUT"
cp "$RUN/log.csv" "$OUT/log.csv"
for weights in ema raw; do
  model=$RUN/last.keras; [ $weights = raw ] && model=$RUN/last_raw.keras
  [ -f "$model" ] || continue
  echo "+ $K evaluate --model $model --data $VAL_ALL --images $DATA --out $RUN/eval_$weights --overwrite ${SET_ARGS[*]}"
  $K evaluate --model "$model" --data "$VAL_ALL" --images "$DATA" --out "$RUN/eval_$weights" --overwrite \
      "${SET_ARGS[@]}" 2>&1 | quiet
  cp "$RUN/eval_$weights/metrics.json" "$OUT/${weights}_val_all.json"
done
echo "+ $K export --model $RUN/last.keras --format tflite --quant int8 --out $RUN/int8.tflite --overwrite ${TOPK_ARGS[*]} ${SET_ARGS[*]}"
$K export --model "$RUN/last.keras" --format tflite --quant int8 --out "$RUN/int8.tflite" --overwrite "${TOPK_ARGS[@]}" \
    "${SET_ARGS[@]}" 2>&1 | quiet
echo "+ $K benchmark $RUN/int8.tflite --runs 1 --warmup 0 --data $VAL_ALL --images $DATA --json $OUT/int8_val_all.json"
$K benchmark "$RUN/int8.tflite" --runs 1 --warmup 0 --data "$VAL_ALL" --images "$DATA" --overwrite \
    --json "$OUT/int8_val_all.json" 2>&1 | quiet
if [ "$ROUNDS" -gt 0 ]; then
  MEDIAN=$(ls "$DATA"/val/images/monchengladbach_000000_007695_*.jpg | head -1)  # the median val frame
  echo "+ $K benchmark $RUN/int8.tflite --threads 2 --warmup 10 --runs 100 --rounds $ROUNDS --source MEDIAN --compare YOLO11n-seg YOLO26n-seg"
  $K benchmark "$RUN/int8.tflite" --threads 2 --warmup 10 --runs 100 --rounds "$ROUNDS" --source "$MEDIAN" \
      --compare "$PEERS/yolo11n-seg_320x640.int8.onnx" "$PEERS/yolo26n-seg_320x640.int8.onnx" \
      --overwrite --json "$OUT/compare_int8.json" 2>&1 | quiet
fi
