"""Detections outside the graph: letterbox for inference, undo the letterbox,
COCO RLE results, overlays. numpy + cv2 only (no TensorFlow, no Keras), so the
TF-free device runner in `export/` uses this module too.

Letterbox convention (docs/DESIGN.md): scale = min(W / w, H / h), the resized
image sits at the top-left, padding bottom/right.
"""

import colorsys
import os

import cv2
import numpy as np

# numpy + cv2 only as well; boxes are the masks' extents (x2 = last column + 1)
from keras_solo.data.transforms import boxes_from_masks, read_rgb_or_none  # noqa: F401  (re-exported)


def letterbox_image(image, size):
    """Resizes an RGB uint8 image into a (H, W) canvas keeping aspect ratio.

    Args:
        image: (h, w, 3) uint8.
        size: (W, H) network input.

    Returns:
        (canvas (H, W, 3) uint8, scale).
    """
    width, height = size
    resized, scale = letterbox_resize(image, size)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, scale


def letterbox_resize(image, size):
    """The resized part of `letterbox_image`: ((new_h, new_w, 3) uint8, scale), new_h <= H, new_w <= W."""
    width, height = size
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    # the same interpolation as the training pipeline (keras_solo.data.transforms.letterbox)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return resized[:height, :width], scale


def video_open_problem(capture):
    """Why a cv2.VideoCapture gave no first frame: one phrase for the error line."""
    if not capture.isOpened():
        return "cannot open video (unreadable or unsupported codec)"
    if int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) <= 0:
        return "holds no frames (0 frames in the container)"
    return "cannot decode its first frame (corrupt, or an unsupported codec)"


def video_ended_early(path, read, expected, limit=0):
    """A warning line when a video gave fewer frames than its container says, else None."""
    wanted = min(expected, limit) if limit else expected
    if expected > 0 and read < wanted:
        return (f"warning: {path}: the file ended early: read {read} of {expected} frames "
                "(truncated or corrupt); the detections cover those frames only")
    return None


def overlay_names(paths):
    """The overlay file name of each source image: ``stem.jpg``, or
    ``stem_ext.jpg`` for stems that two sources share (``a.png`` and
    ``a.jpg`` would otherwise write one ``a.jpg``, the second replacing the
    first)."""
    stems = [os.path.splitext(os.path.basename(p)) for p in paths]
    counts = {}
    for stem, _ in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [f"{stem}.jpg" if counts[stem] == 1 else f"{stem}_{ext.lstrip('.').lower()}.jpg" for stem, ext in stems]


