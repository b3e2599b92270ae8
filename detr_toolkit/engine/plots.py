"""Training plots: results.png (losses and metrics per epoch), PR curves, the confusion matrix, a labelled batch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

PANELS = ("loss", "loss_class", "loss_bbox", "loss_giou", "mAP50", "mAP50-95")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_results(results_csv: Path) -> Path:
    """Draw one panel per column of PANELS found in `results_csv`; -> results.png beside it."""
    plt = _pyplot()

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


def plot_pr_curves(curves: dict[int, np.ndarray], names: dict[int, str], path: Path) -> Path:
    """Precision over 101 recall points at IoU 0.5, one line per class (COCOeval's interpolated curves)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    for cls, precision in curves.items():
        ax.plot(recall, np.clip(precision, 0, 1), label=f"{names[cls]} {np.clip(precision, 0, 1).mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall @ IoU 0.5")
    ax.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: np.ndarray, names: dict[int, str], path: Path) -> Path:
    """Column-normalised confusion matrix (what each true class was predicted as), background last."""
    plt = _pyplot()
    labels = [names[i] for i in sorted(names)] + ["background"]
    normalised = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    figure, ax = plt.subplots(figsize=(1.2 + 0.5 * len(labels), 1 + 0.45 * len(labels)))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="true", ylabel="predicted", title="confusion matrix")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=6)
    figure.colorbar(image, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_batch(images: torch.Tensor, targets: list[dict], names: dict[int, str], path: Path) -> Path:
    """A grid of (augmented) training images (B, 3, H, W) in 0..1 with their boxes and class names."""
    import cv2
    from torchvision.ops import box_convert

    from ..plotting import draw_detections

    tiles = []
    for image, target in zip(images[:16], targets[:16]):
        tile = np.ascontiguousarray((image.permute(1, 2, 0).flip(-1).cpu().numpy() * 255).astype(np.uint8))
        height, width = tile.shape[:2]
        boxes = box_convert(target["boxes"].cpu(), "cxcywh", "xyxy") * torch.tensor([width, height, width, height])
        labels = target["labels"].tolist()
        tiles.append(draw_detections(tile, boxes.numpy(), labels, [names[c] for c in labels], 1, 0.3))
    columns = int(np.ceil(np.sqrt(len(tiles))))
    blank = np.zeros_like(tiles[0])
    rows = [np.concatenate((tiles + [blank] * columns)[r * columns:(r + 1) * columns], 1)
            for r in range(int(np.ceil(len(tiles) / columns)))]  # fmt: skip
    cv2.imwrite(str(path), np.concatenate(rows, 0))
    return path
