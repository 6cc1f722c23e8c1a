"""Deployment targets as a registry: one class per runtime a model can ship in, found by name like models and methods.

A runtime turns a model (a torch module, or an ONNX graph a method produced) into a callable module that runs where
the model would ship, or says precisely why it cannot (`NotApplicableError`). What a record wants to know besides
its outputs (the precision that really ran, the size of the runtime's own file) it answers from the deployed module.
Adding a runtime is one new class with `@register_runtime`; the harness reads the registry.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from slimbench.core.registry import Registry


class Runtime(abc.ABC):
    """Where a model runs. Subclasses are registered by name; instances hold no state."""

    name: ClassVar[str]

    @abc.abstractmethod
    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        """`model` as this runtime runs it; NotApplicableError says why it cannot."""

    def file_bytes(self, deployed: nn.Module) -> int | None:
        """Bytes of the file this runtime loads the model from (None: it loads no file of its own)."""
        return None

    def describe(self, deployed: nn.Module) -> dict[str, Any]:
        """What ran, for the record: e.g. the precision a runtime chose on this CPU."""
        return {}


RUNTIMES: Registry[type[Runtime]] = Registry("runtime")


def register_runtime(name: str, version: int | None = None) -> Any:
    """Class decorator: registers a `Runtime` subclass under `name`."""
    def decorator(cls: type[Runtime]) -> type[Runtime]:
        cls.name = name
        return RUNTIMES.register(name, version=version)(cls)

    return decorator
