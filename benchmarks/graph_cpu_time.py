""".tflite graphs against one another, taking turns every few calls: what a change to the graph costs.

    python benchmarks/graph_cpu_time.py REFERENCE.tflite OTHER.tflite ... [--rounds 20] [--json OUT.json]

Every file runs in this process on 1 LiteRT thread (XNNPACK then works in the calling thread), on
one fixed random 0-255 image of the file's input shape, timed in the thread's CPU time
(`time.thread_time`): other jobs on a shared machine stretch wall time, much less the CPU time of
the work itself. The files take turns, ``--calls`` calls each per round; per round each file's
median call is divided by the reference's (the first file), and the figure is the median of those
same-round ratios with its quartiles. Also printed: the p50 and the minimum over all calls.

What it measures is the graph (network and decoding; no letterbox, no Python around the call), so
it ranks variants of one model, trained or not (the graphs have fixed sizes, so untrained heads time
like trained ones). ``--threads 2`` times the same way in wall time (`time.perf_counter`) on 2 LiteRT
threads: the files still take turns every few calls, which a shared machine's drift spares more than
one process per file. The 2-thread whole call against a peer is `latency_pairs.py`'s job.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from anywhere in the checkout

from keras_solo.runtime.bench import cpu_info, format_cpu, short_names  # noqa: E402


def summarise(models, rounds):
    """Per model: p50 and minimum of all calls, and the median (quartiles) over rounds of its
    median call over the first model's in the same round.

    Args:
        models: the files, the reference first.
        rounds: per round, per model (in `models` order) the list of call times in ms.
    """
    out = {}
    for k, model in enumerate(models):
        calls = [t for r in rounds for t in r[k]]
        ratios = [statistics.median(r[k]) / statistics.median(r[0]) for r in rounds]
        out[model] = {"p50_ms": statistics.median(calls), "min_ms": min(calls),
                      "to_reference": statistics.median(ratios),
                      "to_reference_quartiles": [float(np.percentile(ratios, 25)),
                                                 float(np.percentile(ratios, 75))]}
    return out


def table(summary):
    lines = ["| file | p50 ms | min ms | / reference, median of rounds (quartiles) |", "|---|---|---|---|"]
    for name, s in zip(short_names(list(summary)), summary.values()):
        q1, q3 = s["to_reference_quartiles"]
        lines.append(f"| {name} | {s['p50_ms']:.2f} | {s['min_ms']:.2f} | "
                     f"{s['to_reference']:.3f} ({q1:.3f}-{q3:.3f}) |")
    return "\n".join(lines)


def measure(interpreters, rounds, calls, clock=time.thread_time, progress=print):
    """The interleaved rounds: per round, per interpreter, `calls` timed `invoke()`s in ms."""
    result = []
    for r in range(rounds):
        result.append([])
        for interp in interpreters:
            times = []
            for _ in range(calls):
                start = clock()
                interp.invoke()
                times.append(1e3 * (clock() - start))
            result[-1].append(times)
        if progress:
            progress(f"round {r + 1}/{rounds}: " + "  ".join(f"{statistics.median(t):.2f}" for t in result[-1]))
    return result


def load(path, warmup, threads=1):
    """An interpreter of `path` on `threads` threads with the fixed image set, after `warmup` calls."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    image = np.random.default_rng(0).uniform(0, 255, detail["shape"]).astype(detail["dtype"])
    interp.set_tensor(detail["index"], image)
    for _ in range(warmup):
        interp.invoke()
    return interp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help=".tflite files, the reference first")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per file and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="LiteRT threads: 1 is timed in thread CPU time, more in wall time")
    parser.add_argument("--json", help="every call of every round and the summary")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    if min(args.rounds, args.calls, args.threads) < 1 or args.warmup < 0:
        print("error: --rounds, --calls and --threads must be >= 1, --warmup >= 0", file=sys.stderr)
        sys.exit(2)
    for path in args.models:
        if not os.path.isfile(path):
            print(f"error: {path}: file not found", file=sys.stderr)
            sys.exit(2)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        print(f"error: {args.json}: exists (pass --overwrite to replace it)", file=sys.stderr)
        sys.exit(2)
    interpreters = []
    for path in args.models:
        try:
            interpreters.append(load(path, args.warmup, args.threads))
        except (ValueError, RuntimeError) as e:
            print(f"error: {path}: not a runnable .tflite ({str(e).splitlines()[0][:160]})", file=sys.stderr)
            sys.exit(2)
    clock, what = (time.thread_time, "1 thread, thread CPU time") if args.threads == 1 else (
        time.perf_counter, f"{args.threads} threads, wall time")
    rounds = measure(interpreters, args.rounds, args.calls, clock=clock)
    summary = summarise(args.models, rounds)
    cpu = cpu_info()
    print(f"{what}, {args.rounds} rounds x {args.calls} calls; {format_cpu(cpu)}")
    print(table(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": args.models, "threads": args.threads, "clock": what, "cpu": cpu, "rounds": rounds,
                       "summary": summary}, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
