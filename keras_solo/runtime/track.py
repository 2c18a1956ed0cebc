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
   box centre; the size is smoothed), a lost track's too, for every frame it
   is lost; its last mask moves with it by whole pixels;
2. stage one: the high-score detections (``score >= high_thr``) are matched
   to the confirmed and lost tracks;
3. recovery: the lost tracks still unmatched are offered the high-score
   detections still unmatched in a search region that grows with the frames
   lost (``lost_buffer``, ``lost_growth``, ``size_memory``), to find an
   object again as it comes out of an occlusion; by overlap, or by
   containment when it comes back as a sliver (``contain``);
4. the high-score detections left are matched to the tentative tracks;
5. stage two: the low-score detections (``low_thr <= score < high_thr``) are
   matched to every track still unmatched, at a stricter IoU: they keep a
   track through occlusion and blur but never start one (ByteTrack offers
   them the confirmed tracks only; lost ones too recover more objects after
   a missed frame on the synthetic sequences);
6. unmatched high-score detections with ``score >= new_thr`` start tentative
   tracks.

A pair is admitted when its box IoU (the track's predicted box against the
detection's) is above the stage's threshold and, with ``per_class``, the
classes agree. In the recovery step the IoU is that of both boxes enlarged
on every side by ``lost_buffer + lost_growth * (frames lost - 1)`` times
their width and height (the buffered IoU of C-BIoU, Yang et al., WACV 2023),
the track's box taken at its predicted centre with the largest width and
height of its last ``size_memory`` matches: the visible box of an object
that an occluder covers shrinks before it is lost, and the prediction's
error grows with the time lost. A pair is admitted there too, whatever its
IoU, by containment: at least ``contain`` of the detection's box lies in the
track's enlarged search box, the classes agree, the box does not touch the
image border (an object entering the frame is a sliver at the border) and
no tentative track admits the detection (they match after the recovery
step): an object coming out from behind a vehicle is a strip of a few
pixels, under a fifth of the track's box, which no IoU gate admits. In each
step a pair alone in its row and column of the admitted pairs is matched at
once, whatever its similarity;
among the rest, where every pair has a rival, the optimal assignment
(`linear_assignment`) maximises the summed similarity: mask IoU (the
track's last mask, a copy cropped to its box, shifted to the predicted
centre, against the detection's, counted in the overlap of their boxes), box
IoU, or their mean (``iou``; box IoU wherever a side has no mask); in the
recovery step the buffered IoU (a mask moved over many frames says little).
Box IoU admits because it survives mask noise on small, thin objects; masks
decide between overlapping candidates, and are compared only there.

States: TENTATIVE (reported only with ``update(..., tentative=True)``)
becomes CONFIRMED after ``min_hits`` matched frames in a row (at once in the
first frame after construction or `reset`) and is removed when it misses a
frame. A CONFIRMED track missing a frame becomes LOST: reported at its
predicted box and mask for ``coast`` frames, matched at its predicted place,
removed after ``buffer`` frames without a match.
"""

import collections
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
    0.5, low 0.1, new 0.6; box IoU: 0.2 in stage one, 0.5 in stage two;
    confirmation on the second hit); the rest were chosen on the synthetic
    sequences of `keras_solo.data.sequences` (benchmarks/track_synthetic.py):
    ``buffer``, ``lost_growth``, ``size_memory`` and ``contain`` on seeds
    100-139, not the seeds it reports (0-4); the older ones (``coast``,
    ``lost_buffer``, ``alpha``, ``beta``) on those. The IDF1 figures below
    are on seeds 100-139 with the benchmark's perturbed detections and every
    other parameter at its default.

    Attributes:
        high_thr: detections scoring at least this enter stage one. 0.5.
        low_thr: detections scoring below this are ignored; those in
            ``[low_thr, high_thr)`` enter stage two only. 0.1.
        new_thr: an unmatched high-score detection starts a track from this
            score on. 0.6.
        match_iou: box IoU above which a pair is admitted in stage one, for
            tentative tracks and (buffered) in the recovery step. 0.2.
        low_match_iou: the same in stage two (low-score detections). 0.5.
        buffer: frames a lost track is kept for re-identification. 60
            (ByteTrack: 30, with which objects hidden behind vehicles for
            30-60 frames came back under a new ID: IDF1 0.9405 against
            0.9500).
        min_hits: matched frames in a row that confirm a track (1: at once). 2.
        coast: a lost track is reported, at its predicted box and mask
            (state LOST, its last score), for this many frames after its
            last match, so one missing detection does not break the track's
            output. 0: only matched tracks, as ByteTrack. 1.
        lost_buffer: the recovery step enlarges both boxes by this times
            their width and height on every side, one frame after the last
            match. 0 with ``lost_growth`` 0: no recovery step (IDF1 0.9236).
            1.0.
        lost_growth: ... and by this much more for every further frame lost.
            0.05 (0: IDF1 0.9488).
        size_memory: the recovery step takes a lost track's box at the
            largest width and height of its last this many matches. 20
            (1: IDF1 0.9455).
        contain: the recovery step also admits a lost track and a
            high-score detection of its class when at least this share of
            the detection's box lies inside the track's enlarged search box
            (the box of the buffered IoU), unless the box touches the image
            border (the masks' shape gives the right and bottom borders;
            without masks only the left and top ones are known) or a
            tentative track admits the detection. 0: off (IDF1 0.9500).
            0.9 (0.9593, the same anywhere from 0.5 to 1.0: a sliver lies
            wholly inside or well outside; without the border test 0.9566,
            without the tentative-track test 0.9565, without both 0.9515).
        per_class: a track only matches detections of its class. True.
        iou: what ranks rival pairs in every step but recovery: ``"mask"``
            (mask IoU), ``"box"`` or ``"mask+box"`` (their mean); box IoU
            where a side has no mask. ``"mask"``.
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
    buffer: int = 60
    min_hits: int = 2
    coast: int = 1
    lost_buffer: float = 1.0
    lost_growth: float = 0.05
    size_memory: int = 20
    contain: float = 0.9
    per_class: bool = True
    iou: str = "mask"
    alpha: float = 0.8
    beta: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.low_thr <= self.high_thr <= self.new_thr:
            raise ValueError(f"need 0 <= low_thr <= high_thr <= new_thr, got {self.low_thr}, {self.high_thr}, "
                             f"{self.new_thr}")
        for name in ("match_iou", "low_match_iou", "contain", "alpha", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.lost_buffer < 0 or self.lost_growth < 0:
            raise ValueError(f"lost_buffer and lost_growth must be >= 0, got {self.lost_buffer}, "
                             f"{self.lost_growth}")
        if self.buffer < 0 or self.min_hits < 1 or not 0 <= self.coast <= self.buffer or self.size_memory < 1:
            raise ValueError(f"need buffer >= 0, min_hits >= 1, 0 <= coast <= buffer and size_memory >= 1, got "
                             f"{self.buffer}, {self.min_hits}, {self.coast}, {self.size_memory}")
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
        sizes: width and height of the last ``size_memory`` matched detections.
    """

    __slots__ = ("track_id", "label", "state", "hits", "missed", "score", "box", "velocity", "mask", "mask_at",
                 "mask_centre", "area", "sizes")

    def __init__(self, track_id, label, state, box, score, crop, size_memory=1):
        self.track_id, self.label, self.state, self.score = track_id, label, state, score
        self.hits, self.missed = 1, 0
        x, y, w, h = box
        self.box = [x + w / 2, y + h / 2, w, h]
        self.velocity = None
        self.sizes = collections.deque([(w, h)], maxlen=size_memory)
        self._keep_mask(box, crop)

    def _keep_mask(self, box, crop):
        """Keeps a detection's mask cropped to its box (a copy: the record's
        masks may be reused) and where it was; its pixel count waits until a
        mask IoU needs it."""
        self.mask, self.mask_at = (None, None) if crop is None else (crop[1].copy(), crop[0])
        self.area = None
        self.mask_centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)

    def xyxy(self):
        """The predicted box, ``x1, y1, x2, y2``."""
        cx, cy, w, h = self.box
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def xywh(self):
        """The predicted box, COCO ``x, y, w, h``."""
        cx, cy, w, h = self.box
        return cx - w / 2, cy - h / 2, w, h

    def search_box(self):
        """The box the recovery step enlarges: the predicted centre with the
        largest width and height of the last matches, ``x1, y1, x2, y2``."""
        w, h = max(max(s[0] for s in self.sizes), self.box[2]), max(max(s[1] for s in self.sizes), self.box[3])
        return self.box[0] - w / 2, self.box[1] - h / 2, self.box[0] + w / 2, self.box[1] + h / 2

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
        state = self.box
        rx, ry = x + w / 2 - state[0], y + h / 2 - state[1]
        if self.velocity:
            gain = config.beta / (self.missed + 1)
            self.velocity[0] += gain * rx
            self.velocity[1] += gain * ry
        else:
            self.velocity = [rx / (self.missed + 1), ry / (self.missed + 1)]
        alpha = config.alpha
        state[0] += alpha * rx
        state[1] += alpha * ry
        state[2] += alpha * (w - state[2])
        state[3] += alpha * (h - state[3])
        self.sizes.append((w, h))
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

    def mask_iou(self, crop, area):
        """IoU of the last mask, shifted to the predicted centre, with a
        detection's ``(at, mask)`` crop of `area` pixels."""
        if self.area is None:
            self.area = int(np.count_nonzero(self.mask))
        tx, ty = self._mask_origin()
        (dx, dy), other = crop
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
        high = scores >= cfg.high_thr
        low = (scores >= cfg.low_thr) & ~high
        tracks = self.tracks
        for track in tracks:
            track.predict()
        pairs = self._associate(boxes, labels, high, low, masks, rows) if tracks and len(rows) else []

        crop = (lambda n: None) if masks is None else (lambda n: _crop(masks[n], rows[n]))
        matched = [False] * len(tracks)
        free = high.copy()
        for i, n in pairs:
            tracks[i].correct(rows[n], float(scores[n]), crop(n), cfg)
            matched[i] = True
            free[n] = False
        kept = []
        for track, hit in zip(tracks, matched):
            if not hit:
                track.missed += 1
                track.hits = 0
                if track.state == TENTATIVE or track.missed > cfg.buffer:
                    continue
                track.state = LOST
            kept.append(track)
        shown = [(tracks[i].track_id, n, tracks[i]) for i, n in pairs if tracks[i].state == CONFIRMED or tentative]
        state = CONFIRMED if self.frame == 1 or cfg.min_hits <= 1 else TENTATIVE
        for n in np.flatnonzero(free & (scores >= cfg.new_thr)).tolist():
            track = Track(self._next_id, int(labels[n]), state, rows[n], float(scores[n]), crop(n), cfg.size_memory)
            self._next_id += 1
            kept.append(track)
            if state == CONFIRMED or tentative:
                shown.append((track.track_id, n, track))
        self.tracks = kept
        shown += [(t.track_id, -1, t) for t in kept if t.state == LOST and t.missed <= cfg.coast]
        return _output(found, sorted(shown, key=lambda s: s[0]))

    def _associate(self, boxes, labels, high, low, masks, rows):
        """The matches of this frame's detections to `self.tracks` (predicted):
        stage one, recovery, tentative tracks, stage two (the module doc).

        Returns:
            [(track index, detection index)].
        """
        cfg = self.config
        tracks = self.tracks
        predicted = np.array([t.box for t in tracks])
        predicted[:, :2] -= predicted[:, 2:] / 2
        predicted[:, 2:] += predicted[:, :2]
        found = boxes.copy()
        found[:, 2:] += found[:, :2]
        iou = box_iou(predicted, found)
        if cfg.per_class:
            track_labels = np.array([t.label for t in tracks])
            iou[track_labels[:, None] != labels] = 0.0
        states = np.array([t.state for t in tracks])
        tent = states == TENTATIVE
        free_tracks = np.ones(len(tracks), bool)
        free_dets = high | low
        pairs = []
        crops, areas = {}, {}
        rank = cfg.iou != "box" and masks is not None

        def step(rows_, cols_, gate, sim, rank_masks):
            """Optimal matching of the tracks `rows_` to the detections `cols_`
            among the admitted pairs `gate`, by similarity `sim` (both (rows, cols))."""
            row_n, col_n = gate.sum(1), gate.sum(0)
            lone = gate & (row_n == 1)[:, None] & (col_n == 1)
            i, j = np.nonzero(lone)
            if len(i) < np.count_nonzero(gate):  # the rest: every admitted pair has a rival
                rest_rows = np.flatnonzero(row_n.astype(bool) & ~lone.any(1))
                rest_cols = np.flatnonzero(col_n.astype(bool) & ~lone.any(0))
                rest = gate[rest_rows[:, None], rest_cols]
                sim = sim[rest_rows[:, None], rest_cols]
                if rank_masks:
                    for a, b in zip(*(v.tolist() for v in np.nonzero(rest))):
                        track, n = tracks[rows_[rest_rows[a]]], int(cols_[rest_cols[b]])
                        if track.mask is None:
                            continue
                        if n not in crops:
                            crops[n] = _crop(masks[n], rows[n])
                            areas[n] = int(np.count_nonzero(crops[n][1]))
                        value = track.mask_iou(crops[n], areas[n])
                        sim[a, b] = value if cfg.iou == "mask" else 0.5 * (value + sim[a, b])
                # cost 1 - sim <= 1 < limit: any admitted pair may be matched, and the summed similarity is maximal
                a, b = linear_assignment(np.where(rest, 1.0 - sim, np.inf), limit=1.0 + 1e-6)
                i, j = np.concatenate([i, rest_rows[a]]), np.concatenate([j, rest_cols[b]])
            i, j = rows_[i], cols_[j]
            free_tracks[i] = False
            free_dets[j] = False
            pairs.extend(zip(i.tolist(), j.tolist()))

        def stage(track_rows, det_cols, threshold):
            """`step` on the free tracks of `track_rows` and free detections of `det_cols` (bool) by box IoU."""
            rows_, cols_ = np.flatnonzero(track_rows & free_tracks), np.flatnonzero(det_cols & free_dets)
            if len(rows_) and len(cols_):
                sim = iou[rows_[:, None], cols_]
                gate = sim > threshold
                if gate.any():
                    step(rows_, cols_, gate, sim, rank)

        stage(~tent, high, cfg.match_iou)  # stage one: confirmed and lost tracks
        # recovery: lost tracks left, by the buffered IoU of their search boxes
        rows_ = np.flatnonzero((states == LOST) & free_tracks)
        cols_ = np.flatnonzero(high & free_dets)
        if len(rows_) and len(cols_) and (cfg.lost_buffer or cfg.lost_growth):
            pad = cfg.lost_buffer + cfg.lost_growth * (np.array([tracks[i].missed for i in rows_], np.float64) - 1)
            search = np.array([tracks[i].search_box() for i in rows_])
            sim = _buffered_iou(search, found[cols_], pad)
            gate = sim > cfg.match_iou
            if cfg.per_class:
                gate &= track_labels[rows_, None] == labels[cols_]
            if cfg.contain:
                # slivers: most of the detection inside the search box; not at the border, not a tentative track's
                dets = found[cols_]
                inside = (dets[:, 0] >= 1) & (dets[:, 1] >= 1)
                if masks is not None:
                    height, width = np.shape(masks)[1:]
                    inside &= (dets[:, 2] <= width - 1) & (dets[:, 3] <= height - 1)
                if tent.any():
                    inside &= ~(iou[tent][:, cols_] > cfg.match_iou).any(0)
                gate |= ((_contained(search, dets, pad) >= cfg.contain) & inside
                         & (track_labels[rows_, None] == labels[cols_]))
            if gate.any():
                step(rows_, cols_, gate, sim, False)
        stage(tent, high, cfg.match_iou)  # tentative tracks
        stage(free_tracks, low, cfg.low_match_iou)  # stage two: every track left, low-score detections
        return pairs


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


def _buffered_iou(tracks, found, pad):
    """IoU of every box of `tracks` (n, 4) with every box of `found` (m, 4),
    ``x1, y1, x2, y2``, both enlarged on every side by ``pad[i]`` times their
    width and height for track i (the centres stay): (n, m)."""
    grow = (0.5 + pad)[:, None, None]
    a, b = tracks[:, None], found[None]
    centre_a, half_a = (a[..., 2:] + a[..., :2]) / 2, (a[..., 2:] - a[..., :2]) * grow
    centre_b, half_b = (b[..., 2:] + b[..., :2]) / 2, (b[..., 2:] - b[..., :2]) * grow
    wh = np.minimum(centre_a + half_a, centre_b + half_b) - np.maximum(centre_a - half_a, centre_b - half_b)
    inter = np.maximum(wh, 0.0).prod(2)
    return inter / np.maximum(4 * (half_a.prod(2) + half_b.prod(2)) - inter, 1e-9)


def _contained(tracks, found, pad):
    """Share of the area of every box of `found` (m, 4) inside every box of
    `tracks` (n, 4), ``x1, y1, x2, y2``, each track's enlarged on every side by
    ``pad[i]`` times its width and height: (n, m)."""
    size = tracks[:, 2:] - tracks[:, :2]
    grow = np.asarray(pad, np.float64).reshape(-1, 1) * size
    region = np.concatenate([tracks[:, :2] - grow, tracks[:, 2:] + grow], 1)[:, None]
    b = found[None]
    wh = np.minimum(region[..., 2:], b[..., 2:]) - np.maximum(region[..., :2], b[..., :2])
    area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
    return np.maximum(wh, 0.0).prod(2) / np.maximum(area, 1e-9)


def _crop(mask, box):
    """A detection's mask inside its box (``x, y, w, h``): ``((x0, y0), mask crop)``, a view."""
    height, width = mask.shape
    x0, y0 = min(max(math.floor(box[0]), 0), width), min(max(math.floor(box[1]), 0), height)
    x1 = min(max(math.ceil(box[0] + box[2]), x0), width)
    y1 = min(max(math.ceil(box[1] + box[3]), y0), height)
    return (x0, y0), np.asarray(mask[y0:y1, x0:x1], bool)


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
