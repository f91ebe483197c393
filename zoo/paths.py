"""Where the zoo keeps recipes, trained models, the MLflow store and its data cache."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root: ZOO_HOME if set, else the checkout the package lives in, else cwd."""
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "recipes").is_dir():
        return checkout
    return Path.cwd()


def recipes_dir() -> Path:
    """The recipes folder under the project root: `recipes/<data set>/<name>.yaml`."""
    return project_root() / "recipes"


def models_dir() -> Path:
    """Where trained models are saved by default: `models/` under the project root."""
    return project_root() / "models"


def mlruns_dir() -> Path:
    """The default MLflow store's folder (`mlflow.db` and `artifacts/`) under the project root."""
    return project_root() / "mlruns"


def cache_dir() -> Path:
    """Data sets built once and kept: ZOO_CACHE if set, else `zoo/` in the user's cache folder
    (XDG_CACHE_HOME, default ~/.cache)."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoo"
