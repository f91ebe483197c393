"""Backups of a training run as epochs end, so that the same command resumes after a kill.

A backup holds everything the rest of the run depends on: every variable of the model (random
seed states included) and of the optimizer (its step counter drives the schedule), the epoch,
the state of the callbacks that keep some (early stopping, the plateau schedule), the history
so far and the MLflow run. The training stream needs no state: epoch k's order and
augmentations are drawn from the k-th number of a seeded stream (`zoo.data.pipeline`), so a
resumed run skips k numbers. A run resumed from epoch k therefore ends with the weights of a run
that was never interrupted.

Keras' `BackupAndRestore` was not used: it keeps neither the callbacks' state nor the run, and
trusts whatever file it finds. Here each backup is an `.npz` file with its sha256 in a `.json`
file written after it, both renamed into place; the newest backup that passes its check is used,
the one before it if the newest is damaged, a fresh start if none passes, with a message saying
which. The two newest backups are kept. An epoch is backed up when a second (`EVERY_SECONDS`)
has passed since the last backup, so a kill loses at most about a second of training. The
files are written on a thread of their own while the next epoch trains; the values are read on
the training thread, in one compiled call.

A backup's folder sits beside the model file and is named after it (seed and fingerprint), so
only the same configuration and seed resume from it. A clean finish removes it; a failed or
stopped run keeps it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.files import atomic_path

FORMAT = 1
KEEP = 2  # backups kept: the newest, and the one before it in case the newest is damaged
# An epoch is backed up once this long has passed since the last backup (or since training
# began): a kill loses at most about this much training. Backing up each of a small model's
# 50 ms epochs, on the core its input pipeline and monitor use, cost the augmented and the
# monitored mnist1d/cnn_paper runs 1 to 2 points of their ratios to the plain run.
EVERY_SECONDS = 1.0


@dataclass
class Snapshot:
    """A run's state after `epoch` finished epochs."""

    epoch: int
    values: list[np.ndarray]  # model.variables, then optimizer.variables
    state: dict[str, Any] = field(default_factory=dict)  # run id, history, callbacks' state


def backup_folder(model_path: Path) -> Path:
    """The folder of the backups of the run that saves its model at `model_path`."""
    return model_path.with_name(model_path.stem + ".backup")


class BackupStore:
    """The backups in one folder: `epoch-NNNNNN.npz` and its `epoch-NNNNNN.json`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def exists(self) -> bool:
        """Whether the folder holds any backup (valid or not)."""
        return any(self.folder.glob("epoch-*.json"))

    def write(self, snapshot: Snapshot) -> None:
        """Write a backup atomically, then drop all but the newest `KEEP`."""
        buffer = io.BytesIO()
        meta = json.dumps({"format": FORMAT, "epoch": snapshot.epoch, **snapshot.state})
        np.savez(buffer, meta=np.frombuffer(meta.encode(), dtype=np.uint8),
                 **{f"v{i}": value for i, value in enumerate(snapshot.values)})
        data = buffer.getvalue()
        stem = f"epoch-{snapshot.epoch:06d}"
        with atomic_path(self.folder / f"{stem}.npz") as tmp:
            tmp.write_bytes(data)
        # Written after the data it vouches for: a kill in between leaves an .npz without its
        # .json, which is ignored.
        with atomic_path(self.folder / f"{stem}.json") as tmp:
            tmp.write_text(json.dumps({"epoch": snapshot.epoch,
                                       "sha256": hashlib.sha256(data).hexdigest(),
                                       "bytes": len(data)}))
        for old in self._stems()[KEEP:]:
            self._remove(old)

    def latest(self, model) -> tuple[Snapshot | None, list[str]]:
        """The newest backup that passes its checks, and one message per backup passed over.

        Args:
            model: the compiled model the backup must restore; a backup of other variables
                (another model saved under the same name) is passed over.
        """
        notes = []
        for stem in self._stems():
            try:
                snapshot = self._read(stem, model)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
                notes.append(f"backup {self.folder / stem}.npz is unusable ({err})")
                continue
            return snapshot, notes
        return None, notes

    def remove(self) -> None:
        """Remove every backup and the folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _stems(self) -> list[str]:
        """Backups by epoch, newest first."""
        return sorted((p.stem for p in self.folder.glob("epoch-*.json")), reverse=True)

    def _remove(self, stem: str) -> None:
        for suffix in (".npz", ".json"):
            (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)

    def _read(self, stem: str, model) -> Snapshot:
        check = json.loads((self.folder / f"{stem}.json").read_text())
        data = (self.folder / f"{stem}.npz").read_bytes()
        if hashlib.sha256(data).hexdigest() != check["sha256"]:
            raise ValueError(f"its sha256 does not match: {len(data)} bytes read, "
                             f"{check['bytes']} written")
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            values = [archive[f"v{i}"] for i in range(len(archive.files) - 1)]
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')}, expected {FORMAT}")
        shapes = [tuple(v.shape) for v in values]
        variables = [tuple(v.shape) for v in _variables(model)]
        best_weights = [tuple(w.shape) for w in model.weights]  # early stopping's, if kept
        if shapes not in (variables, variables + best_weights):
            raise ValueError("it holds other variables than this model's")
        epoch = meta.pop("epoch")
        meta.pop("format")
        return Snapshot(epoch=epoch, values=values, state=meta)


