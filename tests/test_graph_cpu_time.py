"""benchmarks/graph_cpu_time.py: interleaved 1-thread rounds, each figure a median of same-round ratios."""

import json
import os

import numpy as np
import pytest
from helpers import load_benchmark


def test_summary_takes_medians_of_same_round_ratios():
    models = ["ref.tflite", "new.tflite"]
    rounds = [[[10.0, 11.0, 30.0], [12.0, 13.0, 12.5]],   # medians 11 / 12.5
              [[20.0, 20.0, 20.0], [26.0, 26.0, 90.0]],   # a slow round: 20 / 26
              [[10.0, 10.0, 10.0], [11.0, 11.5, 12.0]]]   # 10 / 11.5
    summary = load_benchmark("graph_cpu_time").summarise(models, rounds)
    assert summary["ref.tflite"]["to_reference"] == 1.0
    new = summary["new.tflite"]
    assert new["to_reference"] == pytest.approx(1.15)  # the median of 1.136, 1.3, 1.15 (not 26 / 20)
    assert new["to_reference_quartiles"] == pytest.approx([np.percentile([12.5 / 11, 1.3, 1.15], 25),
                                                           np.percentile([12.5 / 11, 1.3, 1.15], 75)])
    assert new["p50_ms"] == 12.5 and new["min_ms"] == 11.0


def test_table_names_keep_the_folder_where_basenames_clash():
    table = load_benchmark("graph_cpu_time").table
    row = {"p50_ms": 1.0, "min_ms": 1.0, "to_reference": 1.0, "to_reference_quartiles": [1.0, 1.0]}
    assert "| x.tflite |" in table({"runs/a/x.tflite": row, "runs/b/y.tflite": row})
    lines = table({"runs/a/int8.tflite": row, "runs/b/int8.tflite": row, "runs/c.tflite": row}).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| " + os.path.join("a", "int8.tflite"), "| " + os.path.join("b", "int8.tflite"), "| c.tflite"]


def test_rounds_interleave_the_files_and_time_each_call():
    order, ticks = [], iter(range(1000))

    class Fake:
        def __init__(self, name):
            self.name = name

        def invoke(self):
            order.append(self.name)

    rounds = load_benchmark("graph_cpu_time").measure([Fake("a"), Fake("b")], 2, 3, clock=lambda: next(ticks) / 1e3,
                                                      progress=None)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert np.allclose(rounds, 1.0) and np.shape(rounds) == (2, 2, 3)  # one tick (1 ms) between start and end of every call


def _tiny_tflite(path, repeats):
    import tensorflow as tf

    weight = tf.constant(np.eye(16, dtype=np.float32) * 0.5)

    @tf.function(input_signature=[tf.TensorSpec((1, 16, 16), tf.float32)])
    def graph(x):
        for _ in range(repeats):
            x = tf.matmul(x, weight)
        return x

    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.get_concrete_function()])
    path.write_bytes(converter.convert())
    return str(path)


def test_times_real_files_and_keeps_every_round(tmp_path, capsys):
    ref, new = _tiny_tflite(tmp_path / "ref.tflite", 1), _tiny_tflite(tmp_path / "new.tflite", 8)
    out = tmp_path / "cpu.json"
    args = [ref, new, "--rounds", "2", "--calls", "3", "--json", str(out)]
    summary = load_benchmark("graph_cpu_time").main(args)
    assert summary[ref]["to_reference"] == 1.0 and summary[new]["min_ms"] > 0
    saved = json.loads(out.read_text())
    assert saved["models"] == [ref, new] and saved["clock"] == "1 thread, thread CPU time"
    assert [[len(calls) for calls in r] for r in saved["rounds"]] == [[3, 3], [3, 3]]
    assert "| new.tflite |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:  # the JSON exists now
        load_benchmark("graph_cpu_time").main(args)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {out}: exists (pass --overwrite to replace it)\n"


def test_more_threads_time_in_wall_time(tmp_path, capsys):
    ref = _tiny_tflite(tmp_path / "ref.tflite", 1)
    out = tmp_path / "wall.json"
    load_benchmark("graph_cpu_time").main([ref, "--threads", "2", "--rounds", "1", "--json", str(out)])
    assert json.loads(out.read_text())["clock"] == "2 threads, wall time"
    assert "2 threads, wall time, 1 rounds x 5 calls; cpu: " in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "--rounds, --calls and --threads must be >= 1, --warmup >= 0"),
    ([], "not a runnable .tflite"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(SystemExit) as stop:
        load_benchmark("graph_cpu_time").main([str(bad), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        load_benchmark("graph_cpu_time").main([str(tmp_path / "nothing.tflite")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing.tflite'}: file not found\n"
