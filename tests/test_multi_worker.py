"""`train.strategy: multi_worker` as TensorFlow's tutorial runs it: two
`keras-solo train` processes on 127.0.0.1 with TF_CONFIG, one run folder,
written by the chief alone; a killed run resumes on both workers."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import TINY_MODEL_OVERRIDES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "training", "demo.yaml")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(synthetic, run, tmp_path, epochs, extra=()):
    """Starts both workers, waits for them, returns their outputs."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    command = [sys.executable, "-m", "keras_solo.cli", "train", "--config", DEMO, "--out", str(run)]
    for item in (*TINY_MODEL_OVERRIDES, "train.strategy=multi_worker", "train.batch_size=4",
                 "train.steps_per_epoch=3", f"train.epochs={epochs}",
                 f"data.train_json={synthetic / 'instances_train.json'}",
                 f"data.val_json={synthetic / 'instances_val.json'}", *extra):
        command += ["--set", item]
    scratch = tmp_path / "worker_tmp"
    scratch.mkdir(exist_ok=True)
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch), CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env=env, cwd=tmp_path))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs, scratch


def _log_epochs(run):
    with open(run / "log.csv", newline="") as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


@pytest.mark.slow  # two processes training (25 s): make test-slow, CI
def test_two_workers_train_one_run_folder(synthetic, tmp_path):
    run = tmp_path / "run"
    outputs, scratch = _run_workers(synthetic, run, tmp_path, epochs=2)
    for output in outputs:
        assert "Epoch 2/2" in output, output[-2000:]
    # Worker 0 is the chief (no "chief" task in the cluster): it alone says it wrote the run.
    assert f"training done: {run} (" in outputs[0], outputs[0][-2000:]
    assert "training done: " not in outputs[1] and "the chief wrote the run folder" in outputs[1], outputs[1][-2000:]
    # One run folder, as a single process writes it; the other worker's files are gone.
    models = sorted(path.name for path in run.rglob("*.keras"))
    assert models == ["best.keras", "last.keras"], models
    assert (run / "DONE").read_text().strip() == "epochs 2"
    assert _log_epochs(run) == [0, 1]
    assert not (run / "backup").exists()
    assert list(scratch.iterdir()) == []

    from keras_solo.model.solo import load_model

    load_model(run / "best.keras")


@pytest.mark.slow  # make test-all / CI's make test-slow
def test_two_workers_resume_an_unfinished_run(synthetic, tmp_path):
    """A run killed after epoch 1 (its backup left behind) continues on both
    workers from epoch 2, not from the start."""
    run = tmp_path / "run"
    _run_workers(synthetic, run, tmp_path, epochs=1, extra=["train.schedule=constant"])
    # Make the finished 1-epoch run look like a 2-epoch run killed after its first epoch.
    config = (run / "config.yaml").read_text().replace("epochs: 1\n", "epochs: 2\n")
    assert "epochs: 2\n" in config
    (run / "config.yaml").write_text(config)
    (run / "DONE").unlink()
    backup = run / "backup"
    backup.mkdir()
    from keras_solo.config import load_config
    from keras_solo.model.solo import load_model
    from keras_solo.train import build_optimizer

    model = load_model(run / "last.keras")
    model.optimizer = build_optimizer(load_config(run / "config.yaml").train, 3)
    model.optimizer.build(model.trainable_variables)
    model.save_weights(backup / "latest.weights.h5")
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))

    outputs, _ = _run_workers(synthetic, run, tmp_path, epochs=2, extra=["train.schedule=constant"])
    for output in outputs:
        assert "Epoch 2/2" in output and "Epoch 1/2" not in output, output[-2000:]
    assert _log_epochs(run) == [0, 1]
    assert (run / "DONE").exists()


def test_writes_run_folder_follows_tensorflow_chief_rule():
    from keras_solo.train import writes_run_folder

    def spec(cluster, kind, index):
        return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})

    workers = {"worker": ["a:1", "b:2"]}
    with_chief = {"chief": ["c:3"], "worker": ["a:1", "b:2"]}
    assert writes_run_folder("default", spec(workers, "worker", 1))  # TF_CONFIG only counts for multi_worker
    assert writes_run_folder("multi_worker", None)  # unset: one local worker
    assert writes_run_folder("multi_worker", spec(workers, "worker", 0))
    assert not writes_run_folder("multi_worker", spec(workers, "worker", 1))
    assert writes_run_folder("multi_worker", spec(with_chief, "chief", 0))
    assert not writes_run_folder("multi_worker", spec(with_chief, "worker", 0))


def test_bad_tf_config_is_one_line():
    from keras_solo.errors import SoloError
    from keras_solo.train import check_tf_config

    assert check_tf_config(None) is None
    assert check_tf_config(json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
                           ) == ({"worker": ["a:1", "b:2"]}, "worker", 1)
    for text, message in (("{not json", "not a cluster spec"),
                          (json.dumps({"cluster": {}}), "not a cluster spec"),
                          (json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}),
                           "non-empty list"),
                          (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}),
                           "task worker 1 is not in cluster.worker")):
        with pytest.raises(SoloError, match=message):
            check_tf_config(text)
