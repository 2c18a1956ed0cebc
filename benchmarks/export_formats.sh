#!/usr/bin/env bash
# Latency (and mask AP where there is ground truth) of a model in every export format: `keras-solo
# export` of each format, then `keras-solo benchmark` of each file and of the .keras model (the same
# graph in TensorFlow), 2 threads, one after the other, the load average before each.
#
#   bash benchmarks/export_formats.sh demo            # runs/demo/best.keras (`make demo`): TFLite fp32,
#                                                     # fp16, int8-dynamic, int8, ONNX; AP on synthetic val
#   bash benchmarks/export_formats.sh edge            # the edge preset with its ImageNet backbone and
#                                                     # untrained heads: TFLite int8 / fp32, ONNX, top-K 100
#   bash benchmarks/export_formats.sh paper           # the paper preset, untrained (1 warm-up, 5 runs:
#                                                     # ~550 GFLOPs per image): TFLite fp32 / int8, ONNX
#   bash benchmarks/export_formats.sh MODEL.keras [TAG]   # a trained edge model (cityscapes5): TFLite int8
#                                                     # (calibrated on 100 frames of its config's training
#                                                     # set) and fp32, top-K 100; AP on the 50 val frames
#
# Writes OUT/<tag>_<format>.{tflite,onnx} and OUT/bench_<tag>_<file>.json (tag: demo, edge, paper or
# TAG, default the model's run folder name). edge, paper and MODEL.keras are timed on
# OUT/road_1280x640.png, made here from a synthetic val image (run `make demo` first).
# Paths relative to the checkout root (the script runs there). Env:
#   OUT (default runs/export), K (default .venv/bin/keras-solo), PY (default .venv/bin/python),
#   SYNTH (default data/synthetic), DATA (cityscapes5 images, default ../shared/data/cityscapes5),
#   VAL (default data/cityscapes5/instances_val.json), MODEL (demo: default runs/demo/best.keras),
#   SET (edge / paper: config overrides of the built model, space-separated, e.g.
#        SET=model.head_norm=group for the GroupNorm-head edge preset of docs/RESULTS.md),
#   THREADS (default 2), WARMUP, RUNS (defaults 10 / 200; paper 1 / 5; MODEL.keras 10 / 100),
#   SKIP_EXPORT=1 (time the files already in OUT), NO_AP=1 (latency only).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:?usage: bash benchmarks/export_formats.sh demo|edge|paper|MODEL.keras [TAG]}
OUT=${OUT:-runs/export}
K=${K:-.venv/bin/keras-solo}
PY=${PY:-.venv/bin/python}
SYNTH=${SYNTH:-data/synthetic}
DATA=${DATA:-../shared/data/cityscapes5}
VAL=${VAL:-data/cityscapes5/instances_val.json}
THREADS=${THREADS:-2}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
quiet() { tr "\r" "\n" | grep -v "^[WIE]0000\|^WARNING\|fully_quantize\|tf2onnx\|^INFO\|^evaluate:" || true; }
run() { echo "+ $*"; "$@" 2>&1 | quiet; }
mkdir -p "$OUT"
ROAD=$OUT/road_1280x640.png

build() {  # CONFIG FILE [overrides...]: save the preset's model (pretrained backbone as configured, heads untrained)
  local config=$1 file=$2; shift 2
  echo "+ build_model(load_config('$config', [$*])).save('$file')"
  "$PY" - "$config" "$file" "$@" <<'EOF' 2>&1 | quiet
import sys
from keras_solo.builders import build_model
from keras_solo.config import load_config
build_model(load_config(sys.argv[1], sys.argv[3:])).save(sys.argv[2])
EOF
}

road() {  # a 1280x640 test image from a synthetic val frame
  [ -f "$ROAD" ] && return
  echo "+ $ROAD from $SYNTH/val/000321.png"
  "$PY" -c "import cv2, sys; cv2.imwrite(sys.argv[2], cv2.resize(cv2.imread(sys.argv[1]), (1280, 640), interpolation=cv2.INTER_CUBIC))" \
    "$SYNTH/val/000321.png" "$ROAD"
}

