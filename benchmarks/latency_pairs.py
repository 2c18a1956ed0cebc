"""int8 files each beside YOLO11n-seg, in alternating rounds: their whole calls against one another's.

    python benchmarks/latency_pairs.py REFERENCE.tflite OTHER.tflite ... [--rounds 6] [--json OUT.json]

Each round runs, for every file in turn, ``keras-solo benchmark FILE --threads 2 --warmup 10 --runs 100
--rounds 1 --source FRAME --compare PEER`` (the whole call: letterbox, network, decode; the peer's
network only, in the same process right after). A shared machine drifts by more than the differences
sought, so every figure is a median over rounds of what one round measured side by side: each file's
ratio to the peer, and its whole call and network time over the first file's (the reference) in the
same round. Untrained heads give no detections (no decode work): compare their network column.

The default frame is the median val frame of cityscapes5 (5-6 detections for a trained model), the
default peer YOLO11n-seg int8 at 320x640 (../shared/peers). Prints a table; ``--json`` keeps every
round.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from anywhere in the checkout

from keras_solo.runtime.bench import format_cpu, short_names  # noqa: E402

MEDIAN_FRAME = "../shared/data/cityscapes5/val/images/monchengladbach_000000_007695_*.jpg"
PEER = "../shared/peers/yolo11n-seg_320x640.int8.onnx"


def summarise(models, rounds):
    """Per model, the medians over rounds: whole call and network ms, the ratio to the peer, and the
    whole call and network over the first model's in the same round (with their range).

    Args:
        models: the files, the reference first.
        rounds: per round, per model (in `models` order) a dict with total, network, peer, ratio.
    """
    out = {}
    for k, model in enumerate(models):
        mine = [r[k] for r in rounds]
        to_ref = [m["total"] / r[0]["total"] for m, r in zip(mine, rounds)]
        net_to_ref = [m["network"] / r[0]["network"] for m, r in zip(mine, rounds)]
        out[model] = {"total_ms": statistics.median(m["total"] for m in mine),
                      "network_ms": statistics.median(m["network"] for m in mine),
                      "ratio_to_peer": statistics.median(m["ratio"] for m in mine),
                      "ratio_to_peer_range": [min(m["ratio"] for m in mine), max(m["ratio"] for m in mine)],
                      "total_to_reference": statistics.median(to_ref),
                      "total_to_reference_range": [min(to_ref), max(to_ref)],
                      "network_to_reference": statistics.median(net_to_ref),
                      "detections": mine[-1]["detections"]}
    return out


def table(summary):
    lines = ["| file | whole call ms | network ms | / reference, whole call (range) | / reference, network | "
             "ratio to the peer (range) | detections |", "|---|---|---|---|---|---|---|"]
    for name, s in zip(short_names(list(summary)), summary.values()):
        lines.append(f"| {name} | {s['total_ms']:.2f} | {s['network_ms']:.2f} | "
                     f"{s['total_to_reference']:.3f} ({s['total_to_reference_range'][0]:.2f}-"
                     f"{s['total_to_reference_range'][1]:.2f}) | {s['network_to_reference']:.3f} | "
                     f"{s['ratio_to_peer']:.3f} ({s['ratio_to_peer_range'][0]:.2f}-"
                     f"{s['ratio_to_peer_range'][1]:.2f}) | {s['detections']} |")
    return "\n".join(lines)


def measure(k, model, source, peer, runs):
    """One `benchmark --compare` call: its round as total, network, peer, ratio, detections, load."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "compare.json")
        subprocess.run([k, "benchmark", model, "--threads", "2", "--warmup", "10", "--runs", str(runs),
                        "--rounds", "1", "--source", source, "--compare", peer, "--json", out, "--overwrite"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out) as f:
            result = json.load(f)
    name = os.path.basename(peer)
    first = result["rounds"][0]
    return {"total": first["ours"]["total"], "network": first["ours"]["network"], "peer": first["peers"][name],
            "ratio": first["ratio"][name], "detections": result.get("detections"),
            "loadavg_1m": result.get("loadavg_1m"), "cpu": result.get("cpu")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="int8 files, the reference first")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=100, help="timed calls per file and round")
    parser.add_argument("--source", help="the frame (default: cityscapes5's median val frame)")
    parser.add_argument("--peer", default=os.path.join(ROOT, PEER))
    parser.add_argument("--k", default=os.path.join(ROOT, ".venv", "bin", "keras-solo"), help="keras-solo command")
    parser.add_argument("--json", help="every round and the summary")
    args = parser.parse_args(argv)
    source = args.source or next(iter(sorted(glob.glob(os.path.join(ROOT, MEDIAN_FRAME)))), None)
    for path in [*args.models, args.peer, source]:
        if not path or not os.path.isfile(path):
            print(f"error: {path or MEDIAN_FRAME}: file not found", file=sys.stderr)
            sys.exit(2)
    twice = sorted({m for m in args.models if args.models.count(m) > 1})
    if twice:  # the summary is keyed by file
        print(f"error: {twice[0]}: given twice (to time a file against itself, copy it)", file=sys.stderr)
        sys.exit(2)
    rounds = []
    for r in range(args.rounds):
        rounds.append([measure(args.k, model, source, args.peer, args.runs) for model in args.models])
        print(f"round {r + 1}: " + "  ".join(f"{os.path.basename(m)} {x['total']:.2f} ({x['ratio']:.2f})"
                                              for m, x in zip(args.models, rounds[-1])), flush=True)
    summary = summarise(args.models, rounds)
    cpu = rounds[0][0]["cpu"]
    print(f"medians of {args.rounds} rounds, {os.path.basename(source)}, peer {os.path.basename(args.peer)}"
          + (f"; {format_cpu(cpu)}" if cpu else ""))
    print(table(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": args.models, "source": source, "peer": args.peer, "cpu": cpu, "rounds": rounds,
                       "summary": summary}, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
