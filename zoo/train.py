"""The old home of `train`: now `zoo.training` (`from zoo.training import train`).

It keeps working, with a warning, until zoo 0.3.
"""

import warnings

from zoo.errors import ZooDeprecation
from zoo.training.trainer import Prepared, Result, prepare, train

__all__ = ["Prepared", "Result", "prepare", "train"]

warnings.warn("zoo.train is now zoo.training (from zoo.training import train); the old module "
              "is removed in zoo 0.3", ZooDeprecation, stacklevel=2)
