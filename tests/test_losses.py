"""SOLO losses: focal and dice against numpy formulas; eq. (4) behaviour
with empty and single ground truth (mmdet test_solo_head style)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_solo.losses import dice_loss, focal_loss, solo_loss
from keras_solo.targets import build_targets

NUM_CLASSES = 3
GRIDS = (4, 3)
MASK_SIZES = ((16, 16), (8, 8))


def numpy_focal(logits, target, weight, alpha=0.25, gamma=2.0):
    prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    one_hot = target[..., None] == np.arange(logits.shape[-1])
    p_t = np.where(one_hot, prob, 1.0 - prob)
    alpha_t = np.where(one_hot, alpha, 1.0 - alpha)
    # -log(p_t) without underflow: softplus(-z) for positives, softplus(z) else.
    z = np.where(one_hot, logits, -logits).astype(np.float64)
    neg_log_p_t = np.logaddexp(0.0, -z)
    return (alpha_t * (1.0 - p_t) ** gamma * neg_log_p_t * weight[..., None]).sum(axis=(1, 2, 3))


def numpy_dice(logits, target, valid, eps=1e-3):
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    a = (p * target).sum(axis=(2, 3))
    b = (p * p).sum(axis=(2, 3)) + eps
    c = (target * target).sum(axis=(2, 3)) + eps
    return (1.0 - 2.0 * a / (b + c)) * valid


def test_focal_loss_matches_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(2, 4, 4, NUM_CLASSES)).astype(np.float32)
    logits[0, 0, 0] = (30.0, -30.0, 0.0)  # confident, both right and wrong
    target = rng.integers(-1, NUM_CLASSES, size=(2, 4, 4)).astype(np.int32)
    target[0, 0, 0] = 1
    weight = (rng.random((2, 4, 4)) > 0.2).astype(np.float32)
    for alpha, gamma in ((0.25, 2.0), (0.5, 1.5)):
        got = ops.convert_to_numpy(focal_loss(logits, target, weight, alpha=alpha, gamma=gamma))
        assert got.shape == (2,)
        np.testing.assert_allclose(got, numpy_focal(logits, target, weight, alpha, gamma), rtol=1e-5)


def test_focal_loss_equals_keras_binary_focal_crossentropy():
    # Keras' loss has the same per-element value (on TF, where it recovers the
    # logits) but averages over classes: multiply back by C.
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(2, 3, 3, NUM_CLASSES)).astype(np.float32)
    target = rng.integers(-1, NUM_CLASSES, size=(2, 3, 3)).astype(np.int32)
    keras_loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True, reduction=None)
    one_hot = (target[..., None] == np.arange(NUM_CLASSES)).astype(np.float32)
    expected = ops.convert_to_numpy(keras_loss(one_hot, logits)).sum(axis=(1, 2)) * NUM_CLASSES
    got = ops.convert_to_numpy(focal_loss(logits, target, np.ones((2, 3, 3), np.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_focal_loss_gradient_at_confident_wrong_cell():
    # Background cell with logit 40: loss ~ 0.75 * 40, gradient ~ 0.75 (not clipped to 0).
    logits = tf.Variable(np.full((1, 1, 1, 1), 40.0, np.float32))
    with tf.GradientTape() as tape:
        loss = focal_loss(logits, np.full((1, 1, 1), -1, np.int32), np.ones((1, 1, 1), np.float32))
    grad = tape.gradient(loss, logits).numpy()
    np.testing.assert_allclose(loss.numpy(), [0.75 * 40.0], rtol=1e-5)
    np.testing.assert_allclose(grad, [[[[0.75]]]], rtol=1e-3)


def test_dice_loss_matches_formula_and_masks_invalid():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, size=(2, 3, 8, 8)).astype(np.float32)
    target = (rng.random((2, 3, 8, 8)) > 0.6).astype(np.float32)
    valid = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    got = ops.convert_to_numpy(dice_loss(logits, target, valid))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, numpy_dice(logits, target, valid), rtol=1e-5, atol=1e-6)
    assert np.all(got[valid == 0] == 0) and np.all(got[valid == 1] > 0)


def test_perfect_masks_give_near_zero_dice():
    target = np.zeros((1, 2, 16, 16), np.float32)
    target[0, 0, 2:9, 3:12] = 1
    target[0, 1, 10:16, 0:5] = 1
    logits = np.where(target > 0, 20.0, -20.0).astype(np.float32)
    got = ops.convert_to_numpy(dice_loss(logits, target, np.ones((1, 2), np.float32)))
    assert np.all(got < 1e-4)
    # And a plainly wrong mask is far from zero.
    wrong = ops.convert_to_numpy(dice_loss(-logits, target, np.ones((1, 2), np.float32)))
    assert np.all(wrong > 0.99)


def level_targets(instances):
    """Targets on a 32x32 input at mask stride 2 (masks 16x16); instances are
    (y0, y1, x0, x1, class) rectangles in input px."""
    masks = np.zeros((1, 4, 16, 16), np.uint8)
    classes = np.full((1, 4), -1, np.int32)
    boxes = np.zeros((1, 4, 4), np.float32)
    for m, (y0, y1, x0, x1, label) in enumerate(instances):
        masks[0, m, y0 // 2:y1 // 2, x0 // 2:x1 // 2] = 1
        classes[0, m] = label
        boxes[0, m] = (x0, y0, x1, y1)
    return build_targets(
        masks, classes, boxes, np.zeros((1, 16, 16), np.uint8), input_size=(32, 32), mask_stride=2,
        grids=GRIDS, mask_sizes=MASK_SIZES, scale_ranges=((0, 16), (8, 64)), max_positives=(8, 9),
        num_classes=NUM_CLASSES)


def random_predictions(targets, seed=0):
    rng = np.random.default_rng(seed)
    cate = [rng.normal(-2, 1, size=(1, s, s, NUM_CLASSES)).astype(np.float32) for s in GRIDS]
    masks = [rng.normal(0, 1, size=(1, t["pos_index"].shape[1]) + size).astype(np.float32)
             for t, size in zip(targets, MASK_SIZES)]
    return cate, masks


def scalars(result):
    return {k: float(ops.convert_to_numpy(v)) for k, v in result.items()}


def test_empty_ground_truth_gives_category_loss_only():
    targets = level_targets([])
    cate, masks = random_predictions(targets)
    result = scalars(solo_loss(cate, masks, targets))
    assert result["num_pos"] == 0
    assert result["cate_loss"] > 0 and result["mask_loss"] == 0
    expected_cate = sum(numpy_focal(c, np.full(c.shape[:3], -1), np.ones(c.shape[:3])).sum() for c in cate)
    np.testing.assert_allclose(result["cate_loss"], expected_cate / 1.0, rtol=1e-5)
    np.testing.assert_allclose(result["loss"], result["cate_loss"], rtol=1e-6)


def test_one_object_gives_both_losses_normalised_by_num_pos():
    # 12x12 square centred at (14, 14): scale 12 trains both levels.
    targets = level_targets([(8, 20, 8, 20, 1)])
    cate, masks = random_predictions(targets)
    result = scalars(solo_loss(cate, masks, targets, mask_weight=3.0))
    num_pos = sum(float(ops.convert_to_numpy(t["pos_valid"]).sum()) for t in targets)
    assert result["num_pos"] == num_pos and num_pos >= 2
    assert result["cate_loss"] > 0 and result["mask_loss"] > 0
    t_np = [{k: ops.convert_to_numpy(v) for k, v in t.items()} for t in targets]
    focal_sum = sum(numpy_focal(c, t["cate_target"], t["cate_weight"]).sum() for c, t in zip(cate, t_np))
    dice_sum = sum(numpy_dice(m, t["mask_target"], t["pos_valid"]).sum() for m, t in zip(masks, t_np))
    np.testing.assert_allclose(result["cate_loss"], focal_sum / (num_pos + 1), rtol=1e-5)
    np.testing.assert_allclose(result["mask_loss"], dice_sum / num_pos, rtol=1e-5)
    np.testing.assert_allclose(result["loss"], result["cate_loss"] + 3.0 * result["mask_loss"], rtol=1e-6)


def test_perfect_predictions_give_near_zero_loss():
    targets = level_targets([(8, 20, 8, 20, 1)])
    cate, masks = [], []
    for t in targets:
        cate_target = ops.convert_to_numpy(t["cate_target"])
        one_hot = cate_target[..., None] == np.arange(NUM_CLASSES)
        cate.append(np.where(one_hot, 20.0, -20.0).astype(np.float32))
        masks.append(np.where(ops.convert_to_numpy(t["mask_target"]) > 0, 20.0, -20.0).astype(np.float32))
    result = scalars(solo_loss(cate, masks, targets))
    assert result["mask_loss"] < 1e-4 and result["cate_loss"] < 1e-6


def test_gradients_are_finite_without_positives():
    targets = level_targets([])
    cate, masks = random_predictions(targets)
    cate_vars = [tf.Variable(c) for c in cate]
    mask_vars = [tf.Variable(m) for m in masks]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = solo_loss(cate_vars, mask_vars, targets)["loss"]
        return loss, tape.gradient(loss, cate_vars + mask_vars)

    loss, grads = step()
    assert np.isfinite(loss.numpy())
    for grad in grads:
        assert grad is not None and np.all(np.isfinite(grad.numpy()))
    for grad in grads[len(cate_vars):]:
        assert np.all(grad.numpy() == 0)  # no positives: no mask gradient
