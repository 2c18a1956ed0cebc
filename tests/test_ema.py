"""Weight EMA (`train.ema_momentum`): the optimizer's trajectory is unchanged,
the checkpoints (and so evaluation and export) hold the average, and
last_raw.keras keeps the raw weights."""

import os

import numpy as np
from helpers import tiny_config

from keras_solo.model.solo import load_model
from keras_solo.train import train


def weights(path):
    return [w.numpy() for w in load_model(path).trainable_weights]


def test_checkpoints_hold_the_average_and_last_raw_the_trajectory(synthetic, tmp_path):
    common = ["train.batch_size=2", "train.steps_per_epoch=2", "train.epochs=2", "train.warmup_steps=0",
              "train.learning_rate=0.02", "data.val_json="]  # AdamW steps of about 0.02 per weight; no validation
    train(tiny_config(str(synthetic), *common), str(tmp_path / "plain"), verbose=0)
    train(tiny_config(str(synthetic), *common, "train.ema_momentum=0.5"), str(tmp_path / "ema"), verbose=0)
    assert not os.path.exists(tmp_path / "plain" / "last_raw.keras")
    plain, raw, average = (weights(tmp_path / p) for p in ("plain/last.keras", "ema/last_raw.keras", "ema/last.keras"))
    # the average does not steer training: the raw weights are the plain run's
    assert max(np.abs(a - b).max() for a, b in zip(plain, raw)) < 1e-4
    # the checkpoint is the average, not the last step's weights
    moved = max(np.abs(a - b).max() for a, b in zip(raw, average))
    assert moved > 1e-3, moved
