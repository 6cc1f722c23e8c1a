"""Small layers and input adaptations shared by model builders."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from slimbench.core.errors import ConfigError
from slimbench.tasks.base import InputSpec

# Layers that downsample through their stride; strided pooling (SqueezeNet, ResNet stems) counts like a strided conv.
DOWNSAMPLING = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


class TokenEmbeddingMap(nn.Module):
    """Embed token ids `[B, L]` into a 1-channel `L × D` map so any image backbone can read text."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).unsqueeze(1)


def small_input(spec_height: int, spec_width: int) -> bool:
    """Below 96 px an ImageNet network (total stride 32) would end on a 1×1 map or collapse earlier."""
    return min(spec_height, spec_width) < 96


def fit_to_input(model: nn.Module, spec: InputSpec, stem: str) -> nn.Module:
    """Give an ImageNet torchvision model the task's input channels (conv at path `stem`) and small-input strides."""
    conv = model.get_submodule(stem)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{type(model).__name__}.{stem} is {type(conv).__name__}, not the Conv2d stem")
    if spec.channels != conv.in_channels:
        new = replace_conv(conv, in_channels=spec.channels)
        with torch.no_grad():  # keep the architecture's own init scale (timm's rule: sum or repeat RGB filters)
            from timm.models import adapt_input_conv

            new.weight.copy_(adapt_input_conv(spec.channels, conv.weight))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        parent, _, leaf = stem.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
    if small_input(spec.height, spec.width):
        relax_last_strides(model, spec.height, spec.width, channels=spec.channels)
    return model


@dataclass
class _Probe:
    """Spatial sizes each downsampling layer saw in one forward pass, and the error if the pass failed."""

    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: Exception | None = None

    def final(self, default: int) -> int:
        """The smallest map any downsampling layer produced: the final feature map's shorter side."""
        return min((min(hw) for hw in self.outputs.values()), default=default)


def downsampling_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Strided convs and pools, in module order."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, DOWNSAMPLING) and max(_pair(m.stride)) > 1}


def relax_last_strides(model: nn.Module, height: int, width: int, min_final: int = 2,
                       channels: int | None = None) -> list[str]:
    """Set the last downsampling layers to stride 1 until the final map is at least `min_final` pixels.

    The small-input adaptation: late stages are cheap at low resolution, so keeping the stem's stride and
    relaxing the last downsampling costs far less than a stride-1 stem (measured on MobileNetV2 at 28 px:
    10.4 M vs 21.8 M MACs, 4× faster inference) while 28–32 px inputs still end on a 2×2 map, not 1×1.
    Sizes come from a real forward pass, so parallel branches (a ResNet block and its strided shortcut) are
    relaxed together, unpadded pools that would collapse a tiny map (SqueezeNet at 8 px) are relaxed too,
    and any architecture works without knowing its layout. Returns the relaxed layers' names.
    """
    layers = downsampling_layers(model)
    remaining = list(layers)
    channels = channels if channels is not None else _input_channels(model)
    changed: list[str] = []
    while True:
        probe = _probe(model, layers, channels, height, width)
        if probe.error is None and probe.final(min(height, width)) >= min_final:
            return changed
        if not remaining:
            if probe.error is None:
                return changed  # nothing left to relax: the map stays as large as this input allows
            raise ConfigError(
                f"{type(model).__name__} cannot run on {channels}×{height}×{width} inputs even with every "
                f"downsampling layer at stride 1: {probe.error}") from probe.error
        for name in _last_stage(remaining, probe):
            _relax(layers[name])
            remaining.remove(name)
            changed.append(name)


def _last_stage(remaining: list[str], probe: _Probe) -> list[str]:
    """The latest downsampling step: layers a failed pass never reached, else all that saw the smallest map."""
    unreached = [n for n in remaining if n not in probe.inputs]
    if unreached:
        return [unreached[-1]]
    smallest = min((probe.inputs[n] for n in remaining), key=lambda hw: (hw[0] * hw[1], hw))
    return [n for n in reversed(remaining) if probe.inputs[n] == smallest]


def _probe(model: nn.Module, layers: dict[str, nn.Module], channels: int, height: int, width: int) -> _Probe:
    """One batch-1 forward pass in eval mode (BatchNorm needs no batch statistics), recording map sizes."""
    probe = _Probe()

    def record(name: str):  # noqa: ANN202
        def pre(_m: nn.Module, args: tuple) -> None:
            probe.inputs[name] = tuple(args[0].shape[-2:])

        def post(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            probe.outputs[name] = tuple(out.shape[-2:])

        return pre, post

    handles = []
    for name, m in layers.items():
        pre, post = record(name)
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    x = torch.zeros(1, channels, height, width,
                    device=param.device if param is not None else None,
                    dtype=param.dtype if param is not None else None)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, AssertionError) as exc:
        probe.error = exc
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return probe


def _relax(layer: nn.Module) -> None:
    """Stride 1; plain torch convs and pools also get 'same' padding so the relaxed layer keeps the map size.

    Subclasses (e.g. timm's Conv2dSame, which pads dynamically from its stride) only change stride.
    """
    stride = layer.stride
    layer.stride = (1, 1) if isinstance(stride, tuple) else 1
    if type(layer) not in DOWNSAMPLING or isinstance(layer.padding, str):
        return
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        return
    kernel, padding = _pair(layer.kernel_size), _pair(layer.padding)
    dilation = _pair(layer.dilation) if isinstance(layer, nn.Conv2d) else (1, 1)
    same = tuple(max(p, d * (k - 1) // 2) for p, k, d in zip(padding, kernel, dilation))
    if same != padding:
        layer.padding = same if isinstance(layer.padding, tuple) or same[0] != same[1] else same[0]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ConfigError(f"{type(model).__name__} has no Conv2d to infer its input channels from; pass channels")
    return first.in_channels


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
