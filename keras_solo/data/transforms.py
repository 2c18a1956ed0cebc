"""Image + instance-mask geometry and colour jitter (numpy / OpenCV).

Pure functions on numpy arrays, used by :mod:`keras_solo.data.pipeline`.
Randomness is always passed in (offsets, a ``numpy.random.Generator``): no
function here draws from a hidden global RNG, so a pipeline element is
reproducible from its seed.

Geometry is shared exactly between an image and its masks: both are resized
to the same integer size with the same OpenCV interpolation (pixel-centre
aligned), then cropped / padded with the same slices. Masks are resized as
0/255 and thresholded at half (>= 128), which is the nearest-neighbour
answer without OpenCV's off-centre ``INTER_NEAREST``.

Conventions: images are uint8 (h, w, 3); masks are uint8 (N, h, w) of 0/1;
boxes are float32 (N, 4) ``x1, y1, x2, y2`` in pixel-edge coordinates (a
mask covering columns 3..7 has ``x1 = 3, x2 = 8``).
"""


import cv2
import numpy as np

from keras_solo.runtime.detections import boxes_from_masks

__all__ = [
    "any_downsample",
    "boxes_from_masks",
    "crop_offset",
    "downsample_masks",
    "hflip",
    "letterbox",
    "letterbox_window",
    "photometric",
    "resize_masks",
]



def letterbox(image, masks, size, scale_jitter=1.0, offset=(0.0, 0.0)):
    """Resizes keeping the aspect ratio, places top-left, pads bottom/right.

    ``scale = min(W / w, H / h) * scale_jitter``. The resized image is put at
    the top-left corner of a zero canvas of ``(H, W)``. With
    ``scale_jitter > 1`` the resized image can overflow the canvas; the crop
    window then starts at ``offset`` (fractions of the overflow, 0 = keep the
    top/left edge, 1 = keep the bottom/right edge).

    Args:
        image: uint8 (h, w, 3).
        masks: uint8 (N, h, w) of 0/1 (N may be 0).
        size: output ``(W, H)``.
        scale_jitter: multiplier on the letterbox scale. Defaults to 1.0.
        offset: ``(fx, fy)`` in [0, 1], where the crop window sits inside the
            overflow; ignored where nothing overflows. Defaults to (0, 0).

    Returns:
        ``(image, masks, scale)``: uint8 (H, W, 3), uint8 (N, H, W), and the
        float scale applied (output pixels per input pixel). An input point
        ``(x, y)`` lands at ``(x * scale - ox, y * scale - oy)`` where
        ``ox, oy = crop_offset(...)``.
    """
    height, width = image.shape[:2]
    scale = min(int(size[0]) / width, int(size[1]) / height) * float(scale_jitter)
    (new_w, new_h), (left, top), (keep_w, keep_h) = letterbox_window((height, width), size, scale, offset)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    resized_masks = resize_masks(masks, (new_w, new_h), interpolation=interpolation)

    canvas = np.zeros((int(size[1]), int(size[0]), 3), np.uint8)
    canvas[:keep_h, :keep_w] = resized[top : top + keep_h, left : left + keep_w]
    mask_canvas = np.zeros((len(masks), int(size[1]), int(size[0])), np.uint8)
    mask_canvas[:, :keep_h, :keep_w] = resized_masks[:, top : top + keep_h, left : left + keep_w]
    return canvas, mask_canvas, scale


def letterbox_window(shape, size, scale, offset):
    """Where :func:`letterbox` puts an image of ``shape = (h, w)`` resized by ``scale``.

    Returns:
        ``((new_w, new_h), (left, top), (keep_w, keep_h))``: the resized
        size, the crop window's corner in it, and the size of the image's part
        of the canvas (the top-left ``keep_h x keep_w``; the rest is padding).
    """
    new_w = max(1, int(round(shape[1] * scale)))
    new_h = max(1, int(round(shape[0] * scale)))
    left, top = crop_offset((new_w, new_h), size, offset)
    return (new_w, new_h), (left, top), (min(new_w - left, int(size[0])), min(new_h - top, int(size[1])))


def crop_offset(resized_size, size, offset):
    """Pixel ``(left, top)`` of the crop window used by :func:`letterbox`.

    Args:
        resized_size: ``(w, h)`` of the resized image.
        size: canvas ``(W, H)``.
        offset: ``(fx, fy)`` fractions of the overflow.

    Returns:
        ``(left, top)`` ints, 0 where the resized image fits.
    """
    overflow_x = max(int(resized_size[0]) - int(size[0]), 0)
    overflow_y = max(int(resized_size[1]) - int(size[1]), 0)
    fx = min(max(float(offset[0]), 0.0), 1.0)
    fy = min(max(float(offset[1]), 0.0), 1.0)
    return int(round(fx * overflow_x)), int(round(fy * overflow_y))


