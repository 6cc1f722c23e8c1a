"""One exception family so the CLI can print a single clear line for every bad input."""

from __future__ import annotations

from collections.abc import Iterable


class SlimbenchError(Exception):
    """Base class: an error the user can fix; the CLI prints it without a traceback."""


class UnknownNameError(SlimbenchError, KeyError):
    """A model, task or method name that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]


class ConfigError(SlimbenchError, ValueError):
    """A malformed suite file or a bad parameter value."""


class DatasetMissingError(SlimbenchError, FileNotFoundError):
    """Dataset files are not where we looked; the message says where and how to get them."""


class CheckpointError(SlimbenchError):
    """A cached checkpoint or artifact that cannot be read back."""


class NotApplicableError(SlimbenchError):
    """A method that does not apply to the given model or task."""


class StoredFormError(SlimbenchError, ValueError):
    """A stored (packed) form that is malformed or does not decode to the model it stores: names the tensor, its
    format and what is wrong, so a failed cell's record says it in one line."""

    def __init__(self, problem: str, tensor: str | None = None, fmt: str | None = None):
        self.problem, self.tensor, self.format = problem, tensor, fmt
        where = "the stored form" if tensor is None else f"the stored form of {tensor!r}"
        if fmt is not None:
            where += f" (format {fmt!r})"
        super().__init__(f"{where}: {problem}")
