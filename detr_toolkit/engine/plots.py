"""Training plots: results.png, the losses and metrics of results.csv per epoch."""

from __future__ import annotations

import csv
from pathlib import Path

PANELS = ("loss", "loss_class", "loss_bbox", "loss_giou", "mAP50", "mAP50-95")


def plot_results(results_csv: Path) -> Path:
    """Draw one panel per column of PANELS found in `results_csv`; -> results.png beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with results_csv.open() as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    panels = [p for p in PANELS if rows and p in rows[0]]
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 2.6), squeeze=False)
    for ax, name in zip(axes[0], panels):
        ax.plot(epochs, [float(r[name]) for r in rows], marker="o", markersize=3)
        ax.set_title(name)
        ax.set_xlabel("epoch")
    figure.tight_layout()
    path = results_csv.with_name("results.png")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
