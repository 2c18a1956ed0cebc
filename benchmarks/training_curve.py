"""What more training buys: validation loss and AP against training images seen.

Reads the `log.csv` of runs (Keras' CSVLogger rows, one per epoch) and plots
val_loss and, where logged (`train.eval_every`), val_AP against the number
of training images seen; points from separate evaluations (e.g. val_all AP of
a final model) are added with --point. Writes a PNG and the same numbers as
JSON.

    python benchmarks/training_curve.py \
        --log "edge, 450 frames=docs/results/edge_latency/edge_bn_e12_log.csv:450" \
        --log "product, train_all=docs/results/product/s0_log.csv:1994" \
        --point "edge, 450 frames: val_all=5400:5.02" --out docs/results/product/curve.png
"""

import argparse
import csv
import json
import os


def read_log(path, images_per_epoch):
    """Rows of a CSVLogger file as {images, val_loss, val_AP} (missing values None)."""
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            def number(key):
                try:
                    return float(row[key])
                except (KeyError, TypeError, ValueError):
                    return None

            rows.append({"images": (int(row["epoch"]) + 1) * images_per_epoch, "val_loss": number("val_loss"),
                         "val_AP": number("val_AP")})
    return rows


def parse_named(text, what):
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise SystemExit(f"--{what} {text!r}: expected NAME=VALUE")
    return name, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", action="append", default=[], metavar="NAME=LOG.CSV:IMAGES_PER_EPOCH")
    parser.add_argument("--point", action="append", default=[], metavar="NAME=IMAGES:AP",
                        help="an AP measured separately (e.g. on val_all)")
    parser.add_argument("--out", default="runs/training_curve.png", help="PNG; the JSON goes beside it")
    args = parser.parse_args(argv)

    curves = {}
    for text in args.log:
        name, value = parse_named(text, "log")
        path, _, per_epoch = value.rpartition(":")
        curves[name] = read_log(path, int(per_epoch))
    points = {}
    for text in args.point:
        name, value = parse_named(text, "point")
        images, ap = value.split(":")
        points[name] = {"images": int(images), "AP": float(ap)}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for n, (name, rows) in enumerate(curves.items()):
        loss_ax.plot([r["images"] for r in rows], [r["val_loss"] for r in rows], marker="o", label=name, color=f"C{n}")
        with_ap = [r for r in rows if r["val_AP"] is not None]
        if with_ap:
            ap_ax.plot([r["images"] for r in with_ap], [r["val_AP"] for r in with_ap], marker="o",
                       label=f"{name}: val (50 frames)", color=f"C{n}")
    for n, (name, point) in enumerate(points.items()):  # a point per curve, in the curves' order and colours
        ap_ax.scatter([point["images"]], [point["AP"]], marker="*", s=150, label=name, zorder=3, color=f"C{n}")
    loss_ax.set(xlabel="training images seen", ylabel="val loss (val, 50 frames)", title="validation loss")
    ap_ax.set(xlabel="training images seen", ylabel="segm AP", title="mask AP")
    for ax in (loss_ax, ap_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=100)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"curves": curves, "points": points}, f, indent=1)
    print(f"wrote {args.out} and its JSON")


if __name__ == "__main__":
    main()
