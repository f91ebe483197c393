"""The augmentation ops a recipe's `data.augmentation` list may hold: their keys, their allowed
values and which kind of data each applies to. Plain pydantic: the recipe schema validates them
without loading TensorFlow; `zoo.data.augment` applies them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Flip(_Op):
    """`flip`: mirror each image with probability 1/2 along each axis of `mode`."""

    op: Literal["flip"]
    mode: Literal["horizontal", "vertical", "both"] = "horizontal"


class Rotation(_Op):
    """`rotation`: rotate each image about its centre by an angle uniform in +-`degrees`."""

    op: Literal["rotation"]
    degrees: Annotated[float, Field(gt=0.0, le=180.0)] = 10.0


class Translation(_Op):
    """`translation`: shift each image by up to `fraction` of its height and of its width."""

    op: Literal["translation"]
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class Zoom(_Op):
    """`zoom`: zoom each image about its centre by a factor uniform in 1 +- `fraction`."""

    op: Literal["zoom"]
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class Crop(_Op):
    """`crop`: pad each image by `padding` pixels, then take a window of its size at a random
    offset."""

    op: Literal["crop"]
    padding: PositiveInt = 2


class Contrast(_Op):
    """`contrast`: scale each image about its own channel means by a factor uniform in
    1 +- `factor`."""

    op: Literal["contrast"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2


class Brightness(_Op):
    """`brightness`: add to each image an offset uniform in +-`delta` training standard
    deviations."""

    op: Literal["brightness"]
    delta: Annotated[float, Field(gt=0.0)] = 0.2


class Noise(_Op):
    """`noise`: add Gaussian noise of `stddev` training standard deviations to every value (images
    and sequences)."""

    op: Literal["noise"]
    stddev: Annotated[float, Field(gt=0.0)] = 0.1


class Cutout(_Op):
    """`cutout`: fill a square centred on a random pixel of each image with the training mean;
    its side is `size` rounded down to an odd number, clipped at the borders."""

    op: Literal["cutout"]
    size: PositiveInt = 2


class Shift(_Op):
    """`shift`: move each sequence by up to `max_shift` positions either way, filling with the
    training mean."""

    op: Literal["shift"]
    max_shift: PositiveInt = 4


class Scale(_Op):
    """`scale`: scale each sequence about the training mean by a factor uniform in 1 +- `factor`."""

    op: Literal["scale"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2


class Mask(_Op):
    """`mask`: fill a span of 1 to `max_length` positions of each sequence with the training
    mean."""

    op: Literal["mask"]
    max_length: PositiveInt = 4


AugmentationOp = Annotated[
    Flip | Rotation | Translation | Zoom | Crop | Contrast | Brightness | Noise | Cutout | Shift
    | Scale | Mask,
    Field(discriminator="op"),
]

IMAGE_OPS = ("flip", "rotation", "translation", "zoom", "crop", "contrast", "brightness",
             "noise", "cutout")
SEQUENCE_OPS = ("shift", "noise", "scale", "mask")
OPS_BY_KIND = {"image": IMAGE_OPS, "sequence": SEQUENCE_OPS}


def check_ops_fit(ops: list[_Op], kind: str, dataset: str) -> None:
    """Raise ValueError naming the first op that does not apply to this kind of data."""
    allowed = OPS_BY_KIND[kind]
    for i, op in enumerate(ops):
        if op.op not in allowed:
            raise ValueError(
                f"augmentation[{i}]: op {op.op!r} does not apply to {kind}s ({dataset}); "
                f"allowed for {kind}s: {', '.join(allowed)}")
