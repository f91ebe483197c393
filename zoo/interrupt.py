"""Ctrl-C and SIGTERM that stop training cleanly.

During `model.fit` the first signal asks Keras to stop after the current batch; the run then ends
KILLED through the ordinary KeyboardInterrupt path. Raising inside TensorFlow or MLflow code
instead could leave a lock held or a write half done. A second signal, or one outside training,
raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

_training = {"model": None, "requested": False}


def install() -> None:
    """Route SIGINT and SIGTERM through `_handle` (call from the main thread)."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def _handle(signum, frame):
    model = _training["model"]
    if model is not None and not _training["requested"]:
        _training["requested"] = True
        model.stop_training = True
        print(f"\nzoo: {signal.Signals(signum).name}: stopping after this batch "
              "(send it again to abort at once)", file=sys.stderr, flush=True)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def stoppable(model) -> Iterator[None]:
    """Within this block a signal stops `model.fit` gracefully; leaving the block then raises
    KeyboardInterrupt so callers end their runs as KILLED."""
    _training.update(model=model, requested=False)
    try:
        yield
    finally:
        _training["model"] = None
    if _training["requested"]:
        _training["requested"] = False
        raise KeyboardInterrupt("stopped by signal")


def request_stop() -> None:
    """Stop the training in progress as a first signal would (from any thread); leaving
    `stoppable` then raises KeyboardInterrupt. Nothing when nothing trains."""
    model = _training["model"]
    if model is not None and not _training["requested"]:
        _training["requested"] = True
        model.stop_training = True


def cancel_stop() -> None:
    """Forget a stop requested after the training it was meant for had ended."""
    _training["requested"] = False
