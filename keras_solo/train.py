"""Training: optimizer, learning-rate schedule, callbacks, `model.fit`.

SOLO reference schedule: SGD momentum 0.9, weight decay 1e-4, lr 0.01 at
batch 16 (scaled linearly with the batch), linear warm-up over 500
iterations, x0.1 at epochs 27 and 33 of 36, gradient clipping at norm 35.

A run folder holds::

    config.yaml      the resolved config
    backup/          BackupAndRestore state (a killed run resumes from here)
    last.keras       the model after the latest epoch (written atomically)
    best.keras       the best model by the monitored metric
    log.csv          CSVLogger
    logs/            TensorBoard
    loss_curve.png   the losses per epoch
    DONE             written when the planned epochs finished
"""

import contextlib
import os
import shutil
import sys
import tempfile

import keras
import numpy as np

from keras_solo import builders
from keras_solo.config import save_config
from keras_solo.errors import SoloError, atomic_write, check_output
from keras_solo.optimizers import WarmupSchedule, build_optimizer  # noqa: F401 (their home before optimizers.py)


def get_strategy(name):
    """tf.distribute strategy by name (multi_worker reads TF_CONFIG).

    Make it before TensorFlow runs any op: MultiWorkerMirroredStrategy
    configures the collective ops at start-up and fails otherwise.
    """
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def check_tf_config(text):
    """A one-line error for a TF_CONFIG that TensorFlow would reject deep
    inside the strategy (unset or empty: one local worker, as TensorFlow).

    Returns:
        ``(cluster, task type, task index)``, or None when unset or empty.
    """
    import json

    if not text:
        return None
    try:
        value = json.loads(text)
        workers = value["cluster"]["worker"]
        task = value["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, TypeError, KeyError) as error:
        raise SoloError(f"TF_CONFIG: not a cluster spec ({type(error).__name__}: {error}); expected "
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
                        ) from None
    members = value["cluster"].get(kind)
    if not isinstance(workers, list) or not workers:
        raise SoloError("TF_CONFIG: cluster.worker must be a non-empty list of host:port")
    if not isinstance(members, list) or not 0 <= index < len(members):
        raise SoloError(f"TF_CONFIG: task {kind} {index} is not in cluster.{kind} "
                        f"({len(members) if isinstance(members, list) else 0} entries)")
    return value["cluster"], kind, index


def _tensorboard_available():
    """TensorBoard summaries need TensorFlow; without it, say so once and skip them."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print("TensorBoard logs skipped: TensorFlow is not installed (log.csv and loss_curve.png are written)",
              flush=True)
        return False
    return True


def is_chief(strategy):
    """Whether this process writes the run folder: the only process, the
    "chief" task, or worker 0 of a cluster without one (TensorFlow's rule)."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return _chief_rule(cluster, resolver.task_type if cluster else None, resolver.task_id if cluster else None)


def writes_run_folder(strategy_name, tf_config):
    """:func:`is_chief` without a strategy, from the strategy's name and the
    TF_CONFIG text."""
    task = check_tf_config(tf_config) if strategy_name == "multi_worker" else None
    return task is None or _chief_rule(*task)


def _chief_rule(cluster, task_type, task_id):
    if not cluster or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def _logs_as_vectors(model):
    """Makes the train and test steps of `model` return 1-element logs.

    Under MultiWorkerMirroredStrategy Keras 3 averages each logged value
    across replicas along axis 0, which fails on the scalars a step returns
    ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow#72388); along a length-1 axis the same average works.
    """
    import tensorflow as tf

    def vectors(step):
        return lambda data: {key: tf.reshape(value, [-1]) if value.shape.rank == 0 else value
                             for key, value in step(data).items()}

    model.train_step = vectors(model.train_step)
    model.test_step = vectors(model.test_step)


def atomic_save(model, path):
    """Saves a `.keras` file through a temporary name, so a kill or a full disk
    never leaves a truncated file where a good one stood."""
    atomic_write(path, model.save, what="checkpoint", suffix=".keras")


class CheckpointCallback(keras.callbacks.Callback):
    """Writes last.keras every `every` epochs and best.keras on improvement."""

    def __init__(self, out_dir, monitor="val_loss", mode="min", every=1):
        super().__init__()
        self.out_dir, self.monitor, self.mode, self.every = out_dir, monitor, mode, every
        self.best = None
        last = os.path.join(out_dir, "last.keras")  # a resumed run's earlier checkpoint
        self.last_good = last if os.path.exists(last) else None
        self._best_file = os.path.join(out_dir, "best_metric.txt")
        if os.path.exists(self._best_file):
            try:
                self.best = float(open(self._best_file).read().split()[0])
            except (ValueError, IndexError, OSError):
                self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(np.isfinite(v) for v in logs.values() if isinstance(v, (int, float))):
            return
        if (epoch + 1) % self.every == 0:
            path = os.path.join(self.out_dir, "last.keras")
            atomic_save(self.model, path)
            self.last_good = path
        value = logs.get(self.monitor)
        if value is None:  # e.g. val_AP on an epoch without evaluation
            return
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best = float(value)
            path = os.path.join(self.out_dir, "best.keras")
            atomic_save(self.model, path)
            with open(self._best_file, "w") as f:
                f.write(f"{self.best} {self.monitor} epoch {epoch + 1}\n")
            self.last_good = self.last_good or path


class RawWeightsCheckpoint(keras.callbacks.Callback):
    """With weight EMA: writes the optimizer's own weights as last_raw.keras
    each epoch, before `keras.callbacks.SwapEMAWeights` puts the average into
    the model for validation, evaluation and the other checkpoints."""

    def __init__(self, out_dir):
        super().__init__()
        self.path = os.path.join(out_dir, "last_raw.keras")

    def on_epoch_end(self, epoch, logs=None):
        atomic_save(self.model, self.path)


class EvalCallback(keras.callbacks.Callback):
    """COCO mask AP on the validation set every `every` epochs.

    The metrics are added to the epoch logs as ``val_AP``, ``val_AP50``, ...,
    so CSVLogger and TensorBoard (which run after this callback) record them
    and the checkpoint callback can monitor ``val_AP``.
    """

    def __init__(self, coco_dataset, every=1, limit=0):
        super().__init__()
        self.coco_dataset, self.every, self.limit = coco_dataset, every, limit

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every != 0:
            return
        from keras_solo.evaluate import METRIC_NAMES, evaluate_model

        metrics, _ = evaluate_model(self.model, self.coco_dataset, limit=self.limit, progress=False)
        for name in METRIC_NAMES:
            logs[f"val_{name}"] = metrics["segm"][name]
        print(f"  val segm AP {metrics['segm']['AP']:.2f} AP50 {metrics['segm']['AP50']:.2f}", flush=True)


class NaNGuard(keras.callbacks.Callback):
    """Stops on a non-finite loss with a message naming the step and the last
    good checkpoint (which is never overwritten by a diverged model)."""

    def __init__(self, checkpoint_callback):
        super().__init__()
        self.checkpoint_callback = checkpoint_callback
        self.epoch = 0
        self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            last = self.checkpoint_callback.last_good or "none written yet"
            best = os.path.join(self.checkpoint_callback.out_dir, "best.keras")
            best_note = f"best checkpoint: {best}; " if os.path.exists(best) and best != last else ""
            self.message = (f"training diverged: loss is {loss} at epoch {self.epoch + 1} step {batch + 1}; "
                            f"{best_note}last good checkpoint: {last}")
            self.model.stop_training = True


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose restore never ends in a traceback (a kill during
    Keras' in-place write leaves latest.weights.h5 / training_metadata.json
    truncated): falls back to the previous copy, else one-line error.

    `data_epoch` (optional): the training pipeline's pass counter
    (`pipeline.new_epoch_variable`), set to the epoch the run resumes at so
    the resumed epochs draw new shuffles and augmentations instead of
    replaying pass 0's. `writes=False` (the other workers of a multi-worker
    run): restore from the chief's backup, never write or delete it."""

    def __init__(self, backup_dir, *, data_epoch=None, writes=True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.data_epoch = data_epoch
        self.writes = writes

    def _save_model(self):
        if self.writes:
            super()._save_model()

    def on_train_end(self, logs=None):
        if self.writes:
            super().on_train_end(logs)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
            self._sync_data_epoch()
            return
        except (OSError, ValueError, KeyError) as error:
            problem = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:120]}"
        if os.path.exists(self._prev_weights_path) and os.path.exists(self._prev_training_metadata_path):
            try:
                shutil.copyfile(self._prev_weights_path, self._weights_path)
                shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
                self._load_model()
                self._sync_data_epoch()
                return
            except (OSError, ValueError, KeyError):
                pass
        raise SoloError(f"{self.backup_dir}: cannot resume from this backup ({problem}); "
                        "delete the folder to restart the run from epoch 1, or use --overwrite")

    def _sync_data_epoch(self):
        if self.data_epoch is not None:
            # BackupAndRestore._load_model leaves the restored epoch in model._initial_epoch
            self.data_epoch.assign(int(getattr(self.model, "_initial_epoch", None) or 0))


