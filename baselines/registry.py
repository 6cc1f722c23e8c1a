"""The model registry: `@register_model("name")` on a builder `(spec, num_classes, params) -> nn.Module`."""

from __future__ import annotations

from typing import Any

from torch import nn

from slimbench.core.registry import Registry, parse_params
from slimbench.tasks.base import InputSpec

MODELS: Registry[Any] = Registry("model")
register_model = MODELS.register


def build_model(name: str, spec: InputSpec, num_classes: int, params: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model for this input spec; a `timm/<arch>` name builds any timm architecture."""
    inner = backbone_spec(spec)
    if name.startswith("timm/") and name not in MODELS:
        from slimbench.baselines.timm_models import build_timm

        return wrap_for_input(build_timm(name.removeprefix("timm/"), inner, num_classes, params or {}), spec)
    builder = MODELS.get(name)
    model = builder(inner, num_classes, parse_params(MODELS, name, params))
    return wrap_for_input(model, spec)


def backbone_spec(spec: InputSpec) -> InputSpec:
    """What the backbone itself reads: for text, the embedding as channels over a one-row map of the tokens."""
    if spec.token_vocab:
        return InputSpec(channels=spec.width, height=1, width=spec.height, modality=spec.modality)
    return spec


def wrap_for_input(backbone: nn.Module, spec: InputSpec) -> nn.Module:
    """Text tasks feed token ids: prepend the embedding (counted and compressed with the model), started from
    the task's training-split word vectors when it has them, and pool the backbone over the text's words only."""
    if spec.token_vocab:
        from slimbench.baselines.layers import TextClassifier, TokenEmbeddingMap

        vectors = getattr(spec, "word_vectors", None)
        table = vectors.table if vectors is not None else None
        return TextClassifier(TokenEmbeddingMap(spec.token_vocab, spec.width, table), backbone,
                              pool=getattr(spec, "pool", "mean"))
    return backbone


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
