"""Baseline and teacher architectures from torchvision, adapted to the task's input spec."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision import models as tvm
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

from slimbench.baselines.layers import fit_to_input
from slimbench.baselines.registry import register_model
from slimbench.tasks.base import InputSpec


@dataclass
class MobileNetV2Params:
    width_mult: float = 1.0
    dropout: float = 0.2


@register_model("mobilenetv2")
def mobilenetv2(spec: InputSpec, num_classes: int, params: MobileNetV2Params) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018, torchvision); small inputs keep a 2×2 final map; width_mult for students."""
    model = tvm.mobilenet_v2(num_classes=num_classes, width_mult=params.width_mult, dropout=params.dropout)
    return fit_to_input(model, spec, stem="features.0.0")


@dataclass
class SqueezeNetParams:
    version: float = 1.1   # 1.0: the paper's original (7×7 stem, 2.4× the MACs); 1.1: same accuracy, cheaper
    dropout: float = 0.5
    final_relu: bool = True  # the paper's ReLU on the logits; false avoids all-zero logits that stop learning

    def __post_init__(self) -> None:
        if self.version not in (1.0, 1.1):
            raise ValueError(f"version must be 1.0 or 1.1, got {self.version}")


@register_model("squeezenet")
def squeezenet(spec: InputSpec, num_classes: int, params: SqueezeNetParams) -> nn.Module:
    """SqueezeNet (Iandola et al. 2016, torchvision); its classifier is a 1×1 conv to num_classes after dropout."""
    model = tvm.SqueezeNet(version="1_1" if params.version == 1.1 else "1_0",
                           num_classes=num_classes, dropout=params.dropout)
    if not params.final_relu:
        model.classifier[2] = nn.Identity()  # no parameters or MACs: the published sizes hold either way
    return fit_to_input(model, spec, stem="features.0")


@dataclass
class EfficientNetParams:
    width_mult: float = 1.0       # B0 scaling: channels × width_mult (rounded to multiples of 8)
    depth_mult: float = 1.0       # blocks per stage × depth_mult (rounded up)
    dropout: float = 0.2
    stochastic_depth_prob: float = 0.2

    def __post_init__(self) -> None:
        if self.width_mult <= 0 or self.depth_mult <= 0:
            raise ValueError(f"width_mult and depth_mult must be positive, got {self.width_mult}, {self.depth_mult}")


@register_model("efficientnet_b0")
def efficientnet_b0(spec: InputSpec, num_classes: int, params: EfficientNetParams) -> nn.Module:
    """EfficientNet-B0 (Tan & Le 2019, torchvision); width/depth multipliers scale it like the B1–B7 family.

    torchvision's public builders fix the multipliers, so the block table comes from its `_efficientnet_conf`.
    """
    blocks, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=params.width_mult,
                                              depth_mult=params.depth_mult)
    model = EfficientNet(blocks, params.dropout, params.stochastic_depth_prob, num_classes=num_classes,
                         last_channel=last_channel)
    return fit_to_input(model, spec, stem="features.0.0")


@dataclass
class ResNetParams:
    zero_init_residual: bool = False  # start each residual branch at zero (Goyal et al. 2017): steadier from scratch


@register_model("resnet18")
def resnet18(spec: InputSpec, num_classes: int, params: ResNetParams) -> nn.Module:
    """ResNet-18 (He et al. 2016, torchvision): a distillation teacher, 3.3× MobileNetV2's parameters."""
    model = tvm.resnet18(num_classes=num_classes, zero_init_residual=params.zero_init_residual)
    return fit_to_input(model, spec, stem="conv1")


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
