"""PNG figures of one run: learning curves and the test confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (the zoo writes PNGs; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train against validation, and the learning rate."""
    plt = pyplot()
    panels = [("loss", "loss"), ("accuracy", "accuracy")]
    if "learning_rate" in history:
        panels.append(("learning_rate", "learning rate"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for ax, (key, label) in zip(axes, panels, strict=True):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train" if key != "learning_rate" else None)
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
            ax.legend()
        if key == "learning_rate" or (key == "loss" and min(history[key]) > 0):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str],
                     path: Path, title: str) -> Path:
    """Counts of true class (rows) against predicted class (columns) on the test split."""
    plt = pyplot()
    n = len(class_names)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), class_names, rotation=45 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        threshold = counts.max() / 2
        for i in range(n):
            for j in range(n):
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > threshold else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}\ntest accuracy {accuracy:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def augmentation_grid(originals: np.ndarray, variants: Sequence[np.ndarray], kind: str,
                      path: Path, title: str) -> Path:
    """One row per example: the original, then each augmented variant."""
    plt = pyplot()
    rows, columns = len(originals), 1 + len(variants)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns + 0.5, 1.3 * rows + 0.6),
                             squeeze=False)
    for r in range(rows):
        for c in range(columns):
            ax = axes[r][c]
            sample = originals[r] if c == 0 else variants[c - 1][r]
            if kind == "image":
                image = sample[..., 0] if sample.shape[-1] == 1 else sample
                low, high = float(originals.min()), float(originals.max())
                if image.ndim == 3:  # colour: scale to [0, 1] for imshow
                    image = np.clip((image - low) / max(high - low, 1e-9), 0, 1)
                ax.imshow(image, cmap="gray", vmin=low, vmax=high)
            else:
                ax.plot(originals[r][:, 0], color="0.75", linewidth=1)
                ax.plot(sample[:, 0], linewidth=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"augmented {c}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
