"""zoo.execution: what a training process switches on, and the noise it keeps out."""

from __future__ import annotations

import logging

from zoo.training.execution import quiet_expected_retracing


def test_expected_retracing_warnings_are_dropped_and_others_kept():
    logger = logging.getLogger("tensorflow")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        quiet_expected_retracing()
        quiet_expected_retracing()  # idempotent: one filter
        logger.warning("5 out of the last 9 calls to <function f> triggered tf.function "
                       "retracing. Tracing is expensive ...")
        logger.warning("something else went wrong")
    finally:
        logger.removeHandler(handler)
    assert seen == ["something else went wrong"]
    assert sum(type(f).__name__ == "_NotRetracing" for f in logger.filters) == 1
