"""The Keras Tuner side of `zoo.workers`' job lists: an oracle whose trial k is job k, and a
tuner that trains the job of each trial it is given (in a worker process, or in the parent)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras_tuner as kt

from zoo.errors import ZooError
from zoo.files import write_text_atomically
from zoo.workflows.workers import JOBS_HP, OBJECTIVE, Job, JobResult, publish_result


class JobOracle(kt.Oracle):
    """Trial k is job k: each job given out once, in order, to whichever worker asks.

    Keras Tuner's GridSearchOracle would also walk a `job` choice, but it proposes a trial's
    successor only when that trial ends, which keeps at most two workers busy.
    """

    def __init__(self, jobs: int, published: str | None = None):
        space = kt.HyperParameters()
        space.Int("job", 0, max(jobs - 1, 1))
        if published is not None:  # the jobs themselves, for workers that join (`zoo join`)
            space.Fixed(JOBS_HP, published)
        super().__init__(objective=kt.Objective(OBJECTIVE, "max"), max_trials=jobs,
                         hyperparameters=space)

    def populate_space(self, trial_id):
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": {"job": int(trial_id)}}


class Failed(kt.errors.FatalError):
    """Ends a search at a failed job: Keras Tuner would otherwise log the trial as failed and
    go on. `code` is a worker's exit code; `error` the job's exception."""

    def __init__(self, code: int, error: BaseException):
        super().__init__(code)
        self.code, self.error = code, error


class JobTuner(kt.engine.base_tuner.BaseTuner):
    """Trains the job of each trial the oracle gives it.

    In a worker process it writes `<index>.started` and then `<index>.result.json` or
    `<index>.error.json` into `out` for the parent; in the parent (`local`, the object that
    runs the jobs there) it hands each job to `local.train_here`.
    """

    def __init__(self, jobs: Sequence[Job], out: Path, local: Any = None, joined: bool = False,
                 **kwargs):
        self.jobs, self.out, self.local, self.joined = jobs, out, local, joined
        super().__init__(**kwargs)

    def run_trial(self, trial, *args, **kwargs):
        index = int(trial.hyperparameters.values["job"])
        if self.local is not None:
            try:
                result = self.local.train_here(index)
            except Exception as err:
                raise Failed(1, err) from err
            return {OBJECTIVE: result.test_accuracy}
        job = self.jobs[index]
        write_text_atomically(self.out / f"{index}.started", self.tuner_id)
        try:
            result = JobResult.of(job.train(), keep_model=False)
        except ZooError as err:
            _write_error(self.out, index, str(err))
            if self.joined:
                self._failed_for_the_chief(job, err)
            raise Failed(2, err) from err
        except Exception as err:
            traceback.print_exc()
            _write_error(self.out, index, f"{job.label}: {type(err).__name__}: {err} (see the "
                         "worker's traceback above)")
            if self.joined:
                self._failed_for_the_chief(job, err)
            raise Failed(1, err) from err
        if self.joined:  # from elsewhere: the chief reads the result from the store
            publish_result(result)
            print(f"zoo: {job.label}: test_accuracy {result.test_accuracy:.4f}", flush=True)
        write_text_atomically(self.out / f"{index}.result.json", json.dumps(result.to_json()))
        return {OBJECTIVE: result.test_accuracy}


    @staticmethod
    def _failed_for_the_chief(job: Job, err: BaseException):
        """A joined worker's failed job: Keras Tuner ends the trial FAILED at the chief (which
        stops on it), and this worker goes on. The chief sees the status, not the message."""
        print(f"zoo: {job.label} failed: {err}", flush=True)
        raise kt.errors.FailedTrialError(str(err)) from err


def job_tuner(jobs: Sequence[Job], folder: Path, local: Any = None, publish: bool = False,
              joined: bool = False) -> JobTuner:
    """The tuner of a job list whose files live in `folder` (the oracle's state included).

    Args:
        local: the object that trains the jobs in the chief's own process.
        publish: the chief's oracle carries the jobs for workers that join from elsewhere.
        joined: a worker that joined from elsewhere: it publishes its results to the store.
    """
    published = json.dumps([job.to_json() for job in jobs]) if publish else None
    return JobTuner(jobs, folder / "results", local=local, joined=joined,
                    oracle=JobOracle(len(jobs), published), directory=str(folder),
                    project_name="oracle")


def _write_error(out: Path, index: int, message: str) -> None:
    write_text_atomically(out / f"{index}.error.json", json.dumps({"message": message}))
