"""Atomic file writes (a reader sees the old file or the new one, never half of one), and
locks that processes hold exclusively."""

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


class Busy(Exception):
    """Another process holds the lock; `owner` is what it wrote into the lock file ("" if
    nothing)."""

    def __init__(self, owner: str):
        super().__init__(owner or "another process")
        self.owner = owner


@contextlib.contextmanager
def exclusive(lock_path: Path, *, wait: bool = True, owner: str = "") -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing) across processes, for the
    block; the operating system releases it when the process ends, however it ends. The file is
    kept: removed, it would let a third process lock a new file of that name while a second
    still holds the old one. A no-op where there is no `fcntl` (Windows).

    Args:
        wait: wait for the lock; otherwise raise `Busy` at once while another process holds it.
        owner: written into the lock file while this process holds it, for the `Busy` of others.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            raise Busy(handle.read().strip()) from None
        try:
            if owner:
                handle.truncate(0)
                handle.write(owner)
                handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