def _number(text):
    """A CSV cell as float; NaN for empty or "NA" (Keras' CSVLogger writes NA for missing metrics)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return np.nan


def plot_losses(csv_path, png_path):
    """Loss curve PNG from the CSV log."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "cate_loss", "mask_loss", "val_loss"):
        if key in rows[0]:
            values = [_number(r.get(key)) for r in rows]
            ax.plot(epochs, values, marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def _config_differences(saved_path, config):
    """Dotted keys whose values differ between a saved config.yaml and `config`."""
    from keras_solo.config import config_to_dict, load_config

    def flat(value, prefix=""):
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                out.update(flat(item, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: value}

    old, new = flat(config_to_dict(load_config(saved_path))), flat(config_to_dict(config))
    return [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


class RunLock:
    """An exclusive lock on a run folder (``.lock`` in it, holding the owner's
    process id), held while a training writes there.

    `fcntl.flock`: the kernel drops the lock when its process ends, however it
    ends, so the lock of a killed run is never stale and the next start takes
    it. Without `fcntl` (Windows) there is no lock. Release by `release()` or
    as a context manager.
    """

    NAME = ".lock"

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, self.NAME)
        self.created = not os.path.exists(self.path)
        self._file = None
        try:
            import fcntl
        except ImportError:
            return
        os.makedirs(out_dir, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise SoloError(f"{out_dir}: in use by a training still running (process {owner}); "
                            "wait for it to end or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self, remove=True):
        if self._file is not None:
            if remove and os.path.exists(self.path):
                os.remove(self.path)
            self._file.close()  # closing the last descriptor drops the lock
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def prepare_run_dir(out_dir, overwrite=False, resume=True, config=None):
    """Locks and creates the run folder; returns the held `RunLock`.

    A folder that another training holds is refused first (its lock; nothing
    in it is touched). An unfinished run (a `backup/` folder and no DONE)
    resumes when `resume`, so re-running a killed command continues it; with a
    `config` that differs from the run's config.yaml that is an error listing
    the differences (the run would continue under other settings while its
    config.yaml claimed one), and `overwrite` starts it afresh instead. A
    finished run, or a folder holding other files, is refused unless
    `overwrite` (then its contents are replaced). Call it after every input
    (and `errors.check_output(out_dir)`) is checked: `overwrite` deletes.
    """
    existed = os.path.exists(out_dir)
    lock = RunLock(out_dir)
    try:
        _check_run_dir(out_dir, overwrite, resume, config)
    except BaseException:
        lock.release(remove=lock.created)
        if not existed:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return lock


def _check_run_dir(out_dir, overwrite, resume, config):
    done = os.path.join(out_dir, "DONE")
    entries = [name for name in os.listdir(out_dir) if name != RunLock.NAME]
    if not entries:
        return
    unfinished = os.path.isdir(os.path.join(out_dir, "backup")) and not os.path.exists(done)
    saved = os.path.join(out_dir, "config.yaml")
    if unfinished and resume and not overwrite:
        if config is not None and os.path.exists(saved):
            changed = _config_differences(saved, config)
            if changed:
                raise SoloError(f"{out_dir}: an unfinished run with another config ({'; '.join(changed)[:400]}); "
                                "re-run with its settings to resume, or --overwrite to start afresh")
    elif overwrite:
        for name in entries:  # all but the lock this run holds
            path = os.path.join(out_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    elif os.path.exists(done):
        raise SoloError(f"{out_dir}: holds a finished run; use --overwrite to replace it or another --out")
    else:
        raise SoloError(f"{out_dir}: already holds files; use --overwrite or another --out")


def train(config, out_dir, *, overwrite=False, resume=True, verbose=None, extra_callbacks=()):
    """Trains a SOLO model as the config says; returns (model, history dict).

    Raises:
        SoloError: bad data, a finished run folder, divergence.
    """
    # tf.data input and tf.distribute on the TensorFlow backend; on JAX (or
    # torch) a PyDataset input that needs no TensorFlow, one device.
    on_tf = keras.backend.backend() == "tensorflow"
    if not on_tf and config.train.strategy != "default":
        raise SoloError(f"train.strategy {config.train.strategy!r} needs Keras' TensorFlow backend "
                        f"(KERAS_BACKEND is {keras.backend.backend()!r})")
    # Before any TensorFlow op (multi_worker configures collectives at start-up).
    strategy = get_strategy(config.train.strategy) if on_tf else None
    chief = is_chief(strategy)
    check_output(out_dir)
    if verbose is None:  # a progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    keras.utils.set_random_seed(config.train.seed)
    if config.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    train_coco = builders.load_split(config, "train")
    val_coco = None
    if config.data.val_json:  # a missing file is an error (load_split); "" trains without validation
        val_coco = builders.load_split(config, "val")
    from keras_solo.data.examples import call_with_data_errors, steps_per_epoch

    if len(train_coco.records) < config.train.batch_size:
        print(f"warning: {config.data.train_json}: {len(train_coco.records)} training image(s) for train.batch_size "
              f"{config.train.batch_size}: every batch repeats images; lower train.batch_size", file=sys.stderr,
              flush=True)
    steps = config.train.steps_per_epoch or max(1, steps_per_epoch(train_coco, config.train.batch_size))
    train_ds, data_epoch = builders.build_input(config, train_coco, training=True, steps=steps)
    val_ds = builders.build_input(config, val_coco, training=False)[0] if val_coco else None
    if chief:
        # Only now, with the config and the data checked, may --overwrite delete an earlier run.
        lock = prepare_run_dir(out_dir, overwrite=overwrite, resume=resume, config=config)
        write_dir = out_dir
    else:
        # The other workers of a multi-worker run compute the same steps, read the
        # chief's backup to resume, and write their own logs and checkpoints to a
        # temporary folder that is removed at the end (TensorFlow's recipe).
        write_dir = tempfile.mkdtemp(prefix="keras-solo-worker-")
        lock = contextlib.nullcontext()
    with lock:  # held for the run's life: a second start into this folder is refused
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = builders.build_model(config)
            print(builders.freeze_for_training(model, config), flush=True)
            model.compile(optimizer=build_optimizer(config.train, steps))
            model.optimizer.build(model.trainable_variables)  # in the scope, before fit
            if config.train.strategy == "multi_worker":
                _logs_as_vectors(model)
        if chief:
            save_config(config, os.path.join(out_dir, "config.yaml"))

        evaluating = val_coco is not None and config.train.eval_every > 0
        if evaluating:
            monitor, mode = "val_AP", "max"
        else:
            monitor, mode = ("val_loss" if val_ds is not None else "loss"), "min"
        checkpoint = CheckpointCallback(write_dir, monitor=monitor, mode=mode, every=config.train.checkpoint_every)
        nan_guard = NaNGuard(checkpoint)
        csv_path = os.path.join(write_dir, "log.csv")
        backup_dir = os.path.join(out_dir, "backup")
        if not chief and overwrite:  # the chief starts afresh: so must this worker
            backup_dir = os.path.join(write_dir, "backup")
        callbacks = [
            ResumableBackup(backup_dir, data_epoch=data_epoch, double_checkpoint=True, writes=chief),
            nan_guard,
            # The backup above keeps the raw weights (and the average in the optimizer's
            # state) so a resumed run goes on from both; everything below sees the average.
            *([RawWeightsCheckpoint(write_dir), keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
              if config.train.ema_momentum > 0 else []),
            *([EvalCallback(val_coco, every=config.train.eval_every)] if evaluating else []),
            checkpoint,
            keras.callbacks.CSVLogger(csv_path, append=True),
            *([keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False)]
              if chief and _tensorboard_available() else []),
            *extra_callbacks,
        ]
        if config.train.strategy != "default":
            import tensorflow as tf

            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            train_ds = train_ds.with_options(options)
        try:
            history = call_with_data_errors(model.fit, train_ds, epochs=config.train.epochs, steps_per_epoch=steps,
                                            validation_data=val_ds, callbacks=callbacks, verbose=verbose,
                                            shuffle=False)  # the input pipeline shuffles
        finally:
            if not chief:
                shutil.rmtree(write_dir, ignore_errors=True)
        if nan_guard.message:
            raise SoloError(nan_guard.message)
        if not chief:
            return model, history.history
        if os.path.exists(csv_path):
            plot_losses(csv_path, os.path.join(out_dir, "loss_curve.png"))
        if not os.path.exists(os.path.join(out_dir, "best.keras")):
            atomic_save(model, os.path.join(out_dir, "best.keras"))
        with open(os.path.join(out_dir, "DONE"), "w") as f:
            f.write(f"epochs {config.train.epochs}\n")
    sys.stdout.flush()
    return model, history.history
