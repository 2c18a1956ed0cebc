"""benchmarks/latency_pairs.py: alternating rounds, each figure a median of same-round ratios."""

import json
import os
import stat
import sys

import pytest
from helpers import load_benchmark

# A stand-in for `keras-solo benchmark MODEL ... --json OUT`: the model file holds its per-call ms and
# the round's peer time comes from a counter file, so the rounds differ as on a drifting machine.
FAKE = """#!{python}
import json, sys
args = sys.argv[1:]
model, out = args[1], args[args.index("--json") + 1]
counter = out + ".n"
load = {load}
total = float(open(model).read()) * load
peer = 20.0 * load
json.dump({{"detections": 5, "loadavg_1m": [1.0, 1.0], "cpu": {{"model": "Fake CPU", "cores": 2, "int8_isa": []}},
           "rounds": [{{"ours": {{"total": total, "network": total - 2.0, "decode": 1.5}},
                        "peers": {{"peer.onnx": peer}}, "ratio": {{"peer.onnx": round(total / peer, 3)}}}}]}},
          open(out, "w"))
"""


def test_summary_takes_medians_of_same_round_ratios():
    models = ["ref.tflite", "new.tflite"]
    rounds = [[{"total": 20.0, "network": 18.0, "peer": 25.0, "ratio": 0.8, "detections": 6},
               {"total": 22.0, "network": 19.8, "peer": 25.0, "ratio": 0.88, "detections": 6}],
              [{"total": 30.0, "network": 27.0, "peer": 30.0, "ratio": 1.0, "detections": 6},  # a slow round
               {"total": 36.0, "network": 32.4, "peer": 30.0, "ratio": 1.2, "detections": 6}],
              [{"total": 21.0, "network": 19.0, "peer": 25.0, "ratio": 0.84, "detections": 6},
               {"total": 23.1, "network": 20.9, "peer": 25.0, "ratio": 0.924, "detections": 6}]]
    summary = load_benchmark("latency_pairs").summarise(models, rounds)
    assert summary["ref.tflite"]["total_to_reference"] == 1.0
    new = summary["new.tflite"]
    assert new["total_to_reference"] == pytest.approx(1.1)  # 1.1, 1.2, 1.1
    assert new["total_to_reference_range"] == pytest.approx([1.1, 1.2])
    assert new["network_to_reference"] == pytest.approx(1.1)
    assert new["ratio_to_peer"] == pytest.approx(0.924)
    assert new["total_ms"] == 23.1 and new["ratio_to_peer_range"] == [0.88, 1.2]


@pytest.mark.skipif(os.name != "posix", reason="the stand-in command is a script with a #! line")
def test_runs_each_file_per_round_and_writes_every_round(tmp_path, capsys):
    fake = tmp_path / "keras-solo"
    fake.write_text(FAKE.format(python=sys.executable, load=1.5))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    ref, new = tmp_path / "ref.tflite", tmp_path / "new.tflite"
    ref.write_text("20")
    new.write_text("25")
    (tmp_path / "frame.jpg").write_bytes(b"x")
    (tmp_path / "peer.onnx").write_bytes(b"x")
    out = tmp_path / "pairs.json"
    summary = load_benchmark("latency_pairs").main(
        [str(ref), str(new), "--rounds", "2", "--k", str(fake), "--source", str(tmp_path / "frame.jpg"),
         "--peer", str(tmp_path / "peer.onnx"), "--json", str(out)])
    assert summary[str(new)]["total_to_reference"] == pytest.approx(1.25)
    assert summary[str(new)]["ratio_to_peer"] == pytest.approx(1.25)  # 37.5 / 30
    saved = json.loads(out.read_text())
    assert len(saved["rounds"]) == 2 and len(saved["rounds"][0]) == 2
    printed = capsys.readouterr().out
    assert "cpu: Fake CPU, 2 cores" in printed and "| new.tflite | 37.50 |" in printed


def test_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        load_benchmark("latency_pairs").main([str(tmp_path / "nothing.tflite"), "--source", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing.tflite'}: file not found\n"


def test_a_file_given_twice_is_a_one_line_error(tmp_path, capsys):
    model, frame = tmp_path / "a.tflite", tmp_path / "frame.jpg"
    model.write_text("20")
    frame.write_bytes(b"x")
    with pytest.raises(SystemExit) as stop:
        load_benchmark("latency_pairs").main([str(model), str(model), "--source", str(frame), "--peer", str(frame)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {model}: given twice (to time a file against itself, copy it)\n"
