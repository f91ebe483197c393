"""The zoo's layout in MLflow: the experiment a run goes to and the names of the tags it sets.

Every module that writes or reads them goes through here, so each name is spelt once; the
user-facing contract is in docs/training.md ("What MLflow records").
"""

from __future__ import annotations


def experiment_for(dataset: str) -> str:
    """The experiment of every run on `dataset`: one per data set, so that runs on the same
    data compare side by side in the UI."""
    return dataset


# MLflow's own: a child run names its parent; MLflow 3's UI opens on its GenAI view unless an
# experiment says it is for model development.
PARENT = "mlflow.parentRunId"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# MLflow's standard tags, which its UI shows: the run's description (its Overview), where it
# came from (the Source column, with its commit) and who ran it.
DESCRIPTION = "mlflow.note.content"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_GIT_BRANCH = "mlflow.source.git.branch"
SOURCE_GIT_REPO_URL = "mlflow.source.git.repoURL"
USER = "mlflow.user"

# Every training run.
RECIPE = "zoo.recipe"  # the recipe's name
RECIPE_PATH = "zoo.recipe_path"
FINGERPRINT = "zoo.fingerprint"  # the configuration, seed excluded: runs over seeds share it
SEED = "zoo.seed"
RUNTIME = "zoo.runtime"  # how the model trained: device, XLA, steps per call, threads
KIND = "zoo.kind"  # what a run that is not a training run is, e.g. "lr-find"

# The process that holds a run RUNNING: a run whose process is gone is marked KILLED.
HOST = "zoo.host"
PROCESS = "zoo.process"  # "<pid>:<start time>": a pid alone may be reused by another process
ENDED_BY = "zoo.ended_by"  # why the zoo, not the run's own process, ended it

# Where and with what a run trained.
GIT_COMMIT = "zoo.git_commit"
VERSIONS = "zoo.versions"
DEVICE = "zoo.device"
CPU = "zoo.cpu"
PLATFORM = "zoo.platform"

# Grids and searches.
ABLATION_KEY = "zoo.ablation.key"  # the grid's identity: a rerun resumes its parent run
ABLATION_AXES = "zoo.ablation.axes"
CELL = "zoo.cell"  # a grid cell's values, on its child runs
TRIAL_ID = "zoo.trial_id"
EXECUTION = "zoo.execution"  # a trial's attempt: a resumed trial does not reuse a killed run
TRIAL_VALUE_PREFIX = "zoo.trial."  # + a hyperparameter's recipe key
TUNE_ALGORITHM = "zoo.tune.algorithm"
TUNE_BEST_TRIAL = "zoo.tune.best_trial"
TUNE_BEST_VALUES = "zoo.tune.best_values"
TUNE_EDGE_WARNINGS = "zoo.tune.edge_warnings"
COMPARISON_COLUMNS = "zoo.comparison_columns"

# The pretrained zoo.
PRETRAINED = "zoo.pretrained"  # a build run of that entry
REPRODUCE = "zoo.reproduce"  # a `make reproduce` run of that entry
SHIPPED_SHA256 = "zoo.sha256"  # on a registered version: the shipped file it was made from

# The training monitor.
MONITOR_WARNINGS = "monitor.warnings"  # how many


def monitor_warning(layer: str, kind: str) -> str:
    """The tag of one monitor warning; its value is the line printed."""
    return f"monitor.warning.{layer}.{kind}"
