"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds and removed
    when it fails (an interrupted or failed write leaves the old file, or none).

    Args:
        path: the file to write.
        suffix: of the temporary name; writers that check extensions (Keras wants `.keras`)
            need theirs at the end.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the file private to its writer
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through `atomic_path`: a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
