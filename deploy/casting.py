"""A 16-bit model behind a float32 interface: how torch eager deploys bfloat16 / float16 weights and compute."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CastBoundary(nn.Module):
    """Runs a 16-bit model behind a float32 interface: float inputs are cast down, outputs cast back up."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | str):
        super().__init__()
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.model, self.dtype = model.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype) if x.is_floating_point() else x).float()

    def structure_args(self) -> dict[str, Any]:
        """What `deploy.structure` stores to wrap a freshly built model the same way."""
        return {"dtype": str(self.dtype).removeprefix("torch.")}
