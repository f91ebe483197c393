"""Every PNG figure the zoo draws, from plain data: a run's learning curves and test confusion
matrix, augmentation previews, comparisons over seeds, the learning-rate range test, and the
training monitor's histograms, curves and filters."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

_warm_ups: list[threading.Thread] = []  # started by `warm_up_aside`, joined before a fork


def warm_up_aside(work: Callable[[], object]) -> threading.Thread:
    """Run `work` (imports, caches: what a later step would spend its first second on) on a
    thread of its own while this one goes on; returns the thread. `FiguresAside` waits for it
    before it forks: a child forked while the thread holds an import lock would wait for that
    lock forever. An error is left for the later step that needs the work to raise where it can
    be read."""

    def run() -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 (the step that needs it raises it again)
            pass

    thread = threading.Thread(target=run, name="zoo-warm-up", daemon=True)
    _warm_ups.append(thread)
    thread.start()
    return thread


def _join_warm_ups() -> None:
    while _warm_ups:
        _warm_ups.pop().join()


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


def before_after_histograms(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
                            path: Path, title: str, *, log_magnitude: bool) -> Path:
    """One panel per layer (the keys of `after`): its values before training against after.

    Args:
        log_magnitude: histogram log10 |value| (gradients span orders of magnitude).
    """
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    names = list(after)
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    height = 2.4 * rows + 0.9
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, height), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        first, last = before[name], after[name]
        if log_magnitude:  # gradients span orders of magnitude: the exponent is what matters
            first, last = (np.log10(np.abs(v) + 1e-30) for v in (first, last))
        both = np.concatenate([first, last])
        both = both[np.isfinite(both)]
        bins = np.linspace(both.min(), both.max() + 1e-12, 41) if both.size else 10
        # Precomputed counts drawn as one step outline each: much faster than ax.hist's bars.
        for values, label in ((first, "before training"), (last, "after")):
            counts, edges = np.histogram(values[np.isfinite(values)], bins=bins)
            ax.stairs(np.maximum(counts, 0.5), edges, fill=True, alpha=0.5, label=label,
                      baseline=0.5)
        fixed_title(ax, name, fontsize=9)
        log_scale(ax, subs=(1.0,))
        ax.xaxis.set_major_locator(MaxNLocator(5))  # each tick costs about a millisecond
        ax.set_xlabel("log10 |gradient|" if log_magnitude else "activation", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    # Fixed margins in inches: tight_layout would cost more than drawing the figure.
    fig.subplots_adjust(left=0.55 / (3.6 * columns), right=0.98, bottom=0.5 / height,
                        top=1 - 0.55 / height, hspace=0.55, wspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def monitor_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: Path, title: str,
                   update_bounds: tuple[float, float]) -> Path:
    """The training monitor's update ratio and gradient norm per layer over epochs.

    Args:
        history: `monitor/<layer>/<metric>` -> [(epoch, value), ...].
        update_bounds: the update ratios below and above which the monitor warns, drawn dashed.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in ((axes[0], "update_ratio", "update / weight ratio per step"),
                              (axes[1], "grad_norm", "kernel gradient norm (probe batch)")):
        for key, points in history.items():
            if not key.endswith(f"/{metric}"):
                continue
            steps, values = zip(*points, strict=True)
            values = np.maximum(np.asarray(values), 1e-12)  # zeros on a log axis
            ax.plot(steps, values, label=key.split("/")[1], linewidth=1.2)
        if metric == "update_ratio":
            for bound in update_bounds:
                ax.axhline(bound, color="0.5", linestyle="--", linewidth=0.8)
            ax.axhline(1e-3, color="0.7", linestyle=":", linewidth=0.8)
        log_scale(ax, subs=(1.0,))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def filters_before_after(before: np.ndarray, after: np.ndarray, path: Path, title: str) -> Path:
    """A 2D convolution's filters (up to 32), before training (left) and after (right), each
    scaled to its own range."""
    plt = pyplot()
    count, per_row = min(after.shape[-1], 32), 8
    rows, columns = math.ceil(count / per_row), min(count, per_row)
    fig, axes = plt.subplots(rows, 2 * columns + 1, figsize=(0.55 * (2 * columns + 1) + 0.4,
                                                              0.6 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for side, kernel in enumerate((before, after)):
        for i in range(count):
            image = kernel[..., i]  # (height, width, input channels)
            image = image if image.shape[-1] == 3 else image.mean(axis=-1)
            low, high = image.min(), image.max()
            image = (image - low) / max(high - low, 1e-12)
            ax = axes[i // per_row][side * (columns + 1) + i % per_row]
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
        axes[0][side * (columns + 1)].set_title("before" if side == 0 else "after", fontsize=8,
                                                 loc="left")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def mean_curves(curves: Mapping[str, Sequence[Sequence[float]]], path: Path,
                metric: str) -> Path:
    """Per label, the mean of its curves (one per seed, cut to the shortest) with a band of
    ± one std."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, runs in curves.items():
        length = min((len(c) for c in runs), default=0)
        if not length:
            continue
        values = np.array([c[:length] for c in runs])
        mean, std = values.mean(axis=0), values.std(axis=0)
        epochs = np.arange(1, length + 1)
        ax.plot(epochs, mean, label=label)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric}: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def mean_bars(stats: Mapping[str, tuple[float, float]], path: Path, metric: str) -> Path:
    """One bar per label: (mean, std) over seeds, the std as an error bar."""
    plt = pyplot()
    labels, values = list(stats), list(stats.values())
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 4.2))
    ax.bar(range(len(labels)), [m for m, _ in values], yerr=[s for _, s in values], capsize=4)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    low = min(m - s for m, s in values)
    ax.set_ylim(max(0.0, low - 0.05 * abs(low)), None)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def lr_range_test(rates: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                  path: Path, *, suggested: float | None, min_loss_rate: float | None,
                  title: str) -> Path:
    """Loss against learning rate (log axis): the raw and smoothed batch losses, the rate of
    the lowest loss and the suggested rate marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rates = np.asarray(rates)
    ax.plot(rates, losses, color="0.75", linewidth=0.8, label="batch loss")
    smoothed = np.asarray(smoothed)
    ax.plot(rates[:len(smoothed)], smoothed, linewidth=1.8, label="smoothed")
    finite = smoothed[np.isfinite(smoothed)]
    raw = np.asarray(losses)
    if finite.size:
        # Show the fall and the start of the divergence, not the whole blow-up.
        low = min(finite.min(), raw[np.isfinite(raw)].min())
        top = min(finite.max(), 1.25 * max(finite[0], finite.min()))
        ax.set_ylim(low - 0.05 * (top - low), top)
    if min_loss_rate:
        ax.axvline(min_loss_rate, color="0.5", linestyle=":", linewidth=1,
                   label=f"lowest loss at {min_loss_rate:.1e}")
    if suggested:
        at = int(np.argmin(np.abs(np.log(rates) - math.log(suggested))))
        ax.axvline(suggested, color="C3", linestyle="--", linewidth=1.2)
        ax.plot([suggested], [smoothed[at]], "o", color="C3",
                label=f"suggested {suggested:.1e} (steepest descent)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class FiguresAside:
    """Figures drawn in a forked child process while this one goes on; `wait()` returns their
    paths.

    A run's figures cost a few tenths of a second of matplotlib, which holds Python's lock: on
    a thread they would stall the work that follows (evaluation, saving, logging) as long. A
    fork shares the data without copying it and draws on another core. Where there is no fork
    (Windows, macOS's default), or the child fails or hangs, `wait()` draws them here instead,
    so that an error surfaces where it can be read.

    Args:
        jobs: path -> a callable that draws the figure into the path it is given; from plain
            data only (the child must not touch TensorFlow, whose threads it has not got).
        folder: a folder that `close()` removes (where the figures were drawn).
        timeout: seconds `wait()` gives the child before drawing here.
    """

    def __init__(self, jobs: Mapping[Path, Callable[[Path], object]], *,
                 folder: Path | None = None, timeout: float = 120.0):
        import multiprocessing

        self.jobs = dict(jobs)
        self.folder = folder
        self.timeout = timeout
        self._child = None
        if self.jobs and "fork" in multiprocessing.get_all_start_methods():
            _join_warm_ups()
            pyplot()  # imported here, not in the child: a thread may hold the import lock
            self._child = multiprocessing.get_context("fork").Process(
                target=_draw_in_child, args=(self.jobs,), name="zoo-figures", daemon=True)
            self._child.start()

    def wait(self) -> list[Path]:
        """Wait for the child; the figures' paths, in the order of `jobs`."""
        child, self._child = self._child, None
        if child is not None:
            child.join(self.timeout)
            if child.exitcode == 0:
                return list(self.jobs)
            child.kill()
            child.join()
        for path, draw in self.jobs.items():
            draw(path)
        return list(self.jobs)

    def close(self) -> None:
        """Stop the child if it still runs, and remove `folder`."""
        import shutil

        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.join()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _draw_in_child(jobs: Mapping[Path, Callable[[Path], object]]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child, not a handler of ours
    for path, draw in jobs.items():
        draw(path)
