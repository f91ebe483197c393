"""How training executes: XLA, steps per call and the determinism policy, in one place.

The policy, by device (`ZOO_DETERMINISM=auto|ops|off` overrides it):

- CPU, `auto` (default) and `off`: XLA on (`ZOO_XLA`, below), TF op determinism off;
  reproducible all the same.
- CPU, `ops`: op determinism on, XLA off (slower; for comparing with a GPU's `auto`).
- GPU, `auto` (default) and `ops`: op determinism on, XLA off; reproducible.
- GPU, `off`: XLA on, op determinism off: faster, not bit-for-bit reproducible.

`ZOO_XLA=auto` (default) compiles runs of at least `XLA_MIN_STEPS` optimizer steps with XLA,
except models with 2D convolutions or large dense kernels on a CPU (`Policy.jit_compile`); `1`
every run, `0` none.
Whatever the choice, a recipe gets the same one every time, so the same recipe and seed still
give the same weights.

On CPU every kernel, XLA's included, is deterministic for a given thread setting, so op
determinism buys nothing there and costs XLA: Keras refuses `jit_compile` while it is on. The
tests train the same recipe and seed in fresh processes and compare the weights, for every model
family with augmentation on. On a GPU, cuDNN and atomics make op determinism necessary for
repeatable weights; `ZOO_DETERMINISM=off` trades that for XLA's speed.

Threads: one intra-op thread per training process by default (`ZOO_THREADS=N` for N, set when
`zoo` is imported, before TensorFlow starts; TensorFlow's own `TF_NUM_INTRAOP_THREADS` wins when
set). On 2 cores `mnist1d/cnn_paper_plain` trains in 11 s on one thread and 12.5 s on two, and
`--workers` then runs one process per core. Another thread count gives other weights.

Inter-op threads (which run a step's ops and the calls into compiled code): TensorFlow's
default, one per core, for a process that trains alone, which then has the second core's help
(on 2 cores, a 4-cell ablation in one process took 3 to 11% longer on one inter-op thread).
Processes that train side by side (`--workers` above 1: grid cells, trials, zoo builds) get one
each (`side_by_side_environment`, `train_side_by_side`): there a second thread only takes time
from a core another process trains on (the same ablation on 2 workers used 2 to 7% less CPU time
and ended 0 to 8% sooner). `TF_NUM_INTEROP_THREADS`, when set, wins. They change no weights:
each op computes the same, whichever thread runs it (a test compares a worker's weights with
this process's).

What is promised: the same recipe, seed and thread settings on the same machine give identical
weights. Not promised: the same weights on another CPU model (oneDNN picks kernels by CPU
features, and they round differently), on a GPU, or with other thread settings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

ENVIRONMENT = "ZOO_DETERMINISM"
CHOICES = ("auto", "ops", "off")
XLA_ENVIRONMENT = "ZOO_XLA"
XLA_CHOICES = ("auto", "1", "0")
# XLA compiles every input shape of a model once, 2 to 10 s on 2 cores for these models, and
# then saves about 0.5 ms a step (mnist1d/cnn_paper: 8,000 steps, 23 s -> 19 s of training):
# `auto` compiles runs long enough to gain from it.
XLA_MIN_STEPS = 4000
# The largest dense kernel XLA computes faster than oneDNN on a CPU, in weights: MNIST-1D's
# 512x512 MLP gains from XLA, Fashion-MNIST's 784x1024 loses (`Policy.jit_compile`).
XLA_MAX_DENSE_KERNEL = 400_000
INTER_OP = "TF_NUM_INTEROP_THREADS"  # TensorFlow's own variable (`train_side_by_side`)


@dataclass(frozen=True)
class Policy:
    """What `train` switches on for this process."""

    op_determinism: bool
    xla: str  # auto | 1 | 0 (ZOO_XLA); op determinism forces 0
    device: str

    @property
    def threads(self) -> str:
        """Intra-op threads of this process, as TensorFlow reads them at start-up."""
        return os.environ.get("TF_NUM_INTRAOP_THREADS", "TensorFlow's default")

    @property
    def inter_op_threads(self) -> str:
        """Inter-op threads of this process (`train_side_by_side`)."""
        import tensorflow as tf

        count = tf.config.threading.get_inter_op_parallelism_threads()
        return str(count) if count else os.environ.get(INTER_OP, "TensorFlow's default")

    def jit_compile(self, total_steps: int, large_kernels: bool = False) -> bool:
        """Whether a run of `total_steps` optimizer steps compiles with XLA.

        Explicit, not Keras' "auto", which never picks XLA on a machine without a GPU; where a
        layer cannot be compiled, Keras falls back to False with a warning. `auto` leaves out
        models with `large_kernels` (2D convolutions, or a dense kernel of at least
        `XLA_MAX_DENSE_KERNEL` weights) on a CPU: XLA computes them with its own kernels, not
        oneDNN's, and on Fashion-MNIST a small CNN then trained 1.65 times slower per step, an
        MLP 1024-512 about 7 times slower.
        """
        if self.op_determinism or self.xla == "0":
            return False
        if self.xla == "1":
            return True
        if large_kernels and self.device == "CPU":
            return False
        return total_steps >= XLA_MIN_STEPS


def side_by_side_environment() -> dict[str, str]:
    """What to add to the environment of training processes started to run beside others on
    this machine: one inter-op thread each, unless `TF_NUM_INTEROP_THREADS` says otherwise."""
    return {} if INTER_OP in os.environ else {INTER_OP: "1"}


def train_side_by_side() -> None:
    """One inter-op thread for this process, which trains beside worker processes, unless
    `TF_NUM_INTEROP_THREADS` says otherwise; no change once TensorFlow has started here."""
    if INTER_OP in os.environ:
        return
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # started already: it keeps its thread pools
        tf.config.threading.set_inter_op_parallelism_threads(1)


def policy() -> Policy:
    """The policy for this machine and the `ZOO_DETERMINISM` environment variable.

    Raises:
        ArgumentError: the variable holds something other than auto, ops or off.
    """
    from zoo.errors import ArgumentError

    choice = os.environ.get(ENVIRONMENT, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ArgumentError(f"{ENVIRONMENT}={choice!r} is not one of {', '.join(CHOICES)}; "
                            "unset it for the default (auto)")
    xla = os.environ.get(XLA_ENVIRONMENT, "auto").strip().lower() or "auto"
    if xla not in XLA_CHOICES:
        raise ArgumentError(f"{XLA_ENVIRONMENT}={xla!r} is not one of {', '.join(XLA_CHOICES)}; "
                            f"unset it for the default (auto: XLA for runs of at least "
                            f"{XLA_MIN_STEPS} steps)")
    device = "GPU" if _has_gpu() else "CPU"
    deterministic_ops = choice == "ops" or (choice == "auto" and device == "GPU")
    return Policy(op_determinism=deterministic_ops, xla=xla, device=device)


def seed_everything(seed: int, current: Policy | None = None) -> Policy:
    """Python, NumPy and TensorFlow seeds, and TF op determinism as the policy says.

    Returns:
        The policy applied.
    """
    import keras
    from tensorflow.python.framework import config

    current = current or policy()
    quiet_expected_retracing()
    keras.utils.set_random_seed(seed)
    # Set both ways: a process that trained under another policy must not carry it over.
    if current.op_determinism:
        config.enable_op_determinism()
    else:
        config.disable_op_determinism()
    return current


class _NotRetracing:
    """Drops TensorFlow's "triggered tf.function retracing" warning: a process that trains
    several models (tuning trials, grid cells) traces each model's functions once, as it must,
    and the warning only says so, after every few models."""

    @staticmethod
    def filter(record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def precision_and_devices(precision: str, distribute: str) -> Iterator[Any]:
    """While a model is built and compiled: the Keras dtype policy `precision` (`float32`,
    `mixed_float16`, `mixed_bfloat16`) and, for `distribute="mirrored"`, the scope of a
    `tf.distribute.MirroredStrategy` over the visible GPUs (or logical CPU devices). Yields the
    strategy, or None. The global policy is restored after: layers keep the policy they were
    built with, and the next model of the process must not inherit this one's."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        if distribute == "mirrored":
            import tensorflow as tf

            strategy = tf.distribute.MirroredStrategy()
            with strategy.scope():
                yield strategy
        else:
            yield None
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def quiet_expected_retracing() -> None:
    """Install `_NotRetracing` on TensorFlow's logger (once)."""
    import logging

    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NotRetracing) for f in logger.filters):
        logger.addFilter(_NotRetracing())


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
