"""Ground truth -> per-level SOLO targets: category grid and positive cells.

For every FPN level l with grid S_l, SOLO (Sec. 3.1-3.2) makes the cell
(i, j) positive for an instance when the instance's scale falls in the
level's range and the cell lies in the instance's centre region:

    scale   = sqrt((x2 - x1) * (y2 - y1))                  gt box, input px
    level l used  iff  lo_l <= scale <= hi_l               (ranges overlap)
    (cy, cx) = centre of mass of the mask                  input px
    half_h, half_w = 0.5 * sigma * box_h, 0.5 * sigma * box_w
    coord_i = floor(cy / H * S)                            centre cell row
    top   = max(floor((cy - half_h) / H * S), coord_i - 1, 0)
    down  = min(floor((cy + half_h) / H * S), coord_i + 1, S - 1)
    (left, right likewise on x)

so an instance owns between 1 cell and the 3x3 cells around its centre
cell. A positive cell k = i * S + j gets the instance's class as category
target, and the instance mask (resized to the level's mask size) as mask
target for the mask predicted by channel k.

Everything is vectorised over (batch, cells, instances) with a claim matrix
of shape (B, S*S, M); only the few levels are a Python loop. `keras.ops`
only, static shapes, so this runs inside `compute_loss` under tf.function
and on the JAX backend.

Reference: SOLO, arXiv:1912.04488 (mmdet `SOLOHead._get_targets_single`,
the original SOLO `solo_target_single`).
"""

import dataclasses

import keras
from keras import ops

SOLO_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))


def scale_ranges_for_input(ranges=SOLO_SCALE_RANGES, input_size=(800, 1333), reference_size=800):
    """Rescales SOLO's scale ranges from an 800-px short side to the input's.

    SOLO's ranges on sqrt(box area) were set for images resized to an
    800-px short side; a smaller input shrinks every object by
    min(H, W) / reference_size, so the ranges shrink by the same factor.

    Args:
        ranges: per level (lo, hi) on sqrt(w * h) at the reference size.
            Defaults to SOLO's ((1, 96), (48, 192), (96, 384), (192, 768),
            (384, 2048)).
        input_size: (H, W) of the padded network input. Defaults to
            (800, 1333).
        reference_size: short side the ranges were set for. Defaults to 800.

    Returns:
        tuple of (lo, hi) float pairs in input pixels, one per level.

    Raises:
        ValueError: if `reference_size` or `input_size` is not positive.
    """
    if reference_size <= 0:
        raise ValueError(f"reference_size must be > 0, got {reference_size}")
    if len(input_size) != 2 or min(input_size) <= 0:
        raise ValueError(f"input_size must be a positive (H, W), got {tuple(input_size)}")
    factor = min(input_size) / float(reference_size)
    return tuple((float(lo) * factor, float(hi) * factor) for lo, hi in ranges)


def _per_level_positives(max_positives, grids):
    """`max_positives` (int or one int per level) -> per-level caps <= S^2."""
    if isinstance(max_positives, int):
        max_positives = (max_positives,) * len(grids)
    if len(max_positives) != len(grids):
        raise ValueError(
            f"max_positives {tuple(max_positives)} must be an int or have one entry per grid {tuple(grids)}")
    caps = []
    for cap, grid in zip(max_positives, grids):
        if int(cap) < 1:
            raise ValueError(f"max_positives must be >= 1, got {tuple(max_positives)}")
        caps.append(min(int(cap), grid * grid))
    return caps


def _resize_masks(masks, size):
    """(B, M, h, w) float 0/1 -> (B, M, Hm, Wm) 0/1: bilinear, then >= 0.5.

    Bilinear without antialiasing, like SOLO's `mmcv.imrescale` (cv2
    INTER_LINEAR) on a uint8 0/1 mask, whose rounding is the 0.5 threshold.
    """
    if tuple(masks.shape[2:4]) == tuple(size):
        return masks
    # Each mask as its own one-channel image: reshapes, no transposes (TensorFlow's
    # graph optimiser would move a transpose before the uint8 -> float cast, and
    # oneDNN logs an error line for a uint8 transpose).
    num_inst, (h, w) = masks.shape[1], masks.shape[2:4]
    resized = ops.image.resize(ops.reshape(masks, (-1, h, w, 1)), size, interpolation="bilinear",
                               antialias=False)
    return ops.cast(ops.reshape(resized, (-1, num_inst, *size)) >= 0.5, "float32")


