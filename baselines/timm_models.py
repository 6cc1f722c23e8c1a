"""Any timm architecture, named `timm/<arch>` in a suite, built for the task's input spec like the baselines."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from slimbench.baselines.layers import relax_last_strides, small_input
from slimbench.core.errors import ConfigError, UnknownNameError
from slimbench.tasks.base import InputSpec

# Set from the task, or against the benchmark's rule that every model starts from the same fresh initialisation.
RESERVED = {"pretrained": "models are trained from scratch on each task",
            "num_classes": "set from the task", "in_chans": "set from the task's input spec"}


class UnknownTimmArchError(UnknownNameError):
    """A `timm/<arch>` name timm does not know; lists close matches instead of all ~1,400 architectures."""

    def __init__(self, arch: str, close: list[str], total: int):
        super().__init__("timm architecture", arch, close)
        self.args = (f"unknown timm architecture {arch!r}; close matches: {', '.join(close) or '(none)'} "
                     f"(timm has {total}; list them with timm.list_models('*pattern*'))",)


def check_timm_arch(arch: str) -> None:
    """Fail early with close matches (wildcard and spelling) when timm has no such architecture."""
    import timm

    if timm.is_model(arch):
        return
    names = timm.list_models()
    spelled = difflib.get_close_matches(arch, names, n=8, cutoff=0.6)
    containing = sorted(timm.list_models(f"*{arch}*"), key=lambda n: (len(n), n))
    close = list(dict.fromkeys(spelled + containing))[:12]
    raise UnknownTimmArchError(arch, close, len(names))


def build_timm(arch: str, spec: InputSpec, num_classes: int, params: dict[str, Any]) -> nn.Module:
    """`timm.create_model(arch, pretrained=False, num_classes, in_chans, **params)` plus small-input strides."""
    import timm

    check_timm_arch(arch)
    if not isinstance(params, dict):
        raise ConfigError(f"model 'timm/{arch}': parameters must be a mapping, got {params!r}")
    reserved = sorted(set(params) & set(RESERVED))
    if reserved:
        raise ConfigError(f"model 'timm/{arch}': parameter(s) {', '.join(reserved)} cannot be set ("
                          + "; ".join(f"{k}: {RESERVED[k]}" for k in reserved)
                          + "); other parameters go to timm.create_model")
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=spec.channels, **params)
    except TypeError as exc:
        raise ConfigError(f"model 'timm/{arch}': timm.create_model rejected parameters {sorted(params)}: "
                          f"{exc}") from None
    if small_input(spec.height, spec.width):
        try:
            relax_last_strides(model, spec.height, spec.width, channels=spec.channels)
        except ConfigError as exc:
            raise ConfigError(f"model 'timm/{arch}': {exc} (models with a fixed input size take "
                              f"`img_size: [{spec.height}, {spec.width}]` in params)") from None
    return model