def _variables(model) -> list:
    return [*model.variables, *model.optimizer.variables]


class _EarlyStoppingState:
    """What `keras.callbacks.EarlyStopping` keeps between epochs, as plain data."""

    @staticmethod
    def save(callback) -> dict[str, Any]:
        best = callback.best
        return {"wait": callback.wait, "stopped_epoch": callback.stopped_epoch,
                "best": None if best is None or not math.isfinite(best) else float(best),
                "best_epoch": callback.best_epoch,
                "has_best_weights": callback.best_weights is not None}

    @staticmethod
    def restore(callback, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        callback.wait = state["wait"]
        callback.stopped_epoch = state["stopped_epoch"]
        if state["best"] is not None:
            callback.best = state["best"]
        callback.best_epoch = state["best_epoch"]
        callback.best_weights = best_weights


class _PlateauState:
    """What `zoo.training.schedules.LearningRateController` keeps between epochs."""

    @staticmethod
    def save(callback) -> dict[str, Any]:
        best = callback._best
        return {"scale": callback.plateau_scale, "wait": callback._wait,
                "best": best if math.isfinite(best) else None}

    @staticmethod
    def restore(callback, state: dict[str, Any]) -> None:
        callback.plateau_scale = state["scale"]
        callback._wait = state["wait"]
        callback._best = math.inf if state["best"] is None else state["best"]


class BackupAndResume(keras.callbacks.Callback):
    """Backs the run up as each epoch ends; restores a snapshot as training begins.

    Place it after the callbacks whose state it keeps (their `on_train_begin` resets it) and
    after the ones that add to an epoch's logs (validation, learning rate).

    Args:
        store: where the backups go.
        resume: the snapshot to continue from, or None for a fresh run.
        run_id: the MLflow run, recorded so that a resumed run continues it.
        early_stopping: the run's `keras.callbacks.EarlyStopping`, if any.
        rate_controller: the run's `LearningRateController`, if any.
    """

    def __init__(self, store: BackupStore, resume: Snapshot | None = None,
                 run_id: str | None = None, early_stopping=None, rate_controller=None):
        super().__init__()
        self.store = store
        self.resume = resume
        self.run_id = run_id
        self.early_stopping = early_stopping
        self.rate_controller = rate_controller
        history = resume.state.get("history", {}) if resume else {}
        self.history: dict[str, list[float]] = {k: list(v) for k, v in history.items()}
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._read_values = None
        self._last_backup = 0.0

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        optimizer = self.model.optimizer
        if not optimizer.built:  # Keras builds it in the first step; its slots are needed now
            optimizer.build(self.model.trainable_variables)
        variables = _variables(self.model)
        # One call for every value: read one by one they cost a few ms an epoch.
        self._read_values = tf.function(lambda: [tf.identity(v.value) for v in variables],
                                        autograph=False)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="zoo-backup")
        self._last_backup = time.monotonic()
        if self.resume is None:
            return
        count = len(variables)
        for variable, value in zip(variables, self.resume.values[:count], strict=True):
            variable.assign(value)
        state = self.resume.state.get("callbacks", {})
        if self.early_stopping is not None and "early_stopping" in state:
            best = self.resume.values[count:] or None
            _EarlyStoppingState.restore(self.early_stopping, state["early_stopping"], best)
        if self.rate_controller is not None and "plateau" in state:
            _PlateauState.restore(self.rate_controller, state["plateau"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            return  # the run fails; the last finite epoch's backup is the one to keep
        if time.monotonic() - self._last_backup < EVERY_SECONDS:
            return
        self._last_backup = time.monotonic()
        values = [np.asarray(v) for v in self._read_values()]
        callbacks = {}
        if self.early_stopping is not None:
            callbacks["early_stopping"] = _EarlyStoppingState.save(self.early_stopping)
            if self.early_stopping.best_weights is not None:
                values += [np.asarray(w) for w in self.early_stopping.best_weights]
        if self.rate_controller is not None and self.rate_controller.plateau:
            callbacks["plateau"] = _PlateauState.save(self.rate_controller)
        snapshot = Snapshot(epoch=epoch + 1, values=values, state={
            "run_id": self.run_id, "history": {k: list(v) for k, v in self.history.items()},
            "callbacks": callbacks})
        self._wait_for_write()
        self._pending = self._writer.submit(self.store.write, snapshot)

    def on_train_end(self, logs=None):
        self.finish()

    def finish(self) -> None:
        """Wait for the last backup to be written (or its error raised); idempotent."""
        try:
            self._wait_for_write()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def _wait_for_write(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