def build_targets(
    masks,
    classes,
    boxes,
    ignore,
    *,
    input_size,
    mask_stride,
    grids,
    mask_sizes,
    scale_ranges,
    center_sigma=0.2,
    max_positives=256,
    num_classes,
):
    """SOLO targets for every level from one padded batch.

    Conflicts: when several instances claim a cell, the one with the smaller
    box area wins (ties: the lower instance index). SOLO's per-instance loop
    lets the last instance written win, which depends on annotation order;
    smaller-wins is deterministic and favours small objects, whose few cells
    a large neighbour would otherwise take.

    Positives beyond the cap: the first P_l cells in ascending cell order
    are kept (SOLO has no cap; a cap keeps the gathered masks bounded). The
    3x3-at-most centre regions make 256 per level and image enough for all
    but very crowded images.

    Crowd regions: a non-positive cell whose centre falls in `ignore` gets
    category weight 0 (neither positive nor negative); positive cells keep
    weight 1.

    Args:
        masks: uint8 (B, M, H / mask_stride, W / mask_stride) instance masks.
        classes: int32 (B, M) labels 0..C-1; -1 = padding. Instances with a
            label outside 0..C-1 or an empty mask are skipped.
        boxes: float32 (B, M, 4) x1, y1, x2, y2 in input pixels.
        ignore: uint8 (B, H / mask_stride, W / mask_stride) crowd regions.
        input_size: (H, W) of the padded network input.
        mask_stride: stride of `masks` and `ignore` in input pixels.
        grids: S per level.
        mask_sizes: (Hm_l, Wm_l) per level, the mask branch output size.
        scale_ranges: (lo, hi) per level on sqrt(box area), input pixels
            (see `scale_ranges_for_input`).
        center_sigma: centre region = sigma * box size. Defaults to 0.2.
        max_positives: cap P_l on positives per level and image, an int or
            one per level; each is clipped to S_l^2. Defaults to 256.
        num_classes: C.

    Returns:
        list (one per level) of dicts:
            cate_target: int32 (B, S, S), class of the cell's instance or -1.
            cate_weight: float32 (B, S, S), 0 for non-positive cells in a
                crowd region, else 1.
            pos_index: int32 (B, P_l), positive cells k = i * S + j in
                ascending order, padded with 0.
            pos_valid: float32 (B, P_l), 1 for real positives.
            mask_target: float32 (B, P_l, Hm_l, Wm_l), 0/1 mask of each
                positive's instance (zeros for padding). The stride-ms mask
                is resized to (Hm_l, Wm_l), i.e. the level's mask grid is
                taken to span the padded input; exact when H and W are
                multiples of the level's mask stride.

    Raises:
        ValueError: if per-level arguments disagree in length or the mask
            shape does not match `input_size / mask_stride`.

    Reference: SOLO, arXiv:1912.04488, Sec. 3.1-3.2.
    """
    height, width = (int(v) for v in input_size)
    grids = tuple(int(s) for s in grids)
    if not (len(grids) == len(mask_sizes) == len(scale_ranges)):
        raise ValueError(
            f"grids {grids}, mask_sizes {tuple(mask_sizes)} and scale_ranges {tuple(scale_ranges)} "
            "must have one entry per level")
    caps = _per_level_positives(max_positives, grids)
    mask_h, mask_w = int(masks.shape[2]), int(masks.shape[3])
    if (mask_h * mask_stride, mask_w * mask_stride) != (height, width):
        raise ValueError(
            f"masks of size {mask_h}x{mask_w} at mask_stride {mask_stride} do not cover "
            f"input_size {height}x{width}")
    num_inst = int(masks.shape[1])
    batch = ops.shape(masks)[0]

    masks = ops.cast(masks, "float32")
    classes = ops.cast(classes, "int32")
    boxes = ops.cast(boxes, "float32")

    # --- per-instance geometry, (B, M) ---
    mask_area = ops.sum(masks, axis=(2, 3))
    safe_area = ops.maximum(mask_area, 1.0)
    # Centre of mass in input px: mask pixel r covers [r*ms, (r+1)*ms).
    row_centres = (ops.arange(mask_h, dtype="float32") + 0.5) * mask_stride
    col_centres = (ops.arange(mask_w, dtype="float32") + 0.5) * mask_stride
    center_y = ops.sum(ops.sum(masks, axis=3) * row_centres, axis=2) / safe_area
    center_x = ops.sum(ops.sum(masks, axis=2) * col_centres, axis=2) / safe_area
    box_w = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    box_h = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    box_area = box_w * box_h
    scale = ops.sqrt(box_area)
    usable = (classes >= 0) & (classes < num_classes) & (mask_area > 0)
    half_h = 0.5 * center_sigma * box_h
    half_w = 0.5 * center_sigma * box_w
    instance_ids = ops.arange(num_inst, dtype="int32")

    ignore_flat = ops.reshape(ops.cast(ignore, "float32"), (-1, mask_h * mask_w))
    level_masks_cache = {}
    targets = []
    for grid, cap, (lo, hi), size in zip(grids, caps, scale_ranges, mask_sizes):
        size = (int(size[0]), int(size[1]))
        num_cells = grid * grid
        in_level = usable & (scale >= lo) & (scale <= hi)  # (B, M)

        # Centre cell and centre region, (B, M); floor(y / H * S) as y * (S / H).
        rows_per_px, cols_per_px = grid / height, grid / width
        coord_i = ops.clip(ops.floor(center_y * rows_per_px), 0, grid - 1)
        coord_j = ops.clip(ops.floor(center_x * cols_per_px), 0, grid - 1)
        top = ops.maximum(ops.floor((center_y - half_h) * rows_per_px), ops.maximum(coord_i - 1, 0.0))
        down = ops.minimum(ops.floor((center_y + half_h) * rows_per_px), ops.minimum(coord_i + 1, grid - 1.0))
        left = ops.maximum(ops.floor((center_x - half_w) * cols_per_px), ops.maximum(coord_j - 1, 0.0))
        right = ops.minimum(ops.floor((center_x + half_w) * cols_per_px), ops.minimum(coord_j + 1, grid - 1.0))

        # Claim matrix (B, S*S, M): cell k = i * S + j lies in instance m's region.
        cells = ops.arange(num_cells, dtype="int32")
        cell_rows = ops.cast(cells // grid, "float32")  # i of each cell, (S*S,)
        cell_cols = ops.cast(cells % grid, "float32")  # j
        cell_i = cell_rows[None, :, None]
        cell_j = cell_cols[None, :, None]
        claims = (
            in_level[:, None, :]
            & (cell_i >= top[:, None, :]) & (cell_i <= down[:, None, :])
            & (cell_j >= left[:, None, :]) & (cell_j <= right[:, None, :])
        )
        positive = ops.any(claims, axis=2)  # (B, S*S)

        # Conflicts: smallest box area wins, ties to the lowest index.
        cost = ops.where(claims, box_area[:, None, :], float("inf"))
        best = ops.min(cost, axis=2, keepdims=True)
        is_best = claims & (cost <= best)
        winner = ops.min(ops.where(is_best, instance_ids[None, None, :], num_inst), axis=2)
        winner = ops.where(positive, winner, 0)  # (B, S*S) instance per cell

        cell_class = ops.take_along_axis(classes, winner, axis=1)
        cate_target = ops.where(positive, cell_class, -1)

        # Crowd: non-positive cells whose centre lies in an ignore region.
        centre_rows = ops.cast(ops.floor((cell_rows + 0.5) * (height / grid) / mask_stride), "int32")
        centre_cols = ops.cast(ops.floor((cell_cols + 0.5) * (width / grid) / mask_stride), "int32")
        centre_pixel = (ops.clip(centre_rows, 0, mask_h - 1) * mask_w
                        + ops.clip(centre_cols, 0, mask_w - 1))
        in_crowd = ops.take(ignore_flat, centre_pixel, axis=1) > 0  # (B, S*S)
        cate_weight = ops.where(in_crowd & ~positive, 0.0, 1.0)

        # Positive cells, ascending, first `cap` kept: sort key k (positive)
        # or S*S + k (negative), take the `cap` smallest.
        sort_key = ops.where(positive, cells, cells + num_cells)
        neg_keys, _ = ops.top_k(-ops.cast(sort_key, "float32"), cap, sorted=True)
        chosen = ops.cast(-neg_keys, "int32")  # (B, P)
        pos_valid = chosen < num_cells
        pos_index = ops.where(pos_valid, chosen, 0)
        pos_valid = ops.cast(pos_valid, "float32")

        # Mask targets: each positive's instance mask at the level's size.
        if size not in level_masks_cache:
            resized = _resize_masks(masks, size)
            level_masks_cache[size] = ops.reshape(resized, (-1, size[0] * size[1]))  # (B*M, Hm*Wm)
        flat_masks = level_masks_cache[size]
        pos_instance = ops.take_along_axis(winner, pos_index, axis=1)  # (B, P)
        batch_offset = ops.arange(batch, dtype="int32")[:, None] * num_inst
        gathered = ops.take(flat_masks, ops.reshape(pos_instance + batch_offset, (-1,)), axis=0)
        mask_target = ops.reshape(gathered, (-1, cap, size[0], size[1])) * pos_valid[:, :, None, None]

        targets.append({
            "cate_target": ops.reshape(ops.cast(cate_target, "int32"), (-1, grid, grid)),
            "cate_weight": ops.reshape(cate_weight, (-1, grid, grid)),
            "pos_index": ops.cast(pos_index, "int32"),
            "pos_valid": pos_valid,
            "mask_target": mask_target,
        })
    return targets


@keras.saving.register_keras_serializable(package="keras_solo")
@dataclasses.dataclass(frozen=True)
class SOLOTargetAssigner:
    """Ground truth -> per-level targets (`build_targets`), as a serialisable part of the model.

    Args:
        scale_ranges: per level (lo, hi) on sqrt(box area) in input pixels.
        center_sigma: centre region ratio. Defaults to 0.2.
        max_positives: positives kept per level and image. Defaults to 256.
        mask_stride: stride of the ground-truth masks the pipeline delivers.
            Defaults to 4.
    """

    scale_ranges: tuple = SOLO_SCALE_RANGES
    center_sigma: float = 0.2
    max_positives: int = 256
    mask_stride: int = 4

    def __post_init__(self):
        object.__setattr__(self, "scale_ranges", tuple(tuple(float(v) for v in r) for r in self.scale_ranges))
        object.__setattr__(self, "max_positives", int(self.max_positives))
        object.__setattr__(self, "mask_stride", int(self.mask_stride))

    def __call__(self, y, *, input_size, grids, mask_sizes, num_classes):
        """`build_targets` of a pipeline batch `y` (masks, classes, boxes, ignore); input_size (H, W)."""
        return build_targets(
            y["masks"], y["classes"], y["boxes"], y["ignore"], input_size=input_size, mask_stride=self.mask_stride,
            grids=grids, mask_sizes=mask_sizes, scale_ranges=self.scale_ranges, center_sigma=self.center_sigma,
            max_positives=tuple(min(self.max_positives, s * s) for s in grids), num_classes=num_classes)

    def get_config(self):
        return {**dataclasses.asdict(self), "scale_ranges": [list(r) for r in self.scale_ranges]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