export_all() {  # MODEL TAG FORMATS [export args...]; FORMATS: fp32 fp16 int8-dynamic int8 onnx
  local model=$1 tag=$2 formats=$3; shift 3
  [ "${SKIP_EXPORT:-0}" = 1 ] && return
  for f in $formats; do
    if [ "$f" = onnx ]; then
      run "$K" export --model "$model" --format onnx "$@" --out "$OUT/$tag.onnx" --overwrite
    else
      run "$K" export --model "$model" --format tflite --quant "$f" "$@" --out "$OUT/${tag}_$f.tflite" --overwrite
    fi
  done
}

bench_all() {  # TAG SOURCE FILES... ; BENCH_ARGS: extra benchmark arguments
  local tag=$1 source=$2; shift 2
  for x in "$@"; do
    echo "+ uptime: $(uptime)"
    run "$K" benchmark "$x" --threads "$THREADS" --warmup "$WARMUP" --runs "$RUNS" --source "$source" "${BENCH_ARGS[@]}" \
        --overwrite --json "$OUT/bench_${tag}_$(basename "$x").json"
  done
}

files() {  # TAG FORMATS: the exported files
  local tag=$1 f; shift
  for f in $*; do [ "$f" = onnx ] && echo "$OUT/$tag.onnx" || echo "$OUT/${tag}_$f.tflite"; done
}

read -r -a SETS <<< "${SET:-}"
case $WHAT in
  demo)
    MODEL=${MODEL:-runs/demo/best.keras}; WARMUP=${WARMUP:-10}; RUNS=${RUNS:-200}
    FORMATS="fp32 fp16 int8-dynamic int8 onnx"
    BENCH_ARGS=(); [ "${NO_AP:-0}" = 1 ] || BENCH_ARGS=(--data "$SYNTH/instances_val.json")
    export_all "$MODEL" demo "$FORMATS"   # top-K and calibration data from the run's config.yaml
    bench_all demo "$SYNTH/val/000321.png" "$MODEL" $(files demo $FORMATS)
    ;;
  edge|paper)
    if [ "$WHAT" = edge ]; then
      CONFIG=training/edge.yaml; CALIB=32; WARMUP=${WARMUP:-10}; RUNS=${RUNS:-200}; FORMATS="int8 fp32 onnx"
      KERAS=$OUT/edge_imagenet_backbone.keras
    else
      CONFIG=training/solo_r50_attention.yaml; CALIB=16; WARMUP=${WARMUP:-1}; RUNS=${RUNS:-5}; FORMATS="fp32 int8 onnx"
      KERAS=$OUT/paper_untrained.keras; SETS=(model.backbone_weights=none "${SETS[@]}")
    fi
    [ "${SKIP_EXPORT:-0}" = 1 ] || build "$CONFIG" "$KERAS" "${SETS[@]}"
    road
    # int8 of an untrained network: calibrated on synthetic training images (its output is not scored)
    export_all "$KERAS" "$WHAT" "$FORMATS" --top-k 100 --calib-data "$SYNTH/instances_train.json" --calib-images $CALIB
    BENCH_ARGS=(--top-k 100)
    bench_all "$WHAT" "$ROAD" $(files "$WHAT" $FORMATS) "$KERAS"
    ;;
  *.keras)
    MODEL=$WHAT; TAG=${2:-$(basename "$(dirname "$MODEL")")}; WARMUP=${WARMUP:-10}; RUNS=${RUNS:-100}
    road
    export_all "$MODEL" "$TAG" "int8 fp32" --top-k 100 --calib-images 100
    BENCH_ARGS=(--top-k 100); [ "${NO_AP:-0}" = 1 ] || BENCH_ARGS+=(--data "$VAL" --images "$DATA")
    bench_all "$TAG" "$ROAD" $(files "$TAG" int8 fp32) "$MODEL"
    echo "+ uptime: $(uptime)"
    run "$PY" export/litert_runner.py benchmark "$OUT/${TAG}_int8.tflite" --threads "$THREADS" --runs "$RUNS"
    ;;
  *)
    echo "usage: bash benchmarks/export_formats.sh demo|edge|paper|MODEL.keras [TAG]" >&2; exit 2
    ;;
esac
