"""keras_solo.model.heads (SOLOHead, CellMaskKernel) and keras_solo.model.attention (GridAttention)."""

import inspect
import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_solo.model.attention import GridAttention
from keras_solo.model.heads import CellMaskKernel, SOLOHead

GRIDS = (4, 3)
CHANNELS = 16


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _numpy(tensor):
    return ops.convert_to_numpy(tensor)


def _tiny_head(**overrides):
    kwargs = {"num_classes": 3, "grids": GRIDS, "head_convs": 2, "head_channels": CHANNELS, "norm_groups": 4}
    kwargs.update(overrides)
    return SOLOHead(**kwargs)


def _assert_config_has_every_arg(layer_class, kwargs):
    params = [name for name, p in inspect.signature(layer_class.__init__).parameters.items()
              if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert sorted(params) == sorted(kwargs), "the test must set every constructor argument"
    config = layer_class(**kwargs).get_config()
    assert {name: config[name] for name in kwargs} == kwargs
    rebuilt = layer_class.from_config(config).get_config()
    assert {name: rebuilt[name] for name in kwargs} == kwargs


def _randomise(weights, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for weight in weights:
        weight.assign((rng.normal(size=weight.shape) * scale).astype("float32"))


def _roundtrip(tmp_path, model):
    path = str(tmp_path / "model.keras")
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


# SOLOHead --------------------------------------------------------------------


def test_solo_head_output_shapes_two_levels():
    head = _tiny_head()
    levels = [_random((2, 16, 16, CHANNELS)), _random((2, 8, 10, CHANNELS), seed=1)]
    outputs = head(levels)
    assert len(outputs) == 2
    (cate0, mask0), (cate1, mask1) = outputs
    assert tuple(cate0.shape) == (2, 4, 4, 3) and tuple(cate1.shape) == (2, 3, 3, 3)
    # mask features stay at the level's size (the 2x upsampling follows the 1x1 kernel)
    assert tuple(mask0.shape) == (2, 16, 16, CHANNELS) and tuple(mask1.shape) == (2, 8, 10, CHANNELS)


def test_solo_head_towers_are_shared_across_levels():
    counts = []
    for grids in ((4,), (4, 3), (6, 5, 4, 3, 2)):
        head = _tiny_head(grids=grids)
        head([_random((1, 8, 8, CHANNELS))] * len(grids))
        counts.append((head.count_params(), len(head.weights)))
    assert counts[0] == counts[1] == counts[2]
    head = _tiny_head(head_convs=2, use_coords=True)
    head.build([(None, 8, 8, CHANNELS)] * 2)
    # 2 towers x 2 ConvNormAct (no conv bias, GN gamma/beta) + cate output conv (kernel, bias)
    assert len(head.weights) == 2 * 2 * 3 + 2
    assert head.mask_convs[0].conv.kernel.shape == (3, 3, CHANNELS + 2, CHANNELS)  # + coords, eq. (1)
    assert head.cate_convs[0].conv.kernel.shape == (3, 3, CHANNELS, CHANNELS)
    no_coords = _tiny_head(use_coords=False)
    no_coords.build([(None, 8, 8, CHANNELS)] * 2)
    assert no_coords.mask_convs[0].conv.kernel.shape == (3, 3, CHANNELS, CHANNELS)


def test_solo_head_category_bias_prior():
    head = _tiny_head(prior_prob=0.02)
    head.build([(None, 8, 8, CHANNELS)] * 2)
    np.testing.assert_allclose(_numpy(head.cate_output.bias), -math.log(0.98 / 0.02), rtol=1e-6)
    cate_logits = _numpy(head([_random((1, 8, 8, CHANNELS))] * 2)[0][0])
    # std-0.01 kernel: the logits start near the prior
    np.testing.assert_allclose(1 / (1 + np.exp(-cate_logits)), 0.02, atol=0.01)


def test_solo_head_rejects_wrong_level_count():
    with pytest.raises(ValueError, match="levels"):
        _tiny_head()([_random((1, 8, 8, CHANNELS))])


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_solo_head_config_and_keras_roundtrip(tmp_path, norm):
    _assert_config_has_every_arg(SOLOHead, {
        "num_classes": 3, "grids": (5, 2), "head_convs": 1, "head_channels": 8, "norm_groups": 2,
        "use_coords": False, "prior_prob": 0.05, "norm": norm})
    inputs = [keras.Input((16, 16, CHANNELS)), keras.Input((8, 8, CHANNELS))]
    model = keras.Model(inputs, _tiny_head(norm=norm)(inputs))
    _randomise(model.weights)
    data = [_random((2, 16, 16, CHANNELS)), _random((2, 8, 8, CHANNELS), seed=1)]
    loaded = _roundtrip(tmp_path, model)
    for want, got in zip(keras.tree.flatten(model(data)), keras.tree.flatten(loaded(data))):
        np.testing.assert_allclose(_numpy(got), _numpy(want), rtol=1e-4, atol=1e-4)


def test_solo_head_batch_norm_is_per_level_and_shares_convs():
    head = _tiny_head(norm="batch", head_convs=2)
    features = [_random((4, 16, 16, CHANNELS)), _random((4, 8, 8, CHANNELS), seed=1) * 5.0 + 3.0]
    head(features, training=True)
    assert len(head.cate_convs) == 2 and len(head.cate_norms) == 2 * 2 == len(head.mask_norms)
    assert not any("norm" in w.path for w in head.weights if "conv" in w.path)  # no GroupNorm
    for bn in head.cate_norms + head.mask_norms:
        bn.momentum = 0.0  # moving statistics = the last batch's
    head(features, training=True)
    # Level 1's features are 5x larger and shifted: its BatchNorm must hold its own statistics.
    level0, level1 = head.mask_norms[0], head.mask_norms[2]
    assert not np.allclose(_numpy(level0.moving_variance), _numpy(level1.moving_variance), rtol=0.5)
    with pytest.raises(ValueError, match="norm"):
        _tiny_head(norm="layer")


# CellMaskKernel --------------------------------------------------------------


def test_cell_mask_kernel_full_and_gathered_logits():
    grid, embed = 3, 8
    layer = CellMaskKernel(grid)
    features = _random((2, 5, 6, embed))
    full = _numpy(layer(features))
    assert full.shape == (2, 5, 6, grid * grid)
    assert layer.kernel.shape == (embed, grid * grid) and layer.bias.shape == (grid * grid,)
    assert 0.005 < float(np.std(_numpy(layer.kernel))) < 0.02
    _randomise(layer.weights)
    kernel, bias = _numpy(layer.kernel), _numpy(layer.bias)
    full = _numpy(layer(features))
    np.testing.assert_allclose(full, features @ kernel + bias, rtol=1e-4, atol=1e-4)

    cell_index = np.array([[0, 8, 4, 4], [7, 1, 2, -1]], "int32")  # -1 padding -> clipped to cell 0
    gathered = _numpy(layer.gather_logits(features, cell_index))
    assert gathered.shape == (2, 4, 5, 6)
    for b in range(2):
        for p, k in enumerate(np.clip(cell_index[b], 0, grid * grid - 1)):
            np.testing.assert_allclose(gathered[b, p], full[b, :, :, k], rtol=1e-4, atol=1e-4)


def test_cell_mask_kernel_config_and_keras_roundtrip(tmp_path):
    _assert_config_has_every_arg(CellMaskKernel, {"grid": 5})
    inputs = keras.Input((6, 4, 8))
    model = keras.Model(inputs, CellMaskKernel(3)(inputs))
    _randomise(model.weights)
    data = _random((2, 6, 4, 8))
    loaded = _roundtrip(tmp_path, model)
    np.testing.assert_allclose(_numpy(loaded(data)), _numpy(model(data)), rtol=1e-5, atol=1e-5)
    index = np.array([[3, 0], [8, 5]], "int32")
    np.testing.assert_allclose(_numpy(loaded.layers[-1].gather_logits(data, index)),
                               _numpy(model.layers[-1].gather_logits(data, index)), rtol=1e-5, atol=1e-5)


# GridAttention ---------------------------------------------------------------


def test_grid_attention_vectors():
    features = _random((2, 12, 10, CHANNELS))
    projected = GridAttention(4, embed_dim=8)
    assert tuple(projected(features).shape) == (2, 4, 4, 8)
    assert projected.projection.kernel.shape == (1, 1, CHANNELS, 8)
    literal = GridAttention(4, embed_dim=None, normalize="none")  # the paper's form: V = resized features
    resized = _numpy(ops.image.resize(features, (4, 4)))
    np.testing.assert_allclose(_numpy(literal(features)), resized, atol=1e-6)
    assert literal.projection is None and GridAttention(4, embed_dim=0).projection is None
    np.testing.assert_allclose(_numpy(literal.gamma), 1.0)
    # "vector": centred over the cells, unit RMS per grid vector
    centred = resized - resized.mean(axis=(1, 2), keepdims=True)
    normalised = _numpy(GridAttention(4, embed_dim=None, normalize="vector")(features))
    rms = np.sqrt(np.mean(centred ** 2, axis=-1, keepdims=True))
    np.testing.assert_allclose(normalised, centred / rms, rtol=1e-4, atol=1e-4)
    # "image": centred, one RMS per image (the cells' relative norms are kept)
    per_image = _numpy(GridAttention(4, embed_dim=None, normalize="image")(features))
    rms = np.sqrt(np.mean(centred ** 2, axis=(1, 2, 3), keepdims=True))
    np.testing.assert_allclose(per_image, centred / rms, rtol=1e-4, atol=1e-4)
    # adding the same vector to every cell (the scene) changes neither
    shift = 5.0 * _random((2, 1, 1, CHANNELS))
    for mode, expected in (("vector", normalised), ("image", per_image)):
        shifted = _numpy(GridAttention(4, embed_dim=None, normalize=mode)(features + shift))
        np.testing.assert_allclose(shifted, expected, rtol=1e-3, atol=1e-3)
    assert GridAttention(4, normalize=True).normalize == "vector" and GridAttention(4, normalize=False).normalize == "none"
    with pytest.raises(ValueError, match="normalize"):
        GridAttention(4, normalize="layer")
    np.testing.assert_allclose(np.sqrt(np.mean(normalised ** 2, axis=-1)), 1.0, rtol=1e-4)


@pytest.mark.parametrize("mode", ["vector", "image"])
def test_normalised_attention_ignores_the_feature_scale(mode):
    """The same maps for features x1 and x1000; "vector": |logit| <= gamma * sqrt(d).

    Unnormalised, features of std 3-9 (an ImageNet backbone) gave logits of
    100-900 at initialisation; this is the property that prevents it.
    """
    grid, dim, out_size = 4, 8, (6, 6)
    layer = GridAttention(grid, embed_dim=dim, normalize=mode)
    features = _random((2, 9, 9, CHANNELS))
    small = layer(features)
    cells = np.tile(np.arange(grid * grid, dtype="int32")[None], (2, 1))
    logits = _numpy(layer.gather_logits(small, cells, out_size))
    large = _numpy(layer.gather_logits(layer(1000.0 * features), cells, out_size))
    np.testing.assert_allclose(large, logits, rtol=1e-3, atol=1e-3)
    self_map = _numpy(layer.attention_map(small))
    self_similarity = np.stack([self_map[:, i, j, i * grid + j] for i in range(grid) for j in range(grid)], -1)
    if mode == "vector":  # self-similarity is the bound: V_k . V_k / sqrt(d) = d / sqrt(d)
        assert np.abs(logits).max() <= math.sqrt(dim) + 1e-4
        np.testing.assert_allclose(self_similarity, math.sqrt(dim), rtol=1e-4)
    else:  # the mean self-similarity is sqrt(d): mean ||V_k||^2 = d
        np.testing.assert_allclose(self_similarity.mean(axis=-1), math.sqrt(dim), rtol=1e-4)
    unnormalised = GridAttention(grid, embed_dim=dim, normalize="none")
    unnormalised.build(features.shape)
    unnormalised.projection.kernel.assign(layer.projection.kernel)
    raw = _numpy(unnormalised.gather_logits(unnormalised(1000.0 * features), cells, out_size))
    assert np.abs(raw).max() > 1000 * np.abs(logits).max()  # what normalising removes


def test_attention_map_equals_explicit_triple_loop():
    grid, dim = 3, 5
    layer = GridAttention(grid, embed_dim=None)
    vectors = _random((2, grid, grid, dim))
    layer(vectors)
    got = _numpy(layer.attention_map(vectors))
    assert got.shape == (2, grid, grid, grid * grid)
    flat = vectors.reshape(2, grid * grid, dim)  # V_num, num = i * S + j (eq. (2))
    expected = np.zeros((2, grid, grid, grid * grid), "float32")
    for b in range(2):
        for k in range(grid * grid):
            for i in range(grid):
                for j in range(grid):
                    # eq. (3): F_new(k, i, j) = V_{num=k} . V_{num=i*S+j}, scaled by 1/sqrt(d)
                    expected[b, i, j, k] = np.dot(flat[b, k], flat[b, i * grid + j]) / math.sqrt(dim)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_gather_equals_full_equals_resized_attention_map():
    grid, out_size = 4, (10, 7)
    layer = GridAttention(grid, embed_dim=6, gamma_init=0.5)
    layer.build((None, 8, 8, CHANNELS))
    _randomise([layer.projection.kernel], seed=3)
    layer.gamma.assign(1.7)
    vectors = layer(_random((2, 8, 8, CHANNELS)))
    full = _numpy(layer.full_logits(vectors, out_size))
    assert full.shape == (2, 10, 7, grid * grid)
    resized_map = 1.7 * _numpy(ops.image.resize(layer.attention_map(vectors), out_size))
    np.testing.assert_allclose(full, resized_map, rtol=1e-4, atol=1e-4)  # resize is linear
    cell_index = np.array([[0, 15, 5], [9, 9, 2]], "int32")
    gathered = _numpy(layer.gather_logits(vectors, cell_index, out_size))
    assert gathered.shape == (2, 3, 10, 7)
    for b in range(2):
        for p, k in enumerate(cell_index[b]):
            np.testing.assert_allclose(gathered[b, p], full[b, :, :, k], rtol=1e-4, atol=1e-4)


def test_attention_channel_k_and_mask_channel_k_mean_the_same_cell():
    """Cell k = i * S + j in both branches (Figure 1, eq. (2)).

    Orthogonal grid vectors (V_k = e_k) make the self-similarity V_k . V_k the
    maximum of channel k, at grid location (i, j) = divmod(k, S). Mask features
    that one-hot encode each pixel's grid cell, with an identity CellMaskKernel,
    make mask channel k peak on the same cell's pixels.
    """
    grid, cell_px = 3, 4
    cells = grid * grid
    one_hot = np.eye(cells, dtype="float32").reshape(1, grid, grid, cells)  # V_{i*S+j} = e_{i*S+j}
    attention = GridAttention(grid, embed_dim=None, normalize="none")
    vectors = _numpy(attention(one_hot))
    np.testing.assert_allclose(vectors, one_hot, atol=1e-6)  # resize S -> S is the identity
    attention_map = _numpy(attention.attention_map(vectors))[0]

    mask_features = np.repeat(np.repeat(one_hot, cell_px, axis=1), cell_px, axis=2)  # pixel -> its cell
    kernel = CellMaskKernel(grid)
    kernel.build(mask_features.shape)
    kernel.kernel.assign(np.eye(cells, dtype="float32"))
    size = (grid * cell_px, grid * cell_px)
    all_cells = np.arange(cells, dtype="int32")[None]
    mask_logits = _numpy(kernel.gather_logits(mask_features, all_cells))[0]  # (S^2, Hm, Wm)
    attention_logits = _numpy(attention.gather_logits(vectors, all_cells, size))[0]

    for k in range(cells):
        i, j = divmod(k, grid)
        assert np.unravel_index(np.argmax(attention_map[:, :, k]), (grid, grid)) == (i, j)
        assert attention_map[i, j, k] == pytest.approx(1 / 3)  # V_k . V_k / sqrt(d), d = S^2 = 9
        in_cell = np.zeros(size, bool)
        in_cell[i * cell_px:(i + 1) * cell_px, j * cell_px:(j + 1) * cell_px] = True
        assert mask_logits[k][in_cell].min() > mask_logits[k][~in_cell].max()
        # the attention map, resized, is largest inside the same cell
        peak = np.unravel_index(np.argmax(attention_logits[k]), size)
        assert in_cell[peak]
        combined = mask_logits[k] + attention_logits[k]  # the residual sum of Sec. 3.4
        assert np.unravel_index(np.argmax(combined), size) in set(zip(*np.nonzero(in_cell)))


def test_grid_attention_config_and_keras_roundtrip(tmp_path):
    _assert_config_has_every_arg(GridAttention, {"grid": 5, "embed_dim": 12, "gamma_init": 0.25,
                                                 "normalize": "image"})
    _assert_config_has_every_arg(GridAttention, {"grid": 2, "embed_dim": None, "gamma_init": 1.0,
                                                 "normalize": "none"})
    # a config saved before `normalize` existed keeps the unnormalised behaviour
    old = GridAttention(3, embed_dim=4).get_config()
    del old["normalize"]
    assert GridAttention.from_config(old).normalize == "none"
    assert GridAttention.from_config(GridAttention(3, normalize="image").get_config()).normalize == "image"
    inputs = keras.Input((8, 6, CHANNELS))
    model = keras.Model(inputs, GridAttention(3, embed_dim=4, gamma_init=0.3)(inputs))
    _randomise(model.weights)
    data = _random((2, 8, 6, CHANNELS))
    loaded = _roundtrip(tmp_path, model)
    vectors, loaded_vectors = model(data), loaded(data)
    np.testing.assert_allclose(_numpy(loaded_vectors), _numpy(vectors), rtol=1e-5, atol=1e-5)
    index = np.array([[0, 8], [4, 3]], "int32")
    np.testing.assert_allclose(_numpy(loaded.layers[-1].gather_logits(loaded_vectors, index, (6, 5))),
                               _numpy(model.layers[-1].gather_logits(vectors, index, (6, 5))),
                               rtol=1e-4, atol=1e-4)
