"""zoo.plots.FiguresAside: figures drawn in a forked child while the run goes on, drawn in the
process itself when the child cannot, and nothing left behind."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from zoo import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _drawn_by_pid(path: Path) -> Path:
    """A figure that also records which process drew it."""
    path.with_suffix(".pid").write_text(str(os.getpid()))
    return plots.mean_bars({"a": (0.9, 0.01), "b": (0.8, 0.02)}, path, "accuracy")


def _failing_in_child(parent: int, path: Path) -> Path:
    if os.getpid() != parent:
        raise RuntimeError("the child cannot draw")
    return _drawn_by_pid(path)


def test_figures_are_drawn_in_a_child_and_the_folder_is_removed(tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    histories = {"monitor/dense/grad_norm": [(1, 0.5), (2, 0.25)],
                 "monitor/dense/update_ratio": [(1, 1e-3), (2, 5e-4)]}
    jobs = {folder / "bars.png": _drawn_by_pid,
            folder / "curves.png": functools.partial(plots.monitor_curves, histories,
                                                     title="t", update_bounds=(1e-4, 1e-2))}
    aside = plots.FiguresAside(jobs, folder=folder)
    paths = aside.wait()
    assert paths == list(jobs)
    assert all(path.read_bytes()[:8] == PNG for path in paths)
    assert int((folder / "bars.pid").read_text()) != os.getpid()
    aside.close()
    assert not folder.exists()


def test_a_failing_child_is_replaced_by_drawing_here(tmp_path):
    path = tmp_path / "bars.png"
    aside = plots.FiguresAside({path: functools.partial(_failing_in_child, os.getpid())})
    assert aside.wait() == [path]
    assert int(path.with_suffix(".pid").read_text()) == os.getpid()
    assert path.read_bytes()[:8] == PNG


def test_an_error_drawing_here_is_raised(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    drawn = []

    def broken(path: Path) -> Path:
        drawn.append(os.getpid())
        raise RuntimeError("no data to draw")

    aside = plots.FiguresAside({tmp_path / "h.png": broken})
    assert drawn == []  # without a fork, nothing is drawn until wait()
    with pytest.raises(RuntimeError, match="no data to draw"):
        aside.wait()
    assert drawn == [os.getpid()]
