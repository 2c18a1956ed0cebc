"""The SOLO keras.Model: wiring, `compute_loss` (training) and `predict_step`
(inference with Matrix NMS).

    image (B, H, W, 3) 0..255
      -> PyramidBackbone: backbone C2..C5 -> FPN P2..P6 (Sec. 3.1, Table 1)
      -> [head_resize: P2 to P3's size, P6 to P5's (SOLO reference)]
      -> shared SOLOHead per level (Sec. 3.2):
           category logits (B, S, S, C), mask features (B, 2h, 2w, E)
      -> GridAttention per level (Sec. 3.3-3.4): V (B, S, S, d)

Masks are never formed for all S^2 cells. Training gathers the positive
cells' 1x1 kernel columns and attention rows (memory proportional to the
number of instances); inference does the same for the top-scoring candidate
cells. A mask logit map for cell k at level l is

    mask_logits_k = F_l @ W_l[:, k] + b_l[k] + gamma_l * <V_k, resize(V)> / sqrt(d)

i.e. the SOLO mask branch output channel k plus the attention branch's
channel k (eq. (3)) as a residual (Sec. 3.4).

Reference: SOLO, arXiv:1912.04488; the seed paper for attention.
"""

import dataclasses
import math

import keras
from keras import ops



def _replica_context():
    """The tf.distribute replica context when training on several replicas."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def _sum_over_replicas(value):
    context = _replica_context()
    return context.all_reduce("SUM", value) if context is not None else value

from keras_solo import losses as solo_losses
from keras_solo.config import PAPER_CLASSES
from keras_solo import postprocess
from keras_solo import targets as solo_targets
from keras_solo.model.attention import GridAttention, normalize_mode
from keras_solo.model.heads import CellMaskKernel, SOLOHead
from keras_solo.model.layers import Resize
from keras_solo.model.pyramid import PyramidBackbone, pyramid_kwargs

LEVEL_STRIDES = {"P2": 4, "P3": 8, "P4": 16, "P5": 32, "P6": 64}


def head_input_sizes(input_size, levels, head_resize):
    """Sizes (h, w) of the features the heads see, per level.

    Args:
        input_size: (W, H) network input.
        levels: level names, finest first.
        head_resize: "reference" (P2 -> P3's size, P6 -> P5's) or "none".

    Returns:
        list of (h, w); mask sizes are twice these.
    """
    width, height = input_size
    sizes = []
    for name in levels:
        stride = LEVEL_STRIDES[name]
        if head_resize == "reference":
            stride = {"P2": 8, "P6": 32}.get(name, stride)
        sizes.append((math.ceil(height / stride), math.ceil(width / stride)))
    return sizes


@keras.saving.register_keras_serializable(package="keras_solo")
class SOLO(keras.Model):
    """SOLO with optional CoordConv and grid attention.

    Args:
        num_classes: C. Defaults to 5.
        class_names: names of the C classes.
        backbone: a `PyramidBackbone` (backbone + FPN; the model's input
            size and levels are its own), or the name of one
            ("resnet50" | "mobilenetv3" | "efficientnet_lite0" | "tiny"),
            built with the four arguments below.
        input_size: (W, H) network input; fixed (letterboxed). Defaults to
            (1344, 672), the paper's. With a `PyramidBackbone`: leave unset.
        backbone_weights: "none" | "imagenet" | path. Defaults to "none".
        fpn_channels: FPN width. Defaults to 256.
        levels: FPN levels used, finest first. Defaults to P2..P6.
        grids: S per level.
        head_resize: "reference" | "none".
        head_convs, head_channels, norm_groups: head tower shape.
        head_norm: "group" (GroupNorm, the paper's) | "batch" (per-level
            BatchNorm, folds into the convs at export).
        use_coords: CoordConv channels in the mask branch (eq. (1)).
        use_attention: the grid attention branch.
        attention_dim: projection width of V (0 = raw features, the paper's
            literal form).
        attention_gamma_init: initial residual gain of the attention branch.
        attention_normalize: "vector" | "image" | "none", how the grid
            vectors are normalised (see `GridAttention`); models saved
            without this key load with "none".
        prior_prob: focal prior of the category bias.
        target_assigner: `targets.SOLOTargetAssigner` (scale ranges, centre
            region, positives cap, ground-truth mask stride); default its
            defaults.
        solo_loss: `losses.SOLOLoss` (eq. (4)); default its defaults.
        decoder: `postprocess.SOLODecoder` (inference thresholds, Matrix NMS);
            default its defaults. `decode` reads `self.decoder`: replace it
            to change inference.

    Files saved before the parts existed (flat keys such as ``score_thr``,
    the backbone by name) load through `from_config`.
    """

    def __init__(
        self,
        *,
        num_classes=5,
        class_names=PAPER_CLASSES,
        backbone="resnet50",
        input_size=None,
        backbone_weights=None,
        fpn_channels=None,
        levels=None,
        grids=(40, 36, 24, 16, 12),
        head_resize="reference",
        head_convs=7,
        head_channels=256,
        norm_groups=32,
        head_norm="group",
        use_coords=True,
        use_attention=True,
        attention_dim=64,
        attention_gamma_init=1.0,
        attention_normalize="vector",
        prior_prob=0.01,
        target_assigner=None,
        solo_loss=None,
        decoder=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone = _pyramid(backbone, input_size=input_size, weights=backbone_weights, fpn_channels=fpn_channels,
                            levels=levels)
        levels = backbone.levels
        self.target_assigner = target_assigner or solo_targets.SOLOTargetAssigner()
        self.solo_loss = solo_loss or solo_losses.SOLOLoss()
        self.decoder = decoder or postprocess.SOLODecoder()
        if len(grids) != len(levels) or len(self.target_assigner.scale_ranges) != len(levels):
            raise ValueError(
                f"grids {tuple(grids)} and scale_ranges must have one entry per level {tuple(levels)}")
        # === Config ===
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names)
        self.input_size = backbone.input_size
        self.levels = backbone.levels
        self.grids = tuple(int(s) for s in grids)
        self.head_resize = head_resize
        self.head_convs = head_convs
        self.head_channels = head_channels
        self.norm_groups = norm_groups
        self.head_norm = head_norm
        self.use_coords = bool(use_coords)
        self.use_attention = bool(use_attention)
        self.attention_dim = int(attention_dim)
        self.attention_gamma_init = float(attention_gamma_init)
        self.attention_normalize = normalize_mode(attention_normalize)
        self.prior_prob = prior_prob

        self.head_sizes = head_input_sizes(self.input_size, self.levels, head_resize)
        self.mask_sizes = [(2 * h, 2 * w) for h, w in self.head_sizes]

        # === Layers ===
        # Saved as `backbone/...` and `fpn/...` through the two properties below
        # (a .keras file walks attributes by name and saves each layer once, at
        # its first path: "backbone" and "fpn" sort before "pyramid"), so files
        # saved before the pyramid was one object load unchanged.
        self.pyramid = backbone
        self.level_resizers = [Resize(size=size, name=f"head_resize_{i}")
                               for i, size in enumerate(self.head_sizes)]
        self.head = SOLOHead(
            num_classes=self.num_classes, grids=self.grids, head_convs=head_convs,
            head_channels=head_channels, norm_groups=norm_groups, norm=head_norm, use_coords=self.use_coords,
            prior_prob=prior_prob, name="solo_head")
        self.mask_kernels = [CellMaskKernel(grid=s, name=f"mask_kernel_{i}") for i, s in enumerate(self.grids)]
        self.attentions = []
        if self.use_attention:
            self.attentions = [
                GridAttention(grid=s, embed_dim=self.attention_dim or None,
                              gamma_init=self.attention_gamma_init, normalize=self.attention_normalize,
                              name=f"grid_attention_{i}")
                for i, s in enumerate(self.grids)]
        # True: masks only for the cells that need them (positives in training,
        # candidates at inference). False (benchmarks only): full S^2 maps.
        self.gather_positive_masks = True

        # Loss trackers (shown in the progress bar and the CSV log).
        self.cate_loss_tracker = keras.metrics.Mean(name="cate_loss")
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")
        self.dice_tracker = keras.metrics.Mean(name="pos_dice")

    # ------------------------------------------------------------------
    def build(self, input_shape=None):
        if self.built:
            return
        width, height = self.input_size
        dummy = ops.zeros((1, height, width, 3))
        outputs = self.call(dummy)
        for level, kernel in enumerate(self.mask_kernels):
            kernel.build(tuple(outputs[f"mask_features_{level}"].shape))
        self.built = True

    def call(self, images, training=None):
        """Runs the network.

        Args:
            images: (B, H, W, 3) float RGB 0..255, H, W = input_size.

        Returns:
            dict with, per level l: ``cate_logits_l`` (B, S, S, C),
            ``mask_features_l`` (B, h, w, E) (half the mask size), and with attention
            ``grid_embed_l`` (B, S, S, d).
        """
        pyramid = self.pyramid(images, training=training)
        level_features = []
        for name, resize, size in zip(self.levels, self.level_resizers, self.head_sizes):
            feature = pyramid[name]
            if tuple(feature.shape[1:3]) != tuple(size):
                feature = resize(feature)
            level_features.append(feature)
        head_outputs = self.head(level_features, training=training)
        outputs = {}
        for level, (cate_logits, mask_features) in enumerate(head_outputs):
            outputs[f"cate_logits_{level}"] = cate_logits
            outputs[f"mask_features_{level}"] = mask_features
            if self.use_attention:
                outputs[f"grid_embed_{level}"] = self.attentions[level](level_features[level], training=training)
        return outputs

    @property
    def backbone(self):
        """The feature extractor (C2..C5) of `pyramid`; `freeze_backbone` takes it."""
        return self.pyramid.extractor

    @property
    def fpn(self):
        return self.pyramid.fpn

    # ------------------------------------------------------------------
    def cell_mask_logits(self, outputs, level, cell_index, out_size=None):
        """Mask logits for chosen cells of one level.

        Args:
            outputs: the dict from `call`.
            level: level index.
            cell_index: int (B, P) cell ids k = i * S + j.
            out_size: (H, W) of the logits; default the level's mask size.
                Inference asks for the finest level's size directly.

        Returns:
            (B, P, H, W) logits: mask branch channel k (+ attention row k).
        """
        out_size = tuple(out_size or self.mask_sizes[level])
        if not self.gather_positive_masks:
            return self._cell_mask_logits_from_full(outputs, level, cell_index)
        logits = self.mask_kernels[level].gather_logits(
            outputs[f"mask_features_{level}"], cell_index, out_size=out_size, channels_last=True)
        if self.use_attention:
            logits = logits + self.attentions[level].gather_logits(
                outputs[f"grid_embed_{level}"], cell_index, out_size=out_size, channels_last=True)
        return ops.transpose(logits, (0, 3, 1, 2))  # (B, P, H, W)

    def _cell_mask_logits_from_full(self, outputs, level, cell_index):
        """The naive path: the full (B, Hm, Wm, S^2) mask map, then a gather.

        Only for measuring what the gathered path saves (`keras-solo profile
        --full-masks`); memory grows with S^2.
        """
        logits = self.mask_kernels[level](outputs[f"mask_features_{level}"])
        logits = ops.image.resize(logits, self.mask_sizes[level], interpolation="bilinear")
        if self.use_attention:
            logits = logits + self.attentions[level].full_logits(
                outputs[f"grid_embed_{level}"], self.mask_sizes[level])
        logits = ops.transpose(logits, (0, 3, 1, 2))  # (B, S^2, Hm, Wm)
        hm, wm = self.mask_sizes[level]
        index = ops.cast(cell_index, "int32")[:, :, None, None]
        index = ops.broadcast_to(index, (ops.shape(index)[0], ops.shape(index)[1], hm, wm))
        return ops.take_along_axis(logits, index, axis=1)

    def build_targets(self, y):
        width, height = self.input_size
        return self.target_assigner(y, input_size=(height, width), grids=self.grids, mask_sizes=self.mask_sizes,
                                    num_classes=self.num_classes)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer pulls one batch and averages it over the replicas
        # (strategy.reduce) to build what is still unbuilt; under
        # MultiWorkerMirroredStrategy that reduce fails on a nested batch
        # (Keras 3.15). A built SOLO has every variable (its weightless
        # resize layers build on their first call): skip it then.
        if self.built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. (4): focal loss on categories + lambda * dice on positive cells."""
        level_targets = self.build_targets(y)
        cate_logits, mask_logits = [], []
        for level in range(len(self.levels)):
            cate_logits.append(ops.cast(y_pred[f"cate_logits_{level}"], "float32"))
            logits = self.cell_mask_logits(y_pred, level, level_targets[level]["pos_index"])
            mask_logits.append(ops.cast(logits, "float32"))
        # Data-parallel training: every replica normalises by the positives of
        # the global batch, so the replicas' summed gradients equal the
        # single-device gradient (Keras sums replica gradients).
        result = self.solo_loss(cate_logits, mask_logits, level_targets, count_reducer=_sum_over_replicas)
        context = _replica_context()
        replicas = float(context.num_replicas_in_sync) if context is not None else 1.0
        # Trackers average replica values; each holds a 1/replicas share.
        self.cate_loss_tracker.update_state(result["cate_loss"] * replicas)
        self.mask_loss_tracker.update_state(result["mask_loss"] * replicas)
        num_pos = result["num_pos"]
        self.dice_tracker.update_state(
            1.0 - result["mask_loss"] * replicas, sample_weight=ops.cast(num_pos > 0, "float32"))
        loss = result["loss"]
        extra = self.losses
        if extra:
            loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in extra])) / replicas
        return loss

    # ------------------------------------------------------------------
    @property
    def output_mask_size(self):
        """(H, W) of the masks inference returns with `self.decoder`."""
        return self.decoder.output_size(self.mask_sizes)

    def decode(self, outputs, decoder=None):
        """SOLO inference: candidates -> maskness -> Matrix NMS -> top max_per_img.

        Args:
            outputs: the dict from `call`.
            decoder: a `SOLODecoder` (default `self.decoder`; the export graph
                passes one with its top-K budget).

        Returns:
            dict: scores (B, K), labels (B, K), masks (B, K, Hm0, Wm0)
            probabilities at the finest mask resolution, index (B, K), valid
            (B, K).
        """
        return (decoder or self.decoder).decode(self, outputs)

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(self(x, training=False))

    # ------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset="edge", *, overrides=(), **model_options):
        """A built SOLO from a packaged preset ("demo", "edge", "paper", ...;
        `config.preset_names`), a preset YAML file or a `SOLOConfig`.

        Args:
            preset: preset name, YAML path or `SOLOConfig`.
            overrides: ``"section.key=value"`` strings, as ``--set``.
            **model_options: model fields, e.g. ``num_classes=3,
                class_names=("car", "bus", "person"), input_size=(640, 320)``
                (``num_classes`` follows ``class_names`` when only they are given).

        The preset's training section stays on the model (`train_config`):
        `compile()` without an optimizer trains with its optimizer and
        learning-rate schedule, sized at `fit` (`fit`'s epochs and steps).
        """
        from keras_solo.config import SOLOConfig, load_config, parse_override, replace

        if "class_names" in model_options and "num_classes" not in model_options:
            model_options["num_classes"] = len(model_options["class_names"])
        if isinstance(preset, SOLOConfig):
            config = replace(preset, **dict(parse_override(text) for text in overrides)) if overrides else preset
        else:
            config = load_config(preset, overrides)
        if model_options:
            config = replace(config, **{f"model.{key}": value for key, value in model_options.items()})
        model = cls(**solo_kwargs(config))
        model.build()
        model.preset_config, model.train_config = config, config.train
        return model

    def compile(self, optimizer=None, **kwargs):
        """`keras.Model.compile`; without an optimizer, the preset's optimizer
        and schedule (`train_config`) are made at `fit`.

        Raises:
            SoloError: no optimizer and no preset (a model read from a file):
                the message says to pass one.
        """
        if optimizer is None and getattr(self, "train_config", None) is None:
            from keras_solo.errors import SoloError

            raise SoloError("compile() without an optimizer takes the preset's, and this model has none (read "
                            "from a file?): pass one, e.g. model.compile(optimizer=keras.optimizers.AdamW(1e-4))")
        self._preset_optimizer = optimizer is None
        super().compile(optimizer=optimizer or "rmsprop", **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        if getattr(self, "_preset_optimizer", False):
            from keras_solo.optimizers import build_optimizer

            steps = kwargs.get("steps_per_epoch") or _steps_of(x)
            self.optimizer = build_optimizer(self.train_config, steps, epochs=kwargs.get("epochs", 1))
            self.optimizer.build(self.trainable_variables)
            self._preset_optimizer = False
        kwargs.setdefault("shuffle", False)  # the input pipelines shuffle (Keras warns it would ignore True)
        return super().fit(x, y, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "backbone": keras.saving.serialize_keras_object(self.pyramid),
            "grids": list(self.grids),
            "head_resize": self.head_resize,
            "head_convs": self.head_convs,
            "head_channels": self.head_channels,
            "norm_groups": self.norm_groups,
            "head_norm": self.head_norm,
            "use_coords": self.use_coords,
            "use_attention": self.use_attention,
            "attention_dim": self.attention_dim,
            "attention_gamma_init": self.attention_gamma_init,
            "attention_normalize": self.attention_normalize,
            "prior_prob": self.prior_prob,
            "target_assigner": keras.saving.serialize_keras_object(self.target_assigner),
            "solo_loss": keras.saving.serialize_keras_object(self.solo_loss),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        config.setdefault("attention_normalize", "none")  # saved before the option existed: unnormalised
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        else:  # saved before the pyramid was one object: the backbone's name and flat keys
            config.setdefault("backbone", "resnet50")
            config.setdefault("input_size", (1344, 672))
            config.setdefault("levels", ("P2", "P3", "P4", "P5", "P6"))
        for key, (cls_, renames) in _PARTS.items():
            legacy = {renames.get(k, k): config.pop(k) for k in list(config) if renames.get(k, k) in _fields(cls_)}
            if key in config:
                config[key] = keras.saving.deserialize_keras_object(config[key])
            elif legacy:  # saved with flat keys (before the parts existed)
                config[key] = cls_(**legacy)
        return cls(**config)


def _pyramid(backbone, **options):
    """`backbone` as a `PyramidBackbone`: built from a name and `options`
    (None: the paper's), or checked against the options it makes redundant."""
    if isinstance(backbone, PyramidBackbone):
        given = {key: value for key, value in options.items() if value is not None}
        if given:
            raise ValueError(f"SOLO(backbone=PyramidBackbone(...)) takes {', '.join(sorted(given))} from the "
                             "backbone: leave them unset (or pass the backbone's name)")
        return backbone
    if not isinstance(backbone, str):
        raise ValueError(f"`backbone` must be a PyramidBackbone or a backbone name, got {type(backbone).__name__}")
    options = {key: value for key, value in options.items() if value is not None}
    return PyramidBackbone(backbone, name="pyramid", **options)


def _fields(cls):
    return {f.name for f in dataclasses.fields(cls)}


def _steps_of(data):
    """Batches per pass of a fit input: len() of a PyDataset, the cardinality of a finite tf.data."""
    try:
        return len(data)
    except TypeError:
        pass
    cardinality = getattr(data, "cardinality", None)
    steps = int(cardinality()) if cardinality is not None else -1
    if steps <= 0:
        raise ValueError("fit(steps_per_epoch=...) is needed to size the preset's learning-rate schedule: "
                         "the input does not say how many batches a pass has")
    return steps


def scaled_scale_ranges(model_config):
    """SOLO's scale ranges rescaled from the reference short side to the input's."""
    width, height = model_config.input_size
    return solo_targets.scale_ranges_for_input(model_config.scale_ranges, (height, width),
                                               model_config.scale_reference_size)


def solo_kwargs(config):
    """Keyword arguments of `SOLO` from a `SOLOConfig`: the architecture, and its
    pyramid backbone, target assigner, loss and decoder."""
    m, t, e = config.model, config.train, config.eval
    architecture = {name: getattr(m, name) for name in (
        "num_classes", "class_names", "grids", "head_resize", "head_convs", "head_channels", "norm_groups", "head_norm", "use_coords",
        "use_attention", "attention_dim", "attention_gamma_init", "attention_normalize", "prior_prob")}
    return dict(
        architecture,
        backbone=PyramidBackbone(**pyramid_kwargs(m), name="pyramid"),
        target_assigner=solo_targets.SOLOTargetAssigner(scale_ranges=scaled_scale_ranges(m),
                                                        center_sigma=m.center_sigma, max_positives=m.max_positives,
                                                        mask_stride=config.data.mask_stride),
        solo_loss=solo_losses.SOLOLoss(focal_alpha=t.focal_alpha, focal_gamma=t.focal_gamma,
                                       mask_weight=t.mask_loss_weight),
        decoder=postprocess.SOLODecoder(**{f.name: getattr(e, f.name) for f in dataclasses.fields(postprocess.SOLODecoder)}),
    )


# The model's serialisable parts, and the flat keys files saved before them used.
_PARTS = {
    "target_assigner": (solo_targets.SOLOTargetAssigner, {}),
    "solo_loss": (solo_losses.SOLOLoss, {"mask_loss_weight": "mask_weight"}),
    "decoder": (postprocess.SOLODecoder, {}),
}


def load_model(path):
    """Loads a `.keras` SOLO model with safe_mode=True (no code from the file runs).

    Raises:
        SoloError: missing file, not a `.keras` archive, a file that needs
            unsafe deserialisation (e.g. a Lambda layer), or not a SOLO model.
    """
    import os
    import zipfile

    from keras_solo.errors import SoloError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise SoloError(f"{path}: no such model file")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise SoloError(f"{path}: not a .keras model file (expected a Keras v3 zip archive)")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as e:
        text = str(e)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise SoloError(f"{path}: refused by safe_mode (the file holds code, e.g. a Lambda layer)") from None
        raise SoloError(f"{path}: cannot load model ({text.splitlines()[0][:160] if text else type(e).__name__})") from None
    except (OSError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise SoloError(f"{path}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if not isinstance(model, SOLO):
        raise SoloError(f"{path}: holds a {type(model).__name__}, not a keras_solo SOLO model")
    return model
