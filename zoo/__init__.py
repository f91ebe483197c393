"""zoo: small Keras MLPs and CNNs trained from reproducible YAML recipes.

    from zoo.recipe import load_recipe
    from zoo.train import train
    result = train(load_recipe("mnist1d/cnn_paper", ["training.epochs=5"]))
"""

import os

# TensorFlow's C++ start-up chatter buries what the zoo prints; set the variable to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
