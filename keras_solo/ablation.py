"""The paper's ablation (Tables 3 and 4): SOLO without coords, SOLO, SOLO +
grid attention, trained on the same data and schedule, evaluated with COCO AP.

The preset is an ordinary config (the shared base); the command switches
`model.use_coords` / `model.use_attention` per variant and trains each with
`--seeds` seeds. Every trained variant is kept as `<out>/<variant>/seed<k>/`
(`best.keras`, and `metrics_<set>.json` per evaluation set). The tables are
built from every finished seed folder in `<out>`, so a later run with more
seeds (or a run that added seed folders) extends them; `ablation.json`,
`ablation.md` and `ablation.png` are rewritten from those folders each time.
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
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def format_tables(results, eval_name=""):
    """Markdown Tables 3 and 4 and per-class AP: ours (mean ± std over seeds) beside the paper's."""
    counts = sorted({len(results.get(key, [])) for key, _, _ in VARIANTS} - {0}) or [0]
    seeds = "/".join(str(c) for c in counts)
    on = f" on {eval_name}" if eval_name else ""
    lines = [f"Table 3 (segm AP{on}, mean ± std over {seeds} seed(s); paper in brackets)", "",
             "| algorithm | seeds | AP | AP50 | AP75 |", "|---|---|---|---|---|"]
    for key, title, _ in VARIANTS:
        runs = results.get(key, [])
        paper = PAPER_TABLE3.get(key)
        cells = [f"{_mean_std([r[m] for r in runs])} ({p})" for m, p in zip(("AP", "AP50", "AP75"), paper)]
        lines.append(f"| {title} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "Table 4 (segm AP by size; paper in brackets)", "",
              "| algorithm | APs | APm | APl |", "|---|---|---|---|"]
    for key, title, _ in VARIANTS:
        runs = results.get(key, [])
        paper = PAPER_TABLE4.get(key, ("-", "-", "-"))
        cells = [f"{_mean_std([r[m] for r in runs])} ({p})" for m, p in zip(("APs", "APm", "APl"), paper)]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    classes = [name for key, _, _ in VARIANTS for r in results.get(key, []) for name in r.get("per_class", {})]
    classes = list(dict.fromkeys(classes))
    if classes:
        lines += ["", "Per-class segm AP (mean ± std over seeds)", "",
                  "| algorithm | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        for key, title, _ in VARIANTS:
            runs = results.get(key, [])
            cells = [_mean_std([r["per_class"][c] for r in runs if c in r.get("per_class", {})]) for c in classes]
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


def _seed_dirs(variant_dir):
    """`{seed: folder}` of the finished runs (a DONE file) under a variant's folder."""
    found = {}
    if os.path.isdir(variant_dir):
        for name in os.listdir(variant_dir):
            path = os.path.join(variant_dir, name)
            if name.startswith("seed") and name[4:].isdigit() and os.path.exists(os.path.join(path, "DONE")):
                found[int(name[4:])] = path
    return found


def check_variants(variants):
    """The variant keys to train (all of `VARIANT_KEYS` for None); an unknown key or an empty list is
    an error. `variants` may be the command line's comma-separated text."""
    if isinstance(variants, str):
        variants = [key.strip() for key in variants.split(",") if key.strip()]
    variants = list(VARIANT_KEYS if variants is None else variants)
    unknown = [key for key in variants if key not in VARIANT_KEYS]
    if unknown or not variants:
        raise SoloError(f"--variants {','.join(unknown) or '(empty)'}: choose from {', '.join(VARIANT_KEYS)}")
    return variants


def run_ablation(config, out_dir, *, seeds=1, overwrite=False, variants=None, eval_json=None, verbose=None):
    """Trains and evaluates every variant x seed; returns ({variant: [segm metrics]}, tables).

    Args:
        seeds: seeds 0..seeds-1 of each listed variant are trained unless
            finished (`train.seed` + k); finished seed folders beyond them
            are evaluated and counted too.
        overwrite: re-train the listed variants' seeds 0..seeds-1.
        variants: keys of the variants to train (`VARIANT_KEYS`), a list or
            comma-separated text; the others' finished seed folders are only
            evaluated. Defaults to None (all).
        eval_json: the COCO file to report on (images under
            `data.val_images`). Defaults to None (`data.val_json`).
    """
    from keras_solo import builders
    from keras_solo.evaluate import evaluate_model
    from keras_solo.model.solo import load_model
    from keras_solo.train import train

    variants = check_variants(variants)
    if eval_json:
        config = replace(config, **{"data.val_json": eval_json})
    val = builders.load_split(config, "val")  # checked before anything is trained or written
    eval_name = os.path.splitext(os.path.basename(config.data.val_json))[0]
    os.makedirs(out_dir, exist_ok=True)
    save_config(config, os.path.join(out_dir, "base_config.yaml"))
    results = {}
    for key, title, switches in VARIANTS:
        variant_dir = os.path.join(out_dir, key)
        if key in variants:
            for seed in range(seeds):
                run_dir = os.path.join(variant_dir, f"seed{seed}")
                if overwrite or not os.path.exists(os.path.join(run_dir, "DONE")):
                    print(f"== {title} seed {seed} -> {run_dir}", flush=True)
                    variant = replace(config, **switches, **{"train.seed": config.train.seed + seed})
                    train(variant, run_dir, overwrite=overwrite, resume=True, verbose=verbose)
                    stale = os.path.join(run_dir, f"metrics_{eval_name}.json")
                    if os.path.exists(stale):
                        os.remove(stale)  # metrics of the model this run replaced
        runs = []
        for seed, run_dir in sorted(_seed_dirs(variant_dir).items()):
            metrics_path = os.path.join(run_dir, f"metrics_{eval_name}.json")
            if os.path.exists(metrics_path):
                metrics = _read_json(metrics_path)
            else:
                print(f"== evaluate {title} seed {seed} on {eval_name}", flush=True)
                model = load_model(os.path.join(run_dir, "best.keras"))
                metrics, _ = evaluate_model(model, val, progress=verbose == 1)
                write_json(metrics_path, metrics, what="metrics")
            runs.append({**metrics["segm"], "per_class": metrics.get("per_class", {}), "seed": seed})
        if runs:
            results[key] = runs
    write_json(os.path.join(out_dir, "ablation.json"),
               {"eval_json": os.path.abspath(config.data.val_json), "results": results}, what="ablation results")
    tables = format_tables(results, eval_name)
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write(tables + "\n")
    plot_tables(results, os.path.join(out_dir, "ablation.png"))
    return results, tables


def ablation_command(args):
    config = load_config(args.config, args.set)
    out = args.out or os.path.join("runs", "ablation_" + os.path.splitext(os.path.basename(args.config))[0])
    _, tables = run_ablation(config, out, seeds=args.seeds, overwrite=args.overwrite,
                             variants=args.variants or None, eval_json=args.eval_json)
    print(tables)
    print(f"\nwrote {out}/ablation.md, ablation.json, ablation.png")
