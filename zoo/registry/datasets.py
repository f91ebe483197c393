"""The data sets a recipe may name, and their kind, known from the name alone: the sets found on
this machine (which `zoo.data.embedded` loads) and `tfds:<name>` (image sets, checked against
tfds' builders without touching any data)."""

from __future__ import annotations

from zoo.errors import UnknownNameError

EMBEDDED_KINDS = {"digits": "image", "fashion_mnist": "image", "mnist1d": "sequence"}
TFDS_PREFIX = "tfds:"


def dataset_names() -> list[str]:
    """The data sets a recipe may name: the embedded ones, then `tfds:<name>`."""
    return [*sorted(EMBEDDED_KINDS), f"{TFDS_PREFIX}<name>"]


def dataset_kind(name: str) -> str:
    """`image` or `sequence`, known from the name alone (TFDS sets here are image sets)."""
    return EMBEDDED_KINDS.get(name, "image")


def check_dataset_name(name: str) -> None:
    """Raise UnknownNameError unless `name` is an embedded data set or a tfds builder."""
    if name.startswith(TFDS_PREFIX):
        check_tfds_name(name[len(TFDS_PREFIX):])
    elif name not in EMBEDDED_KINDS:
        raise UnknownNameError("data set", name, dataset_names())


def check_tfds_name(name: str) -> None:
    """Raise UnknownNameError when tfds has no builder of that name (no data is touched)."""
    import tensorflow_datasets as tfds

    builder_name = name.split(":")[0].split("/")[0]
    try:
        tfds.builder_cls(builder_name)
    except Exception:  # tfds raises DatasetNotFoundError, a ValueError, with a huge listing
        raise UnknownNameError(
            "TFDS data set", f"{TFDS_PREFIX}{name}",
            ["tfds:mnist", "tfds:fashion_mnist", "tfds:cifar10", "... (tfds.list_builders())"],
        ) from None
