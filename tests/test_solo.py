"""The SOLO keras.Model: wiring, loss, decoding, saving, training."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_solo import builders
from keras_solo.data.synthetic import make_synthetic
from keras_solo.model.solo import SOLO, head_input_sizes, load_model
from keras_solo.postprocess import split_nms_pre
from helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic(str(out), images=10, size=(128, 64), seed=3, val_fraction=0.2, empty_fraction=0.0)
    return str(out)


@pytest.fixture(scope="module")
def tiny_batch(tiny_data):
    config = tiny_config(tiny_data)
    coco = builders.load_split(config, "train")
    ds = builders.build_dataset(config, coco, training=False, batch_size=4)
    images, targets = next(iter(ds))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


def test_paper_mask_sizes_with_reference_head_resize():
    # 1344x672 input: heads see P2 at P3's size and P6 at P5's (SOLO reference).
    sizes = head_input_sizes((1344, 672), ("P2", "P3", "P4", "P5", "P6"), "reference")
    assert sizes == [(84, 168), (84, 168), (42, 84), (21, 42), (21, 42)]
    masks = [(2 * h, 2 * w) for h, w in sizes]
    assert masks[0] == (168, 336)
    plain = head_input_sizes((1344, 672), ("P2", "P6"), "none")
    assert plain == [(168, 336), (11, 21)]


def test_nms_pre_split_follows_cell_counts():
    shares = split_nms_pre(500, (40, 36, 24, 16, 12), 5)
    assert abs(sum(shares) - 500) <= 3
    assert shares == sorted(shares, reverse=True)


def test_outputs_shapes_and_static_decode(tiny_batch):
    config = tiny_config()
    model = builders.build_model(config)
    images, _ = tiny_batch
    outputs = model(images)
    assert tuple(outputs["cate_logits_0"].shape) == (4, 8, 8, 5)
    assert tuple(outputs["cate_logits_1"].shape) == (4, 4, 4, 5)
    assert tuple(outputs["mask_features_0"].shape) == (4, 8, 16, 32)  # half the mask size
    assert tuple(outputs["grid_embed_1"].shape) == (4, 4, 4, 16)
    decoded = model.predict_on_batch(images)
    assert decoded["masks"].shape == (4, 20, 16, 32)
    assert decoded["scores"].shape == (4, 20)


def test_decode_mask_downsample_and_nms_pool(tiny_batch):
    """Half-size inference masks are the full-size ones resized (same detections)."""
    images, _ = tiny_batch
    model = builders.build_model(tiny_config())
    model.decoder = model.decoder.replace(score_thr=0.0, update_thr=0.0)  # untrained: keep every candidate
    outputs = model(images, training=False)
    full = {k: keras.ops.convert_to_numpy(v) for k, v in model.decode(outputs).items()}
    model.decoder = model.decoder.replace(mask_downsample=2, nms_pool=2)
    assert model.output_mask_size == (8, 16)
    half = {k: keras.ops.convert_to_numpy(v) for k, v in model.decode(outputs).items()}
    assert half["masks"].shape == (4, 20, 8, 16)
    assert half["valid"].sum() > 0
    # the same masks at half size: compare a detection both keep (which ones the untrained model's two
    # decodings keep differs with its random weights: the first kept by both, not the first of `full`)
    both = [(b, d, np.flatnonzero(half["valid"][b] & (half["index"][b] == full["index"][b, d])))
            for b, d in np.argwhere(full["valid"])]
    b, d, same = next((b, d, same) for b, d, same in both if same.size)
    small = keras.ops.convert_to_numpy(keras.ops.image.resize(
        full["masks"][b, d][None, :, :, None], (8, 16), interpolation="bilinear"))[0, :, :, 0]
    # one bilinear resize of the logits vs the 2x-then-resize of probabilities: close, not equal
    assert np.abs(half["masks"][b, same[0]] - small).mean() < 0.05


def test_loss_empty_and_single_object(tiny_batch):
    """mmdet-style behaviour: no objects -> cate loss > 0, mask loss == 0."""
    config = tiny_config()
    model = builders.build_model(config)
    images, targets = tiny_batch
    outputs = model(images)
    empty = dict(targets, classes=np.full_like(targets["classes"], -1))
    model.compute_loss(images, empty, outputs)
    assert float(model.cate_loss_tracker.result()) > 0
    assert float(model.mask_loss_tracker.result()) == 0.0
    model.cate_loss_tracker.reset_state()
    model.mask_loss_tracker.reset_state()
    loss = model.compute_loss(images, targets, outputs)
    assert float(model.mask_loss_tracker.result()) > 0
    assert np.isfinite(float(loss))


def test_cell_mask_logits_equal_full_mask_plus_attention(tiny_batch):
    """Gathered masks equal channel k of the full S^2 mask map + attention channel k.

    The full map is SOLO's order (upsample the mask features 2x, then the 1x1
    conv); the gathered path applies the conv first and upsamples the chosen
    cells' logits: the two must agree (bilinear resizing and the conv commute).
    """
    config = tiny_config()
    model = builders.build_model(config)
    images, _ = tiny_batch
    outputs = model(images)
    cells = np.array([[0, 5, 63], [7, 8, 9], [1, 2, 3], [60, 61, 62]], np.int32)
    gathered = keras.ops.convert_to_numpy(model.cell_mask_logits(outputs, 0, cells))
    upsampled = keras.ops.image.resize(outputs["mask_features_0"], model.mask_sizes[0], interpolation="bilinear")
    full = keras.ops.convert_to_numpy(model.mask_kernels[0](upsampled))
    full = full + keras.ops.convert_to_numpy(
        model.attentions[0].full_logits(outputs["grid_embed_0"], model.mask_sizes[0]))
    for b in range(4):
        for p, k in enumerate(cells[b]):
            np.testing.assert_allclose(gathered[b, p], full[b, :, :, k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("coords,attention", [(False, False), (True, False), (True, True)])
def test_keras_round_trip(tmp_path, tiny_batch, coords, attention):
    config = tiny_config(None, f"model.use_coords={str(coords).lower()}",
                         f"model.use_attention={str(attention).lower()}")
    model = builders.build_model(config)
    images, _ = tiny_batch
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, SOLO)
    assert loaded.use_coords == coords and loaded.use_attention == attention
    a, b = model(images[:1]), loaded(images[:1])
    for key in a:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a[key]), keras.ops.convert_to_numpy(b[key]),
                                   rtol=1e-5, atol=1e-5)
    da, db = model.predict_on_batch(images[:1]), loaded.predict_on_batch(images[:1])
    np.testing.assert_allclose(da["scores"], db["scores"], atol=1e-5)


def test_model_saved_before_attention_normalize_loads_unnormalised(tmp_path, tiny_batch):
    """A .keras file without the `attention_normalize` key keeps its old behaviour."""
    import json
    import zipfile

    images, _ = tiny_batch
    old = builders.build_model(tiny_config(None, "model.attention_normalize=none"))
    path = str(tmp_path / "old.keras")
    old.save(path)
    stripped = str(tmp_path / "stripped.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                assert config["config"].pop("attention_normalize") == "none"
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    loaded = load_model(stripped)
    assert loaded.attention_normalize == "none" and loaded.attentions[0].normalize == "none"
    a, b = old(images[:1]), loaded(images[:1])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a["grid_embed_0"]),
                               keras.ops.convert_to_numpy(b["grid_embed_0"]), rtol=1e-5, atol=1e-5)
    assert builders.build_model(tiny_config(None)).attentions[0].normalize != "none"  # new models: on


def test_file_with_flat_inference_keys_loads_into_the_parts():
    """A .keras file saved before the target assigner / loss / decoder existed (commit 985adc3, flat
    keys, non-default values) loads into the parts and decodes as it did then."""
    import os

    from keras_solo.losses import SOLOLoss
    from keras_solo.postprocess import SOLODecoder

    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    model = load_model(os.path.join(data, "solo_tiny_985adc3.keras"))
    assert isinstance(model.decoder, SOLODecoder) and isinstance(model.solo_loss, SOLOLoss)
    assert model.decoder.score_thr == 0.07 and model.decoder.nms_pre == 123 and model.decoder.max_per_img == 20
    assert model.solo_loss.focal_alpha == 0.3 and model.target_assigner.center_sigma == 0.25
    assert model.target_assigner.scale_ranges == ((1.0, 32.0), (16.0, 512.0))
    want = np.load(os.path.join(data, "solo_tiny_985adc3_decoded.npz"))
    got = {k: keras.ops.convert_to_numpy(v) for k, v in model.decode(model(want["x"], training=False)).items()}
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_array_equal(got["valid"], want["valid"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)
    np.testing.assert_array_equal((got["masks"] > 0.5).sum(axis=(2, 3)), want["mask_area"])


def test_parts_round_trip_and_replace(tmp_path, tiny_batch):
    """The parts are saved in the .keras file; `--set eval.*` replaces the decoder (checked like the config)."""
    from keras_solo.errors import SoloError
    from keras_solo.engine import apply_eval_overrides

    model = builders.build_model(tiny_config(None, "eval.nms_pool=2", "train.mask_loss_weight=2.5"))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load_model(path)
    assert loaded.decoder == model.decoder and loaded.decoder.nms_pool == 2
    assert loaded.solo_loss.mask_weight == 2.5 and loaded.target_assigner == model.target_assigner
    apply_eval_overrides(loaded, ["eval.score_thr=0.3", "eval.nms_pre=60"])
    assert loaded.decoder == model.decoder.replace(score_thr=0.3, nms_pre=60)
    assert loaded.decoder.per_level(loaded.grids, loaded.num_classes) == split_nms_pre(60, loaded.grids, 5)
    with pytest.raises(SoloError, match="eval.nms_pool"):
        apply_eval_overrides(loaded, ["eval.nms_pool=3"])
    assert loaded.decoder.nms_pool == 2


def test_ablation_variants_differ_only_in_params(tiny_batch):
    counts = {}
    for coords, attention in ((False, False), (True, False), (True, True)):
        config = tiny_config(None, f"model.use_coords={str(coords).lower()}",
                             f"model.use_attention={str(attention).lower()}")
        counts[(coords, attention)] = builders.build_model(config).count_params()
    # coords add 2 input channels to the first mask conv (2 * 3 * 3 * 32 weights)
    assert counts[(True, False)] - counts[(False, False)] == 2 * 9 * 32
    assert counts[(True, True)] > counts[(True, False)]


def test_overfits_four_images(tiny_data):
    """The tiny model overfits 4 synthetic images: positive-cell dice > 0.8."""
    config = tiny_config(tiny_data, "train.batch_size=4", "train.learning_rate=0.003",
                         "train.base_batch_size=4", "train.warmup_steps=10", "train.schedule=constant",
                         "train.weight_decay=0.0", "model.head_convs=2", "model.head_channels=32",
                         "train.clipnorm=0")
    coco = builders.load_split(config, "train")
    coco.records[:] = [r for r in coco.records if r.annotations][:4]
    keras.utils.set_random_seed(0)
    model = builders.build_model(config)
    from keras_solo.train import build_optimizer

    model.compile(optimizer=build_optimizer(config.train, 1))
    ds = builders.build_dataset(config, coco, training=False, batch_size=4).cache().repeat()
    history = model.fit(ds, epochs=6, steps_per_epoch=25, verbose=0)  # dice 0.85 after 100 steps, 0.91 after 150
    dice = history.history["pos_dice"][-1]
    assert dice > 0.8, history.history["pos_dice"]
    assert history.history["loss"][-1] < history.history["loss"][0] / 2


MIRRORED_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {root!r} + "/tests")
    from helpers import tiny_config
    from keras_solo import builders
    from keras_solo.train import build_optimizer
    config = tiny_config({data!r}, "train.batch_size=4", "train.base_batch_size=4", "train.warmup_steps=0",
                         "train.schedule=constant", "train.optimizer=sgd", "train.learning_rate=0.01",
                         "train.clipnorm=0", "model.head_norm={head_norm}")
    coco = builders.load_split(config, "train")
    rec = [r for r in coco.records if r.annotations][0]
    coco.records[:] = [rec] * 8   # identical images: per-replica and global losses agree exactly
    ds = builders.build_dataset(config, coco, training=False, batch_size=4)
    out = {{}}
    for name, strategy in (("default", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = builders.build_model(config)
            model.compile(optimizer=build_optimizer(config.train, 1))
        losses = []
        for step in range(2):
            h = model.fit(ds.take(1), epochs=1, verbose=0)
            losses.append(h.history["loss"][0])
        out[name] = losses
    print(json.dumps(out))
""")


# batch: BatchNorm's fused kernel per replica (the edge preset's heads); both in make test-slow (35 s each)
@pytest.mark.slow
@pytest.mark.parametrize("head_norm", ["group", "batch"])
def test_mirrored_strategy_matches_single_device(tiny_data, head_norm):
    script = MIRRORED_SCRIPT.format(root=ROOT, data=tiny_data, head_norm=head_norm)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["mirrored"], result["default"], rtol=2e-3)
    assert result["default"][1] != result["default"][0]  # the first step changed the weights


def test_full_mask_path_equals_gathered_path(tiny_batch):
    """The benchmark-only full S^2 path gives the same positive masks."""
    model = builders.build_model(tiny_config())
    images, _ = tiny_batch
    outputs = model(images)
    cells = np.array([[0, 5, 63], [7, 8, 9], [1, 2, 3], [60, 61, 62]], np.int32)
    gathered = keras.ops.convert_to_numpy(model.cell_mask_logits(outputs, 0, cells))
    model.gather_positive_masks = False
    full = keras.ops.convert_to_numpy(model.cell_mask_logits(outputs, 0, cells))
    np.testing.assert_allclose(gathered, full, rtol=1e-4, atol=1e-4)
