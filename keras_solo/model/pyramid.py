"""The feature pyramid SOLO's heads read: a backbone (C2..C5) and an FPN on top.

    image (B, H, W, 3) RGB 0..255 -> build_backbone(name) -> C2..C5 -> FPN -> {P_min .. P_max}

One object, as keras-hub's `Backbone`: `SOLO(backbone=PyramidBackbone(...))`
takes its input size and levels from it, and a user swaps or reuses the
feature extractor without touching the heads.

Reference: paper Sec. 3.1 (ResNet-50 + FPN, P2..P6).
"""

import keras

from keras_solo.model.backbone import build_backbone
from keras_solo.model.fpn import FPN

LEVEL_NAMES = ("P2", "P3", "P4", "P5", "P6")


@keras.saving.register_keras_serializable(package="keras_solo")
class PyramidBackbone(keras.layers.Layer):
    """A backbone from `build_backbone` and an FPN over it.

    Args:
        backbone: "resnet50" | "mobilenetv3" | "efficientnet_lite0" | "tiny".
            Defaults to "resnet50" (the paper's).
        weights: "none" | "imagenet" | a `.weights.h5` path, as
            `build_backbone`. Defaults to "none".
        input_size: (W, H) input; fixed. Defaults to (1344, 672).
        fpn_channels: FPN width. Defaults to 256.
        levels: the FPN outputs returned, finest first. Defaults to
            P2..P6.

    Call:
        images: (B, H, W, 3) float RGB 0..255.

    Returns:
        dict {level name: (B, H / s, W / s, fpn_channels)}, s = 4 .. 64.

    Attributes:
        extractor: the `build_backbone` model (C2..C5); `freeze_backbone`
            takes it.
        fpn: the `FPN`.
    """

    def __init__(self, backbone="resnet50", *, weights="none", input_size=(1344, 672), fpn_channels=256,
                 levels=LEVEL_NAMES, **kwargs):
        super().__init__(**kwargs)
        levels = tuple(levels)
        if not levels or not set(levels) <= set(LEVEL_NAMES) or list(levels) != sorted(set(levels)):
            raise ValueError(f"`levels` must be names from {LEVEL_NAMES}, finest first; got {levels}")
        numbers = [int(name[1]) for name in levels]
        self.backbone_name = backbone
        self.weights_source = "none" if weights is None else str(weights)
        self.input_size = tuple(int(v) for v in input_size)
        self.fpn_channels = int(fpn_channels)
        self.levels = levels
        width, height = self.input_size
        self.extractor = build_backbone(backbone, input_shape=(height, width, 3), weights=self.weights_source)
        self.fpn = FPN(channels=self.fpn_channels, min_level=numbers[0], max_level=numbers[-1], name="fpn")

    @classmethod
    def from_preset(cls, preset="edge", *, overrides=(), **options):
        """The pyramid of a packaged preset ("edge", "paper", ...) or a preset YAML.

        Args:
            preset: preset name or YAML path (`config.preset_names`).
            overrides: ``"model.key=value"`` strings, as ``--set``.
            **options: this class's arguments, e.g. ``weights="none"``.
        """
        from keras_solo.config import load_config

        return cls(**{**pyramid_kwargs(load_config(preset, overrides).model), **options})

    def build(self, input_shape):
        self.fpn.build(self.extractor.compute_output_shape(tuple(input_shape)))
        self.built = True

    def call(self, images, training=None):
        pyramid = self.fpn(self.extractor(images, training=training), training=training)
        return {name: pyramid[name] for name in self.levels}

    def compute_output_shape(self, input_shape):
        shapes = self.fpn.compute_output_shape(self.extractor.compute_output_shape(tuple(input_shape)))
        return {name: shapes[name] for name in self.levels}

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": self.backbone_name,
            "weights": "none",  # the weights travel in the .keras file; never re-read on load
            "input_size": list(self.input_size),
            "fpn_channels": self.fpn_channels,
            "levels": list(self.levels),
        })
        return config


def pyramid_kwargs(model_config):
    """`PyramidBackbone` arguments from a config's model section."""
    m = model_config
    return dict(backbone=m.backbone, weights=m.backbone_weights, input_size=m.input_size,
                fpn_channels=m.fpn_channels, levels=m.levels)
