"""SOLO prediction head (paper Sec. 3.2, Figure 1).

Two branches, their towers shared by all pyramid levels:

- category: the level's features resized to S x S (one cell per grid cell),
  `head_convs` x (3x3 conv, norm, ReLU), then a 3x3 conv to C class logits:
  output `(batch, S, S, C)`.
- mask: the features plus two coordinate channels (eq. (1)),
  `head_convs` x (3x3 conv, norm, ReLU): the mask features F `(batch, h, w,
  E)`. SOLO upsamples F 2x before its last conv; here the 2x bilinear
  upsampling is applied to the chosen cells' mask logits instead
  (`CellMaskKernel.gather_logits`), which is the same map: the 1x1 conv
  mixes channels per pixel, bilinear resizing mixes pixels per channel with
  weights that sum to 1, so the two commute (bias included). The int8 graph
  then never holds the 4x larger upsampled F.

The norm is GroupNorm (`norm="group"`, the paper and SOLO reference) or
BatchNorm (`norm="batch"`): the convs stay shared by all levels and each
level gets its own BatchNorm, as EfficientDet's shared heads do, because the
levels' statistics differ. BatchNorm folds into the convs when exported,
where int8 GroupNorm is a chain of MEAN / SUB / MUL / RSQRT ops per conv.

The mask branch's last 1x1 conv (E -> S^2 channels, one mask per grid cell,
channel k = i * S + j) is per level and lives in `CellMaskKernel`, so that
training and inference can compute the masks of chosen cells only:

    mask_logits(k) = resize_2x(F @ W[:, k] + b[k])         (batch, 2h, 2w)

at a cost proportional to the number of chosen cells, not S^2.

Reference:
    Wang et al., "SOLO: Segmenting Objects by Locations", arXiv:1912.04488;
    the seed paper, Sec. 3.2 and Figure 1.
"""

import math

import keras
from keras import ops

from keras_solo.model import batch_norm
from keras_solo.model.layers import ConvNormAct, CoordConcat, _static_hw

NORMS = ("group", "batch")


