"""Configuration: one frozen dataclass tree loaded strictly from YAML.

`SOLOConfig` holds five concerns (`model`, `data`, `train`, `eval`,
`export`). `load_config(path, overrides)` reads YAML with `yaml.safe_load`,
applies `--set dotted.key=value` overrides (values parsed with
`yaml.safe_load`, never `eval`), and rejects unknown keys (with a close-match
suggestion), wrong types and out-of-range values as one-line `SoloError`s
naming the file and the dotted key.

Where the paper (the grid-attention SOLO paper, "the seed") is silent, values
follow the SOLO reference (Wang et al., "SOLO: Segmenting Objects by
Locations", ECCV 2020, arXiv:1912.04488, and its public code / mmdetection's
`configs/solo`); each such field says so in its comment.
"""

import dataclasses
import difflib
import math
import os
import re
import typing
import warnings
from dataclasses import dataclass, field

import yaml

from keras_solo.errors import SoloError, atomic_write
from keras_solo.runtime.formats import QUANTS

PAPER_CLASSES = ("person", "rider", "car", "truck", "bus")
# The presets that ship with the package (keras_solo/presets/NAME.yaml); the
# recipes in training/ name one as their base.
PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
BACKBONES = ("resnet50", "mobilenetv3", "efficientnet_lite0", "tiny")
LEVEL_NAMES = ("P2", "P3", "P4", "P5", "P6")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The network: backbone -> FPN -> SOLO heads (+ grid attention).

    Mask sizes for the paper's 1344x672 input with `head_resize: reference`:
    head strides 8, 8, 16, 32, 32 give head inputs 84x168, 84x168, 42x84,
    21x42, 21x42 (HxW) and masks (2x) 168x336, 168x336, 84x168, 42x84, 42x84.
    With `head_resize: none` P2's mask would be 336x672 (4x more pixels).
    """

    # Backbone: resnet50 (paper), mobilenetv3 / efficientnet_lite0 (edge), tiny (tests).
    backbone: str = "resnet50"
    # none | imagenet (Keras download, needs a network) | a path to weights.
    backbone_weights: str = "none"
    num_classes: int = 5
    class_names: tuple[str, ...] = PAPER_CLASSES
    # Network input (width, height); the paper uses 1344x672 (Table 1).
    input_size: tuple[int, int] = (1344, 672)
    fpn_channels: int = 256  # paper Sec. 3.1
    # FPN levels used by the heads, finest first (paper: P2..P6).
    levels: tuple[str, ...] = LEVEL_NAMES
    # Grid number S per level (paper Table 2).
    grids: tuple[int, ...] = (40, 36, 24, 16, 12)
    # SOLO reference: the head sees P2 resized to P3's size and P6 to P5's
    # (head strides 8, 8, 16, 32, 32). "none" feeds Table 1 sizes unchanged.
    head_resize: str = "reference"
    head_convs: int = 7  # paper Sec. 3.2: 7 conv groups per branch
    head_channels: int = 256  # SOLO reference width
    norm_groups: int = 32  # GroupNorm groups (SOLO reference)
    # Head tower norm: "group" (paper, SOLO reference) or "batch" (one
    # BatchNorm per level, shared convs; folds into the convs at export).
    head_norm: str = "group"
    use_coords: bool = True  # CoordConv channels, eq. (1)
    use_attention: bool = True  # grid attention branch, Sec. 3.3-3.4
    # Learned projection of V before the dot product; 0 = the paper's raw
    # features (no projection).
    attention_dim: int = 64
    attention_gamma_init: float = 1.0
    # Grid vectors centred over the cells and scaled to unit RMS (ours):
    # "vector" bounds the attention logits by gamma * sqrt(attention_dim)
    # whatever the backbone's feature scale (unnormalised, the edge preset's
    # pretrained backbone gave logits of 125-850 at init; GridAttention's
    # docstring); "image" = one RMS per image; "none" = the paper's raw form.
    attention_normalize: str = "vector"
    prior_prob: float = 0.01  # focal-loss prior for the category bias (RetinaNet/SOLO)
    # Target assignment (SOLO reference): ranges on sqrt(w*h) of the box, for
    # an 800-px short side, scaled to the input's short side.
    scale_ranges: tuple[tuple[float, float], ...] = (
        (1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    scale_reference_size: int = 800
    center_sigma: float = 0.2  # SOLO: centre region = sigma * box
    # Positives kept per level and image (cells); SOLO has no cap, a cap keeps
    # the gathered mask tensor bounded. 3x3 cells x instances rarely exceeds it.
    max_positives: int = 256

    def __post_init__(self):
        n = len(self.levels)
        _check(n >= 1, "model.levels", "needs at least one level")
        for name in self.levels:
            _check(name in LEVEL_NAMES, "model.levels", f"{name!r} is not one of {', '.join(LEVEL_NAMES)}")
        _check(list(self.levels) == sorted(self.levels) and len(set(self.levels)) == n,
               "model.levels", "must be distinct and ordered finest first")
        _check(len(self.grids) == n, "model.grids", f"has {len(self.grids)} entries but model.levels has {n}")
        _check(len(self.scale_ranges) == n, "model.scale_ranges",
               f"has {len(self.scale_ranges)} entries but model.levels has {n}")
        for lo, hi in self.scale_ranges:
            _check(0 <= lo < hi, "model.scale_ranges", f"range ({lo}, {hi}) must satisfy 0 <= lo < hi")
        _check(all(s >= 1 for s in self.grids), "model.grids", "every grid must be >= 1")
        _check(self.backbone in BACKBONES, "model.backbone",
               f"{self.backbone!r} is not one of {', '.join(BACKBONES)}" + _suggest(self.backbone, BACKBONES))
        _check(self.head_resize in ("reference", "none"), "model.head_resize", "must be 'reference' or 'none'")
        _check(self.num_classes >= 1, "model.num_classes", "must be >= 1")
        _check(len(self.class_names) == self.num_classes, "model.class_names",
               f"has {len(self.class_names)} names but model.num_classes is {self.num_classes}")
        _check(all(v > 0 and v % 32 == 0 for v in self.input_size), "model.input_size",
               f"{self.input_size} must be positive multiples of 32")
        if self.head_resize == "none" and "P6" in self.levels:
            _check(all(v % 64 == 0 for v in self.input_size), "model.input_size",
                   f"{self.input_size} must be multiples of 64 when P6 is used with head_resize: none")
        _check(self.fpn_channels >= 1 and self.head_channels >= 1, "model.head_channels", "must be >= 1")
        _check(self.norm_groups >= 1 and self.head_channels % self.norm_groups == 0, "model.norm_groups",
               f"{self.norm_groups} must divide model.head_channels ({self.head_channels})")
        _check(self.fpn_channels % self.norm_groups == 0, "model.norm_groups",
               f"{self.norm_groups} must divide model.fpn_channels ({self.fpn_channels})")
        _check(self.head_convs >= 0, "model.head_convs", "must be >= 0")
        _check(self.head_norm in ("group", "batch"), "model.head_norm",
               f"must be group or batch, got {self.head_norm!r}")
        _check(self.attention_dim >= 0, "model.attention_dim", "must be >= 0")
        _check(self.attention_normalize in ("none", "vector", "image"), "model.attention_normalize",
               f"must be none, vector or image, got {self.attention_normalize!r}")
        _check(0.0 < self.prior_prob < 1.0, "model.prior_prob", "must be in (0, 1)")
        _check(0.0 < self.center_sigma <= 1.0, "model.center_sigma", "must be in (0, 1]")
        _check(self.max_positives >= 1, "model.max_positives", "must be >= 1")
        _check(self.scale_reference_size > 0, "model.scale_reference_size", "must be > 0")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the data is and how batches are made."""

    train_json: str = "data/synthetic/instances_train.json"
    train_images: str = ""  # "" = the JSON's directory
    val_json: str = "data/synthetic/instances_val.json"
    val_images: str = ""
    size_divisor: int = 32
    max_instances: int = 64
    mask_stride: int = 4  # targets need masks no finer than the finest mask stride
    flip: bool = True
    scale_jitter: tuple[float, float] = (0.8, 1.2)
    photometric: bool = True
    # Simple copy-paste (Ghiasi et al., CVPR 2021), training only: the probability
    # that an example gets a random subset (each p = 0.5, at least one) of another
    # training image's non-crowd instances pasted on top, that image with its own
    # jitter, offset, flip and colour; covered pixels leave the instances below
    # (one left with < 20 input pixels is dropped). 0 = off (one more decode when on).
    copy_paste: float = 0.0
    strict: bool = False  # malformed polygons: error instead of skip+warn

    def __post_init__(self):
        _check(self.size_divisor >= 1, "data.size_divisor", "must be >= 1")
        _check(self.max_instances >= 1, "data.max_instances", "must be >= 1")
        _check(self.mask_stride in (1, 2, 4, 8), "data.mask_stride", "must be 1, 2, 4 or 8")
        lo, hi = self.scale_jitter
        _check(0.1 <= lo <= hi <= 4.0, "data.scale_jitter", f"({lo}, {hi}) must satisfy 0.1 <= lo <= hi <= 4")
        _check(0.0 <= self.copy_paste <= 1.0, "data.copy_paste", "must be in [0, 1] (0 = off)")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation (SOLO reference: SGD 0.9, lr 0.01 at batch 16, wd 1e-4,
    500 warm-up iterations, x0.1 at epochs 27 and 33 of 36, clip norm 35)."""

    epochs: int = 36
    batch_size: int = 16
    steps_per_epoch: int = 0  # 0 = one pass over the training set
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float = 0.01  # at base_batch_size; scaled linearly by batch size
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    warmup_ratio: float = 0.01  # warm-up starts at lr * ratio (mmdet: 1/3 linear; SOLO code 0.01)
    schedule: str = "step"  # step | cosine
    lr_steps: tuple[int, ...] = (27, 33)  # epochs where lr *= 0.1 (step schedule)
    clipnorm: float = 35.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    mask_loss_weight: float = 3.0  # lambda of eq. (4) (SOLO reference)
    # Backbone layers up to this feature stay fixed ("none" | "C2".."C5"), and its
    # BatchNorm trains or runs frozen ("train" | "frozen"), as detectron2's
    # FREEZE_AT=2 + FrozenBN and the SOLO reference's frozen_stages=1 + norm_eval.
    # "auto": C2 fixed (freeze_backbone) / BatchNorm frozen (backbone_norm) for a
    # pretrained backbone, nothing from scratch. Off by default: on the edge preset
    # C2 fixed alone gives 1.2x the images/s (1.37x before BatchNorm ran on the fused
    # kernel) and the frozen BatchNorm more, but both end with a higher validation
    # loss on Cityscapes (2 seeds): docs/RESULTS.md.
    freeze_backbone: str = "none"
    backbone_norm: str = "train"
    # Weight EMA (Polyak averaging, as YOLO-seg trains): the optimizer keeps
    # an average with this momentum per step (0 = off); validation, the
    # checkpoints and so evaluation and export use the average, and
    # last_raw.keras keeps the optimizer's own weights. 0.998 averages over
    # about 500 steps (one pass of train_all at batch 4).
    ema_momentum: float = 0.0
    mixed_precision: bool = False
    strategy: str = "default"  # default | mirrored | multi_worker (TF_CONFIG)
    seed: int = 0
    eval_every: int = 0  # evaluate AP every N epochs during fit (0 = off)
    checkpoint_every: int = 1

    def __post_init__(self):
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.steps_per_epoch >= 0, "train.steps_per_epoch", "must be >= 0")
        _check(self.optimizer in ("sgd", "adamw"), "train.optimizer", "must be 'sgd' or 'adamw'")
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        _check(self.base_batch_size >= 1, "train.base_batch_size", "must be >= 1")
        _check(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        _check(0 < self.warmup_ratio <= 1, "train.warmup_ratio", "must be in (0, 1]")
        _check(self.schedule in ("step", "cosine", "constant"), "train.schedule",
               "must be 'step', 'cosine' or 'constant'")
        _check(self.clipnorm >= 0, "train.clipnorm", "must be >= 0 (0 = off)")
        _check(0 < self.focal_alpha < 1, "train.focal_alpha", "must be in (0, 1)")
        _check(self.focal_gamma >= 0, "train.focal_gamma", "must be >= 0")
        _check(self.mask_loss_weight >= 0, "train.mask_loss_weight", "must be >= 0")
        _check(self.freeze_backbone in ("auto", "none", "C2", "C3", "C4", "C5"), "train.freeze_backbone",
               "must be 'auto', 'none', 'C2', 'C3', 'C4' or 'C5'")
        _check(self.backbone_norm in ("auto", "frozen", "train"), "train.backbone_norm",
               "must be 'auto', 'frozen' or 'train'")
        _check(0.0 <= self.ema_momentum < 1.0, "train.ema_momentum", "must be in [0, 1) (0 = off)")
        _check(self.strategy in ("default", "mirrored", "multi_worker"), "train.strategy",
               "must be 'default', 'mirrored' or 'multi_worker'")
        _check(self.eval_every >= 0, "train.eval_every", "must be >= 0")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")


NMS_POOLS = (1, 2, 4)  # Matrix NMS on binary masks average-pooled by this factor (eval.nms_pool, export.nms_pool)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Inference thresholds (SOLO reference test_cfg)."""

    score_thr: float = 0.1
    nms_pre: int = 500
    mask_thr: float = 0.5
    update_thr: float = 0.05
    max_per_img: int = 100
    nms_kernel: str = "gaussian"  # gaussian | linear
    nms_sigma: float = 2.0
    # Matrix NMS IoUs on masks average-pooled by this factor (1 = exact; the
    # edge preset uses 2: its NMS matmul was the costliest float op).
    nms_pool: int = 1
    # Candidate masks, Matrix NMS and the returned masks at the finest mask
    # size divided by this (1 = SOLO's stride 4; 2 = stride 8, 4x fewer
    # pixels in every float decoding op; the masks are upsampled to the image
    # afterwards either way).
    mask_downsample: int = 1

    def __post_init__(self):
        for key in ("score_thr", "mask_thr", "update_thr"):
            v = getattr(self, key)
            _check(0.0 <= v < 1.0, f"eval.{key}", f"{v} must be in [0, 1)")
        _check(self.nms_pre >= 1, "eval.nms_pre", "must be >= 1")
        _check(self.max_per_img >= 1, "eval.max_per_img", "must be >= 1")
        _check(self.max_per_img <= self.nms_pre, "eval.max_per_img", "must be <= eval.nms_pre")
        _check(self.nms_kernel in ("gaussian", "linear"), "eval.nms_kernel", "must be 'gaussian' or 'linear'")
        _check(self.nms_sigma > 0, "eval.nms_sigma", "must be > 0")
        _check(self.nms_pool in NMS_POOLS, "eval.nms_pool", "must be 1, 2 or 4")
        _check(self.mask_downsample in (1, 2), "eval.mask_downsample", "must be 1 or 2")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Edge export: fixed-size top-K outputs."""

    top_k: int = 100
    # Matrix NMS pooling in the export graph (0: eval.nms_pool): a larger
    # top_k with pooled masks costs what a smaller one does unpooled.
    nms_pool: int = 0
    quant: str = "fp32"  # one of runtime.formats.QUANTS (the TFLite ones)
    calib_images: int = 100
    threads: int = 2

    def __post_init__(self):
        _check(self.top_k >= 1, "export.top_k", "must be >= 1")
        _check(self.nms_pool in (0,) + NMS_POOLS, "export.nms_pool", "must be 0 (eval.nms_pool), 1, 2 or 4")
        _check(self.quant in QUANTS, "export.quant", f"must be one of {', '.join(QUANTS)}")
        _check(self.calib_images >= 1, "export.calib_images", "must be >= 1")
        _check(self.threads >= 1, "export.threads", "must be >= 1")


@dataclass(frozen=True, kw_only=True)
class SOLOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# ----------------------------------------------------------------------------
# Loading

class _FieldError(Exception):
    def __init__(self, key, problem):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def _check(ok, key, problem):
    if not ok:
        raise _FieldError(key, problem)


def _suggest(name, choices):
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(tp):
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def _coerce(value, tp, key):
    """Checks `value` against the annotation `tp`; returns the typed value."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _FieldError(key, f"expected {_type_name(tp)}, got {_short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _FieldError(key, f"expected {_type_name(tp)}, got {len(value)} values")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _FieldError(key, f"expected true/false, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _FieldError(key, f"expected an integer, got {_short(value)}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float range
                number = math.inf
            if not math.isfinite(number):
                raise _FieldError(key, f"expected a finite number, got {_short(value)}")
            return number
        raise _FieldError(key, f"expected a number, got {_short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        raise _FieldError(key, f"expected a string, got {_short(value)}")
    raise _FieldError(key, f"unsupported type {tp}")


# Keys of older versions that nothing reads any more: skipped where they hold
# their old default (run folders' config.yaml), a warning otherwise.
RETIRED_KEYS = {"eval.batch_size": (1, "inference runs one image at a time")}


def _build(cls, data, prefix):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _FieldError(prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if dotted in RETIRED_KEYS and key not in fields:
            default, why = RETIRED_KEYS[dotted]
            if value != default:
                warnings.warn(f"{dotted}: no longer used ({why}); ignored", stacklevel=2)
            continue
        if key not in fields:
            raise _FieldError(dotted, "unknown key" + _suggest(key, fields))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, dotted)
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def config_from_dict(data, source="<config>"):
    """Builds a `SOLOConfig` from a nested dict, strictly.

    Raises:
        SoloError: one line, ``<source>: <dotted.key>: <problem>``.
    """
    try:
        return _build(SOLOConfig, data, "")
    except _FieldError as e:
        raise SoloError(f"{source}: {e.key}: {e.problem}") from None
    except TypeError as e:  # a frozen dataclass rejecting something unforeseen
        raise SoloError(f"{source}: {e}") from None


def parse_override(text):
    """Parses ``dotted.key=value`` (value read with yaml.safe_load)."""
    if "=" not in text:
        raise SoloError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SoloError(f"--set {text!r}: bad key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.constructor.ConstructorError:
        raise SoloError(f"--set {text!r}: value is not valid YAML: refused a tag (only plain YAML is read)") from None
    except yaml.YAMLError as e:
        raise SoloError(f"--set {text!r}: value is not valid YAML ({type(e).__name__})") from None
    return key, value


def _apply_override(tree, key, value):
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SoloError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path):
    """Reads a YAML mapping with yaml.safe_load; one-line errors."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SoloError(f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)  # never yaml.load: a tag must not build Python objects
    except yaml.constructor.ConstructorError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        tag = re.search(r"tag '([^']*)'", str(e.problem))
        what = f"the tag {tag.group(1)}" if tag else "a YAML construct"
        raise SoloError(f"{path}: not valid YAML{at}: refused {what} (only plain YAML is read, with yaml.safe_load)"
                        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SoloError(f"{path}: not valid YAML{at}") from None
    except RecursionError:
        raise SoloError(f"{path}: not a config (YAML nested too deeply)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SoloError(f"{path}: cannot read ({e.__class__.__name__})") from None
    if data is None:  # an empty or comment-only file would silently train the defaults (the paper preset)
        raise SoloError(f"{path}: empty config (no keys); start from a preset in training/ "
                        "(the defaults are the ResNet-50 paper model at 1344x672)")
    if not isinstance(data, dict):
        raise SoloError(f"{path}: expected a mapping of sections (model, data, train, eval, export)")
    if data and all(value is None or value == {} for value in data.values()):  # `model:` alone
        raise SoloError(f"{path}: empty config (only empty sections: {', '.join(map(str, data))}); start from a "
                        "preset in training/ (the defaults are the ResNet-50 paper model at 1344x672)")
    return data


def preset_names():
    """The names of the packaged presets ("demo", "edge", "paper", ...)."""
    return tuple(sorted(n[:-5] for n in os.listdir(PRESETS_DIR) if n.endswith(".yaml")))


def preset_path(preset):
    """The YAML file of a preset: a packaged preset's name, else `preset` as a path."""
    text = os.fspath(preset)
    if not text.endswith((".yaml", ".yml")) and os.sep not in text and not os.path.exists(text):
        path = os.path.join(PRESETS_DIR, f"{text}.yaml")
        if not os.path.exists(path):
            raise SoloError(f"{text!r}: no such preset (packaged: {', '.join(preset_names())}) "
                            "and no such config file" + _suggest(text, preset_names()))
        return path
    return text


def read_preset(path, _seen=()):
    """A preset's sections, with ``base: FILE`` (a path relative to the
    preset's folder) read first and this file's keys laid over it, key by key
    within each section: a recipe names only what it changes."""
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise SoloError(f"{path}: base: expected the path of another preset, got {_short(base)}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(os.fspath(path)), base))
    if os.path.abspath(base_path) in _seen:
        raise SoloError(f"{path}: base: {base} is a cycle of presets")
    merged = read_preset(base_path, _seen + (os.path.abspath(os.fspath(path)),))
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def load_config(path=None, overrides=()):
    """Loads a preset (or the defaults) and applies ``--set`` overrides.

    Args:
        path: a YAML file, the name of a packaged preset (`preset_names`), or
            None for the defaults.
        overrides: iterable of ``"dotted.key=value"`` strings.

    Returns:
        A frozen `SOLOConfig`.

    Raises:
        SoloError: naming the file (or ``--set``) and the dotted key.
    """
    path = preset_path(path) if path is not None else None
    data = read_preset(path) if path is not None else {}
    source = os.fspath(path) if path is not None else "<defaults>"
    override_list = list(overrides or ())
    for text in override_list:
        key, value = parse_override(text)
        _apply_override(data, key, value)
    if override_list:
        source += " (with --set)"
    return config_from_dict(data, source)



def load_run_config(model_path):
    """The resolved config.yaml of the run folder holding a checkpoint, or None (absent or unreadable)."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.yaml")
    if not os.path.exists(path):
        return None
    try:
        return load_config(path)
    except SoloError:
        return None

def config_to_dict(config):
    """The config as plain YAML-able data (tuples become lists)."""

    def convert(v):
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [convert(x) for x in v]
        return v

    return convert(config)


def save_config(config, path):
    """Writes the resolved config next to a checkpoint/export (atomically)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(config_to_dict(config), f, sort_keys=False)

    atomic_write(path, write, what="config")


def replace(config, **sections):
    """Returns a copy with whole sections or dotted keys replaced.

    ``replace(cfg, **{"train.epochs": 3})`` re-validates the result.
    """
    data = config_to_dict(config)
    for key, value in sections.items():
        _apply_override(data, key, value)
    return config_from_dict(data, "<replace>")


