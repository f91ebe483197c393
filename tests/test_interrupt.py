"""Signals during training stop after the batch; a second one, or one outside training, aborts."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from zoo import interrupt


def test_first_signal_stops_fit_then_raises_on_leaving():
    model = SimpleNamespace(stop_training=False)
    with pytest.raises(KeyboardInterrupt, match="stopped by signal"):
        with interrupt.stoppable(model):
            interrupt._handle(signal.SIGTERM, None)
            assert model.stop_training is True  # Keras checks this after every batch
    with interrupt.stoppable(model):  # the request does not leak into the next fit
        pass


def test_second_signal_aborts_at_once():
    model = SimpleNamespace(stop_training=False)
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        with interrupt.stoppable(model):
            interrupt._handle(signal.SIGTERM, None)
            interrupt._handle(signal.SIGINT, None)


def test_signal_outside_training_raises():
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        interrupt._handle(signal.SIGTERM, None)
