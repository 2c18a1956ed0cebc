#!/bin/bash
# The runtime as a device gets it: wheels built here, installed into an empty venv without the
# package index, run from a folder holding only the model and its sidecar.
#   bash docs/measure/device_venv.sh MODEL.tflite IMAGE_DIR
set -e
MODEL=$1 IMAGES=$2 WORK=$(mktemp -d)
python -m pip wheel -q '.[runtime]' -w "$WORK/wheels" 2>/dev/null
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --no-index --find-links "$WORK/wheels" 'keras-solo[runtime]' 2>/dev/null
echo "installed: $("$WORK/venv/bin/pip" list 2>/dev/null | tail -n +3 | awk '{printf "%s %s, ", $1, $2}')"
mkdir "$WORK/device" && cp "$MODEL" "$MODEL.json" "$WORK/device/"
cd "$WORK/device"
M=$(basename "$MODEL")
"$WORK/venv/bin/keras-solo-runtime" predict "$M" --source "$IMAGES" --out pred --limit 20
"$WORK/venv/bin/keras-solo-runtime" benchmark "$M" --threads 2 --runs 100 --source "$(ls "$IMAGES"/* | head -1)"
"$WORK/venv/bin/python" -c "import sys, importlib.util as u; print('importable here:', [m for m in ('tensorflow', 'keras', 'pycocotools', 'jax') if u.find_spec(m)])"
rm -rf "$WORK"