def resize_masks(masks, size, interpolation=cv2.INTER_LINEAR):
    """Resizes (N, h, w) 0/1 masks to ``size = (W, H)``.

    The masks go through the same OpenCV resize as the image (as 0/255) and
    are thresholded at half, so they follow the image geometry exactly.

    Args:
        masks: uint8 (N, h, w).
        size: ``(W, H)``.
        interpolation: OpenCV flag, the one used for the image. Defaults to
            ``cv2.INTER_LINEAR``.

    Returns:
        uint8 (N, H, W) of 0/1.
    """
    out_w, out_h = int(size[0]), int(size[1])
    if len(masks) == 0:
        return np.zeros((0, out_h, out_w), np.uint8)
    # One contiguous single-channel resize per mask: the same OpenCV kernel as
    # the image's channels, without transposing an (h, w, N) stack (which
    # dominated the pipeline's time at 1344x672).
    out = np.empty((len(masks), out_h, out_w), np.uint8)
    for n, mask in enumerate(masks):
        if interpolation == cv2.INTER_AREA and mask.T.flags.c_contiguous and not mask.flags.c_contiguous:
            # A transposed view (coco.decode_instances), shrunk: resize the
            # transpose and transpose the small result instead of copying the
            # full-size mask (area averaging gives the same pixels either way;
            # OpenCV's fixed-point bilinear does not always, so enlarging copies).
            scaled = mask.T.astype(np.uint8) * np.uint8(255)
            out[n] = cv2.resize(scaled, (out_h, out_w), interpolation=interpolation).T >= 128
        else:
            scaled = np.ascontiguousarray(mask, dtype=np.uint8) * np.uint8(255)
            out[n] = cv2.resize(scaled, (out_w, out_h), interpolation=interpolation) >= 128
    return out


def hflip(image, masks):
    """Flips an image and its masks left-right.

    Args:
        image: (h, w, C).
        masks: (N, h, w).

    Returns:
        ``(image, masks)`` flipped, contiguous copies.
    """
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(masks[:, :, ::-1])


def photometric(image, rng, *, brightness=0.25, contrast=0.25, saturation=0.3, hue=0.02):
    """Random brightness, contrast, saturation and hue jitter.

    Each factor is drawn uniformly: brightness and contrast multiply by
    ``1 +- brightness`` / ``1 +- contrast`` (contrast around the mean grey
    level), saturation by ``1 +- saturation`` in HSV, hue is rotated by up to
    ``+- hue`` of a full turn. Geometry is untouched.

    Args:
        image: uint8 (h, w, 3) RGB.
        rng: ``numpy.random.Generator``.
        brightness: maximum relative brightness change. Defaults to 0.25.
        contrast: maximum relative contrast change. Defaults to 0.25.
        saturation: maximum relative saturation change. Defaults to 0.3.
        hue: maximum hue rotation as a fraction of a turn. Defaults to 0.02.

    Returns:
        uint8 (h, w, 3) RGB.
    """
    gain_b = rng.uniform(1.0 - brightness, 1.0 + brightness)
    gain_c = rng.uniform(1.0 - contrast, 1.0 + contrast)
    gain_s = rng.uniform(1.0 - saturation, 1.0 + saturation)
    shift_h = rng.uniform(-hue, hue) * 180.0  # OpenCV 8-bit hue is 0..179

    # Each step maps a uint8 value to a uint8 value, so it runs as a 256-entry
    # table (cv2.LUT) computed with the float32 arithmetic of a per-pixel pass:
    # the same pixels, without float32 copies of the image.
    levels = np.arange(256, dtype=np.float32)
    hsv_table = np.stack([np.mod(levels + shift_h, 180.0),  # hue
                          np.clip(levels * gain_s, 0.0, 255.0),  # saturation
                          levels], axis=-1)  # value
    hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), _to_table(hsv_table))
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mean = rgb.astype(np.float32).mean()
    return cv2.LUT(rgb, _to_table(((levels - mean) * gain_c + mean) * gain_b))


def _to_table(values):
    """(256[, C]) float32 -> a cv2.LUT table: rounded (half to even), clipped to uint8."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8).reshape(1, 256, -1)


def downsample_masks(masks, stride):
    """Reduces masks by an integer stride with area averaging.

    A cell is on when at least half of its ``stride x stride`` pixels are on.
    A mask that would vanish that way (an object thinner than the stride)
    falls back to "any pixel on", so a small instance keeps a mask.

    Args:
        masks: uint8 (N, H, W) of 0/1; H and W multiples of ``stride``.
        stride: integer factor.

    Returns:
        uint8 (N, H / stride, W / stride) of 0/1.

    Raises:
        ValueError: H or W not a multiple of ``stride``.
    """
    count, height, width = masks.shape
    if height % stride or width % stride:
        raise ValueError(f"mask size {width}x{height} is not a multiple of stride {stride}")
    if stride == 1:
        return np.ascontiguousarray(masks, dtype=np.uint8)
    # Block sums by strided adds (exact, vectorised; much faster than a sum
    # over a 5-D reshaped view).
    masks = np.asarray(masks, dtype=np.uint8)
    cols = masks[:, :, 0::stride].astype(np.uint16)
    for offset in range(1, stride):
        cols += masks[:, :, offset::stride]
    on_pixels = cols[:, 0::stride].copy()
    for offset in range(1, stride):
        on_pixels += cols[:, offset::stride]
    small = on_pixels * 2 >= stride * stride
    vanished = ~small.any(axis=(1, 2)) & (on_pixels.any(axis=(1, 2)))
    small[vanished] = on_pixels[vanished] > 0
    return small.astype(np.uint8)


def any_downsample(mask, stride):
    """Max-pools one (H, W) mask by ``stride``: a cell is on if any pixel is.

    Used for the crowd ignore map, which must cover every crowd pixel.

    Args:
        mask: uint8 (H, W); H and W multiples of ``stride``.
        stride: integer factor.

    Returns:
        uint8 (H / stride, W / stride) of 0/1.
    """
    height, width = mask.shape
    cells = mask.reshape(height // stride, stride, width // stride, stride)
    return cells.any(axis=(1, 3)).astype(np.uint8)
