"""Multi-object tracking of instance masks: ByteTrack (Zhang et al.,
"ByteTrack: Multi-Object Tracking by Associating Every Detection Box", ECCV
2022) on the detection records of `detections.to_original`.

`Tracker.update(found)` takes one frame's record (scores, labels, boxes COCO
x, y, w, h, masks bool (N, h, w) or absent) and returns the same arrays for
the objects on confirmed tracks, plus ``track_ids`` (stable, from 1) and
``states``. numpy only, usable on any sequence of records; `mot_lines` and
`track_record` write the MOTChallenge text and the per-frame JSON.

Each frame:

1. every track's box moves on by its velocity (an alpha-beta filter on the
   box centre; the size is smoothed); its last mask moves with it by whole
   pixels;
2. stage one: the high-score detections (``score >= high_thr``) are matched
   to the confirmed and lost tracks, those left to the tentative tracks;
3. stage two: the low-score detections (``low_thr <= score < high_thr``) are
   matched to the tracks still unmatched, at a stricter IoU: they keep a
   track through occlusion and blur but never start one (ByteTrack offers
   them the confirmed tracks only; lost ones too recover more objects after
   a missed frame on the synthetic sequences);
4. unmatched high-score detections with ``score >= new_thr`` start tentative
   tracks.

A pair is admitted when its box IoU (the track's predicted box against the
detection's) is above the stage's threshold and, with ``per_class``, the
classes agree; a lost track is admitted also on the IoU of both boxes
enlarged (``lost_buffer``), to find an object again as it comes out of an
occlusion. Among admitted pairs the optimal assignment
(`linear_assignment`) maximises the summed similarity: mask IoU (the shifted
mask against the detection's, counted in the overlap of their boxes), box
IoU, or their mean (``iou``; box IoU wherever a side has no mask). Box IoU
admits because it survives mask noise on small, thin objects; masks decide
between overlapping candidates, and are compared only there (a pair alone in
its row and column is matched whatever its similarity).

States: TENTATIVE (reported only with ``update(..., tentative=True)``)
becomes CONFIRMED after ``min_hits`` matched frames in a row (at once in the
first frame after construction or `reset`) and is removed when it misses a
frame. A CONFIRMED track missing a frame becomes LOST: reported at its
predicted box and mask for ``coast`` frames, matched by both stages at its
predicted place, removed after ``buffer`` frames without a match.
"""

import dataclasses
import math

import numpy as np

from keras_solo.runtime.detections import class_name, encode_rle

