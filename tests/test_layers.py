"""keras_solo.model.layers: GroupNorm, ConvNormAct, CoordConcat, Resize, ImageNormalize."""

import inspect

import keras
import numpy as np
import pytest
from keras import ops

from keras_solo.model.layers import ConvNormAct, CoordConcat, GroupNorm, ImageNormalize, Resize


def assert_config_has_every_arg(layer_class, kwargs):
    """`get_config()` returns every constructor argument with the given value."""
    params = [name for name, p in inspect.signature(layer_class.__init__).parameters.items()
              if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert sorted(params) == sorted(kwargs), "the test must set every constructor argument"
    config = layer_class(**kwargs).get_config()
    for name, value in kwargs.items():
        assert config[name] == value, name
    rebuilt = layer_class.from_config(config).get_config()
    assert {k: rebuilt[k] for k in kwargs} == kwargs


def assert_keras_roundtrip(tmp_path, layer, input_shape, data):
    """Saves a one-layer model to `.keras` (random weights), reloads it with safe_mode, compares outputs."""
    inputs = keras.Input(shape=input_shape, batch_size=data.shape[0])
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    expected = model(data)
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.layers[-1]) is type(layer)
    for want, got in zip(keras.tree.flatten(expected), keras.tree.flatten(loaded(data))):
        np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want), rtol=1e-5, atol=1e-5)
    return loaded


def _random(shape, seed=0, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale + offset).astype("float32")


# GroupNorm -------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_group_norm_equals_keras_group_normalization(groups):
    data = _random((2, 5, 7, 16), scale=3.0, offset=1.5)
    ours = GroupNorm(groups=groups, epsilon=1e-5)
    reference = keras.layers.GroupNormalization(groups=groups, epsilon=1e-5)
    ours.build(data.shape)
    reference.build(data.shape)
    gamma, beta = _random((16,), seed=1), _random((16,), seed=2)
    ours.gamma.assign(gamma)
    ours.beta.assign(beta)
    reference.gamma.assign(gamma)
    reference.beta.assign(beta)
    np.testing.assert_allclose(ops.convert_to_numpy(ours(data)), ops.convert_to_numpy(reference(data)),
                               rtol=1e-4, atol=1e-4)


