"""Work that waits for the training thread to run compiled code before it starts.

A thread's Python work competes with the training thread for Python's lock. While the first
epoch traces its step functions, which is Python, a thread of other work slows the trace by
as much as the work; once the training thread runs compiled code (XLA compiling the step,
then the steps themselves), which holds no Python lock, the same work costs training almost
nothing. The monitor's samples before training therefore wait for that moment (they must be
taken before the first epoch ends), and so do the trace of the validation pass and each of the
monitor's probes (for the epoch after the one it measures). (Work that can wait longer starts
after the first epoch, whose compilation keeps more than one core busy:
`zoo.training.trainer._WarmUpAfterFirstEpoch`.)
"""

from __future__ import annotations

import sys
import threading


def wait_for_compiled_code(training_thread: int, stop: threading.Event,
                           poll: float = 0.02) -> None:
    """Return once the training thread runs compiled code, or `stop` is set (the first epoch
    ended: there is no trace left to slow).

    The training thread is in compiled code when two looks `poll` seconds apart find it in the
    same call of TensorFlow's `quick_execute` (a trace calls it only briefly).
    """
    last = None
    while not stop.wait(poll):
        frame = sys._current_frames().get(training_thread)
        if frame is None or (frame is last and frame.f_code.co_name == "quick_execute"):
            return
        last = frame
