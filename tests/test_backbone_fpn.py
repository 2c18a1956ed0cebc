"""keras_solo.model.backbone and keras_solo.model.fpn."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_solo.errors import SoloError
from keras_solo.model.backbone import BACKBONE_NAMES, build_backbone
from keras_solo.model.fpn import FPN


def _image(height, width, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(batch, height, width, 3)).astype("float32")


# Backbones -------------------------------------------------------------------


def test_tiny_backbone_strides_and_channels():
    backbone = build_backbone("tiny", input_shape=(64, 96, 3))
    features = backbone(_image(64, 96, batch=2))
    assert sorted(features) == ["C2", "C3", "C4", "C5"]
    for name, stride, channels in (("C2", 4, 16), ("C3", 8, 32), ("C4", 16, 48), ("C5", 32, 64)):
        assert tuple(features[name].shape) == (2, 64 // stride, 96 // stride, channels), name


def test_mobilenetv3_backbone_strides():
    backbone = build_backbone("mobilenetv3", input_shape=(64, 128, 3))
    shapes = {name: tuple(tensor.shape) for name, tensor in backbone.output.items()}
    assert shapes == {"C2": (None, 16, 32, 24), "C3": (None, 8, 16, 40),
                      "C4": (None, 4, 8, 112), "C5": (None, 2, 4, 960)}
    # minimalistic: no hard-swish, no squeeze-excite
    assert not any("squeeze_excite" in layer.name for layer in backbone.layers)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv3"])
def test_from_scratch_activations_do_not_vanish(name):
    """With Keras' Glorot default C5 had std 5e-12 (EfficientNet-Lite0) / 2e-9
    (MobileNetV3) at initialisation; He fan-out init keeps the signal."""
    keras.utils.set_random_seed(0)
    backbone = build_backbone(name, input_shape=(128, 128, 3), weights="none")
    image = np.random.default_rng(0).uniform(0, 255, (1, 128, 128, 3)).astype("float32")
    features = backbone(image)
    for key in ("C2", "C3", "C4", "C5"):
        assert float(np.std(ops.convert_to_numpy(features[key]))) > 0.05, key


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(SoloError) as error:
        build_backbone("resnet5O", input_shape=(64, 64, 3))
    for name in ("resnet50", "mobilenetv3", "tiny"):
        assert name in str(error.value)
    assert set(BACKBONE_NAMES) >= {"resnet50", "mobilenetv3", "tiny"}


def test_missing_or_bad_weights_path_raises_solo_error(tmp_path):
    missing = str(tmp_path / "nowhere.weights.h5")
    with pytest.raises(SoloError, match="nowhere.weights.h5"):
        build_backbone("tiny", input_shape=(64, 64, 3), weights=missing)
    wrong_suffix = tmp_path / "backbone.h5"
    wrong_suffix.write_bytes(b"")
    with pytest.raises(SoloError, match="backbone.h5"):
        build_backbone("tiny", input_shape=(64, 64, 3), weights=str(wrong_suffix))
    with pytest.raises(SoloError, match="tiny"):
        build_backbone("tiny", input_shape=(64, 64, 3), weights="imagenet")


def test_weights_file_roundtrip_and_mismatch(tmp_path):
    source = build_backbone("tiny", input_shape=(64, 64, 3))
    rng = np.random.default_rng(1)
    for weight in source.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    path = str(tmp_path / "tiny.weights.h5")
    source.save_weights(path)
    restored = build_backbone("tiny", input_shape=(64, 64, 3), weights=path)
    image = _image(64, 64)
    for name, tensor in source(image).items():
        np.testing.assert_allclose(ops.convert_to_numpy(restored(image)[name]), ops.convert_to_numpy(tensor),
                                   rtol=1e-5, atol=1e-5)

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other_path = str(tmp_path / "other.weights.h5")
    other.save_weights(other_path)
    with pytest.raises(SoloError, match="other.weights.h5"):
        build_backbone("tiny", input_shape=(64, 64, 3), weights=other_path)


# FPN -------------------------------------------------------------------------


def test_resnet50_fpn_gives_paper_table1_sizes():
    backbone = build_backbone("resnet50", input_shape=(672, 1344, 3))  # 1344x672 (WxH)
    pyramid = FPN(channels=256)(backbone.output)
    shapes = {name: tuple(tensor.shape[1:]) for name, tensor in pyramid.items()}
    assert shapes == {  # paper Table 1, (H, W, channels)
        "P2": (168, 336, 256), "P3": (84, 168, 256), "P4": (42, 84, 256),
        "P5": (21, 42, 256), "P6": (11, 21, 256),
    }


def test_fpn_known_answer_with_identity_convs_and_odd_sizes():
    """Identity 1x1 laterals and 3x3 outputs: P_l = C_l + crop(up2x(P_{l+1})), P6 = P5[::2, ::2]."""
    sizes = {"C2": (11, 13), "C3": (6, 7), "C4": (3, 4), "C5": (2, 2)}
    channels = 4
    rng = np.random.default_rng(0)
    inputs = {name: rng.normal(size=(2, h, w, channels)).astype("float32") for name, (h, w) in sizes.items()}
    fpn = FPN(channels=channels)
    fpn.build({name: value.shape for name, value in inputs.items()})
    for conv in list(fpn.lateral_convs.values()) + list(fpn.output_convs.values()):
        size = conv.kernel.shape[0]
        kernel = np.zeros(conv.kernel.shape, "float32")
        kernel[size // 2, size // 2] = np.eye(channels)
        conv.kernel.assign(kernel)
    outputs = {name: ops.convert_to_numpy(value) for name, value in fpn(inputs).items()}

    expected = {"P5": inputs["C5"]}
    for level in (4, 3, 2):
        height, width = sizes[f"C{level}"]
        up = np.repeat(np.repeat(expected[f"P{level + 1}"], 2, axis=1), 2, axis=2)[:, :height, :width]
        expected[f"P{level}"] = inputs[f"C{level}"] + up
    expected["P6"] = expected["P5"][:, ::2, ::2]
    for name in ("P2", "P3", "P4", "P5", "P6"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5, err_msg=name)
    assert {name: value.shape for name, value in outputs.items()} == {
        name: tuple(shape) for name, shape in fpn.compute_output_shape(
            {name: value.shape for name, value in inputs.items()}).items()}


def test_fpn_level_range_builds_only_what_it_returns():
    """min_level=3, max_level=4: P3 and P4 as the full FPN computes them, no P5/P6 output conv."""
    sizes = {"C2": (16, 16), "C3": (8, 8), "C4": (4, 4), "C5": (2, 2)}
    rng = np.random.default_rng(1)
    inputs = {name: rng.normal(size=(1, h, w, 3)).astype("float32") for name, (h, w) in sizes.items()}
    shapes = {name: value.shape for name, value in inputs.items()}
    full, part = FPN(channels=8), FPN(channels=8, min_level=3, max_level=4)
    full.build(shapes)
    part.build(shapes)
    assert sorted(part.output_convs) == ["C3", "C4"] and sorted(part.lateral_convs) == ["C3", "C4", "C5"]
    for convs in ("lateral_convs", "output_convs"):
        for name, conv in getattr(part, convs).items():
            conv.kernel.assign(getattr(full, convs)[name].kernel)
            conv.bias.assign(getattr(full, convs)[name].bias)
    got, expected = part(inputs), full(inputs)
    assert sorted(got) == ["P3", "P4"] and sorted(part.compute_output_shape(shapes)) == ["P3", "P4"]
    for name in got:
        np.testing.assert_allclose(ops.convert_to_numpy(got[name]), ops.convert_to_numpy(expected[name]),
                                   rtol=1e-5, atol=1e-5)
    assert FPN.from_config(part.get_config()).max_level == 4
    with pytest.raises(ValueError, match="max_level"):
        FPN(min_level=4, max_level=3)


def test_fpn_config_and_keras_roundtrip(tmp_path):
    fpn = FPN(channels=16)
    assert fpn.get_config()["channels"] == 16
    backbone = build_backbone("tiny", input_shape=(96, 160, 3))  # C5 3x5 -> P6 2x3
    model = keras.Model(backbone.input, FPN(channels=16)(backbone.output))
    assert tuple(model.output["P6"].shape) == (None, 2, 3, 16)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))
    image = _image(96, 160)
    expected = model(image)
    path = os.path.join(tmp_path, "fpn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    got = loaded(image)
    for name in ("P2", "P3", "P4", "P5", "P6"):
        np.testing.assert_allclose(ops.convert_to_numpy(got[name]), ops.convert_to_numpy(expected[name]),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tiny"])
def test_freeze_up_to_c2_and_frozen_norm(name):
    from keras_solo.model.backbone import freeze_backbone

    backbone = build_backbone(name, input_shape=(64, 128, 3))
    before = len(backbone.trainable_weights)
    upstream = {id(layer) for layer in keras.Model(backbone.inputs, backbone.output["C2"]).layers if layer.weights}
    count = freeze_backbone(backbone, "C2", frozen_norm=True)
    assert count > 0 and len(backbone.trainable_weights) < before
    for layer in backbone.layers:
        if id(layer) in upstream or isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
    # the rest still trains; "none" without norm freezing changes nothing
    assert backbone.trainable_weights
    fresh = build_backbone(name, input_shape=(64, 128, 3))
    assert freeze_backbone(fresh, "none", frozen_norm=False) == 0
    with pytest.raises(SoloError, match="freeze up_to 'P3'"):
        freeze_backbone(fresh, "P3")


# The pyramid backbone (backbone + FPN as one object) -------------------------


def test_pyramid_backbone_is_backbone_then_fpn_and_makes_a_solo(tmp_path):
    from keras_solo.model.pyramid import PyramidBackbone
    from keras_solo.model.solo import SOLO, load_model

    pyramid = PyramidBackbone("tiny", input_size=(128, 64), fpn_channels=16, levels=("P3", "P4"))
    image = _image(64, 128)
    got = pyramid(image)
    want = pyramid.fpn(pyramid.extractor(image))
    assert sorted(got) == ["P3", "P4"] and tuple(got["P3"].shape) == (1, 8, 16, 16)
    np.testing.assert_allclose(ops.convert_to_numpy(got["P4"]), ops.convert_to_numpy(want["P4"]), atol=1e-6)
    assert pyramid.compute_output_shape((1, 64, 128, 3))["P4"] == (1, 4, 8, 16)

    # SOLO takes its input size and levels from the object; a redundant option is refused
    from keras_solo.targets import SOLOTargetAssigner

    heads = dict(num_classes=2, class_names=("a", "b"), grids=(8, 4), head_resize="none", head_convs=1,
                 head_channels=16, norm_groups=4, attention_dim=8,
                 target_assigner=SOLOTargetAssigner(scale_ranges=((1, 32), (16, 512))))
    model = SOLO(backbone=pyramid, **heads)
    assert model.input_size == (128, 64) and model.levels == ("P3", "P4")
    assert model.backbone is pyramid.extractor and model.fpn is pyramid.fpn
    with pytest.raises(ValueError, match="takes input_size from the backbone"):
        SOLO(backbone=pyramid, input_size=(64, 64), **heads)
    with pytest.raises(ValueError, match="`levels` must be names"):
        PyramidBackbone("tiny", levels=("P4", "P3"))

    # saved with the backbone as an object, its weights at the paths of before (backbone/, fpn/)
    model.build()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded.pyramid, PyramidBackbone) and loaded.pyramid.fpn_channels == 16
    for key in ("cate_logits_0", "mask_features_1", "grid_embed_1"):
        np.testing.assert_allclose(ops.convert_to_numpy(loaded(image)[key]), ops.convert_to_numpy(model(image)[key]),
                                   atol=1e-5)
    tops = {name.split("/")[0] for name in _weight_paths(path)}
    assert {"backbone", "fpn", "head"} <= tops and "pyramid" not in tops


def test_a_file_saved_before_the_pyramid_object_keeps_its_layout(tmp_path):
    """Files saved with the backbone by name (flat keys) load, and save again with the same weight paths."""
    from keras_solo.model.pyramid import PyramidBackbone
    from keras_solo.model.solo import load_model

    old = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "solo_tiny_985adc3.keras")
    model = load_model(old)
    assert isinstance(model.pyramid, PyramidBackbone) and model.pyramid.backbone_name == "tiny"
    model.save(str(tmp_path / "again.keras"))
    assert sorted(_weight_paths(str(tmp_path / "again.keras"))) == sorted(_weight_paths(old))


def test_pyramid_backbone_from_preset():
    from keras_solo.model.pyramid import PyramidBackbone

    pyramid = PyramidBackbone.from_preset("demo")
    from keras_solo.config import load_config

    m = load_config("demo").model
    assert (pyramid.backbone_name, pyramid.input_size, pyramid.levels, pyramid.fpn_channels) == \
        (m.backbone, tuple(m.input_size), tuple(m.levels), m.fpn_channels)
    assert PyramidBackbone.from_preset("demo", fpn_channels=8).fpn_channels == 8


def _weight_paths(path):
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        names = []
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as store:
            store.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names
