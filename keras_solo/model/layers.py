"""Small building blocks shared by the backbone, FPN, heads and attention.

- `GroupNorm`: group normalisation in a form that converts fully to int8 TFLite.
- `ConvNormAct`: 3x3 conv + GroupNorm + ReLU, the "convolution group" of the
  paper's Sec. 3.2.
- `CoordConcat`: the two coordinate channels of the paper's eq. (1).
- `Resize`: a fixed-size image resize (bilinear / nearest).
- `ImageNormalize`: raw 0..255 RGB -> the range a backbone expects.

All layers are channels-last, use `keras.ops` only and expect static spatial
sizes (the project runs at a fixed input size, which also gives TFLite
fixed-size RESIZE / RESHAPE ops).

Reference:
    Wang et al., "SOLO: Segmenting Objects by Locations", arXiv:1912.04488.
    The seed paper (grid attention SOLO), Sec. 3.2, eq. (1).
"""

import keras
from keras import ops


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def _static_hw(shape, layer_name):
    """Returns `(height, width)` of a `(batch, height, width, channels)` shape."""
    if len(shape) != 4:
        raise ValueError(f"{layer_name} expects a 4-D (batch, height, width, channels) input, got shape {shape}")
    height, width = shape[1], shape[2]
    if height is None or width is None:
        raise ValueError(f"{layer_name} needs static spatial sizes, got shape {shape}; "
                         "build the model with a fixed input size")
    return int(height), int(width)


