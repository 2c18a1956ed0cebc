"""SOLO inference: thresholds, maskness, Matrix NMS, top-K, undo letterbox.

The steps follow the original SOLO code (``SOLOHead.get_seg_single``) and
mmdet's ``SOLOHead`` defaults:

1. :func:`points_nms` per level: keep a category score only where it is the
   maximum of its 2x2 neighbourhood (up, left, up-left).
2. :func:`select_candidates`: the top-``nms_pre`` (cell, class) pairs over
   all levels; pairs scoring ``<= score_thr`` are marked invalid.
3. The model computes masks for the chosen cells only (`SOLODecoder.candidates`
   asks it for them).
4. :func:`maskness_rescore`: binarise at ``mask_thr``, drop masks whose area
   is not above ``min_area`` (SOLO: the level stride), multiply the score by
   the maskness (mean probability inside the binary mask).
5. :func:`matrix_nms`: decay scores of overlapping same-class masks.
6. :func:`decode` runs 4-5, drops scores ``< update_thr`` and keeps the
   top ``max_per_img``.
7. Outside the graph, ``keras_solo.runtime.detections.masks_to_original`` (numpy +
   cv2) undoes the letterbox and thresholds at the original image size.

Steps 1-6 use ``keras.ops`` only and static shapes: every result is a
fixed-size padded tensor with a ``valid`` mask, so they run in
``predict_step`` under ``tf.function``, convert to TFLite / ONNX and run on
JAX. Deviation from SOLO: SOLO keeps every pair above ``score_thr`` and applies
``nms_pre`` after maskness re-scoring; here the top-``k`` pairs are chosen on
the category score alone, because masks are computed only for chosen cells.

Reference:
    Wang et al., "SOLO: Segmenting Objects by Locations", arXiv:1912.04488;
    Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
    arXiv:2003.10152 (Matrix NMS, Sec. 3.4).
"""

import dataclasses

import keras
from keras import ops

from keras_solo.config import EvalConfig

_EVAL = EvalConfig()  # the defaults of SOLODecoder

_EPS = 1e-6


def points_nms(cate_probs):
    """Keeps category scores that are a 2x2 local maximum (SOLO ``points_nms``).

    SOLO applies ``max_pool2d(kernel=2, stride=1, padding=1)[:-1, :-1]`` to the
    sigmoid scores of each level and zeroes every score that is below the
    maximum of itself and its up, left and up-left neighbours.

    Args:
        cate_probs: (batch, S, S, C) sigmoid category probabilities of one level.

    Returns:
        (batch, S, S, C) float32: ``cate_probs`` where it is the local maximum,
        0 elsewhere.
    """
    probs = ops.cast(cate_probs, "float32")
    # Pad top and left with a value below any probability.
    padded = ops.pad(probs, [[0, 0], [1, 0], [1, 0], [0, 0]], constant_values=-1.0)
    local_max = ops.maximum(
        ops.maximum(padded[:, :-1, :-1], padded[:, :-1, 1:]),
        ops.maximum(padded[:, 1:, :-1], probs),
    )
    return ops.where(probs >= local_max, probs, ops.zeros_like(probs))


def select_candidates(cate_probs, *, score_thr, k):
    """The top-``k`` (cell, class) pairs over all cells and classes.

    Args:
        cate_probs: (batch, N_cells, C) sigmoid probabilities of all cells,
            levels concatenated (cell ``k = i * S + j`` within a level).
            ``N_cells`` and ``C`` must be static.
        score_thr: pairs with score ``<= score_thr`` are invalid (SOLO keeps
            ``score > score_thr``). SOLO: 0.1.
        k: number of pairs returned (SOLO's ``nms_pre``, 500). When
            ``k > N_cells * C`` the result is padded with invalid pairs.

    Returns:
        ``(scores, labels, cell_index, valid)``, each (batch, k), sorted by
        score descending: scores float32, labels int32 in ``0..C-1``,
        cell_index int32 in ``0..N_cells-1``, valid bool. Invalid entries keep
        their (below-threshold) scores; padded entries have score 0, label 0,
        cell 0.

    Raises:
        ValueError: on a non-positive ``k`` or a dynamic ``N_cells`` / ``C``.
    """
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    probs = ops.cast(cate_probs, "float32")
    n_cells, num_classes = probs.shape[1], probs.shape[2]
    if n_cells is None or num_classes is None:
        raise ValueError(f"cate_probs must have static N_cells and C, got shape {probs.shape}")
    total = n_cells * num_classes
    flat = ops.reshape(probs, (-1, total))  # index = cell * C + class
    k_eff = min(k, total)
    scores, flat_index = ops.top_k(flat, k_eff, sorted=True)
    flat_index = ops.cast(flat_index, "int32")
    cell_index = ops.floor_divide(flat_index, num_classes)
    labels = flat_index - cell_index * num_classes
    valid = scores > score_thr
    if k_eff < k:
        pad = [[0, 0], [0, k - k_eff]]
        scores = ops.pad(scores, pad)
        labels = ops.pad(labels, pad)
        cell_index = ops.pad(cell_index, pad)
        valid = ops.pad(valid, pad)  # pads with False
    return scores, labels, cell_index, valid


