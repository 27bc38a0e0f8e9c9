"""Pictures of results: training curves and confusion matrices, as PNG files (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(histories: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train (dashed) and validation (solid), for one or more runs."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, history) in enumerate(histories.items()):
        if not history:
            continue
        color = f"C{i}"
        epochs = [h["epoch"] for h in history]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(epochs, [h[f"train_{key}"] for h in history], "--", color=color, label=f"{label} train")
            ax.plot(epochs, [h[f"val_{key}"] for h in history], "-", color=color, label=f"{label} validation")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a heat map, each cell labelled with its share and count."""
    plt = _pyplot()
    from fer_runtime.metrics import row_normalise

    cm = np.asarray(confusion)
    norm = row_normalise(cm)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    k = len(class_names)
    for i in range(k):
        for j in range(k):
            color = "white" if norm[i, j] > 0.55 else "black"
            ax.text(j, i, f"{norm[i, j]:.2f}\n{cm[i, j]}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
