"""zoo: small Keras MLPs and CNNs trained from reproducible YAML recipes.

    import zoo
    model = zoo.load("mnist1d/cnn")          # a pretrained model, checked against its sha256
    zoo.manifest_entry("mnist1d/cnn")        # its recipe, metrics over seeds, versions, ...

    from zoo.recipe import load_recipe
    from zoo.training import train
    result = train(load_recipe("mnist1d/cnn_paper", ["training.epochs=5"]))
"""

import os

# TensorFlow's C++ start-up chatter buries what the zoo prints; set the variable to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One intra-op thread per training process (ZOO_THREADS; see zoo.execution): these small models
# train faster on one thread than on two, and a grid then runs one process per core with the
# same thread setting, so the same weights, as a single run. Set before TensorFlow starts.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", os.environ.get("ZOO_THREADS", "1"))
# A run's figures are drawn in a forked child (zoo.plots.FiguresAside), which never uses gRPC;
# in a grid's processes, which serve or use Keras Tuner's gRPC oracle, gRPC's fork handlers
# would only print that they skip themselves. Read by gRPC when it is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"

_PRETRAINED_API = ("load", "manifest_entry", "list_pretrained", "card")  # card: deprecated


def __getattr__(name):
    # Imported on first use so that `import zoo` stays cheap for the CLI and the recipe tools.
    if name in _PRETRAINED_API:
        from zoo import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