def _resize_stack(masks, height, width):
    """(N, h, w) float32 -> (N, height, width), bilinear with half-pixel centres."""
    out = np.empty((masks.shape[0], height, width), np.float32)
    chunk = 16  # cv2 resizes up to 512 channels; small chunks bound memory
    for start in range(0, masks.shape[0], chunk):
        part = np.ascontiguousarray(masks[start : start + chunk].transpose(1, 2, 0))
        resized = cv2.resize(part, (width, height), interpolation=cv2.INTER_LINEAR)
        out[start : start + chunk] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def masks_to_original(masks, *, input_size, image_info, mask_thr=0.5, return_boxes=False):
    """Maps mask probabilities back to the original image (undoes the letterbox).

    Equivalent to SOLO's ``get_seg_single`` / detectron2's
    ``detector_postprocess`` (upsample to the padded input, crop the image
    region, resize to the original size, threshold), done as ONE bilinear
    warp from mask coordinates straight to original pixels, and only inside
    each mask's box: bilinear interpolation never exceeds its neighbours, so
    an original pixel can pass ``mask_thr`` only within one mask cell of a
    cell that does. Cost grows with the objects' area, not with N x the image.
    Numpy + cv2; runs outside the graph.

    Args:
        masks: (N, Hm, Wm) mask probabilities (numpy).
        input_size: ``(H, W)`` of the padded network input, in shape order
            (the config writes it ``W x H``).
        image_info: ``(orig_h, orig_w, scale, ...)`` of the image.
        mask_thr: threshold on the resized probabilities (``p > mask_thr``).
            Defaults to 0.5.
        return_boxes: also return the masks' boxes, found inside each warped
            region instead of by scanning the full-size masks again.

    Returns:
        numpy bool (N, orig_h, orig_w); with `return_boxes` also float32
        (N, 4) ``x1, y1, x2, y2`` as `boxes_from_masks` gives them (zeros for
        an empty mask).
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, Hm, Wm), got shape {masks.shape}")
    in_h, in_w = int(input_size[0]), int(input_size[1])
    orig_h = int(round(float(image_info[0])))
    orig_w = int(round(float(image_info[1])))
    scale = float(image_info[2])
    out = np.zeros((masks.shape[0], orig_h, orig_w), bool)
    boxes = np.zeros((masks.shape[0], 4), np.float32)
    if masks.shape[0] == 0:
        return (out, boxes) if return_boxes else out
    mask_h, mask_w = masks.shape[1:]
    crop_h = min(max(int(round(orig_h * scale)), 1), in_h)
    crop_w = min(max(int(round(orig_w * scale)), 1), in_w)
    # original pixel centre -> input pixel centre -> mask pixel centre:
    # m = (o + 0.5) * a - 0.5 with a = (crop / orig) * (mask / input)
    ax = crop_w / orig_w * mask_w / in_w
    ay = crop_h / orig_h * mask_h / in_h
    for n, mask in enumerate(masks):
        rows = np.flatnonzero((mask > mask_thr).any(axis=1))
        cols = np.flatnonzero((mask > mask_thr).any(axis=0))
        if not len(rows):
            continue
        x0 = max(0, int(np.floor((cols[0] - 1 + 0.5) / ax - 0.5)))
        x1 = min(orig_w, int(np.ceil((cols[-1] + 1 + 0.5) / ax - 0.5)) + 1)
        y0 = max(0, int(np.floor((rows[0] - 1 + 0.5) / ay - 0.5)))
        y1 = min(orig_h, int(np.ceil((rows[-1] + 1 + 0.5) / ay - 0.5)) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        warp = np.array([[ax, 0.0, 0.5 * ax - 0.5 + ax * x0],
                         [0.0, ay, 0.5 * ay - 0.5 + ay * y0]], np.float64)
        region = cv2.warpAffine(mask, warp, (x1 - x0, y1 - y0),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
        inside = region > mask_thr
        out[n, y0:y1, x0:x1] = inside
        if return_boxes:
            boxes[n] = boxes_from_masks(inside[None])[0] + np.array([x0, y0, x0, y0], np.float32) * inside.any()
    return (out, boxes) if return_boxes else out


def boxes_xywh(masks):
    """(N, h, w) masks -> (N, 4) COCO x, y, w, h boxes."""
    boxes = boxes_from_masks(masks)
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def to_original(decoded, *, input_size, orig_size, scale, mask_thr=0.5, min_score=0.0):
    """One image's fixed-size decoded outputs -> detections in original pixels.

    Args:
        decoded: dict of numpy arrays for ONE image: scores (K,), labels (K,),
            masks (K, Hm, Wm) probabilities, valid (K,).
        input_size: (H, W); orig_size: (h, w); scale: letterbox scale.

    Returns:
        dict: scores (N,), labels (N,) int, masks bool (N, h, w), boxes (N, 4)
        COCO xywh; empty masks are dropped.
    """
    keep = np.asarray(decoded["valid"]).astype(bool) & (np.asarray(decoded["scores"]) > min_score)
    scores = np.asarray(decoded["scores"], np.float32)[keep]
    labels = np.asarray(decoded["labels"]).astype(np.int64)[keep]
    masks, boxes = masks_to_original(np.asarray(decoded["masks"])[keep], input_size=input_size,
                                     image_info=(orig_size[0], orig_size[1], scale), mask_thr=mask_thr,
                                     return_boxes=True)
    nonempty = boxes[:, 2] > boxes[:, 0]  # boxes of empty masks are zeros
    if not nonempty.all():  # copying N full-size masks costs more than the warps: only when needed
        masks, boxes, scores, labels = masks[nonempty], boxes[nonempty], scores[nonempty], labels[nonempty]
    boxes[:, 2:] -= boxes[:, :2]  # COCO x, y, w, h
    return {"scores": scores, "labels": labels, "masks": masks, "boxes": boxes}


def encode_rle(mask):
    """COCO compressed RLE (pycocotools) of one bool mask, JSON-ready."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_results(image_id, detections, cat_ids):
    """Detections of one image in COCO results format (RLE segmentations)."""
    results = []
    for score, label, mask, box in zip(detections["scores"], detections["labels"], detections["masks"],
                                       detections["boxes"]):
        results.append({
            "image_id": int(image_id),
            "category_id": int(cat_ids[int(label)]),
            "segmentation": encode_rle(mask),
            "bbox": [float(v) for v in box],
            "score": float(score),
        })
    return results


def instance_colour(index):
    """A distinct RGB colour per instance index (golden-ratio hues)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(image, detections, class_names, *, score_thr=0.3, alpha=0.45, fps=None):
    """Draws masks (a colour per instance), contours, class name and score.

    Each mask is blended inside its box only, in uint16 integer arithmetic,
    so memory stays at one copy of the image plus one box-sized buffer
    (a 48 MP image no longer makes float64 copies of every mask's pixels);
    the label text scales with the image.

    Args:
        image: (h, w, 3) uint8 RGB.
        detections: dict from `to_original` (boxes x, y, w, h).
        class_names: names indexed by label.
        fps: if given, the measured FPS is written in the top-left corner.

    Returns:
        (h, w, 3) uint8 RGB.
    """
    canvas = image.copy()
    height, width = canvas.shape[:2]
    font = max(0.4, 0.4 * min(height, width) / 640.0)  # 0.4 at 640 px, larger on large images
    thickness = max(1, int(round(font / 0.4)))
    keep = int(round(256 * (1 - alpha)))  # blend = (pixel * keep + colour * (256 - keep)) / 256
    order = np.argsort(-np.asarray(detections["scores"]))
    for rank, n in enumerate(order):
        score = float(detections["scores"][n])
        if score < score_thr:
            continue
        colour = instance_colour(rank)
        x, y, bw, bh = (int(round(float(v))) for v in detections["boxes"][n])
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + max(bw, 1)), min(height, y + max(bh, 1))
        region = np.asarray(detections["masks"][n][y0:y1, x0:x1], bool)
        if region.any():
            crop = canvas[y0:y1, x0:x1]
            tint = (crop[region].astype(np.uint16) * keep
                    + np.asarray(colour, np.uint16) * (256 - keep)) >> 8
            crop[region] = tint.astype(np.uint8)
            contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(crop, contours, -1, tuple(int(c) for c in colour), thickness)
        label = int(detections["labels"][n])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
        y_text = max(th + 2, y0)
        cv2.rectangle(canvas, (x0, y_text - th - 2), (x0 + tw + 2, y_text), tuple(int(c) for c in colour), -1)
        cv2.putText(canvas, text, (x0 + 1, y_text - 2), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(canvas, f"{fps:.1f} FPS", (6, int(18 * font / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, 1.5 * font,
                    (255, 255, 255), 2 * thickness, cv2.LINE_AA)
    return canvas


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