def maskness_rescore(mask_probs, scores, valid, *, mask_thr, min_area=0):
    """Binarises masks, drops small ones and re-scores by maskness.

    ``maskness = sum(p * [p > mask_thr]) / sum([p > mask_thr])``, the mean
    probability inside the binary mask; the new score is ``score * maskness``.

    Args:
        mask_probs: (batch, N, H, W) mask probabilities of the candidates.
        scores: (batch, N) category scores.
        valid: (batch, N) bool.
        mask_thr: binarisation threshold (``p > mask_thr``). SOLO: 0.5.
        min_area: masks with ``area <= min_area`` (pixels at the mask
            resolution) become invalid. A scalar or a tensor broadcastable to
            (batch, N); SOLO uses the level stride per candidate (as
            `SOLO.decode` does). Defaults to 0 (drop empty masks only).

    Returns:
        ``(binary_masks, scores, valid, areas)``: binary_masks float32
        (batch, N, H, W) of 0/1; scores float32 (batch, N), 0 where invalid;
        valid bool (batch, N); areas float32 (batch, N).
    """
    probs = ops.cast(mask_probs, "float32")
    binary = ops.cast(probs > mask_thr, "float32")
    areas = ops.sum(binary, axis=(2, 3))
    maskness = ops.sum(probs * binary, axis=(2, 3)) / ops.maximum(areas, 1.0)
    valid = ops.logical_and(ops.cast(valid, "bool"), areas > ops.cast(min_area, "float32"))
    new_scores = ops.cast(scores, "float32") * maskness
    new_scores = ops.where(valid, new_scores, ops.zeros_like(new_scores))
    return binary, new_scores, valid, areas


