"""A model's layer structure as JSON, so a structurally changed model reloads from a `weights_only` file.

Channel pruning shrinks layers, low-rank factorization turns one layer into a `Sequential` of two, weight
tying makes two layers share one tensor: none of these can be rebuilt from the architecture's constructor,
and unpickling a module is unsafe. So the stored artifact carries this description beside the weights: the
constructor arguments of every standard torch layer and container, and which parameters are tied.
`rebuild` applies it to a freshly built model of the same architecture; `load_state_dict` then fills the
weights. torch has no serializable module-tree format that covers arbitrary models, hence this small one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimbench.core.errors import CheckpointError
from slimbench.deploy.casting import CastBoundary

_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
         "padding_mode")
_NORM = ("num_features", "eps", "momentum", "affine", "track_running_stats")
LAYERS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv1d: _CONV, nn.Conv2d: _CONV,
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.BatchNorm1d: _NORM, nn.BatchNorm2d: _NORM,
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    nn.Sequential: (),
    nn.Identity: (),
}
_BY_NAME = {cls.__name__: cls for cls in LAYERS}
# Modules that wrap a whole model (its deployed form): stored by their `structure_args()`, rebuilt around the
# fresh model.
WRAPPERS: dict[str, type[nn.Module]] = {"CastBoundary": CastBoundary}


def _args(module: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in LAYERS[type(module)]:
        value = getattr(module, name)
        if name == "bias":
            value = value is not None
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def describe(model: nn.Module) -> dict[str, Any]:
    """`{"modules": {path: {"type", "args"?, "children"?}}, "ties": [[param, param, ...], ...]}`."""
    modules: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        entry: dict[str, Any] = {"type": type(module).__name__ if type(module) in LAYERS else _qualname(module)}
        if type(module) in LAYERS:
            entry["args"] = _args(module)
        if isinstance(module, nn.Sequential):
            entry["children"] = [name for name, _ in module.named_children()]
        modules[path] = entry
    groups: dict[int, list[str]] = {}
    for path, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(path)
    out: dict[str, Any] = {"modules": modules, "ties": [names for names in groups.values() if len(names) > 1]}
    if type(model).__name__ in WRAPPERS and isinstance(model, WRAPPERS[type(model).__name__]):
        # every WRAPPERS class defines structure_args(); torch types other module attributes Tensor | Module
        out["wrapper"] = {"type": type(model).__name__, "args": model.structure_args()}  # type: ignore[operator]
    return out


def rebuild(model: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """Reshape `model` (freshly built, same architecture) to `structure`; returns it (wrapped if it was stored
    wrapped, e.g. behind a 16-bit cast boundary); weights are not loaded."""
    try:
        modules: dict[str, dict[str, Any]] = structure["modules"]
        ties: list[list[str]] = structure.get("ties", [])
    except (KeyError, TypeError):
        raise CheckpointError("the stored structure has no 'modules' mapping: not a slimbench structure") from None
    wrapper = structure.get("wrapper")
    if wrapper is not None:
        if wrapper.get("type") not in WRAPPERS:
            raise CheckpointError(f"unknown model wrapper {wrapper.get('type')!r}; known: {', '.join(WRAPPERS)}")
        model = WRAPPERS[wrapper["type"]](model, **wrapper.get("args", {}))
    for path in sorted(modules, key=lambda p: (p.count(".") + bool(p), p)):
        want = modules[path]
        current = _get(model, path)
        if current is not None and _matches(current, want):
            continue
        if want["type"] not in _BY_NAME:
            raise CheckpointError(
                f"cannot rebuild {path or 'the model'}: stored as {want['type']}, the fresh model has "
                f"{_qualname(current) if current is not None else 'nothing there'}; only standard layers "
                f"({', '.join(sorted(_BY_NAME))}) can change structure")
        _set(model, path, _build(want))
    params = dict(model.named_parameters(remove_duplicate=False))
    for names in ties:
        shared = params[names[0]]
        for name in names[1:]:
            owner, _, attr = name.rpartition(".")
            setattr(_get(model, owner), attr, shared)
    return model


def load_into(model: nn.Module, structure: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild `model` to `structure` and load `state` strictly (a missing or extra tensor is an error)."""
    model = rebuild(model, structure)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"stored weights do not fit the stored structure: {str(exc)[:400]}") from None
    return model


def _matches(module: nn.Module, want: dict[str, Any]) -> bool:
    if type(module) in LAYERS:
        if type(module).__name__ != want["type"] or _args(module) != want.get("args", {}):
            return False
        if isinstance(module, nn.Sequential):
            return [n for n, _ in module.named_children()] == want.get("children", [])
        return True
    return _qualname(module) == want["type"]


def _build(want: dict[str, Any]) -> nn.Module:
    cls = _BY_NAME[want["type"]]
    if cls is nn.Sequential:   # children are built afterwards, parents first; placeholders keep names
        return nn.Sequential(OrderedDict((name, nn.Identity()) for name in want.get("children", [])))
    args = dict(want.get("args", {}))
    for key, value in args.items():
        if isinstance(value, list):
            args[key] = tuple(value)
    return cls(**args)


def _get(model: nn.Module, path: str) -> nn.Module | None:
    if not path:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    if not path:
        raise CheckpointError("the stored structure replaces the whole model; rebuild from a different architecture")
    parent, _, name = path.rpartition(".")
    owner = _get(model, parent)
    if owner is None:
        raise CheckpointError(f"cannot rebuild {path}: its parent {parent!r} does not exist")
    setattr(owner, name, module)


def _qualname(module: nn.Module | None) -> str:
    cls: Callable[..., Any] = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"
