"""A text-native baseline beside the image backbones: the bag of embeddings (fastText, Joulin et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimbench.baselines.registry import register_model
from slimbench.tasks.base import InputSpec


class RowMeanClassifier(nn.Module):
    """Average the non-empty rows of a `[B, C, H, W]` map, then one linear layer.

    On a text task the map is `1 × tokens × embedding` and padding rows are zero (padding_idx), so this is
    the mean of the text's word vectors: fastText's classifier. On an image it averages pixel rows.
    """

    def __init__(self, features: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = (x.abs().sum(dim=(1, 3)) > 0).sum(dim=1).clamp_min(1).to(x.dtype)   # non-empty rows per item
        pooled = x.sum(dim=2).flatten(1) / rows[:, None]
        return self.classifier(self.dropout(pooled))


class BagOfWordVectors(nn.Module):
    """fastText on a text task: the text wrapper averages the word vectors of each text (padding left out,
    `sequence_pool = "mean"`) and this classifies the mean. Alone, on a `D × 1 × L` map, it averages every position.
    """

    sequence_pool = "mean"

    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.features = nn.Identity()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@dataclass
class BagOfEmbeddingsParams:
    dropout: float = 0.0


@register_model("bag-of-embeddings")
def bag_of_embeddings(spec: InputSpec, num_classes: int, params: BagOfEmbeddingsParams) -> nn.Module:
    """Mean of the token embeddings + linear (fastText); the text baseline the image backbones are judged against."""
    if spec.modality == "text" and spec.height == 1:
        return BagOfWordVectors(spec.channels, num_classes, params.dropout)
    return RowMeanClassifier(spec.channels * spec.width, num_classes, params.dropout)
