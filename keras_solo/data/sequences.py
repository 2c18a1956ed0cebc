"""Synthetic video sequences with known identities, for measuring the tracker.

:func:`make_sequence` moves road objects, painted by the shapes of
:mod:`keras_solo.data.synthetic`, across one street background at a
constant-ish speed: they enter and leave the frame, grow as they come
nearer, and pass in front of each other (painted far first; each ground-truth
mask is the object's *visible* part). :func:`perturb` turns the ground truth
into the detection records a detector would give (dropped detections,
jittered boxes and masks, low scores, false positives), and
:func:`mot_metrics` scores tracks against the ground truth with py-motmetrics.
:func:`write_sequence` writes a sequence as a video file plus its
MOTChallenge ground truth, for a detector and tracker run on the video (the
runtime's ``track`` command); :func:`read_mot` reads MOTChallenge text (the
ground truth, or ``tracks_mot.txt``) back into per-frame records.

The same seed (and arguments) gives the same frames and records: the scene,
each object's appearance, each frame's noise and the perturbation each draw
from a random stream of their own.
"""

import os

import cv2
import numpy as np

from keras_solo.data.synthetic import (
    _CLASS_PROBS, _DRAW, _SIZE, CLASS_NAMES, _background, _finish, _Painter, _shadow, _texture,
)
from keras_solo.errors import SoloError
from keras_solo.runtime.detections import boxes_from_masks
from keras_solo.runtime.track import box_iou


