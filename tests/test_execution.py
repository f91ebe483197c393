"""zoo.execution: what a training process switches on, and the noise it keeps out."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

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


def test_processes_training_side_by_side_get_one_inter_op_thread_unless_told(monkeypatch):
    from zoo.training.execution import side_by_side_environment

    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    assert side_by_side_environment() == {"TF_NUM_INTEROP_THREADS": "1"}
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "2")
    assert side_by_side_environment() == {}  # the user's setting wins


@pytest.mark.processes
@pytest.mark.parametrize(("environment", "expected"),
                         [({}, "1"), ({"TF_NUM_INTEROP_THREADS": "2"}, "0")])
def test_a_process_that_trains_beside_workers_takes_one_inter_op_thread(environment, expected):
    # A fresh process: TensorFlow fixes its thread pools when it starts.
    code = ("from zoo.training.execution import train_side_by_side\n"
            "train_side_by_side()\n"
            "import tensorflow as tf\n"
            "print(tf.config.threading.get_inter_op_parallelism_threads())")
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, **environment}, timeout=300, check=True)
    assert done.stdout.split()[-1] == expected  # 0: TensorFlow's own choice, from the variable


@pytest.mark.parametrize("xla,device,large,steps,expected", [
    ("auto", "CPU", False, 4000, True),
    ("auto", "CPU", False, 3999, False),
    ("auto", "CPU", True, 100_000, False),  # XLA's own large kernels are slower than oneDNN's
    ("auto", "GPU", True, 4000, True),
    ("1", "CPU", True, 10, True),
    ("0", "CPU", False, 100_000, False),
])
def test_xla_auto_leaves_out_large_kernels_on_a_cpu(xla, device, large, steps, expected):
    from zoo.training.execution import Policy

    policy = Policy(op_determinism=False, xla=xla, device=device)
    assert policy.jit_compile(steps, large_kernels=large) is expected


def test_a_long_run_of_an_image_cnn_or_a_wide_mlp_is_not_compiled_and_a_small_mlp_is(
        monkeypatch):
    from zoo.recipe import load_recipe
    from zoo.training.trainer import prepare

    monkeypatch.delenv("ZOO_XLA", raising=False)
    # 200 epochs of 41 steps: past XLA_MIN_STEPS for all three.
    long = ["training.epochs=200"]
    cnn = prepare(load_recipe("digits/cnn", long))
    mlp = prepare(load_recipe("digits/mlp", long))
    wide = prepare(load_recipe("digits/mlp", [*long, "model.widths=[8192, 16]"]))
    assert mlp.model.jit_compile is True
    if cnn.policy.device == "CPU":
        assert cnn.model.jit_compile is False
        assert wide.model.jit_compile is False  # its 64x8192 kernel: 524,288 weights
