"""The paper's ablation (Tables 3 and 4): SOLO without coords, SOLO, SOLO +
grid attention, trained on the same data and schedule, evaluated with COCO AP.

The preset is an ordinary config (the shared base); the command switches
`model.use_coords` / `model.use_attention` per variant and trains each with
`--seeds` seeds. Every trained variant is kept as `<out>/<variant>/seed<k>/best.keras`.
"""

import json
import os

import numpy as np

from keras_solo.config import load_config, replace, save_config
from keras_solo.errors import SoloError, write_json

VARIANTS = (
    ("no_coords", "SOLO (no coords)", {"model.use_coords": False, "model.use_attention": False}),
    ("solo", "SOLO", {"model.use_coords": True, "model.use_attention": False}),
    ("attention", "Attention mechanism", {"model.use_coords": True, "model.use_attention": True}),
)

# The paper's own numbers (Tables 3 and 4), 5-class Cityscapes subset.
PAPER_TABLE3 = {"no_coords": (11.0, 20.1, 11.0), "solo": (12.8, 21.0, 13.7), "attention": (14.7, 26.6, 14.0)}
PAPER_TABLE4 = {"solo": (0.1, 4.3, 33.0), "attention": (0.5, 8.0, 38.0)}


def _mean_std(values):
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def format_tables(results, seeds):
    """Markdown Tables 3 and 4: ours (mean ± std over seeds) beside the paper's."""
    lines = [f"Table 3 (segm AP, {seeds} seed(s); paper in brackets)", "",
             "| algorithm | AP | AP50 | AP75 |", "|---|---|---|---|"]
    for key, title, _ in VARIANTS:
        runs = results.get(key, [])
        paper = PAPER_TABLE3.get(key)
        cells = [f"{_mean_std([r[m] for r in runs])} ({p})" for m, p in zip(("AP", "AP50", "AP75"), paper)]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Table 4 (segm AP by size; paper in brackets)", "",
              "| algorithm | APs | APm | APl |", "|---|---|---|---|"]
    for key, title, _ in VARIANTS:
        runs = results.get(key, [])
        paper = PAPER_TABLE4.get(key, ("-", "-", "-"))
        cells = [f"{_mean_std([r[m] for r in runs])} ({p})" for m, p in zip(("APs", "APm", "APl"), paper)]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_tables(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(VARIANTS)
    for v, (key, title, _) in enumerate(VARIANTS):
        runs = results.get(key, [])
        means = [np.mean([r[m] for r in runs]) if runs else 0 for m in metrics]
        stds = [np.std([r[m] for r in runs], ddof=1) if len(runs) > 1 else 0 for m in metrics]
        ax.bar(np.arange(len(metrics)) + v * width, means, width, yerr=stds, label=title, capsize=3)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(VARIANTS) - 1) / 2)
    ax.set_xticklabels(metrics)
    ax.set_ylabel("segm AP (%)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


VARIANT_KEYS = tuple(key for key, _, _ in VARIANTS)


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_ablation(config, out_dir, *, seeds=1, overwrite=False, variants=None, verbose=None):
    """Trains and evaluates every variant x seed; returns {variant: [segm metrics]}.

    Args:
        variants: keys of the variants to (re-)run (`VARIANT_KEYS`); the
            others are not trained, and their results are reused when
            `out_dir` holds them for every seed (so `variants=["attention"],
            overwrite=True` re-runs one variant and rewrites the tables).
            Defaults to None (all).
    """
    from keras_solo import builders
    from keras_solo.evaluate import evaluate_model
    from keras_solo.model.solo import load_model
    from keras_solo.train import train

    variants = list(VARIANT_KEYS if variants is None else variants)
    unknown = [key for key in variants if key not in VARIANT_KEYS]
    if unknown or not variants:
        raise SoloError(f"--variants {','.join(unknown) or '(empty)'}: choose from {', '.join(VARIANT_KEYS)}")
    if os.path.exists(os.path.join(out_dir, "ablation.json")) and not overwrite:
        raise SoloError(f"{out_dir}: already holds ablation results; use --overwrite (with --variants to "
                        "re-run only some) or another --out")
    os.makedirs(out_dir, exist_ok=True)
    save_config(config, os.path.join(out_dir, "base_config.yaml"))
    val = builders.load_split(config, "val")
    results = {}
    for key, title, switches in VARIANTS:
        if key not in variants:
            kept = [os.path.join(out_dir, key, f"seed{seed}", "metrics.json") for seed in range(seeds)]
            if all(os.path.exists(path) for path in kept):
                results[key] = [_read_json(path)["segm"] for path in kept]
            continue
        results[key] = []
        for seed in range(seeds):
            variant = replace(config, **switches, **{"train.seed": config.train.seed + seed})
            run_dir = os.path.join(out_dir, key, f"seed{seed}")
            metrics_path = os.path.join(run_dir, "metrics.json")
            if os.path.exists(metrics_path) and not overwrite:
                metrics = _read_json(metrics_path)
            else:
                print(f"== {title} seed {seed} -> {run_dir}", flush=True)
                if overwrite or not os.path.exists(os.path.join(run_dir, "DONE")):
                    train(variant, run_dir, overwrite=overwrite, resume=True, verbose=verbose)
                model = load_model(os.path.join(run_dir, "best.keras"))
                metrics, _ = evaluate_model(model, val, progress=verbose == 1)
                write_json(metrics_path, metrics, what="metrics")
            results[key].append(metrics["segm"])
    write_json(os.path.join(out_dir, "ablation.json"), {"seeds": seeds, "results": results},
               what="ablation results")
    tables = format_tables(results, seeds)
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write(tables + "\n")
    plot_tables(results, os.path.join(out_dir, "ablation.png"))
    return results, tables


def ablation_command(args):
    config = load_config(args.config, args.set)
    out = args.out or os.path.join("runs", "ablation_" + os.path.splitext(os.path.basename(args.config))[0])
    variants = [key.strip() for key in args.variants.split(",") if key.strip()] if args.variants else None
    _, tables = run_ablation(config, out, seeds=args.seeds, overwrite=args.overwrite, variants=variants)
    print(tables)
    print(f"\nwrote {out}/ablation.md, ablation.json, ablation.png")