def test_group_norm_statistics_per_sample_and_group():
    data = _random((3, 4, 4, 8), scale=5.0, offset=-2.0)
    out = ops.convert_to_numpy(GroupNorm(groups=2)(data)).reshape(3, 16, 2, 4)
    np.testing.assert_allclose(out.mean(axis=(1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(1, 3)), 1.0, atol=1e-3)


def test_group_norm_rejects_bad_groups():
    with pytest.raises(ValueError, match="groups"):
        GroupNorm(groups=3)(np.zeros((1, 2, 2, 8), "float32"))
    with pytest.raises(ValueError, match="groups"):
        GroupNorm(groups=0)


# ConvNormAct -----------------------------------------------------------------


def test_conv_norm_act_shapes_init_and_bias():
    layer = ConvNormAct(32, kernel_size=3, strides=2, groups=8)
    out = layer(_random((2, 9, 16, 5)))
    assert tuple(out.shape) == (2, 5, 8, 32)  # "same" padding: ceil(9 / 2) = 5
    assert float(ops.min(out)) >= 0.0  # relu
    assert layer.conv.bias is None  # GN's beta replaces the conv bias
    std = float(np.std(ops.convert_to_numpy(layer.conv.kernel)))
    assert 0.007 < std < 0.013  # SOLO head init: normal std 0.01

    plain = ConvNormAct(4, kernel_size=1, activation=None, use_norm=False)
    plain_out = plain(_random((1, 3, 3, 2)))
    assert plain.norm is None and plain.conv.bias is not None
    assert float(ops.min(plain_out)) < 0.0  # linear


def test_conv_norm_act_rejects_groups_not_dividing_filters():
    with pytest.raises(ValueError, match="groups"):
        ConvNormAct(20, groups=8)


# CoordConcat -----------------------------------------------------------------


def test_coord_concat_follows_eq1_order_x_then_y():
    height, width = 3, 5
    data = _random((2, height, width, 4))
    out = ops.convert_to_numpy(CoordConcat()(data))
    assert out.shape == (2, height, width, 6)
    np.testing.assert_array_equal(out[..., :4], data)
    for j in range(height):  # row
        for i in range(width):  # column
            np.testing.assert_allclose(out[:, j, i, 4], -1 + 2 * i / width, atol=1e-6)  # x
            np.testing.assert_allclose(out[:, j, i, 5], -1 + 2 * j / height, atol=1e-6)  # y


def test_coord_concat_symbolic_batch():
    inputs = keras.Input((4, 6, 3))
    assert tuple(CoordConcat()(inputs).shape) == (None, 4, 6, 5)


# Resize, ImageNormalize ------------------------------------------------------


def test_resize_matches_ops_image_resize():
    data = _random((2, 7, 5, 3))
    for interpolation in ("bilinear", "nearest"):
        out = Resize((4, 9), interpolation=interpolation)(data)
        want = ops.image.resize(data, (4, 9), interpolation=interpolation)
        np.testing.assert_allclose(ops.convert_to_numpy(out), ops.convert_to_numpy(want), atol=1e-6)
    with pytest.raises(ValueError, match="interpolation"):
        Resize((2, 2), interpolation="area")


def test_image_normalize_values_and_bgr():
    pixels = np.array([[[[10.0, 20.0, 30.0]]]], "float32")
    out = ops.convert_to_numpy(ImageNormalize(mean=(1.0, 2.0, 3.0), std=(3.0, 6.0, 9.0))(pixels))
    np.testing.assert_allclose(out[0, 0, 0], [3.0, 3.0, 3.0])
    bgr = ops.convert_to_numpy(ImageNormalize(mean=(0.0, 10.0, 20.0), std=1.0, bgr=True)(pixels))
    np.testing.assert_allclose(bgr[0, 0, 0], [10.0, 10.0, 10.0][::-1])
    bgr = ops.convert_to_numpy(ImageNormalize(mean=0.0, std=1.0, bgr=True)(pixels))
    np.testing.assert_allclose(bgr[0, 0, 0], [30.0, 20.0, 10.0])


# Config and .keras round trip ------------------------------------------------


@pytest.mark.parametrize("layer_class, kwargs", [
    (GroupNorm, {"groups": 4, "epsilon": 1e-3}),
    (ConvNormAct, {"filters": 8, "kernel_size": 1, "strides": 2, "groups": 4, "activation": "sigmoid",
                   "use_norm": True}),
    (CoordConcat, {}),
    (Resize, {"size": (3, 5), "interpolation": "nearest"}),
    (ImageNormalize, {"mean": (1.0, 2.0, 3.0), "std": (4.0, 5.0, 6.0), "bgr": True}),
])
def test_get_config_has_every_constructor_arg(layer_class, kwargs):
    assert_config_has_every_arg(layer_class, kwargs)


@pytest.mark.parametrize("layer", [
    GroupNorm(groups=4),
    ConvNormAct(8, strides=2, groups=4),
    ConvNormAct(8, activation=None, use_norm=False),
    CoordConcat(),
    Resize((5, 3)),
], ids=lambda layer: type(layer).__name__)
def test_keras_file_roundtrip(tmp_path, layer):
    assert_keras_roundtrip(tmp_path, layer, (6, 10, 8), _random((2, 6, 10, 8)))


def test_image_normalize_keras_file_roundtrip(tmp_path):
    layer = ImageNormalize(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), bgr=True)
    assert_keras_roundtrip(tmp_path, layer, (6, 10, 3), _random((2, 6, 10, 3), scale=50.0, offset=128.0))
