#!/usr/bin/env bash
# The paper's ablation (Tables 3 and 4) on cityscapes5 (docs/RESULTS.md, "Cityscapes, 12 epochs,
# 2 seeds"): no coords / SOLO / SOLO + attention, `keras-solo ablation` with
# training/ablation_cityscapes5.yaml, evaluated on val_all (419 frames) and on the paper's 50 val frames.
#   bash benchmarks/ablation_cityscapes5.sh [OUT] [SEEDS]      (defaults runs/abl12, 2)
# Seed by seed: round k trains seed k-1 of every variant (a finished seed folder, one with DONE, is
# kept, so a stopped run resumes where it was), then evaluates every finished run on val_all, so the
# tables are balanced after each round (about 19 minutes per run on 2 cores). At the end:
# OUT/ablation_val_all.{json,md,png} and, evaluated on the 50 val frames, OUT/ablation_val.{json,md,png}.
# Extra `keras-solo ablation` arguments go in ARGS, e.g. ARGS="--set model.attention_normalize=none".
# Paths relative to the checkout root (the script runs there). Env: CONFIG (default
#   training/ablation_cityscapes5.yaml; its data.* name the training frames and the image root),
#   VAL_ALL (default data/cityscapes5/instances_val_all.json), VAL (default
#   data/cityscapes5/instances_val.json), K (default .venv/bin/keras-solo), ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/abl12}
SEEDS=${2:-2}
CONFIG=${CONFIG:-training/ablation_cityscapes5.yaml}
VAL_ALL=${VAL_ALL:-data/cityscapes5/instances_val_all.json}
VAL=${VAL:-data/cityscapes5/instances_val.json}
K=${K:-.venv/bin/keras-solo}
read -r -a EXTRA <<< "${ARGS:-}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
ablation() {  # SEEDS EVAL_JSON
  echo "+ $(date +%T) $K ablation --config $CONFIG --seeds $1 --out $OUT --eval-json $2 ${EXTRA[*]}"
  "$K" ablation --config "$CONFIG" --seeds "$1" --out "$OUT" --eval-json "$2" "${EXTRA[@]}" 2>&1 \
    | tr '\r' '\n' | { grep -v "^evaluate:\|^[WIE]0000\|^WARNING" || true; }
}
keep() {  # NAME: keep this evaluation's tables beside the next one's
  for ext in json md png; do
    [ -f "$OUT/ablation.$ext" ] && cp "$OUT/ablation.$ext" "$OUT/ablation_$1.$ext"
  done
  return 0
}
for seeds in $(seq "$SEEDS"); do
  ablation "$seeds" "$VAL_ALL"
done
keep val_all
ablation "$SEEDS" "$VAL"   # trains nothing more: evaluates the finished runs on the 50 val frames
keep val
echo "+ $(date +%T) done: $OUT/ablation_val_all.md, $OUT/ablation_val.md"
