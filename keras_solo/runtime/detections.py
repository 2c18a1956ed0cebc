"""Detections outside the graph (numpy + cv2): undo the letterbox, boxes,
COCO RLE, the detections record, overlays.

The exported graph ends at fixed-size scores / labels / masks / valid at the
network's input; `to_original` maps one image's outputs to its own pixels.
"""

import colorsys
import os

import cv2
import numpy as np


def boxes_from_masks(masks):
    """Tight boxes around masks.

    Args:
        masks: (N, h, w), nonzero = inside.

    Returns:
        float32 (N, 4) ``x1, y1, x2, y2`` in pixel-edge coordinates
        (``x2 = last column + 1``); all zeros for an empty mask.
    """
    masks = np.asarray(masks)
    boxes = np.zeros((len(masks), 4), np.float32)
    if len(masks) == 0:
        return boxes
    rows = masks.any(axis=2)  # (N, h)
    cols = masks.any(axis=1)  # (N, w)
    nonempty = rows.any(axis=1)
    height, width = masks.shape[1:]
    y1 = rows.argmax(axis=1)
    y2 = height - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = width - cols[:, ::-1].argmax(axis=1)
    boxes[nonempty] = np.stack([x1, y1, x2, y2], axis=1)[nonempty]
    return boxes


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


def rle_counts(mask):
    """Column-major run lengths of a 2-D mask, starting with a run of 0s (COCO RLE).

    Only the columns between the first and the last that hold a pixel are
    scanned; the empty columns around them join the first / last run of 0s.
    """
    mask = np.asarray(mask, bool)
    height, width = mask.shape
    columns = np.flatnonzero(mask.any(axis=0))
    if not columns.size:
        return np.array([height * width], np.int64)
    x0, x1 = int(columns[0]), int(columns[-1]) + 1
    flat = mask[:, x0:x1].ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    counts = np.diff(bounds)
    if flat[0]:
        counts = np.concatenate([[0], counts])
    counts[0] += height * x0
    trailing = height * (width - x1)
    if trailing and flat[-1]:  # the crop ends in a 1: the empty columns after it are a new run of 0s
        counts = np.append(counts, trailing)
    elif trailing:
        counts[-1] += trailing
    return counts.astype(np.int64)


def encode_rle(mask):
    """COCO compressed RLE of one 2-D mask, JSON-ready: {"size": [h, w], "counts": str}.

    pycocotools' string form (maskApi.c rleToString) in numpy, so a device
    needs no pycocotools: each count (from the fourth on, minus the count two
    before it) is written in 5-bit groups, low first, 0x20 marking "more
    follows", plus 48. tests/test_postprocess.py checks it against
    pycocotools.
    """
    counts = rle_counts(mask)
    x = counts.copy()
    x[3:] -= counts[1:-2]
    groups, more, rest = [], [], x
    for _ in range(7):  # 7 x 5 bits hold any count of a 2^31-pixel mask
        c = rest & 0x1F
        rest = rest >> 5
        groups.append(c)
        more.append(np.where(c & 0x10, rest != -1, rest != 0))
    groups, more = np.stack(groups, 1), np.stack(more, 1)
    length = np.argmin(np.concatenate([more, np.zeros((len(x), 1), bool)], 1), axis=1) + 1
    column = np.arange(groups.shape[1])[None, :]
    chars = (groups | np.where(column < (length - 1)[:, None], 0x20, 0)) + 48
    text = chars[column < length[:, None]].astype(np.uint8).tobytes().decode("ascii")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": text}


def class_name(label, class_names):
    """The name of a label, or the label as text where `class_names` has none."""
    label = int(label)
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def detections_record(source, found, class_names):
    """One image's (or video frame's) entry of detections.json."""
    return {
        "source": source,
        "instances": [
            {"label": int(label), "class": class_name(label, class_names), "score": round(float(score), 4),
             "bbox_xywh": [round(float(v), 1) for v in box], "segmentation": encode_rle(mask)}
            for score, label, mask, box in zip(found["scores"], found["labels"], found["masks"], found["boxes"])
        ],
    }