def matrix_nms(masks, labels, scores, valid, *, kernel="gaussian", sigma=2.0):
    """Matrix NMS (SOLOv2, Sec. 3.4), exactly as SOLO's ``matrix_nms``.

    Contract: no sorting is needed and none is done. Results are aligned with
    the input order. Candidate ``i`` ranks above ``j`` when it has the higher
    score, or the same score and a smaller index, which is what SOLO's
    "sort by score, then take the upper triangle" computes (with a stable
    sort). Valid candidates rank above invalid ones, and invalid candidates
    take no part: they neither decay nor compensate anything.

    With ``iou(i, j)`` restricted to valid same-class pairs where ``i`` ranks
    above ``j`` (0 elsewhere) and ``comp(i) = max_k iou(k, i)`` (candidate
    ``i``'s own max IoU with a higher-scored same-class mask)::

        gaussian: decay(j) = min_i exp(-sigma * iou(i, j)^2) / exp(-sigma * comp(i)^2)
        linear:   decay(j) = min_i (1 - iou(i, j)) / (1 - comp(i))

    and the result is ``scores * decay``. In the linear kernel ``1 - comp(i)``
    is clamped to 1e-6 (SOLO divides by zero when two masks are identical).

    Args:
        masks: (batch, N, H, W) binary masks (0/1, any float dtype), or
            masks average-pooled from binary ones (fractions in [0, 1]).
        labels: (batch, N) int class labels.
        scores: (batch, N) scores.
        valid: (batch, N) bool.
        kernel: ``"gaussian"`` or ``"linear"``. Defaults to ``"gaussian"``.
        sigma: gaussian kernel parameter (SOLO's code multiplies:
            ``exp(-sigma * iou^2)``). Defaults to 2.0.

    Returns:
        (batch, N) float32 decayed scores in the input order; 0 where invalid.

    Raises:
        ValueError: on an unknown ``kernel``.
    """
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"kernel={kernel!r} must be 'gaussian' or 'linear'")
    masks = ops.cast(masks, "float32")
    scores = ops.cast(scores, "float32")
    valid = ops.cast(valid, "bool")
    num = masks.shape[1]
    if num is None:
        num = ops.shape(masks)[1]
    shape = ops.shape(masks)
    flat = ops.reshape(masks, (-1, num, shape[2] * shape[3]))  # (B, N, HW)

    inter = ops.matmul(flat, ops.transpose(flat, (0, 2, 1)))  # (B, N, N)
    # areas = inter's diagonal, sum(m^2): sum(m) for 0/1 masks, and for pooled
    # (fractional) masks the value that keeps iou(i, i) = 1 (see `decode`'s
    # nms_pool); read off the N x N matrix instead of another pass over N x HW.
    areas = ops.sum(inter * ops.eye(num, dtype=inter.dtype), axis=-1)  # (B, N)
    union = areas[:, :, None] + areas[:, None, :] - inter
    iou = inter / ops.maximum(union, _EPS)

    # above[b, i, j]: candidate i ranks above j (SOLO: upper triangle after sort).
    rank_scores = ops.where(valid, scores, -ops.ones_like(scores))
    index = ops.arange(num, dtype="int32")
    score_i, score_j = rank_scores[:, :, None], rank_scores[:, None, :]
    above = ops.logical_or(
        score_i > score_j,
        ops.logical_and(score_i == score_j, (index[:, None] < index[None, :])[None]),
    )
    labels = ops.cast(labels, "int32")
    same_label = labels[:, :, None] == labels[:, None, :]
    both_valid = ops.logical_and(valid[:, :, None], valid[:, None, :])
    pair = ops.logical_and(ops.logical_and(above, same_label), both_valid)
    decay_iou = ops.where(pair, iou, ops.zeros_like(iou))  # (B, i, j)

    # comp[b, i] = max over k ranking above i of decay_iou[b, k, i].
    compensate_iou = ops.max(decay_iou, axis=1)[:, :, None]  # (B, i, 1)
    if kernel == "gaussian":
        # exp(-s d^2) / exp(-s c^2), written as one exp so a large sigma cannot underflow.
        decay_matrix = ops.exp(-sigma * (ops.square(decay_iou) - ops.square(compensate_iou)))
    else:
        decay_matrix = (1.0 - decay_iou) / ops.maximum(1.0 - compensate_iou, _EPS)
    decay = ops.min(decay_matrix, axis=1)  # min over i, (B, j)
    decayed = scores * decay
    return ops.where(valid, decayed, ops.zeros_like(decayed))


def _gather_candidates(values, index):
    """values (B, N, ...) gathered along axis 1 by index (B, K) -> (B, K, ...)."""
    shape = ops.shape(values)
    batch, num = shape[0], shape[1]
    flat = ops.reshape(values, (-1,) + tuple(values.shape[2:]))  # (B*N, ...)
    offsets = ops.arange(batch, dtype="int32")[:, None] * num
    gathered = ops.take(flat, ops.reshape(index + offsets, (-1,)), axis=0)
    return ops.reshape(gathered, (batch, index.shape[1]) + tuple(values.shape[2:]))


