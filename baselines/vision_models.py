"""Baseline architectures from torchvision, adapted to the task's input spec."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision import models as tvm

from baselines.layers import relax_last_strides, replace_conv, small_input
from baselines.registry import register_model
from tasks.base import InputSpec


@dataclass
class MobileNetV2Params:
    width_mult: float = 1.0
    dropout: float = 0.2


@register_model("mobilenetv2")
def mobilenetv2(spec: InputSpec, num_classes: int, params: MobileNetV2Params) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018, torchvision); small inputs keep a 2×2 final map; width_mult for students."""
    model = tvm.mobilenet_v2(num_classes=num_classes, width_mult=params.width_mult, dropout=params.dropout)
    stem: nn.Conv2d = model.features[0][0]
    if spec.channels != stem.in_channels:
        model.features[0][0] = replace_conv(stem, in_channels=spec.channels)
    if small_input(spec.height, spec.width):
        relax_last_strides(model, spec.height, spec.width)
    return model


@dataclass
class TinyCNNParams:
    width: int = 16


@register_model("tiny-cnn")
def tiny_cnn(spec: InputSpec, num_classes: int, params: TinyCNNParams) -> nn.Module:
    """A three-layer CNN (a few thousand parameters) so tests and smoke runs finish in seconds."""
    w = params.width
    return nn.Sequential(
        nn.Conv2d(spec.channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, padding=1, stride=2), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, num_classes),
    )