def coco_results(image_id, found, cat_ids):
    """Detections of one image in COCO results format (RLE segmentations)."""
    return [{"image_id": int(image_id), "category_id": int(cat_ids[int(label)]), "segmentation": encode_rle(mask),
             "bbox": [float(v) for v in box], "score": float(score)}
            for score, label, mask, box in zip(found["scores"], found["labels"], found["masks"], found["boxes"])]


def instance_colour(index):
    """A distinct RGB colour per instance index (golden-ratio hues)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(image, detections, class_names, *, score_thr=0.3, alpha=0.45, fps=None):
    """Draws masks (a colour per instance), contours, class name and score.

    The one drawer of the package: detections (predict, the runtime) and
    ground truth (`keras-solo inspect-data`: no scores, crowd regions grey
    and tagged "(crowd)"). Each mask is blended inside its box only, in
    uint16 integer arithmetic, so memory stays at one copy of the image plus
    one box-sized buffer; the label text scales with the image.

    Args:
        image: (h, w, 3) uint8 RGB.
        detections: dict masks (N, h, w), labels (N,), boxes (N, 4) COCO x, y,
            w, h (as `to_original` gives them); optional scores (N,) (drawn
            highest first, those below `score_thr` skipped), iscrowd (N,) and
            track_ids (N,) (`track.Tracker`: the colour follows the ID, which
            is drawn as ``#ID``).
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
    scores = detections.get("scores")
    track_ids = detections.get("track_ids")
    crowd = detections.get("iscrowd", np.zeros(len(detections["masks"]), bool))
    order = np.argsort(-np.asarray(scores)) if scores is not None else range(len(detections["masks"]))
    for rank, n in enumerate(order):
        if scores is not None and float(scores[n]) < score_thr:
            continue
        colour = (160, 160, 160) if crowd[n] else instance_colour(rank if track_ids is None else int(track_ids[n]))
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
        text = "" if track_ids is None else f"#{int(track_ids[n])} "
        text += class_name(detections["labels"][n], class_names)
        text += f" {float(scores[n]):.2f}" if scores is not None else ""
        text += " (crowd)" if crowd[n] else ""
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
        y_text = max(th + 2, y0)
        cv2.rectangle(canvas, (x0, y_text - th - 2), (x0 + tw + 2, y_text), tuple(int(c) for c in colour), -1)
        cv2.putText(canvas, text, (x0 + 1, y_text - 2), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(canvas, f"{fps:.1f} FPS", (6, int(18 * font / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, 1.5 * font,
                    (255, 255, 255), 2 * thickness, cv2.LINE_AA)
    return canvas


def overlay_names(paths):
    """One distinct overlay file name per source image, whatever the names.

    ``stem.jpg``; ``stem_ext.jpg`` when another source has the same stem
    (``a.png`` and ``a.jpg``); then ``_2``, ``_3``, ... until the name is
    free. Names are compared case-insensitively (``a.JPG`` and ``a.jpg`` on a
    case-insensitive file system are one file), so the map is collision-free
    by construction: ``a.png``, ``a_png.jpg``, ``a.jpg`` and ``A.PNG`` give
    four overlays.
    """
    parts = [os.path.splitext(os.path.basename(p)) for p in paths]
    stems = {}
    for stem, _ in parts:
        stems[stem.lower()] = stems.get(stem.lower(), 0) + 1
    taken, names = set(), []
    for stem, ext in parts:
        base = stem if stems[stem.lower()] == 1 else f"{stem}_{ext.lstrip('.').lower()}"
        name, n = f"{base}.jpg", 1
        while name.lower() in taken:
            n += 1
            name = f"{base}_{n}.jpg"
        taken.add(name.lower())
        names.append(name)
    return names