def decode(
    mask_probs,
    scores,
    labels,
    valid,
    *,
    mask_thr,
    update_thr,
    max_per_img,
    kernel,
    sigma,
    min_area=0,
    nms_pool=1,
):
    """Maskness, Matrix NMS and top-K for candidates from :func:`select_candidates`.

    Args:
        mask_probs: (batch, N, H, W) mask probabilities of the candidates
            (N, H, W static).
        scores: (batch, N) category scores.
        labels: (batch, N) int class labels.
        valid: (batch, N) bool.
        mask_thr: mask binarisation threshold.
        update_thr: detections whose decayed score is below it are dropped
            (SOLO keeps ``score >= update_thr``).
        max_per_img: number of detections returned.
        kernel: Matrix NMS kernel, ``"gaussian"`` or ``"linear"``.
        sigma: Matrix NMS gaussian sigma.
        (`SOLODecoder` holds these with the defaults of `config.EvalConfig`.)
        min_area: see :func:`maskness_rescore`. Defaults to 0.
        nms_pool: Matrix NMS computes its IoUs on the binary masks
            average-pooled by this factor (H and W must divide by it): the
            (N x N x HW) intersection matmul, the largest float op of the
            decoding, shrinks by nms_pool^2. With fractions a_i per block the
            IoU is sum(a_i a_j) / (sum(a_i^2) + sum(a_j^2) - sum(a_i a_j)):
            exact for blocks fully inside or outside both masks, 1 for two
            equal masks, and a small mask never vanishes. Maskness, areas and
            the returned masks stay at full resolution. Defaults to 1 (exact).

    Returns:
        A dict, sorted by score descending, padded to ``max_per_img``:
        ``scores`` float32 (batch, max_per_img), 0 where invalid;
        ``labels`` int32 (batch, max_per_img), -1 where invalid;
        ``masks`` float32 (batch, max_per_img, H, W) probabilities at the
        given mask resolution, 0 where invalid;
        ``index`` int32 (batch, max_per_img), the candidate each detection
        came from (to gather e.g. ``cell_index``), 0 where invalid;
        ``valid`` bool (batch, max_per_img).

    Raises:
        ValueError: on a non-positive ``max_per_img`` or dynamic N/H/W.
    """
    if max_per_img < 1:
        raise ValueError(f"max_per_img={max_per_img} must be >= 1")
    mask_probs = ops.cast(mask_probs, "float32")
    num, height, width = mask_probs.shape[1:]
    if num is None or height is None or width is None:
        raise ValueError(f"mask_probs must have static N, H, W, got shape {mask_probs.shape}")

    if isinstance(nms_pool, bool) or not isinstance(nms_pool, int) or nms_pool < 1:
        raise ValueError(f"nms_pool={nms_pool!r} must be an int >= 1")
    if height % nms_pool or width % nms_pool:
        raise ValueError(f"nms_pool={nms_pool} must divide the mask size {height}x{width}")

    binary, scores, valid, _ = maskness_rescore(
        mask_probs, scores, valid, mask_thr=mask_thr, min_area=min_area
    )
    if nms_pool > 1:
        pooled = ops.reshape(binary, (-1, height, width, 1))
        pooled = ops.average_pool(pooled, nms_pool, strides=nms_pool, padding="valid")
        binary = ops.reshape(pooled, (-1, num, height // nms_pool, width // nms_pool))
    scores = matrix_nms(binary, labels, scores, valid, kernel=kernel, sigma=sigma)
    valid = ops.logical_and(valid, scores >= update_thr)

    k = min(num, max_per_img)
    ranked = ops.where(valid, scores, -ops.ones_like(scores))
    _, index = ops.top_k(ranked, k, sorted=True)
    index = ops.cast(index, "int32")
    keep = ops.take_along_axis(valid, index, axis=1)
    keep_f = ops.cast(keep, "float32")
    top_scores = ops.take_along_axis(scores, index, axis=1) * keep_f
    top_labels = ops.where(
        keep, ops.take_along_axis(ops.cast(labels, "int32"), index, axis=1), -1
    )
    top_masks = _gather_candidates(mask_probs, index) * keep_f[:, :, None, None]
    index = ops.where(keep, index, 0)
    if k < max_per_img:
        pad = [[0, 0], [0, max_per_img - k]]
        top_scores = ops.pad(top_scores, pad)
        top_labels = ops.pad(top_labels, pad, constant_values=-1)
        top_masks = ops.pad(top_masks, pad + [[0, 0], [0, 0]])
        index = ops.pad(index, pad)
        keep = ops.pad(keep, pad)
    return {
        "scores": top_scores,
        "labels": top_labels,
        "masks": top_masks,
        "index": index,
        "valid": keep,
    }


def split_nms_pre(nms_pre, grids, num_classes):
    """Splits the candidate budget over levels in proportion to S^2.

    SOLO takes the top `nms_pre` candidates over all levels; with static
    shapes each level gets a fixed share (at least 1, at most S^2 * C).
    """
    cells = [s * s for s in grids]
    total = sum(cells)
    return [max(1, min(c * num_classes, round(nms_pre * c / total))) for c in cells]


@keras.saving.register_keras_serializable(package="keras_solo")
@dataclasses.dataclass(frozen=True)
class SOLODecoder:
    """SOLO's inference settings (the reference test_cfg), as a serialisable part of the model;
    the defaults are `config.EvalConfig`'s (``eval:`` of a preset).

    `keras-solo evaluate --set eval.*` and the export graph change them with
    `replace` (a new decoder; the model's `decode` reads `model.decoder`).

    Args:
        score_thr, nms_pre, mask_thr, update_thr, max_per_img, nms_kernel,
            nms_sigma: steps 2-6 of the module docstring.
        nms_pool: Matrix NMS IoUs on masks pooled by this factor; 1 = exact.
        mask_downsample: inference masks at the finest mask size divided by
            this; 1 = SOLO's.
    """

    score_thr: float = _EVAL.score_thr
    nms_pre: int = _EVAL.nms_pre
    mask_thr: float = _EVAL.mask_thr
    update_thr: float = _EVAL.update_thr
    max_per_img: int = _EVAL.max_per_img
    nms_kernel: str = _EVAL.nms_kernel
    nms_sigma: float = _EVAL.nms_sigma
    nms_pool: int = _EVAL.nms_pool
    mask_downsample: int = _EVAL.mask_downsample

    def __post_init__(self):
        for name in ("nms_pre", "max_per_img", "nms_pool", "mask_downsample"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def replace(self, **changes):
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    def per_level(self, grids, num_classes):
        """The candidates kept per level: `nms_pre` split in proportion to S^2."""
        return split_nms_pre(self.nms_pre, grids, num_classes)

    def output_size(self, mask_sizes):
        """(H, W) of the masks this decoder returns: the finest of a model's `mask_sizes` / `mask_downsample`."""
        hm, wm = mask_sizes[0]
        return (hm // self.mask_downsample, wm // self.mask_downsample)

    def candidates(self, model, outputs):
        """Steps 1-3: the top-scoring (cell, class) candidates per level with their masks.

        Per level: SOLO's 2x2 point NMS on the category probabilities, the
        top-k pairs (`per_level` of `nms_pre`), and the masks of those cells
        only (`model.cell_mask_logits`: gathered kernels), each resized to
        this decoder's `output_size`.

        Args:
            model: a `SOLO` (its grids, classes, mask sizes, input size and
                `cell_mask_logits`).
            outputs: the dict of `model(images)`.

        Returns:
            dict: scores (B, N), labels (B, N), valid (B, N), mask_probs
            (B, N, Hm0, Wm0), min_area (N,) (SOLO drops a mask whose area at
            the finest mask resolution is not above its level's head stride),
            N = sum of per-level shares.
        """
        num_per_level = self.per_level(model.grids, model.num_classes)
        finest = self.output_size(model.mask_sizes)
        width, _ = model.input_size
        scores, labels, valids, masks, min_area = [], [], [], [], []
        for level, k in enumerate(num_per_level):
            s = model.grids[level]
            probs = points_nms(ops.sigmoid(ops.cast(outputs[f"cate_logits_{level}"], "float32")))
            probs = ops.reshape(probs, (-1, s * s, model.num_classes))
            level_scores, level_labels, cell_index, level_valid = select_candidates(
                probs, score_thr=self.score_thr, k=k)
            with keras.name_scope("masks"):
                # Straight to the finest mask size (one bilinear resize of the
                # logits, not the level's 2x and then a second one).
                logits = model.cell_mask_logits(outputs, level, cell_index, out_size=finest)
                masks.append(ops.sigmoid(ops.cast(logits, "float32")))
            scores.append(level_scores)
            labels.append(level_labels)
            valids.append(level_valid)
            head_stride = width / (model.mask_sizes[level][1] / 2.0)
            # SOLO's area threshold, in pixels of the finest mask size.
            min_area.extend([head_stride / self.mask_downsample ** 2] * k)
        return {
            "scores": ops.concatenate(scores, axis=1),
            "labels": ops.concatenate(labels, axis=1),
            "valid": ops.concatenate(valids, axis=1),
            "mask_probs": ops.concatenate(masks, axis=1),
            "min_area": ops.convert_to_tensor(min_area, "float32"),
        }

    def decode(self, model, outputs):
        """SOLO inference on `model(images)`: candidates -> maskness -> Matrix NMS -> top `max_per_img`.

        Returns:
            dict: scores (B, K), labels (B, K), masks (B, K, Hm0, Wm0)
            probabilities at `output_size`, index (B, K), valid (B, K).
        """
        with keras.name_scope("candidates"):
            cand = self.candidates(model, outputs)
        with keras.name_scope("nms"):
            return self(cand["mask_probs"], cand["scores"], cand["labels"], cand["valid"], min_area=cand["min_area"])

    def __call__(self, mask_probs, scores, labels, valid, *, min_area=0):
        """Steps 4-6 (`decode`) on the candidates with these settings."""
        return decode(mask_probs, scores, labels, valid, mask_thr=self.mask_thr, update_thr=self.update_thr,
                      max_per_img=self.max_per_img, kernel=self.nms_kernel, sigma=self.nms_sigma,
                      min_area=min_area, nms_pool=self.nms_pool)

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)
