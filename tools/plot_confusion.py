#!/usr/bin/env python3
"""Draw a vit_train run's confusion_matrix.csv as confusion_matrix.png.

    python3 tools/plot_confusion.py RUN_DIR [-o RUN_DIR/confusion_matrix.png] [--weights "best, epoch 3"]

RUN_DIR is a vit_train --output folder (or the confusion_matrix.csv itself: a header
"true\\pred,<class>,...", then one row per true class, "<class>,<count>,..."). True classes on
the y axis, predictions on the x axis, each cell coloured by its share of the true class (row
percentage: per-class recall on the diagonal) with a colour bar. Up to 30 classes each cell
shows its count and row percentage (an empty cell: 0); more classes show colours only, and
every n-th class name. The title gives the overall top-1 and, with --weights, which weights
made the matrix.
Needs matplotlib (Debian: apt-get install python3-matplotlib). vit_train runs this at the end
of training, over the built-in colour grid it writes first. The PNG is written atomically.
"""
import argparse
import csv
import os
import sys
import tempfile

MAX_ANNOTATED = 30  # classes up to which the cells carry text
MAX_TICKS = 40  # class names per axis at most; more classes: every n-th


def read_matrix(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows or not rows[0] or rows[0][0] != "true\\pred":
        raise ValueError(f"'{path}' does not start with 'true\\pred': not a vit_train confusion_matrix.csv")
    names = rows[0][1:]
    k = len(names)
    if k == 0 or len(rows) != k + 1:
        raise ValueError(f"'{path}' has {len(rows) - 1} rows for {k} classes")
    counts = []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != k + 1:
            raise ValueError(f"'{path}' line {i}: {len(r) - 1} counts, expected {k}")
        try:
            counts.append([int(v) for v in r[1:]])
        except ValueError:
            raise ValueError(f"'{path}' line {i}: a count is not an integer") from None
        if any(v < 0 for v in counts[-1]):
            raise ValueError(f"'{path}' line {i}: a count is negative")
    return names, counts


def save_atomic(fig, out, dpi):
    """savefig into a temporary file next to `out`, fsync, rename over `out`."""
    d = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", suffix=".tmp", dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it 0600)
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="vit_train output folder, or its confusion_matrix.csv")
    ap.add_argument("-o", "--output", help="PNG to write (default: confusion_matrix.png next to the CSV)")
    ap.add_argument("--weights", default="", help="which weights made the matrix, for the title")
    args = ap.parse_args()
    path = os.path.join(args.run, "confusion_matrix.csv") if os.path.isdir(args.run) else args.run
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(path)), "confusion_matrix.png")
    try:
        names, counts = read_matrix(path)
    except (OSError, ValueError, csv.Error) as e:
        print(f"plot_confusion: error: {e}", file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        print("plot_confusion: error: matplotlib is not installed (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return 1

    cm = np.array(counts, dtype=np.int64)
    k = len(names)
    support = cm.sum(axis=1)
    total = int(cm.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(support[:, None] > 0, cm / np.maximum(support[:, None], 1), np.nan)
    accuracy = np.trace(cm) / total if total else float("nan")

    side = min(max(6.0, 3.0 + 0.5 * k), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("lightgrey")  # true classes without images
    im = ax.imshow(np.ma.masked_invalid(share * 100), cmap=cmap, vmin=0, vmax=100, interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class (%)")

    step = max(1, -(-k // MAX_TICKS))
    ticks = list(range(0, k, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([names[i] for i in ticks], rotation=45 if k > 5 else 0, ha="right" if k > 5 else "center",
                       fontsize=9 if k <= 20 else 7)
    ax.set_yticklabels([names[i] for i in ticks], fontsize=9 if k <= 20 else 7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= MAX_ANNOTATED:
        size = 9 if k <= 10 else 7 if k <= 20 else 5
        for t in range(k):
            for p in range(k):
                if support[t] == 0:
                    continue
                r, g, b, _ = cmap(share[t, p])
                colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                text = f"{cm[t, p]}\n{100 * share[t, p]:.0f}%" if cm[t, p] else "0"
                ax.text(p, t, text, ha="center", va="center", color=colour, fontsize=size)
    title = f"confusion matrix: top-1 {100 * accuracy:.2f}% of {total} test images"
    if args.weights:
        title += f"\nweights: {args.weights}"
    ax.set_title(title)
    fig.tight_layout()
    try:
        save_atomic(fig, out, dpi=100)
    except OSError as e:
        print(f"plot_confusion: error: cannot write '{out}': {e}", file=sys.stderr)
        return 1
    print(f"plot_confusion: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
