"""Grid attention: the seed paper's mask-branch attention (Sec. 3.3-3.4).

Why. SOLO's category branch must give the *same* class to two instances of a
class, while its mask branch must give them *different* masks. The paper adds
a branch whose output depends on how similar each location is to each grid
cell, so two cells on two different objects get different maps.

What, step by step, for one pyramid level with grid number S:

1. Grid features. The level's features `(B, h, w, c)` (the FPN level the head
   sees) are resized bilinearly to S x S, one c-vector per grid cell, and
   embedded by position (eq. (2)):

       num = i * S + j           (cell in row i, column j)

   so V_num is the vector of cell num; V is `(B, S, S, d)`.

2. Projection (our addition, `embed_dim`). A learned 1x1 projection maps the
   c-vectors to d = `embed_dim` channels. The dot product of raw 256-d FPN
   features is dominated by their norms (a cell with strong activations
   scores high against every other cell, whatever it contains) and the
   features were trained for other purposes; a learned projection lets
   training shape the similarity so that it separates instances, and a
   small d makes the dot products cheap. `embed_dim=None` (or 0) skips it: V is the resized feature
   itself, the paper's literal form.

   Normalisation (our addition, `normalize="vector"`). V is centred over the
   image's S x S cells (the mean grid vector is subtracted) and each V_k is
   divided by its root mean square, so its entries have unit RMS and
   ||V_k||^2 = d. Without it the branch's size follows the features' size,
   which the backbone decides: with the edge preset's EfficientNet-Lite0
   (ImageNet weights), V's entries have std 3-8 at initialisation and the
   attention logits reach 125-850 (means 9-45) while the mask branch's are
   +-0.1 (docs/RESULTS.md, "Raw attention logits saturate"), so every mask pixel saturates,
   the dice gradient vanishes, and the attention variant learned slower than
   plain SOLO (docs/RESULTS.md). The learned gain gamma cannot repair that
   in time: Adam moves a scalar by about the learning rate per step. With
   unit-RMS vectors the scaled dot product below is sqrt(d) * cos(V_k, V_x),
   bounded by sqrt(d) (5.7 for d = 32) whatever the backbone and largest
   where the features point the way cell k's do. Centring removes what all
   cells share (the scene): uncentred, the cosines of a from-scratch
   backbone were all about 0.8, i.e. +4 on every mask logit; centred, the
   attention logits have mean 0 and std 1.3-2.3 at initialisation.
   `normalize="image"` divides by one RMS per image instead (the cells'
   relative norms are kept, so the logits are not bounded per cell);
   measured against "vector" it was no better (docs/RESULTS.md), so
   "vector" is the default. `normalize="none"` is the paper's literal form.

3. The attention map (eq. (3)). Every cell's vector is dot-multiplied with the
   vector at every location:

       F_new(k, i, j) = scale * V_k . V_{i*S+j}                    (eq. (3))

   giving S^2 channels (one per cell k) of S x S maps: `(B, S, S, S^2)`.
   Channel k follows the same convention as the SOLO mask channels
   (k = i * S + j, Figure 1), so attention channel k and mask channel k talk
   about the same grid cell. For a cell k on an object, row k is large where
   the features look like cell k's (the object) and small elsewhere: the
   self-similarity V_k . V_k is the largest value of channel k when the
   vectors of different cells are near orthogonal.
   `scale = 1 / sqrt(d)`, as in scaled dot-product attention: for random
   d-dimensional vectors with unit-variance entries the dot product has
   variance d, so the scale keeps the logits O(1) at initialisation and the
   branch does not swamp the mask logits.

4. Residual branch (Sec. 3.4). The S x S attention is brought to the mask
   resolution `(Hm, Wm)` and added to SOLO's mask logits, like a ResNet
   shortcut:

       mask_logits(k) = F @ W[:, k] + b[k] + gamma * resize(F_new(k))

   `gamma` is a learned scalar gain (init `gamma_init`); 0 would switch the
   branch off.

Efficiency. Bilinear resizing is linear, so resizing the map equals the map of
the resized vectors:

    resize(F_new(k))[y, x] = scale * V_k . resize(V)[y, x]

`gather_logits` uses this form: it resizes V once to `(Hm, Wm)` and takes one
dot product per chosen cell, `(B, P, Hm, Wm)`, so training (P = positive
cells) and inference (P = top-scoring cells) never build the S^2 x Hm x Wm
tensor. `full_logits` computes all S^2 channels the same way (for export or
inspection), and `attention_map` the S x S map of eq. (3) itself.

Reference:
    The seed paper (SOLO with grid attention), Sec. 3.3-3.4, eqs. (2)-(3),
    Figures 2-3; Vaswani et al., "Attention Is All You Need", 2017 (scale);
    Wang et al., SOLO, arXiv:1912.04488 (k = i * S + j).
"""

