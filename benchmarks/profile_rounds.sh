#!/usr/bin/env bash
# Interleaved rounds of `keras-solo profile`: training images/s (default), input pipeline images/s or
# peak memory of settings side by side. Each round measures every SETTING once, in the order given,
# each in a fresh process, so load from other jobs hits all settings alike; compare within a round.
#   bash benchmarks/profile_rounds.sh [SETTING ...]      (no SETTING: the preset as it is)
# A SETTING is one quoted string of words:
#   NAME=VALUE       an environment variable of that run (e.g. TF_SET_ONEDNN_FPMATH_MODE=BF16)
#   tree=DIR         run the code and presets of another checkout (e.g. a worktree of an older commit:
#                    `git worktree add ../wt_b369e48 b369e48`; the run starts in DIR, so DIR needs
#                    data/ as this checkout has it, and ../shared beside it)
#   anything else    added to the profile command (`--set KEY=VALUE`, `--config FILE`, `--full-masks`)
#   ""               the preset as it is
# Prints "round R | SETTING | KEY VALUE ...". Env:
#   ROUNDS (default 2), CONFIG (default training/edge.yaml; a SETTING's --config wins),
#   MEASURE (default "--throughput 40": training images/s of 40 steady steps; "--pipeline 30":
#     tf.data input images/s; "--memory --batch 2": peak RSS of a training step),
#   ARGS (profile arguments for every setting, before the setting's own, e.g.
#     ARGS="--set data.train_images=../shared/data/cityscapes5"),
#   PY (default .venv/bin/python of this checkout, else python).
# Examples (docs/RESULTS.md, "Training speed"):
#   bash benchmarks/profile_rounds.sh "" "TF_SET_ONEDNN_FPMATH_MODE=BF16"
#   bash benchmarks/profile_rounds.sh "tree=../wt_b369e48" "" "--set train.freeze_backbone=C2 --set train.backbone_norm=train"
#   MEASURE="--pipeline 30" bash benchmarks/profile_rounds.sh "tree=../wt_old" ""
#   MEASURE="--memory --batch 2" CONFIG=training/solo_r50_attention.yaml ROUNDS=1 \
#       bash benchmarks/profile_rounds.sh "" "--full-masks"
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-2}
CONFIG=${CONFIG:-training/edge.yaml}
MEASURE=${MEASURE:---throughput 40}
if [ -z "${PY:-}" ]; then
  PY=python; [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python
elif [[ $PY == */* ]]; then
  PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute: the runs start in their tree
fi
[ $# -gt 0 ] || set -- ""
KEYS='"(train_images_per_s|pipeline_images_per_s|peak_rss_mib|rss_after_build_mib|step_s|error)": ("[^"]*"|[0-9.]+)'

measure() {  # SETTING: one profile run, the numbers of its report on one line
  local tree=$ROOT envs=() args=() word
  read -r -a words <<< "${1//$'\n'/ }"  # a SETTING may span lines
  for word in "${words[@]}"; do
    case $word in
      tree=*) tree=$(cd "${word#tree=}" 2>/dev/null && pwd) || { echo "error: no folder ${word#tree=}"; return; } ;;
      [A-Za-z_]*=*) [ ${#args[@]} -eq 0 ] && envs+=("$word") || args+=("$word") ;;
      *) args+=("$word") ;;
    esac
  done
  (cd "$tree" && env "${envs[@]}" PYTHONPATH="$tree" TF_CPP_MIN_LOG_LEVEL=3 \
     "$PY" -m keras_solo.cli profile --config "$CONFIG" $MEASURE ${ARGS:-} "${args[@]}" 2>/dev/null) \
    | grep -oE "$KEYS" | tr -d '"' | tr '\n' ' '
}

cd "$ROOT"
echo "+ $MEASURE ${ARGS:-}, config $CONFIG, $ROUNDS round(s); cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); uptime: $(uptime)"
for round in $(seq "$ROUNDS"); do
  for setting in "$@"; do
    echo "round $round | ${setting:-(preset)} | $(measure "$setting")"
  done
done