@keras.saving.register_keras_serializable(package="keras_solo")
class SOLOHead(keras.layers.Layer):
    """Category and mask branches shared across pyramid levels.

    Args:
        num_classes: number of categories C.
        grids: grid number S per level, finest first (paper Table 2).
            Defaults to (40, 36, 24, 16, 12).
        head_convs: conv groups per branch (paper: 7). Defaults to 7.
        head_channels: channels E of the tower convs. Defaults to 256.
        norm_groups: GroupNorm groups. Defaults to 32.
        norm: "group" (GroupNorm, shared by the levels like the convs) or
            "batch" (one BatchNorm per level and conv). Defaults to "group".
        use_coords: whether the mask branch gets the coordinate channels of
            eq. (1). Defaults to True.
        prior_prob: initial foreground probability of the category logits;
            their bias starts at -log((1 - p) / p) (focal-loss prior).
            Defaults to 0.01.

    Call:
        level_features: list of `len(grids)` tensors `(batch, h_l, w_l, c)`
            with the same c, static h_l, w_l.

    Returns:
        list of `len(grids)` tuples `(cate_logits, mask_features)`:
        `cate_logits` `(batch, S_l, S_l, num_classes)`,
        `mask_features` `(batch, h_l, w_l, head_channels)` (the 2x
        upsampling is applied to the gathered logits).
    """

    def __init__(self, num_classes, grids=(40, 36, 24, 16, 12), head_convs=7, head_channels=256,
                 norm_groups=32, use_coords=True, prior_prob=0.01, norm="group", **kwargs):
        super().__init__(**kwargs)
        grids = tuple(grids)
        if not grids or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in grids):
            raise ValueError(f"`grids` must be a non-empty tuple of positive ints, got {grids!r}")
        for name, value, low in (("num_classes", num_classes, 1), ("head_convs", head_convs, 0),
                                 ("head_channels", head_channels, 1), ("norm_groups", norm_groups, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}")
        if head_channels % norm_groups:
            raise ValueError(f"`norm_groups`={norm_groups} must divide `head_channels`={head_channels}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"`prior_prob` must be in (0, 1), got {prior_prob!r}")
        self.num_classes = num_classes
        self.grids = grids
        self.head_convs = head_convs
        self.head_channels = head_channels
        self.norm_groups = norm_groups
        self.use_coords = use_coords
        self.prior_prob = prior_prob
        self.norm = norm
        group = norm == "group"

        def tower(prefix):
            return [ConvNormAct(head_channels, 3, groups=norm_groups, use_norm=group,
                                activation="relu" if group else None, dtype=self.dtype_policy,
                                name=f"{prefix}_conv_{i}") for i in range(head_convs)]

        def level_norms(prefix):  # index level * head_convs + i
            if group:
                return []
            return [batch_norm.BatchNormalization(dtype=self.dtype_policy, name=f"{prefix}_bn_{level}_{i}")
                    for level in range(len(grids)) for i in range(head_convs)]

        self.cate_convs = tower("cate")
        self.cate_output = keras.layers.Conv2D(
            num_classes, 3, padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant(-math.log((1.0 - prior_prob) / prior_prob)),
            dtype=self.dtype_policy, name="cate_output")
        self.coords = CoordConcat(dtype=self.dtype_policy, name="coords") if use_coords else None
        self.mask_convs = tower("mask")
        self.cate_norms = level_norms("cate")
        self.mask_norms = level_norms("mask")

    def build(self, level_features_shape):
        shapes = list(level_features_shape)
        if len(shapes) != len(self.grids):
            raise ValueError(f"SOLOHead got {len(shapes)} levels but `grids` has {len(self.grids)}")
        channels = {shape[-1] for shape in shapes}
        if len(channels) != 1:
            raise ValueError(f"SOLOHead: all levels need the same channel count, got {sorted(channels)}")
        channels = channels.pop()
        shape = (None, None, None, channels)
        for conv in self.cate_convs:
            conv.build(shape)
            shape = (None, None, None, self.head_channels)
        self.cate_output.build(shape)
        shape = (None, None, None, channels + (2 if self.use_coords else 0))
        for conv in self.mask_convs:
            conv.build(shape)
            shape = (None, None, None, self.head_channels)
        for bn in self.cate_norms + self.mask_norms:
            bn.build((None, None, None, self.head_channels))

    def _tower(self, convs, norms, level, x, training):
        for i, conv in enumerate(convs):
            x = conv(x)
            if norms:
                x = ops.relu(norms[level * len(convs) + i](x, training=training))
        return x

    def call(self, level_features, training=None):
        if len(level_features) != len(self.grids):
            raise ValueError(f"SOLOHead got {len(level_features)} levels but `grids` has {len(self.grids)}")
        outputs = []
        for level, (features, grid) in enumerate(zip(level_features, self.grids)):
            _static_hw(features.shape, "SOLOHead")  # raises on a dynamic height or width
            # Category branch: one feature vector per grid cell.
            cate_features = ops.image.resize(features, (grid, grid), interpolation="bilinear")  # (B, S, S, c)
            cate_features = self._tower(self.cate_convs, self.cate_norms, level, cate_features, training)
            cate_logits = self.cate_output(cate_features)  # (B, S, S, C)
            # Mask branch: CoordConv (eq. (1)), tower (2x upsampling: after the 1x1 kernel).
            mask_features = self.coords(features) if self.coords is not None else features
            mask_features = self._tower(self.mask_convs, self.mask_norms, level, mask_features, training)
            outputs.append((cate_logits, mask_features))
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "grids": self.grids,
            "head_convs": self.head_convs,
            "head_channels": self.head_channels,
            "norm_groups": self.norm_groups,
            "use_coords": self.use_coords,
            "prior_prob": self.prior_prob,
            "norm": self.norm,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_solo")
class CellMaskKernel(keras.layers.Layer):
    """The per-level 1x1 mask output conv: E mask features -> S^2 cell masks.

    Channel k = i * S + j holds the mask of the instance centred in grid cell
    (row i, column j) (paper Figure 1). `call` computes all S^2 channels;
    `gather_logits` computes only the requested cells as a matmul with the
    gathered kernel columns, so its cost grows with the number of cells
    asked for, not with S^2.

    Args:
        grid: the level's grid number S.

    Call:
        mask_features: `(batch, Hm, Wm, E)`.

    Returns:
        `(batch, Hm, Wm, S^2)` mask logits.
    """

    def __init__(self, grid, **kwargs):
        super().__init__(**kwargs)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"`grid` must be a positive int, got {grid!r}")
        self.grid = grid

    def build(self, input_shape):
        cells = self.grid * self.grid
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], cells),
                                      initializer=keras.initializers.RandomNormal(stddev=0.01))  # (E, S^2)
        self.bias = self.add_weight(name="bias", shape=(cells,), initializer="zeros")  # (S^2,)

    def call(self, mask_features):
        kernel = ops.reshape(self.kernel, (1, 1) + tuple(self.kernel.shape))  # a 1x1 conv
        return ops.conv(mask_features, kernel, padding="valid") + self.bias  # (B, Hm, Wm, S^2)

    def gather_logits(self, mask_features, cell_index, out_size=None, channels_last=False):
        """Mask logits of chosen cells only.

        Args:
            mask_features: `(batch, h, w, E)`.
            cell_index: int `(batch, P)`, cells k = i * S + j. Values outside
                [0, S^2) (e.g. -1 padding) are clipped into range, so padded
                entries return a real cell's logits: mask them in the loss.
            out_size: `(Hm, Wm)` to resize the logits to (bilinear), e.g.
                the mask size 2h x 2w; None keeps (h, w).
            channels_last: return `(batch, Hm, Wm, P)` instead.

        Returns:
            `(batch, P, Hm, Wm)`: `[b, p] = resize(F_b @ W[:, k] + b[k])`,
            k = cell_index[b, p].
        """
        if not self.built:
            self.build(mask_features.shape)
        cells = self.grid * self.grid
        cell_index = ops.clip(ops.cast(cell_index, "int32"), 0, cells - 1)
        columns = ops.take(ops.transpose(self.kernel), cell_index, axis=0)  # (B, P, E): W[:, k]
        bias = ops.take(self.bias, cell_index, axis=0)  # (B, P): b[k]
        columns = ops.cast(columns, mask_features.dtype)
        logits = ops.einsum("bhwe,bpe->bhwp", mask_features, columns)  # F @ W[:, k]
        logits = logits + ops.cast(bias, logits.dtype)[:, None, None, :]
        if out_size is not None and tuple(out_size) != tuple(logits.shape[1:3]):
            logits = ops.image.resize(logits, tuple(out_size), interpolation="bilinear")
        return logits if channels_last else ops.transpose(logits, (0, 3, 1, 2))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.grid * self.grid,)

    def get_config(self):
        config = super().get_config()
        config.update({"grid": self.grid})
        return config