def make_sequence(n_frames=100, n_objects=8, *, size=(256, 128), seed=0, spread=0.5, depth=(0.12, 0.6),
                  speed=(0.01, 0.04), min_area=20):
    """A synthetic video of moving road objects with ground-truth track IDs.

    Each object has a class (the frequencies of `synthetic`), a depth (its
    foot line: 0 at the horizon, 1 at the bottom edge; it sets the size and
    drifts slowly) and a horizontal speed in drawing units per frame (so
    near objects move more pixels) that wanders by 2% of itself per frame.
    Objects face the way they move.

    Args:
        n_frames: frames. Defaults to 100.
        n_objects: objects over the whole sequence. Defaults to 8.
        size: ``(W, H)``. Defaults to ``(256, 128)``.
        seed: random seed. Defaults to 0.
        spread: objects start centred in ``[-spread W, (1 + spread) W]``; 0
            starts them all inside the frame. Defaults to 0.5.
        depth: range of the depth, drawn log-uniform (far, small objects
            are common). Defaults to ``(0.12, 0.6)``.
        speed: range of the speed in drawing units (a unit is depth x H;
            a person is about 0.6 units tall) per frame. Defaults to
            ``(0.01, 0.04)``.
        min_area: an object whose visible area (px) is below this is not in
            that frame's ground truth. Defaults to 20.

    Returns:
        dict: ``frames`` (list of (H, W, 3) uint8 RGB), ``gt`` (a record per
        frame: ``track_ids`` (N,) from 1, ``labels`` (N,), ``boxes`` (N, 4)
        COCO ``x, y, w, h``, ``masks`` bool (N, H, W)) and ``class_names``.
    """
    width, height = (int(v) for v in size)
    if n_frames < 1 or n_objects < 0:
        raise ValueError(f"need n_frames >= 1 and n_objects >= 0, got {n_frames}, {n_objects}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E0]))
    horizon = height * rng.uniform(0.36, 0.44)
    background = _background(rng, width, height, horizon)
    labels = rng.choice(len(CLASS_NAMES), size=n_objects, p=_CLASS_PROBS)
    scale = np.array([_SIZE[CLASS_NAMES[c]] for c in labels])
    depths = np.exp(rng.uniform(np.log(depth[0]), np.log(depth[1]), n_objects))
    depth_rate = rng.normal(0.0, 0.002, n_objects)
    rate = rng.uniform(*speed, n_objects) * rng.choice([-1, 1], n_objects)
    cx = rng.uniform(-spread, 1 + spread, n_objects) * width

    frames, gt = [], []
    for index in range(n_frames):
        image = background.copy()
        owner = np.full((height, width), -1, np.int32)
        windows = {}
        for k in np.argsort(depths, kind="stable"):  # far first: nearer objects occlude
            unit, foot_y = depths[k] * height * scale[k], horizon + depths[k] * (height - horizon)
            # every shape fits within 1.1 units either side of its centre and 1 unit above its feet
            x0, x1 = max(0, int(cx[k] - 1.1 * unit)), min(width, int(cx[k] + 1.1 * unit) + 2)
            y0, y1 = max(0, int(foot_y - unit)), min(height, int(foot_y + 0.1 * unit) + 2)
            if x1 <= x0 or y1 <= y0:
                continue
            inst = {"label": int(labels[k]), "cx": cx[k] - x0, "foot_y": foot_y - y0, "unit": unit, "view": "side",
                    "facing": 1 if rate[k] > 0 else -1}
            sprite = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            look = np.random.default_rng(np.random.SeedSequence([seed, 1, int(k)]))  # the same look every frame
            _DRAW[labels[k]](_Painter(sprite, mask), look, inst)
            if mask.any():
                _shadow(image[y0:y1, x0:x1], inst)
                _texture(look, sprite, mask)
                region = mask.astype(bool)
                image[y0:y1, x0:x1][region] = sprite[region]
                owner[y0:y1, x0:x1][region] = k
                windows[k] = (slice(y0, y1), slice(x0, x1))
        frames.append(_finish(np.random.default_rng(np.random.SeedSequence([seed, 2, index])), image))
        ids = [k for k in sorted(windows) if np.count_nonzero(owner[windows[k]] == k) >= min_area]
        masks = np.zeros((len(ids), height, width), bool)
        for n, k in enumerate(ids):
            masks[n][windows[k]] = owner[windows[k]] == k
        boxes = boxes_from_masks(masks)
        boxes[:, 2:] -= boxes[:, :2]
        gt.append({"track_ids": np.array(ids, np.int64) + 1, "labels": labels[ids].astype(np.int64), "boxes": boxes,
                   "masks": masks})
        cx = cx + rate * depths * height * scale
        rate = rate * (1 + rng.normal(0.0, 0.02, n_objects))
        depths = np.clip(depths + depth_rate, depth[0], depth[1])
    return {"frames": frames, "gt": gt, "class_names": CLASS_NAMES}


def perturb(gt, *, drop=0.1, jitter=0.05, low_fraction=0.2, false_positives=0.0, seed=0):
    """Detection records made from ground truth, as an imperfect detector would give them.

    Args:
        gt: the ``gt`` list of `make_sequence`.
        drop: fraction of objects left out of each frame. Defaults to 0.1.
        jitter: the box centre moves, and its width and height scale, by
            normal errors with this standard deviation as a fraction of the
            size; the mask is scaled and moved with it, so the box stays the
            mask's. Defaults to 0.05.
        low_fraction: fraction of detections scored in ``[0.1, 0.5)``
            (ByteTrack's low-score band); the rest get ``[0.5, 1)``.
            Defaults to 0.2.
        false_positives: mean number per frame (Poisson) of detections of no
            object: an ellipse of a random class scored in ``[0.1, 0.7)``.
            Defaults to 0.
        seed: random seed. Defaults to 0.

    Returns:
        list of records, one per frame: ``scores`` float32, ``labels``,
        ``boxes`` COCO ``x, y, w, h`` (the masks' boxes), ``masks`` bool.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    records = []
    for truth in gt:
        height, width = truth["masks"].shape[1:]
        masks, labels, scores = [], [], []
        for mask, box, label in zip(truth["masks"], truth["boxes"], truth["labels"]):
            if rng.random() < drop:
                continue
            x, y, w, h = (int(round(float(v))) for v in box)
            new_w, new_h = (max(1, int(round(v * (1 + rng.normal(0.0, jitter))))) for v in (w, h))
            centre = np.array([x + w / 2, y + h / 2]) + rng.normal(0.0, jitter, 2) * (w, h)
            crop = cv2.resize(mask[y:y + h, x:x + w].astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
            masks.append(_place(crop, centre, (height, width)))
            labels.append(int(label))
            scores.append(rng.uniform(0.1, 0.5) if rng.random() < low_fraction else rng.uniform(0.5, 1.0))
        for _ in range(rng.poisson(false_positives)):
            blob = np.zeros((height, width), np.uint8)
            axes = (int(rng.uniform(0.02, 0.1) * width) + 1, int(rng.uniform(0.05, 0.2) * height) + 1)
            cv2.ellipse(blob, (int(rng.uniform(0, width)), int(rng.uniform(0, height))), axes, 0, 0, 360, 1, -1)
            masks.append(blob.astype(bool))
            labels.append(int(rng.integers(len(CLASS_NAMES))))
            scores.append(rng.uniform(0.1, 0.7))
        masks = np.array(masks, bool).reshape(-1, height, width)
        boxes = boxes_from_masks(masks)
        keep = boxes[:, 2] > boxes[:, 0]  # a mask scaled or moved out of the frame is no detection
        boxes[:, 2:] -= boxes[:, :2]
        records.append({"scores": np.array(scores, np.float32)[keep], "labels": np.array(labels, np.int64)[keep],
                        "boxes": boxes[keep], "masks": masks[keep]})
    return records


def _place(crop, centre, shape):
    """A full-frame bool mask holding `crop` centred at `centre`, cut by the frame edges."""
    out = np.zeros(shape, bool)
    h, w = crop.shape
    x0, y0 = int(round(centre[0] - w / 2)), int(round(centre[1] - h / 2))
    left, top = max(x0, 0), max(y0, 0)
    right, bottom = min(x0 + w, shape[1]), min(y0 + h, shape[0])
    if right > left and bottom > top:
        out[top:bottom, left:right] = crop[top - y0:bottom - y0, left - x0:right - x0] > 0
    return out


def mot_metrics(gt, tracked, *, iou=0.5):
    """MOTA, IDF1 and ID switches of tracks against ground truth (py-motmetrics).

    A track box matches a ground-truth box at box IoU >= `iou` (the
    MOTChallenge rule). The IoU is computed here: motmetrics 1.4's
    ``iou_matrix`` calls ``np.asfarray``, gone in numpy 2.

    Args:
        gt: per frame, a record with ``track_ids`` and ``boxes`` (``x, y, w, h``).
        tracked: per frame, what `Tracker.update` returned.
        iou: least IoU of a match. Defaults to 0.5.

    Returns:
        dict: ``mota``, ``idf1``, ``id_switches``, ``frames``, ``objects``
        (ground-truth boxes), ``false_positives``, ``misses``.

    Raises:
        SoloError: motmetrics is not installed.
    """
    try:
        import motmetrics
    except ImportError:
        raise SoloError("motmetrics: not installed (pip install motmetrics)") from None
    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for truth, found in zip(gt, tracked):
        a, b = (np.asarray(r["boxes"], np.float64).reshape(-1, 4).copy() for r in (truth, found))
        a[:, 2:] += a[:, :2]
        b[:, 2:] += b[:, :2]
        overlap = box_iou(a, b)
        accumulator.update(list(truth["track_ids"]), list(found["track_ids"]),
                           np.where(overlap >= iou, 1.0 - overlap, np.nan))
    names = {"mota": "mota", "idf1": "idf1", "num_switches": "id_switches", "num_frames": "frames",
             "num_objects": "objects", "num_false_positives": "false_positives", "num_misses": "misses"}
    row = motmetrics.metrics.create().compute(accumulator, metrics=list(names), name="all").iloc[0]
    return {key: float(row[name]) if key in ("mota", "idf1") else int(row[name]) for name, key in names.items()}


def write_sequence(sequence, path, *, fps=30.0, codec="FFV1"):
    """Writes a `make_sequence` result as a video file and its ground truth.

    The video holds the frames exactly (FFV1, lossless, by default: the
    pixels a detector sees are the ones the synthetic training images have);
    the ground truth goes next to it as ``<stem>_gt.txt`` in MOTChallenge's
    ``gt.txt`` layout: ``frame,id,x,y,w,h,1,class,1`` per visible object
    (frame and id from 1, class = label + 1, the box of the visible mask).

    Args:
        sequence: what `make_sequence` returned.
        path: the video file (``.avi`` for FFV1; ``.mp4`` with ``codec="mp4v"``).
        fps: the video's frame rate. Defaults to 30.
        codec: OpenCV FourCC. Defaults to ``"FFV1"``.

    Returns:
        (video path, ground-truth path).

    Raises:
        SoloError: OpenCV cannot write the video, or it does not read back
            with every frame.
    """
    frames = sequence["frames"]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height))
    if not writer.isOpened():
        raise SoloError(f"{path}: cannot write the video (the {codec} encoder did not open)")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    check = cv2.VideoCapture(os.fspath(path))
    count = int(check.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    check.release()
    if count != len(frames):
        raise SoloError(f"{path}: the video reads back with {count} of {len(frames)} frames")
    gt_path = os.path.splitext(os.fspath(path))[0] + "_gt.txt"
    lines = [f"{index + 1},{int(i)},{x:.0f},{y:.0f},{w:.0f},{h:.0f},1,{int(label) + 1},1"
             for index, truth in enumerate(sequence["gt"])
             for i, label, (x, y, w, h) in zip(truth["track_ids"], truth["labels"], truth["boxes"])]
    with open(gt_path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return os.fspath(path), gt_path


def read_mot(path, n_frames):
    """MOTChallenge text (``frame,id,x,y,w,h,score,...``, frames from 1) as per-frame records.

    Args:
        path: a ground-truth file of `write_sequence` or a ``tracks_mot.txt``.
        n_frames: frames in the sequence: frames with no line get empty
            records; lines past it are an error.

    Returns:
        list of ``n_frames`` records: ``track_ids`` (N,) int64, ``boxes``
        (N, 4) float64 ``x, y, w, h``, ``scores`` (N,) float64 (the 7th
        column), in the file's order.

    Raises:
        SoloError: a line that is not MOTChallenge text, or a frame outside
            ``1..n_frames``.
    """
    rows = {index: [] for index in range(n_frames)}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.split(",")[:7]]
                frame = int(values[0]) - 1
                if len(values) < 7:
                    raise ValueError
            except ValueError:
                raise SoloError(f"{path}:{number}: not a MOTChallenge line (frame,id,x,y,w,h,score,...)") from None
            if frame not in rows:
                raise SoloError(f"{path}:{number}: frame {frame + 1} outside 1..{n_frames}")
            rows[frame].append(values[1:7])
    records = []
    for index in range(n_frames):
        values = np.asarray(rows[index], np.float64).reshape(-1, 6)
        records.append({"track_ids": values[:, 0].astype(np.int64), "boxes": values[:, 1:5],
                        "scores": values[:, 5]})
    return records
