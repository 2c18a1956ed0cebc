"""The package's one image reader and the inference letterbox (numpy + cv2).

EXIF policy (train, evaluate, predict, calibration and the device runtime all
read through `read_image`): stored pixels, EXIF orientation IGNORED, as the
COCO JSON's width/height and its polygons describe them (the size check of
keras_solo.data.coco names a swapped size "rotated? EXIF orientation is not
applied"). cv2.imread applies EXIF by default; a JPEG with orientation 6
would otherwise get its masks in one frame from predict and another from
evaluate.

Letterbox convention (docs/DESIGN.md): scale = min(W / w, H / h), the resized
image sits at the top-left, padding bottom/right.
"""

import os

import cv2
import numpy as np

from keras_solo.errors import SoloError, where

IMAGE_READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def decode_image(data):
    """Encoded image bytes (a uint8 array) -> (H, W, 3) uint8 BGR under IMAGE_READ_FLAGS, or None."""
    return cv2.imdecode(data, IMAGE_READ_FLAGS) if data.size else None


def read_image(path, *, context=None):
    """Reads an image file as (H, W, 3) uint8 RGB (EXIF orientation ignored).

    Args:
        path: the image file.
        context: optional location prefix for error messages (``where(...)``).
            Defaults to the path itself.

    Raises:
        SoloError: the file is missing, unreadable, not an image, or corrupt /
            truncated.
    """
    path = os.fspath(path)
    context = context or path
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise SoloError(where(context, f"image file not found: {path}")) from None
    except (IsADirectoryError, PermissionError, OSError) as error:
        raise SoloError(where(context, f"cannot read image file {path} ({error.strerror or error})")) from None
    image = decode_image(data)
    if image is None:
        problem = "empty file" if not data.size else "not a readable image (corrupt or truncated)"
        raise SoloError(where(context, f"{path}: {problem}"))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def letterbox_resize(image, size):
    """The resized part of the letterbox: ((new_h, new_w, 3) uint8, scale), new_h <= H, new_w <= W.

    Args:
        image: (h, w, 3) uint8.
        size: (W, H) network input.
    """
    width, height = size
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    # the same interpolation as the training pipeline (keras_solo.data.transforms.letterbox)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return resized[:height, :width], scale


def letterbox_image(image, size):
    """Resizes an RGB uint8 image into a (H, W) zero canvas keeping aspect ratio.

    Returns:
        (canvas (H, W, 3) uint8, scale).
    """
    width, height = size
    resized, scale = letterbox_resize(image, size)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, scale
