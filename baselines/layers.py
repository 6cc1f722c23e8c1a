"""Small layers shared by model builders."""

from __future__ import annotations

import torch
from torch import nn


class TokenEmbeddingMap(nn.Module):
    """Embed token ids `[B, L]` into a 1-channel `L × D` map so any image backbone can read text."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).unsqueeze(1)


def small_input(spec_height: int, spec_width: int) -> bool:
    """Inputs below 96 px lose the stem's stride so 28–32 px images are not reduced to 1×1 too early."""
    return min(spec_height, spec_width) < 96


def replace_conv(conv: nn.Conv2d, in_channels: int | None = None, stride: int | None = None) -> nn.Conv2d:
    """A fresh conv like `conv` with another input width or stride (weights re-initialised)."""
    return nn.Conv2d(
        in_channels if in_channels is not None else conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=stride if stride is not None else conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
