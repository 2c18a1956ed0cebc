"""The network: backbone -> FPN -> SOLO heads + grid attention.

- `layers`: GroupNorm, ConvNormAct, CoordConcat, Resize, ImageNormalize.
- `backbone`: `build_backbone` (resnet50, mobilenetv3, tiny) -> C2..C5.
- `fpn`: `FPN` -> P2..P6.
- `heads`: `SOLOHead` (shared category / mask towers), `CellMaskKernel`.
- `attention`: `GridAttention` (the seed paper's Sec. 3.3-3.4).
"""

from keras_solo.model.attention import GridAttention
from keras_solo.model.backbone import BACKBONE_NAMES, build_backbone
from keras_solo.model.fpn import FPN
from keras_solo.model.heads import CellMaskKernel, SOLOHead
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
    "Resize",
    "SOLOHead",
    "build_backbone",
]