@keras.saving.register_keras_serializable(package="keras_solo")
class GroupNorm(keras.layers.Layer):
    """Group normalisation (Wu & He, 2018) for channels-last tensors.

    Computes, per sample and per group of `channels / groups` channels,

        d = x - mean(x);  var = mean(d * d);  y = d / sqrt(var + epsilon)

    followed by a per-channel affine `gamma * y + beta`. The explicit
    `mean(d * d)` form (instead of `ops.moments` / `ops.var`, as in
    `keras.layers.GroupNormalization`) lowers to MEAN, SUB, MUL, RSQRT, ADD,
    all of which the TFLite int8 kernels support, so the layer quantises fully.
    Numerically it equals `keras.layers.GroupNormalization` with the same
    `groups` and `epsilon`.

    Args:
        groups: number of channel groups; must divide the channel count.
            Defaults to 32.
        epsilon: added to the variance. Defaults to 1e-5.

    Call:
        inputs: `(batch, height, width, channels)`.

    Returns:
        `(batch, height, width, channels)`.
    """

    def __init__(self, groups=32, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("groups", groups)
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0, got {epsilon!r}")
        self.groups = groups
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"GroupNorm: `groups`={self.groups} must divide the channel count {channels}")
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        height, width = _static_hw(inputs.shape, "GroupNorm")
        channels = inputs.shape[-1]
        x = inputs
        if self.compute_dtype in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")  # statistics in float32 under mixed precision
        # (batch, height, width, groups, channels / groups)
        grouped = ops.reshape(x, (-1, height, width, self.groups, channels // self.groups))
        centred = grouped - ops.mean(grouped, axis=(1, 2, 4), keepdims=True)  # d = x - mean(x)
        variance = ops.mean(centred * centred, axis=(1, 2, 4), keepdims=True)  # var = mean(d * d)
        normalised = centred * ops.rsqrt(variance + self.epsilon)  # d / sqrt(var + eps)
        normalised = ops.reshape(normalised, (-1, height, width, channels))
        outputs = normalised * ops.cast(self.gamma, normalised.dtype) + ops.cast(self.beta, normalised.dtype)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="keras_solo")
class ConvNormAct(keras.layers.Layer):
    """Conv2D ("same" padding) + GroupNorm + activation: one convolution group.

    The paper's heads (Sec. 3.2) stack 7 of these (3x3 conv, GN, ReLU). As in
    the SOLO reference, conv kernels start from a normal distribution with
    std 0.01; the conv has no bias when a norm follows (GN's beta replaces it).

    Args:
        filters: output channels.
        kernel_size: square kernel size. Defaults to 3.
        strides: conv stride. Defaults to 1.
        groups: GroupNorm groups (must divide `filters`). Defaults to 32.
        activation: a Keras activation name, or None for linear. Defaults to
            "relu".
        use_norm: whether to apply GroupNorm. Defaults to True.

    Call:
        inputs: `(batch, height, width, channels)`.

    Returns:
        `(batch, ceil(height / strides), ceil(width / strides), filters)`.
    """

    def __init__(self, filters, kernel_size=3, strides=1, groups=32, activation="relu", use_norm=True, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("filters", filters)
        _check_positive_int("kernel_size", kernel_size)
        _check_positive_int("strides", strides)
        _check_positive_int("groups", groups)
        if use_norm and filters % groups:
            raise ValueError(f"ConvNormAct: `groups`={groups} must divide `filters`={filters}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.groups = groups
        self.activation = activation
        self.use_norm = use_norm

        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=not use_norm,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=self.dtype_policy, name="conv")
        self.norm = GroupNorm(groups, dtype=self.dtype_policy, name="norm") if use_norm else None
        self.activation_fn = keras.activations.get(activation)

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.norm is not None:
            self.norm.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs):
        outputs = self.conv(inputs)
        if self.norm is not None:
            outputs = self.norm(outputs)
        return self.activation_fn(outputs)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "groups": self.groups,
            "activation": self.activation,
            "use_norm": self.use_norm,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_solo")
class CoordConcat(keras.layers.Layer):
    """Appends the two coordinate channels of the paper's eq. (1) (CoordConv).

    For a `h x w` feature map, column `i` (0..w-1) and row `j` (0..h-1) get

        x = -1 + 2 * i / w,   y = -1 + 2 * j / h        (eq. (1))

    appended in the order (x, y). The maps are built from the static shape,
    so an exported model holds them as constants.

    Call:
        inputs: `(batch, height, width, channels)`.

    Returns:
        `(batch, height, width, channels + 2)`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, inputs):
        height, width = _static_hw(inputs.shape, "CoordConcat")
        x_coord = -1.0 + 2.0 * ops.arange(width, dtype=self.compute_dtype) / width  # eq. (1): x = -1 + 2 i / w
        y_coord = -1.0 + 2.0 * ops.arange(height, dtype=self.compute_dtype) / height  # eq. (1): y = -1 + 2 j / h
        x_map = ops.broadcast_to(ops.reshape(x_coord, (1, width, 1)), (height, width, 1))
        y_map = ops.broadcast_to(ops.reshape(y_coord, (height, 1, 1)), (height, width, 1))
        coords = ops.concatenate([x_map, y_map], axis=-1)  # (height, width, 2)
        # Broadcast over the (possibly unknown) batch by adding to zeros.
        coords = ops.zeros_like(inputs[..., :2]) + ops.cast(coords, inputs.dtype)
        return ops.concatenate([inputs, coords], axis=-1)

    def compute_output_shape(self, input_shape):
        channels = None if input_shape[-1] is None else input_shape[-1] + 2
        return tuple(input_shape[:-1]) + (channels,)


@keras.saving.register_keras_serializable(package="keras_solo")
class Resize(keras.layers.Layer):
    """Resizes a batch of feature maps to a fixed `(height, width)`.

    Uses `keras.ops.image.resize` (half-pixel centres, no antialiasing; the
    same sampling as PyTorch's `interpolate(..., align_corners=False)` used by
    the SOLO reference).

    Args:
        size: `(height, width)` of the output.
        interpolation: "bilinear" or "nearest". Defaults to "bilinear".

    Call:
        inputs: `(batch, height_in, width_in, channels)`.

    Returns:
        `(batch, size[0], size[1], channels)`.
    """

    def __init__(self, size, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        size = tuple(size)
        if len(size) != 2:
            raise ValueError(f"`size` must be (height, width), got {size!r}")
        for value in size:
            _check_positive_int("size", value)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"`interpolation` must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.size = size
        self.interpolation = interpolation

    def call(self, inputs):
        return ops.image.resize(inputs, self.size, interpolation=self.interpolation)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.size + (input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "interpolation": self.interpolation})
        return config


@keras.saving.register_keras_serializable(package="keras_solo")
class ImageNormalize(keras.layers.Layer):
    """Maps a raw RGB image (0..255) to what a backbone expects.

        y = (x - mean) / std        (per channel, RGB order)

    then, with `bgr=True`, reverses the channel order (Caffe-style models such
    as Keras' ResNet-50 expect BGR).

    Args:
        mean: a number or 3 numbers (R, G, B), in 0..255 units.
        std: a number or 3 numbers (R, G, B), in 0..255 units.
        bgr: whether to reverse channels to BGR after normalising. Defaults to
            False.

    Call:
        inputs: `(batch, height, width, 3)` float RGB in 0..255.

    Returns:
        `(batch, height, width, 3)`.
    """

    def __init__(self, mean, std, bgr=False, **kwargs):
        super().__init__(**kwargs)
        mean = tuple(float(m) for m in mean) if isinstance(mean, (tuple, list)) else float(mean)
        std = tuple(float(s) for s in std) if isinstance(std, (tuple, list)) else float(std)
        for name, value in (("mean", mean), ("std", std)):
            if isinstance(value, tuple) and len(value) != 3:
                raise ValueError(f"`{name}` must be a number or 3 numbers (R, G, B), got {value!r}")
        if any(s <= 0 for s in (std if isinstance(std, tuple) else (std,))):
            raise ValueError(f"`std` must be > 0, got {std!r}")
        self.mean = mean
        self.std = std
        self.bgr = bgr

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        normalised = (x - mean) / std  # y = (x - mean) / std
        if self.bgr:
            normalised = ops.flip(normalised, axis=-1)  # RGB -> BGR
        return normalised

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std, "bgr": self.bgr})
        return config