import math

import keras
from keras import ops

_EPSILON = 1e-6  # keeps rsqrt finite for an all-zero grid vector
NORMALIZE_MODES = ("none", "vector", "image")


def normalize_mode(value):
    """`normalize` argument -> one of NORMALIZE_MODES (True = "vector", False = "none")."""
    if value is True:
        return "vector"
    if value is False or value is None:
        return "none"
    if value not in NORMALIZE_MODES:
        raise ValueError(f"`normalize` must be one of {NORMALIZE_MODES}, got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_solo")
class GridAttention(keras.layers.Layer):
    """Per-level grid attention: grid vectors V and their dot-product maps.

    Args:
        grid: the level's grid number S.
        embed_dim: channels d of the learned 1x1 projection of V; None or 0
            uses the resized features unprojected (the paper's form, d = c).
            Defaults to 64.
        gamma_init: initial value of the learned residual gain gamma.
            Defaults to 1.0.
        normalize: "vector": centre the grid vectors over the cells and
            divide each by its RMS (unit-RMS entries), which bounds the
            attention logits by gamma * sqrt(d) whatever the features'
            scale; "image": centre, then one RMS per image; "none": raw
            (the paper). True / False mean "vector" / "none". Defaults to
            "vector"; models saved before this option existed load with
            "none" (their behaviour).

    Call:
        features: `(batch, h, w, c)`, the level's features.

    Returns:
        V, `(batch, S, S, d)`: the grid vectors (cell k = i * S + j at [i, j]).
    """

    def __init__(self, grid, embed_dim=64, gamma_init=1.0, normalize="vector", **kwargs):
        super().__init__(**kwargs)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"`grid` must be a positive int, got {grid!r}")
        if embed_dim is not None and (isinstance(embed_dim, bool) or not isinstance(embed_dim, int)
                                      or embed_dim < 0):
            raise ValueError(f"`embed_dim` must be None or an int >= 0, got {embed_dim!r}")
        self.grid = grid
        self.embed_dim = embed_dim
        self.gamma_init = gamma_init
        self.normalize = normalize_mode(normalize)
        # A bias-free 1x1 conv: V stays a linear function of the features.
        self.projection = keras.layers.Conv2D(embed_dim, 1, use_bias=False, dtype=self.dtype_policy,
                                              name="projection") if embed_dim else None

    def build(self, input_shape):
        if self.projection is not None:
            self.projection.build((None, self.grid, self.grid, input_shape[-1]))
        self.gamma = self.add_weight(name="gamma", shape=(),
                                     initializer=keras.initializers.Constant(self.gamma_init))

    def call(self, features):
        grid_features = ops.image.resize(features, (self.grid, self.grid), interpolation="bilinear")  # (B, S, S, c)
        vectors = grid_features if self.projection is None else self.projection(grid_features)  # (B, S, S, d)
        if self.normalize != "none":
            # in float32: squares of large activations overflow float16
            wide = ops.cast(vectors, "float32")
            # centre over the image's cells: what all cells share (the scene) drops out
            wide = wide - ops.mean(wide, axis=(1, 2), keepdims=True)
            if self.normalize == "vector":
                # unit-RMS entries per vector: scale * V_k . V_x = sqrt(d) * cos(V_k, V_x)
                mean_square = ops.mean(ops.square(wide), axis=-1, keepdims=True)
            else:
                # one scale per image: unit RMS over all cells, relative norms kept
                mean_square = ops.mean(ops.square(wide), axis=(1, 2, 3), keepdims=True)
            vectors = ops.cast(wide * ops.rsqrt(mean_square + _EPSILON), vectors.dtype)
        return vectors  # V_{i*S+j} at [i, j]

    def _scale(self, grid_vectors):
        return 1.0 / math.sqrt(grid_vectors.shape[-1])  # 1 / sqrt(d)

    def _flat(self, grid_vectors):
        """`(B, S, S, d)` -> `(B, S^2, d)`, row k = V_{num=k}, k = i * S + j (eq. (2))."""
        return ops.reshape(grid_vectors, (-1, self.grid * self.grid, grid_vectors.shape[-1]))

    def attention_map(self, grid_vectors):
        """The S^2 x S x S map of eq. (3).

        Args:
            grid_vectors: V, `(batch, S, S, d)`.

        Returns:
            `(batch, S, S, S^2)`: `[b, i, j, k] = scale * V_k . V_{i*S+j}`.
        """
        cells = self._flat(grid_vectors)  # (B, S^2, d)
        # eq. (3): F_new(k, i, j) = V_{num=k} . V_{num=i*S+j}, scaled by 1/sqrt(d)
        return ops.einsum("bije,bke->bijk", grid_vectors, cells) * self._scale(grid_vectors)

    def gather_logits(self, grid_vectors, cell_index, out_size, channels_last=False):
        """Attention mask logits of chosen cells, at mask resolution.

        Args:
            grid_vectors: V, `(batch, S, S, d)`.
            cell_index: int `(batch, P)`, cells k = i * S + j. Values outside
                [0, S^2) (e.g. -1 padding) are clipped into range: mask them.
            out_size: `(Hm, Wm)`, the mask resolution.
            channels_last: return `(batch, Hm, Wm, P)` instead.

        Returns:
            `(batch, P, Hm, Wm)`: `gamma * resize(F_new(k), out_size)` for
            k = cell_index[b, p], computed as
            `gamma * scale * V_k . resize(V, out_size)`.
        """
        if not self.built:
            raise ValueError("GridAttention.gather_logits: call the layer on features first (it is not built)")
        cells = self.grid * self.grid
        cell_index = ops.clip(ops.cast(cell_index, "int32"), 0, cells - 1)
        # V_k of each chosen cell, (B, P, d): rows of the batch's (B * S^2, d) stack (a gather with
        # offsets; take_along_axis would transpose int64 indices, a oneDNN error line on TensorFlow)
        offsets = ops.arange(ops.shape(cell_index)[0], dtype="int32")[:, None] * cells
        chosen = ops.take(ops.reshape(grid_vectors, (-1, grid_vectors.shape[-1])), cell_index + offsets, axis=0)
        upsampled = ops.image.resize(grid_vectors, tuple(out_size), interpolation="bilinear")  # (B, Hm, Wm, d)
        # resize(F_new(k))[y, x] = scale * V_k . resize(V)[y, x]   (bilinear resize is linear)
        layout = "bhwp" if channels_last else "bphw"
        logits = ops.einsum(f"bhwe,bpe->{layout}", upsampled, chosen) * self._scale(grid_vectors)
        return ops.cast(self.gamma, logits.dtype) * logits

    def full_logits(self, grid_vectors, out_size):
        """Attention mask logits of all S^2 cells, at mask resolution.

        Args:
            grid_vectors: V, `(batch, S, S, d)`.
            out_size: `(Hm, Wm)`.

        Returns:
            `(batch, Hm, Wm, S^2)`: channel k = `gamma * resize(F_new(k), out_size)`.
        """
        if not self.built:
            raise ValueError("GridAttention.full_logits: call the layer on features first (it is not built)")
        upsampled = ops.image.resize(grid_vectors, tuple(out_size), interpolation="bilinear")  # (B, Hm, Wm, d)
        logits = ops.einsum("bhwe,bke->bhwk", upsampled, self._flat(grid_vectors)) * self._scale(grid_vectors)
        return ops.cast(self.gamma, logits.dtype) * logits

    def compute_output_shape(self, input_shape):
        channels = self.embed_dim if self.embed_dim else input_shape[-1]
        return (input_shape[0], self.grid, self.grid, channels)

    def get_config(self):
        config = super().get_config()
        config.update({"grid": self.grid, "embed_dim": self.embed_dim, "gamma_init": self.gamma_init,
                       "normalize": self.normalize})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("normalize", "none")  # saved before the option existed: unnormalised
        return cls(**config)
