"""keras_solo.model.batch_norm: its BatchNormalization trains on TensorFlow's fused kernel
with Keras' mathematics, and falls back to Keras' code where it cannot."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from test_layers import assert_keras_roundtrip

from keras_solo.model.backbone import build_backbone
from keras_solo.model import batch_norm
from keras_solo.model.batch_norm import with_batch_norm
from keras_solo.model.heads import SOLOHead

SHAPE = (3, 7, 9, 5)


def _pair(momentum=0.9, epsilon=1e-3, **kwargs):
    """Keras' BatchNormalization and ours with the same random weights and statistics."""
    rng = np.random.default_rng(1)
    layers = [keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, **kwargs),
              batch_norm.BatchNormalization(momentum=momentum, epsilon=epsilon, **kwargs)]
    values = None
    for layer in layers:
        layer.build(SHAPE)
        values = values or [rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in layer.weights]
        for weight, value in zip(layer.weights, values):
            weight.assign(value)
    return layers


def _step(layer, x, upstream, training=True, mask=None):
    """Output, gradients (input and trainable weights) and the moving statistics after one call."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training, mask=mask)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [y.numpy(), *[g.numpy() for g in grads], layer.moving_mean.numpy(), layer.moving_variance.numpy()]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 3.0, SHAPE).astype("float32"), rng.normal(size=SHAPE).astype("float32")


@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False}, {"epsilon": 1.001e-5}])
def test_training_step_equals_keras(kwargs):
    reference, ours = _pair(**kwargs)
    x, upstream = _data()
    for _ in range(2):  # the second step starts from the updated moving statistics
        want, got = _step(reference, x, upstream), _step(ours, x, upstream)
        assert len(want) == len(got)
        for a, b in zip(want, got):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_the_fused_kernel_runs_in_training_and_not_in_inference():
    """The test above could pass on Keras' own code; this one fails unless the kernel is used."""
    _, ours = _pair()

    def op_types(training):
        graph = tf.function(lambda x: ours(x, training=training)).get_concrete_function(
            tf.TensorSpec(SHAPE, tf.float32)).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in op_types(True)
    assert not {"FusedBatchNormV3", "FusedBatchNorm"} & op_types(False)


@pytest.mark.parametrize("case", ["inference", "mask", "frozen", "small_epsilon", "renorm"])
def test_fallbacks_equal_keras(case):
    kwargs = {"small_epsilon": {"epsilon": 1e-6}, "renorm": {"renorm": True}}.get(case, {})
    reference, ours = _pair(**kwargs)
    if case == "frozen":
        reference.trainable = ours.trainable = False
    x, upstream = _data(seed=3)
    mask = np.random.default_rng(4).uniform(size=SHAPE[:-1]) > 0.3 if case == "mask" else None
    training = case != "inference"
    want = _step(reference, x, upstream, training, mask)
    got = _step(ours, x, upstream, training, mask)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_mixed_precision_returns_the_compute_dtype():
    layer = batch_norm.BatchNormalization(dtype="mixed_bfloat16")
    y = layer(ops.cast(_data()[0], "bfloat16"), training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32"


def test_saved_and_loaded(tmp_path):
    assert_keras_roundtrip(tmp_path, batch_norm.BatchNormalization(momentum=0.5, epsilon=1e-4), SHAPE[1:], _data()[0])


def test_with_batch_norm_swaps_keras_applications_layers_and_keeps_the_function():
    original = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), include_top=False, weights=None,
                                                   minimalistic=True, include_preprocessing=False)
    count = sum(type(layer) is keras.layers.BatchNormalization for layer in original.layers)
    converted = with_batch_norm(original)
    assert count > 0
    assert sum(type(layer) is batch_norm.BatchNormalization for layer in converted.layers) == count
    assert not any(type(layer) is keras.layers.BatchNormalization for layer in converted.layers)
    assert [layer.name for layer in converted.layers][1:] == [layer.name for layer in original.layers][1:]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(converted(x)), ops.convert_to_numpy(original(x)),
                               rtol=1e-5, atol=1e-5)
    assert with_batch_norm(converted) is converted


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv3", "resnet50"])
def test_every_backbone_trains_on_the_fused_kernel(name):
    backbone = build_backbone(name, input_shape=(64, 64, 3))
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is batch_norm.BatchNormalization for layer in norms)
    assert backbone.layers[0].name == "image" and backbone.name == f"{name}_backbone"


def test_the_heads_per_level_norms_are_batch_norm():
    head = SOLOHead(num_classes=2, grids=(8, 4), head_convs=2, head_channels=8, norm_groups=4, norm="batch")
    norms = head.cate_norms + head.mask_norms
    assert len(norms) == 8 and all(type(layer) is batch_norm.BatchNormalization for layer in norms)


def test_a_file_saved_with_keras_batch_normalization_loads(tmp_path, monkeypatch):
    """A `.keras` file addresses weights by class name: a model saved before
    this layer existed (Keras' BatchNormalization in the heads) loads into it."""
    import types

    from helpers import tiny_config

    from keras_solo import builders
    from keras_solo.model import heads

    config = tiny_config(None, "model.head_norm=batch")
    monkeypatch.setattr(heads, "batch_norm", types.SimpleNamespace(BatchNormalization=keras.layers.BatchNormalization))
    old = builders.build_model(config)
    monkeypatch.undo()
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 128, 3)).astype("float32")
    old(x)
    norms = [layer for layer in old._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is keras.layers.BatchNormalization for layer in norms)
    rng = np.random.default_rng(1)
    for layer in norms:
        for weight in layer.weights:
            weight.assign(rng.uniform(0.5, 1.5, size=weight.shape).astype("float32"))
    old.save(str(tmp_path / "old.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "old.keras"))
    new_norms = [layer for layer in loaded._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(new_norms) == len(norms) and all(type(layer) is batch_norm.BatchNormalization for layer in new_norms)
    for want, got in zip(keras.tree.flatten(old(x)), keras.tree.flatten(loaded(x))):
        np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want), rtol=1e-5, atol=1e-5)
