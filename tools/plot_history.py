#!/usr/bin/env python3
"""Plot a vit_train run's history.csv: loss, top-1 and top-5 per epoch, train and validation.

    python3 tools/plot_history.py RUN_DIR [-o RUN_DIR/curves.png]

RUN_DIR is a vit_train --output folder (or the history.csv itself). Needs matplotlib
(Debian: apt-get install python3-matplotlib). vit_train runs this at the end of training.
"""
import argparse
import csv
import os
import sys

from plot_confusion import save_atomic  # beside this script (the build copies both)


def read_history(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"'{path}' has no epochs")
    if "epoch" not in rows[0]:
        raise ValueError(f"'{path}' has no 'epoch' column: not a vit_train history.csv")
    cols = {}
    for name in rows[0]:
        try:
            cols[name] = [float(r[name]) for r in rows]
        except (TypeError, ValueError):
            pass  # a column with non-numbers: not plotted
    return cols


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="vit_train output folder, or its history.csv")
    ap.add_argument("-o", "--output", help="PNG to write (default: curves.png next to history.csv)")
    args = ap.parse_args()
    path = os.path.join(args.run, "history.csv") if os.path.isdir(args.run) else args.run
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(path)), "curves.png")
    try:
        cols = read_history(path)
    except (OSError, ValueError) as e:
        print(f"plot_history: error: {e}", file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("plot_history: error: matplotlib is not installed (apt-get install python3-matplotlib)", file=sys.stderr)
        return 1

    epochs = cols["epoch"]
    # Validation columns are all zero when the run had no validation split.
    has_val = any(v != 0 for v in cols.get("val_loss", []))
    panels = [("loss", "loss", 1.0), ("top1", "top-1 accuracy (%)", 100.0), ("top5", "top-5 accuracy (%)", 100.0)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, title, mul) in zip(axes, panels):
        for split, style in (("train", "-o"), ("val", "-s")):
            name = f"{split}_{key}"
            if name not in cols or (split == "val" and not has_val):
                continue
            ax.plot(epochs, [v * mul for v in cols[name]], style, markersize=3,
                    label="validation" if split == "val" else "train")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(path))) or "history")
    fig.tight_layout()
    save_atomic(fig, out, dpi=100)  # temporary file next to `out`, fsync, rename over it
    print(f"plot_history: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
