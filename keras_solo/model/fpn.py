"""Feature Pyramid Network: C2..C5 -> P2..P6 (paper Sec. 3.1, Table 1).

    lateral_l = conv1x1(C_l)                                   l = 2..5
    M_5 = lateral_5;  M_l = lateral_l + upsample2x(M_{l+1})    top-down
    P_l = conv3x3(M_l)                                         l = 2..5
    P_6 = maxpool(P_5, pool 1, stride 2, "same")               = P_5[::2, ::2]

For the paper's 1344x672 (WxH) input with ResNet-50 this gives Table 1:
P2 168x336, P3 84x168, P4 42x84, P5 21x42, P6 11x21 (HxW), 256 channels.

Reference:
    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
"""

import keras
from keras import ops

from keras_solo.model.layers import _static_hw

INPUT_NAMES = ("C2", "C3", "C4", "C5")
OUTPUT_NAMES = ("P2", "P3", "P4", "P5", "P6")


def _upsample_like(top, height, width):
    """Nearest 2x upsampling of `top`, cropped (or resized) to `(height, width)`.

    A stride-2 "same" conv maps size n to ceil(n / 2), so 2x upsampling gives n
    or n + 1 and a crop of the bottom/right row restores n (odd sizes such as
    P5 = 21 -> 42 -> P4 = 42 are exact). If the backbone floors instead
    (2x is smaller than the lateral), fall back to a nearest resize.
    """
    top_height, top_width = _static_hw(top.shape, "FPN")
    upsampled = ops.image.resize(top, (2 * top_height, 2 * top_width), interpolation="nearest")
    if 2 * top_height >= height and 2 * top_width >= width:
        return upsampled[:, :height, :width, :]
    return ops.image.resize(top, (height, width), interpolation="nearest")


@keras.saving.register_keras_serializable(package="keras_solo")
class FPN(keras.layers.Layer):
    """Feature Pyramid Network with an extra max-pooled P6.

    Args:
        channels: output channels of every level (paper: 256). Defaults to 256.
        min_level: finest level built (2 = P2, the paper). A model whose heads
            start at P3 sets 3 so no unused P2 convs are made. Defaults to 2.
        max_level: coarsest level returned (6 = P6, the paper). A model whose
            heads stop at P4 sets 4 so P5's output conv is not made (C5's
            lateral still feeds the top-down pathway). Defaults to 6.

    Call:
        inputs: dict with "C2".."C5", `(batch, H / s, W / s, c_l)`,
            s = 4, 8, 16, 32; static spatial sizes.

    Returns:
        dict with "P<min_level>".."P<max_level>", `(batch, h_l, w_l,
        channels)`; P2..P5 have the sizes of C2..C5 and P6 is
        `ceil(h_5 / 2) x ceil(w_5 / 2)`.
    """

    def __init__(self, channels=256, min_level=2, max_level=6, **kwargs):
        super().__init__(**kwargs)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive int, got {channels!r}")
        if min_level not in (2, 3, 4, 5):
            raise ValueError(f"`min_level` must be 2, 3, 4 or 5, got {min_level!r}")
        if max_level not in range(min_level, 7):
            raise ValueError(f"`max_level` must be in {min_level}..6, got {max_level!r}")
        self.channels = channels
        self.min_level = min_level
        self.max_level = max_level
        self.input_names = INPUT_NAMES[min_level - 2:]
        self.output_names = OUTPUT_NAMES[min_level - 2:max_level - 1]
        # P6 is made from P5, so P5's conv exists whenever P5 or P6 is returned
        self.conv_names = [name for name in self.input_names if int(name[1]) <= max_level]
        self.lateral_convs = {
            name: keras.layers.Conv2D(channels, 1, dtype=self.dtype_policy, name=f"lateral_{name}")
            for name in self.input_names
        }
        self.output_convs = {
            name: keras.layers.Conv2D(channels, 3, padding="same", dtype=self.dtype_policy,
                                      name=f"output_P{name[1]}")
            for name in self.conv_names
        }

    def build(self, input_shape):
        missing = [name for name in self.input_names if name not in input_shape]
        if missing:
            raise ValueError(f"FPN expects a dict with keys {self.input_names}, missing {missing}")
        for name in self.input_names:
            self.lateral_convs[name].build(input_shape[name])
        for name in self.conv_names:
            self.output_convs[name].build(tuple(input_shape[name][:-1]) + (self.channels,))

    def call(self, inputs):
        merged = {}
        top = None
        for name in reversed(self.input_names):  # C5 first: top-down pathway
            lateral = self.lateral_convs[name](inputs[name])  # 1x1 lateral connection
            if top is not None:
                height, width = _static_hw(lateral.shape, "FPN")
                lateral = lateral + _upsample_like(top, height, width)  # M_l = lateral_l + up(M_{l+1})
            merged[name] = lateral
            top = lateral
        outputs = {f"P{name[1]}": self.output_convs[name](merged[name]) for name in self.conv_names}
        if self.max_level == 6:
            # P6 = stride-2 subsampling of P5 (max pool with a 1x1 window; "same" -> ceil).
            outputs["P6"] = ops.max_pool(outputs["P5"], pool_size=1, strides=2, padding="same")
        return {name: outputs[name] for name in self.output_names}

    def compute_output_shape(self, input_shape):
        shapes = {}
        for name in self.conv_names:
            shapes[f"P{name[1]}"] = tuple(input_shape[name][:-1]) + (self.channels,)
        if self.max_level == 6:
            batch, height, width = input_shape["C5"][:3]
            half = lambda n: None if n is None else (n + 1) // 2  # noqa: E731
            shapes["P6"] = (batch, half(height), half(width), self.channels)
        return {name: shapes[name] for name in self.output_names}

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "min_level": self.min_level, "max_level": self.max_level})
        return config
