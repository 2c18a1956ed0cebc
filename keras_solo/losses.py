"""SOLO losses: sigmoid focal loss on categories, dice on masks, eq. (4).

    L = L_cate + lambda * L_mask                                   eq. (4)

L_cate is the RetinaNet sigmoid focal loss summed over all cells, classes
and levels and divided by (num_pos + 1); L_mask is SOLO's dice loss
averaged over the positive cells of all levels. `keras.ops` only.

Reference: SOLO, arXiv:1912.04488, Sec. 3.3 (mmdet `SOLOHead.loss`).
"""

import dataclasses

import keras
from keras import ops

DICE_EPS = 1e-3


def focal_loss(cate_logits, cate_target, cate_weight, *, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss (RetinaNet / SOLO), summed per image.

    Per element, with p = sigmoid(logit), t the one-hot target,
    p_t = p if t else 1 - p and alpha_t = alpha if t else 1 - alpha:

        FL = -alpha_t * (1 - p_t)^gamma * log(p_t)

    Written with `keras.ops` rather than `keras.losses.BinaryFocalCrossentropy`
    (apply_class_balancing=True, from_logits=True), whose per-element value is
    the same formula but which (1) averages over the class axis and (2) with
    `from_logits=True` applies a sigmoid and then computes the cross-entropy
    from probabilities: the TF backend recovers the logits from the Sigmoid
    op, but other backends (JAX) clip p to [1e-7, 1 - 1e-7], so a confidently
    wrong cell (|logit| > ~16) gets a capped loss and no gradient. Here
    -log(p_t) = softplus(-logit) or softplus(logit), stable on every backend.

    Args:
        cate_logits: (B, S, S, C) category logits.
        cate_target: int (B, S, S) class of each cell, -1 = background.
        cate_weight: (B, S, S) per-cell weight (0 = ignored cell).
        alpha: weight of positives (negatives get 1 - alpha). Defaults to 0.25.
        gamma: focusing exponent. Defaults to 2.0.

    Returns:
        float32 (B,): the loss summed over cells and classes of each image,
        not normalised.
    """
    logits = ops.cast(cate_logits, "float32")
    num_classes = logits.shape[-1]
    labels = ops.arange(num_classes, dtype="int32")
    one_hot = ops.cast(ops.expand_dims(ops.cast(cate_target, "int32"), -1) == labels, "float32")
    prob = ops.sigmoid(logits)
    neg_log_p_t = one_hot * ops.softplus(-logits) + (1.0 - one_hot) * ops.softplus(logits)
    p_t = one_hot * prob + (1.0 - one_hot) * (1.0 - prob)
    alpha_t = one_hot * alpha + (1.0 - one_hot) * (1.0 - alpha)
    loss = alpha_t * ops.power(1.0 - p_t, gamma) * neg_log_p_t
    loss = loss * ops.expand_dims(ops.cast(cate_weight, "float32"), -1)
    return ops.sum(loss, axis=(1, 2, 3))


def dice_loss(mask_logits, mask_target, valid, *, eps=DICE_EPS):
    """Dice loss per positive cell (SOLO Sec. 3.3).

        L_dice = 1 - 2 * sum(p * q) / (sum(p^2) + eps + sum(q^2) + eps)

    with p = sigmoid(mask_logits). eps = 1e-3 on each sum is the original
    SOLO code's (and mmdet `DiceLoss`'s default): it keeps an empty
    prediction against an empty target finite.

    Args:
        mask_logits: (B, P, H, W) mask logits of the positive cells.
        mask_target: (B, P, H, W) 0/1 target masks.
        valid: (B, P) 1 for real positives, 0 for padding.
        eps: added to each sum of squares. Defaults to 1e-3.

    Returns:
        float32 (B, P): dice loss of each positive, 0 where invalid.
    """
    prob = ops.sigmoid(ops.cast(mask_logits, "float32"))
    target = ops.cast(mask_target, "float32")
    overlap = ops.sum(prob * target, axis=(2, 3))
    pred_sq = ops.sum(prob * prob, axis=(2, 3)) + eps
    target_sq = ops.sum(target * target, axis=(2, 3)) + eps
    dice = 1.0 - 2.0 * overlap / (pred_sq + target_sq)  # SOLO: L_dice = 1 - D(p, q)
    return dice * ops.cast(valid, "float32")


def solo_loss(level_cate_logits, level_mask_logits, targets, *, alpha=0.25, gamma=2.0, mask_weight=3.0,
              count_reducer=None):
    """SOLO's loss, eq. (4): L = L_cate + lambda * L_mask.

    L_cate = sum over levels of the focal loss / (num_pos + 1), num_pos the
    positives of the whole batch (mmdet SOLOHead); L_mask = mean dice over
    all valid positives of all levels, 0 when there are none.

    Args:
        level_cate_logits: list per level of (B, S, S, C) category logits.
        level_mask_logits: list per level of (B, P_l, Hm_l, Wm_l) mask logits
            of the cells in `targets[l]["pos_index"]`.
        targets: the list from `keras_solo.targets.build_targets`.
        alpha, gamma: focal loss parameters. Default to 0.25, 2.0.
        mask_weight: lambda of eq. (4). Defaults to 3.0 (SOLO).
        count_reducer: optional function mapping this replica's positive
            count to the count over all replicas (data-parallel training), so
            every replica normalises by the global batch's positives and the
            summed replica gradients equal the single-device gradient.
            Defaults to None (one device).

    Returns:
        dict of float32 scalars: loss, cate_loss, mask_loss (unweighted
        mean dice), num_pos.

    Reference: SOLO, arXiv:1912.04488, Sec. 3.3; eq. (4) of the seed paper.
    """
    if not (len(level_cate_logits) == len(level_mask_logits) == len(targets)):
        raise ValueError(
            f"got {len(level_cate_logits)} category, {len(level_mask_logits)} mask and "
            f"{len(targets)} target levels; they must match")
    cate_sum, dice_sum, num_pos = 0.0, 0.0, 0.0
    for cate_logits, mask_logits, target in zip(level_cate_logits, level_mask_logits, targets):
        cate_sum = cate_sum + ops.sum(focal_loss(
            cate_logits, target["cate_target"], target["cate_weight"], alpha=alpha, gamma=gamma))
        dice_sum = dice_sum + ops.sum(dice_loss(mask_logits, target["mask_target"], target["pos_valid"]))
        num_pos = num_pos + ops.sum(ops.cast(target["pos_valid"], "float32"))
    if count_reducer is not None:
        num_pos = count_reducer(num_pos)
    cate_loss = cate_sum / (num_pos + 1.0)
    mask_loss = dice_sum / ops.maximum(num_pos, 1.0)
    return {
        "loss": cate_loss + mask_weight * mask_loss,  # eq. (4)
        "cate_loss": cate_loss,
        "mask_loss": mask_loss,
        "num_pos": num_pos,
    }


@keras.saving.register_keras_serializable(package="keras_solo")
@dataclasses.dataclass(frozen=True)
class SOLOLoss:
    """Eq. (4) with its parameters (`solo_loss`), as a serialisable part of the model.

    Args:
        focal_alpha, focal_gamma: focal loss parameters. Default to 0.25, 2.0.
        mask_weight: lambda of eq. (4). Defaults to 3.0 (SOLO).
    """

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    mask_weight: float = 3.0

    def __call__(self, level_cate_logits, level_mask_logits, targets, *, count_reducer=None):
        return solo_loss(level_cate_logits, level_mask_logits, targets, alpha=self.focal_alpha,
                         gamma=self.focal_gamma, mask_weight=self.mask_weight, count_reducer=count_reducer)

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)