TENTATIVE, CONFIRMED, LOST = 1, 2, 3
STATE_NAMES = {TENTATIVE: "tentative", CONFIRMED: "confirmed", LOST: "lost"}
IOU_MODES = ("mask", "box", "mask+box")


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """The tracker's parameters.

    Defaults follow ByteTrack's MOT17 settings where it has one (scores: high
    0.5, low 0.1, new 0.6; box IoU: 0.2 in stage one, 0.5 in stage two; a
    30-frame buffer; confirmation on the second hit); the rest were chosen on
    the synthetic sequences of `keras_solo.data.sequences`
    (benchmarks/track_synthetic.py).

    Attributes:
        high_thr: detections scoring at least this enter stage one. 0.5.
        low_thr: detections scoring below this are ignored; those in
            ``[low_thr, high_thr)`` enter stage two only. 0.1.
        new_thr: an unmatched high-score detection starts a track from this
            score on. 0.6.
        match_iou: box IoU above which a pair is admitted in stage one. 0.2.
        low_match_iou: the same in stage two (low-score detections). 0.5.
        buffer: frames a lost track is kept for re-identification. 30.
        min_hits: matched frames in a row that confirm a track (1: at once). 2.
        coast: a lost track is reported, at its predicted box and mask
            (state LOST, its last score), for this many frames after its
            last match, so one missing detection does not break the track's
            output. 0: only matched tracks, as ByteTrack. 1.
        lost_buffer: a lost track is admitted also on the IoU of both boxes
            enlarged by this times their width and height on every side
            (the buffered IoU of C-BIoU, Yang et al., WACV 2023): an object
            coming out of an occlusion, its visible box cut or shifted,
            finds its track again. 0: plain IoU. 1.0 (on the synthetic
            sequences IDF1 0.911 -> 0.938, ID switches 9 -> 6).
        per_class: a track only matches detections of its class. True.
        iou: what ranks the admitted pairs: ``"mask"`` (mask IoU), ``"box"``
            or ``"mask+box"`` (their mean); box IoU where a side has no mask.
            ``"mask"``.
        alpha: the filter's gain on the box centre and size (1: take each
            detection as it is). 0.8.
        beta: the filter's gain on the velocity; small, as a visible box
            that an occluder cuts moves its centre without the object
            moving. 0.1.
    """

    high_thr: float = 0.5
    low_thr: float = 0.1
    new_thr: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    buffer: int = 30
    min_hits: int = 2
    coast: int = 1
    lost_buffer: float = 1.0
    per_class: bool = True
    iou: str = "mask"
    alpha: float = 0.8
    beta: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.low_thr <= self.high_thr <= self.new_thr:
            raise ValueError(f"need 0 <= low_thr <= high_thr <= new_thr, got {self.low_thr}, {self.high_thr}, "
                             f"{self.new_thr}")
        for name in ("match_iou", "low_match_iou", "alpha", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.lost_buffer < 0:
            raise ValueError(f"lost_buffer must be >= 0, got {self.lost_buffer}")
        if self.buffer < 0 or self.min_hits < 1 or not 0 <= self.coast <= self.buffer:
            raise ValueError(f"need buffer >= 0, min_hits >= 1 and 0 <= coast <= buffer, got {self.buffer}, "
                             f"{self.min_hits}, {self.coast}")
        if self.iou not in IOU_MODES:
            raise ValueError(f"iou must be one of {IOU_MODES}, got {self.iou!r}")


def linear_assignment(cost, limit=None):
    """Optimal assignment of rows to columns (the Hungarian method).

    Without `limit` every row (or every column, when there are more rows than
    columns) is matched and the summed cost is minimal. With `limit` only
    pairs with ``cost < limit`` may be matched and the sum of
    ``cost - limit`` over the matches is minimal: a pair is taken where it
    beats leaving both unmatched (lapjv's ``cost_limit``, as ByteTrack uses).

    Args:
        cost: (n, m) array; with `limit`, NaN or inf marks a forbidden pair.
        limit: None or a float.

    Returns:
        (rows, cols): int arrays of the matched pairs, by row.
    """
    cost = np.asarray(cost, np.float64)
    if limit is None:
        rows, cols, work = np.arange(cost.shape[0]), np.arange(cost.shape[1]), cost
    else:
        allowed = cost < limit  # False for NaN
        rows, cols = np.flatnonzero(allowed.any(1)), np.flatnonzero(allowed.any(0))
        work = np.where(allowed, cost - limit, 0.0)[rows[:, None], cols]  # <= 0: leaving a pair out costs 0
    if work.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flip = work.shape[0] > work.shape[1]
    work = work.T if flip else work
    best = work.argmin(1)  # every row takes its cheapest column: optimal when they are all different
    pick = best if len(set(best.tolist())) == len(best) else _hungarian(work)
    r, c = (pick, np.arange(len(pick))) if flip else (np.arange(len(pick)), pick)
    order = np.argsort(r)
    r, c = rows[r[order]], cols[c[order]]
    if limit is not None:
        keep = cost[r, c] < limit
        r, c = r[keep], c[keep]
    return r, c


def _hungarian(cost):
    """Column of each row in a minimum-cost assignment of an (n, m) matrix, n <= m.

    The Hungarian method as shortest augmenting paths with potentials
    (O(n^2 m), the form LAPJV builds on): row i joins by a Dijkstra search
    over the reduced costs ``cost[i, j] - u[i] - v[j]``, vectorised over the
    columns.
    Index 0 of ``v``, ``owner`` and ``way`` is a virtual column.
    """
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # row (1-based) holding each column; 0: free
    way = np.zeros(m + 1, np.int64)  # previous column on the shortest path
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        dist = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            reduced = cost[owner[j0] - 1] - u[owner[j0]] - v[1:]
            closer = ~used[1:] & (reduced < dist[1:])
            dist[1:][closer] = reduced[closer]
            way[1:][closer] = j0
            free_dist = np.where(used[1:], np.inf, dist[1:])
            j1 = int(np.argmin(free_dist)) + 1
            delta = free_dist[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            dist[~used] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pick = np.zeros(n, np.int64)
    taken = np.flatnonzero(owner[1:]) + 1
    pick[owner[taken] - 1] = taken - 1
    return pick


def box_iou(a, b):
    """IoU of every box of `a` (n, 4) with every box of `b` (m, 4), ``x1, y1, x2, y2``: (n, m)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    inter = np.maximum(wh[..., 0], 0.0) * np.maximum(wh[..., 1], 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class Track:
    """One tracked object: its state, its filtered box and velocity, its last mask.

    Plain floats, not small numpy arrays: a frame updates tens of tracks and
    numpy's per-call cost would dominate.

    Attributes:
        track_id: the ID, from 1, never reused until `Tracker.reset`.
        label: the class of the detection that started it.
        state: TENTATIVE, CONFIRMED or LOST.
        hits: matched frames in a row.
        missed: frames since the last match.
        score: the score of the last matched detection.
        box: the filtered box, centre x, y and w, h, predicted to the current frame.
        velocity: the centre's pixels per frame, x and y; None until the
            second match.
    """

    __slots__ = ("track_id", "label", "state", "hits", "missed", "score", "box", "velocity", "mask", "mask_at",
                 "mask_centre", "area")

    def __init__(self, track_id, label, state, box, score, crop):
        self.track_id, self.label, self.state, self.score = track_id, label, state, score
        self.hits, self.missed = 1, 0
        x, y, w, h = box
        self.box = [x + w / 2, y + h / 2, w, h]
        self.velocity = None
        self._keep_mask(box, crop)

    def _keep_mask(self, box, crop):
        """Keeps a detection's mask (cropped to its box) and where it was."""
        self.mask, self.mask_at, self.area = (None, None, 0) if crop is None else (crop[1].copy(), crop[0], crop[2])
        self.mask_centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)

    def xyxy(self):
        """The predicted box, ``x1, y1, x2, y2``."""
        cx, cy, w, h = self.box
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def xywh(self):
        """The predicted box, COCO ``x, y, w, h``."""
        cx, cy, w, h = self.box
        return cx - w / 2, cy - h / 2, w, h

    def predict(self):
        """Moves the box one frame on."""
        if self.velocity:
            self.box[0] += self.velocity[0]
            self.box[1] += self.velocity[1]

    def correct(self, box, score, crop, config):
        """Takes a matched detection (box ``x, y, w, h``): the alpha-beta update.

        ``r = z - prediction`` (box centres); ``centre += alpha r``;
        ``velocity += beta r / k`` with k the frames since the last match
        (the second match sets ``velocity = r / k``);
        ``size += alpha (z_size - size)``.
        """
        x, y, w, h = box
        frames = self.missed + 1
        gain = config.beta if self.velocity else 1.0
        self.velocity = self.velocity or [0.0, 0.0]
        for axis, (z, size) in enumerate(((x + w / 2, w), (y + h / 2, h))):
            residual = z - self.box[axis]
            self.box[axis] += config.alpha * residual
            self.velocity[axis] += gain * residual / frames
            self.box[axis + 2] += config.alpha * (size - self.box[axis + 2])
        self._keep_mask(box, crop)
        self.score = score
        self.hits, self.missed = self.hits + 1, 0
        if self.state == LOST or (self.state == TENTATIVE and self.hits >= config.min_hits):
            self.state = CONFIRMED

    def _mask_origin(self):
        """Top-left pixel of the last mask shifted to the predicted centre."""
        return (self.mask_at[0] + math.floor(self.box[0] - self.mask_centre[0] + 0.5),
                self.mask_at[1] + math.floor(self.box[1] - self.mask_centre[1] + 0.5))

    def predicted_mask(self, shape):
        """The last mask shifted to the predicted centre, in a bool frame of `shape` (h, w)."""
        out = np.zeros(shape, bool)
        if self.mask is not None:
            tx, ty = self._mask_origin()
            x0, y0 = max(tx, 0), max(ty, 0)
            x1, y1 = min(tx + self.mask.shape[1], shape[1]), min(ty + self.mask.shape[0], shape[0])
            if x1 > x0 and y1 > y0:
                out[y0:y1, x0:x1] = self.mask[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
        return out

    def mask_iou(self, crop):
        """IoU of the last mask, shifted to the predicted centre, with a detection's ``(at, mask, area)``."""
        tx, ty = self._mask_origin()
        (dx, dy), other, area = crop
        x0, y0 = max(tx, dx), max(ty, dy)
        x1 = min(tx + self.mask.shape[1], dx + other.shape[1])
        y1 = min(ty + self.mask.shape[0], dy + other.shape[0])
        inter = 0 if x1 <= x0 or y1 <= y0 else int(np.count_nonzero(
            self.mask[y0 - ty:y1 - ty, x0 - tx:x1 - tx] & other[y0 - dy:y1 - dy, x0 - dx:x1 - dx]))
        union = self.area + area - inter
        return inter / union if union else 0.0


class Tracker:
    """ByteTrack for instance masks (the rules are in the module doc).

    Args:
        config: a `TrackerConfig`; or leave it out and give its fields as
            keyword arguments, e.g. ``Tracker(buffer=60, iou="box")``.

    Attributes:
        tracks: every live `Track` (tentative, confirmed and lost).
        frame: frames seen since construction or `reset`.
    """

    def __init__(self, config=None, **options):
        self.config = dataclasses.replace(config or TrackerConfig(), **options)
        self.reset()

    def reset(self):
        """Forgets every track; IDs start again from 1."""
        self.tracks = []
        self.frame = 0
        self._next_id = 1

    def update(self, found, *, tentative=False):
        """Tracks one frame.

        Args:
            found: the frame's detections: scores (N,), labels (N,), boxes
                (N, 4) COCO ``x, y, w, h``, optional masks bool (N, h, w)
                whose boxes are `boxes` (as `detections.to_original` gives).
            tentative: also report the tentative tracks matched this frame.

        Returns:
            dict, ordered by track ID: scores, labels (int64), boxes and
            masks (when `found` has them): the matched detection's, or for a
            coasting track (state LOST) its last score, its label, its
            predicted box and its shifted last mask; plus ``track_ids``,
            ``states`` and ``index`` (the row of `found`, -1 for a coasting
            track), int64 (N,). ``masks`` is a list of (h, w) arrays: the
            detections' own (no copy), a coasting track's shifted mask.
        """
        cfg = self.config
        self.frame += 1
        scores = np.asarray(found["scores"], np.float64).reshape(-1)
        labels = np.asarray(found["labels"]).astype(np.int64).reshape(-1)
        boxes = np.asarray(found["boxes"], np.float64).reshape(-1, 4)
        masks = found.get("masks")
        rows = boxes.tolist()
        crops = [_crop(masks[n], rows[n]) if masks is not None and scores[n] >= cfg.low_thr else None
                 for n in range(len(rows))]
        frame = (boxes, labels, crops)
        for track in self.tracks:
            track.predict()

        high = np.flatnonzero(scores >= cfg.high_thr)
        low = np.flatnonzero((scores >= cfg.low_thr) & (scores < cfg.high_thr))
        matches, high = self._match([t for t in self.tracks if t.state != TENTATIVE], high, frame, cfg.match_iou)
        more, high = self._match([t for t in self.tracks if t.state == TENTATIVE], high, frame, cfg.match_iou)
        matches += more
        matched = {id(t) for t, _ in matches}
        more, _ = self._match([t for t in self.tracks if id(t) not in matched], low, frame, cfg.low_match_iou)
        matches += more
        matched.update(id(t) for t, _ in more)

        for track, n in matches:
            track.correct(rows[n], float(scores[n]), crops[n], cfg)
        kept = []
        for track in self.tracks:
            if id(track) not in matched:
                track.missed += 1
                track.hits = 0
                if track.state == TENTATIVE or track.missed > cfg.buffer:
                    continue
                track.state = LOST
            kept.append(track)
        for n in high[scores[high] >= cfg.new_thr].tolist():
            state = CONFIRMED if self.frame == 1 or cfg.min_hits <= 1 else TENTATIVE
            track = Track(self._next_id, int(labels[n]), state, rows[n], float(scores[n]), crops[n])
            self._next_id += 1
            kept.append(track)
            matches.append((track, n))
        self.tracks = kept

        shown = sorted([(t.track_id, n, t) for t, n in matches if t.state == CONFIRMED or tentative]
                       + [(t.track_id, -1, t) for t in kept if t.state == LOST and t.missed <= cfg.coast])
        return _output(found, shown)

    def _match(self, tracks, dets, frame, threshold):
        """Optimal matching of `tracks` to the detections `dets` (indices into `frame`).

        Returns:
            ([(track, detection index)], the unmatched detection indices).
        """
        if not tracks or not len(dets):
            return [], dets
        cfg = self.config
        boxes, labels, crops = frame
        xyxy = boxes[dets]
        xyxy[:, 2:] += xyxy[:, :2]
        predicted = np.array([t.xyxy() for t in tracks])
        sim = box_iou(predicted, xyxy)
        lost = np.array([t.state == LOST for t in tracks])
        if cfg.lost_buffer and lost.any():
            sim[lost] = np.maximum(sim[lost], box_iou(_grow(predicted[lost], cfg.lost_buffer),
                                                      _grow(xyxy, cfg.lost_buffer)))
        admitted = sim > threshold
        if cfg.per_class:
            admitted &= np.array([t.label for t in tracks])[:, None] == labels[dets][None, :]
        if cfg.iou != "box":
            rivals = admitted & ((admitted.sum(1, keepdims=True) > 1) | (admitted.sum(0, keepdims=True) > 1))
            for i, j in zip(*np.nonzero(rivals)):
                if tracks[i].mask is not None and crops[dets[j]] is not None:
                    iou = tracks[i].mask_iou(crops[dets[j]])
                    sim[i, j] = iou if cfg.iou == "mask" else 0.5 * (iou + sim[i, j])
        # cost 1 - sim <= 1 < limit: any admitted pair may be matched, and the summed similarity is maximal
        rows, cols = linear_assignment(np.where(admitted, 1.0 - sim, np.inf), limit=1.0 + 1e-6)
        left = np.ones(len(dets), bool)
        left[cols] = False
        return [(tracks[i], int(dets[j])) for i, j in zip(rows.tolist(), cols.tolist())], dets[left]


def _output(found, shown):
    """The output record: per (track ID, detection index, track) of `shown`, the
    detection's row, or for index -1 (a coasting track) the track's prediction.
    Masks are a list of the detections' own (h, w) arrays, not a stacked copy:
    copying full-size masks cost most of an update (3.7 of 4.8 ms at 1280x720
    and 20 objects)."""
    index = np.array([n for _, n, _ in shown], np.int64).reshape(-1)
    out = {}
    for key in ("scores", "labels", "boxes"):
        source = np.asarray(found[key]) if key != "labels" else np.asarray(found[key]).astype(np.int64)
        out[key] = source[np.maximum(index, 0)] if len(source) else np.zeros((len(index),) + source.shape[1:],
                                                                              source.dtype)
    masks = found.get("masks")
    if masks is not None:
        shape = np.shape(masks)[1:]
        out["masks"] = [masks[n] if n >= 0 else shown[row][2].predicted_mask(shape)
                        for row, n in enumerate(index.tolist())]
    for row in np.flatnonzero(index < 0).tolist():
        track = shown[row][2]
        out["scores"][row], out["labels"][row], out["boxes"][row] = track.score, track.label, track.xywh()
    out["track_ids"] = np.array([i for i, _, _ in shown], np.int64)
    out["states"] = np.array([t.state for _, _, t in shown], np.int64)
    out["index"] = index
    return out


def _grow(xyxy, factor):
    """Boxes ``x1, y1, x2, y2`` enlarged by `factor` times their width / height on every side."""
    pad = (xyxy[:, 2:] - xyxy[:, :2]) * factor
    return np.concatenate([xyxy[:, :2] - pad, xyxy[:, 2:] + pad], axis=1)


def _crop(mask, box):
    """A detection's mask inside its box (``x, y, w, h``): ``((x0, y0), mask crop, pixel count)``."""
    height, width = mask.shape
    x0, y0 = min(max(math.floor(box[0]), 0), width), min(max(math.floor(box[1]), 0), height)
    x1 = min(max(math.ceil(box[0] + box[2]), x0), width)
    y1 = min(max(math.ceil(box[1] + box[3]), y0), height)
    crop = np.asarray(mask[y0:y1, x0:x1], bool)
    return (x0, y0), crop, int(np.count_nonzero(crop))


def mot_lines(frame_index, tracked):
    """MOTChallenge text lines of one frame: ``frame,id,x,y,w,h,score,-1,-1,-1``.

    Args:
        frame_index: the frame's position in the sequence, from 0; the lines
            hold ``frame_index + 1`` (MOTChallenge counts frames from 1).
        tracked: what `Tracker.update` returned.

    Returns:
        list of str, without line ends.
    """
    return [f"{frame_index + 1},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{float(s):.4f},-1,-1,-1"
            for i, (x, y, w, h), s in zip(tracked["track_ids"], np.asarray(tracked["boxes"], float),
                                         tracked["scores"])]


def track_record(frame_index, tracked, class_names):
    """One frame's JSON-ready record: frame (from 1, as `mot_lines`), and per
    instance the track ID, label, class, score, box (COCO ``x, y, w, h``),
    state ("confirmed", or "lost" for a coasting track's prediction) and the
    RLE mask when `tracked` has masks."""
    masks = tracked.get("masks")
    instances = []
    for n, (track_id, label, score, box) in enumerate(zip(tracked["track_ids"], tracked["labels"],
                                                          tracked["scores"], tracked["boxes"])):
        instance = {"track_id": int(track_id), "label": int(label), "class": class_name(label, class_names),
                    "score": round(float(score), 4), "bbox_xywh": [round(float(v), 1) for v in box]}
        if "states" in tracked:
            instance["state"] = STATE_NAMES[int(tracked["states"][n])]
        if masks is not None:
            instance["segmentation"] = encode_rle(masks[n])
        instances.append(instance)
    return {"frame": frame_index + 1, "instances": instances}
