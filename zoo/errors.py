"""Typed errors a user can trigger. The CLI prints their message on one line and exits 2."""


class ZooError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in the zoo."""


class RecipeError(ZooError):
    """A recipe file or override is missing, malformed or has a bad value."""


class UnknownNameError(RecipeError):
    """A registry lookup (model, dataset, activation, ...) got a name it does not know."""

    def __init__(self, kind: str, received: str, known: list[str]):
        self.kind, self.received, self.known = kind, received, known
        super().__init__(f"unknown {kind} {received!r}; known: {', '.join(sorted(known))}")


class DataError(ZooError):
    """A data set cannot be loaded (absent, unprepared, wrong shape)."""


class TrainingError(ZooError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


class ModelFileError(ZooError):
    """A model file is missing, corrupted or fails its checksum."""


class ArgumentError(ZooError):
    """A command's option has a value it cannot work with."""


class ZooDeprecation(FutureWarning):
    """A name or key of the zoo's that still works but is going away; the message says what
    replaces it. A FutureWarning, so Python shows it by default; the CLI prints it on one line."""
