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


def log_scale(ax, axis: str = "y", subs: tuple[float, ...] = (1.0, 2.0, 5.0)) -> None:
    """A log axis whose tick labels are plain text (`0.001`): matplotlib's default labels are
    math text, whose parser costs a tenth of a second a figure, more than the drawing.

    Args:
        subs: the ticks of each decade; (1.0,) for axes that span several decades (every tick
            costs a few milliseconds to draw).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    # By default 1, 2 and 5 of each decade: labels even on an axis that spans less than one.
    target.set_major_locator(LogLocator(subs=subs))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_locator(NullLocator())  # minor log ticks cost most of the drawing


def fixed_title(ax, text: str, **kwargs) -> None:
    """An axes title at a fixed height: left to itself, matplotlib measures every tick label
    to place it, which costs more than drawing the axes."""
    ax.set_title(text, y=1.0, **kwargs)


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
            log_scale(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    # Fixed margins in inches: tight_layout draws the figure once more to measure it.
    width = 4.5 * len(panels)
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.2 / width,
                        bottom=0.55 / 3.6, top=1 - 0.5 / 3.6, wspace=0.35)
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
    fixed_title(ax, f"{title}\ntest accuracy {accuracy:.4f}")
    # Fixed margins in inches (tight_layout draws the figure once more to measure it).
    height = size * 0.9
    fig.subplots_adjust(left=0.7 / size, right=1 - 0.6 / size, bottom=0.75 / height,
                        top=1 - 0.65 / height)
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
