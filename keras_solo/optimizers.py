"""The optimizer and learning-rate schedule of a `TrainConfig`.

SOLO reference: SGD momentum 0.9, weight decay 1e-4, lr 0.01 at batch 16
(scaled linearly with the batch), linear warm-up over 500 iterations, x0.1 at
epochs 27 and 33 of 36, gradient clipping at norm 35; the edge presets use
AdamW with a cosine schedule. Weight EMA (`TrainConfig.ema_momentum`) is the
optimizer's ``use_ema``.
"""

import math

import keras


@keras.saving.register_keras_serializable(package="keras_solo")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then step decay (x0.1 at `boundaries`) or cosine.

    Args:
        base_lr: peak learning rate.
        warmup_steps: steps of linear warm-up from `base_lr * warmup_ratio`.
        warmup_ratio: start factor of the warm-up.
        boundaries: step numbers where the rate is multiplied by `gamma`
            (step schedule).
        total_steps: length of training (cosine schedule).
        kind: "step" | "cosine" | "constant".
        gamma: step decay factor. Defaults to 0.1.
    """

    def __init__(self, base_lr, warmup_steps=0, warmup_ratio=0.01, boundaries=(), total_steps=1,
                 kind="step", gamma=0.1):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.total_steps = max(1, int(total_steps))
        self.kind = kind
        self.gamma = float(gamma)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        lr = keras.ops.convert_to_tensor(self.base_lr, "float32")
        if self.kind == "step":
            for boundary in self.boundaries:
                lr = keras.ops.where(step >= boundary, lr * self.gamma, lr)
        elif self.kind == "cosine":
            progress = keras.ops.clip(step / float(self.total_steps), 0.0, 1.0)
            lr = lr * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        if self.warmup_steps > 0:
            alpha = keras.ops.clip(step / float(self.warmup_steps), 0.0, 1.0)
            factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * alpha
            lr = lr * factor
        return lr

    def get_config(self):
        return dict(base_lr=self.base_lr, warmup_steps=self.warmup_steps, warmup_ratio=self.warmup_ratio,
                    boundaries=list(self.boundaries), total_steps=self.total_steps, kind=self.kind,
                    gamma=self.gamma)


def build_optimizer(train_config, steps_per_epoch, epochs=None):
    """SGD (or AdamW) with the scaled, warmed-up schedule and clipping.

    Args:
        train_config: a `config.TrainConfig`.
        steps_per_epoch: optimizer steps per epoch (the step schedule's
            boundaries and the cosine's length are counted in steps).
        epochs: the schedule's length in epochs (default: the config's).

    Note: under tf.distribute, Keras clips each replica's gradient (by its own
    norm) before the replicas' gradients are summed, so with clipping active a
    mirrored run is not bit-identical to one device (without clipping it is:
    tests/test_solo.py).
    """
    t = train_config
    lr = t.learning_rate * t.batch_size / t.base_batch_size
    schedule = WarmupSchedule(
        base_lr=lr, warmup_steps=t.warmup_steps, warmup_ratio=t.warmup_ratio,
        boundaries=[e * steps_per_epoch for e in t.lr_steps], total_steps=(epochs or t.epochs) * steps_per_epoch,
        kind=t.schedule)
    options = {"global_clipnorm": t.clipnorm} if t.clipnorm > 0 else {}
    if t.ema_momentum > 0:
        options.update(use_ema=True, ema_momentum=t.ema_momentum)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=t.momentum,
                                    weight_decay=t.weight_decay or None, **options)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay, **options)
