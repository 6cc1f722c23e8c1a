"""Small layers and input adaptations shared by model builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from slimbench.core.errors import ConfigError
from slimbench.tasks.base import InputSpec

# Layers that downsample through their stride; strided pooling (SqueezeNet, ResNet stems) counts like a strided conv.
DOWNSAMPLING = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_Pair = tuple[int, int]


class TokenEmbeddingMap(nn.Module):
    """Embed token ids `[B, L]` into a `D × 1 × L` map: the embedding as channels over a one-row sequence.

    Every image backbone reads it as an image one pixel high, so its convolutions slide along the text only.
    A 1-channel `L × D` picture of the embedded text learns as well once the table starts from word vectors
    (MobileNetV2 on rotten-tomatoes, validation 0.742 vs 0.742 here) but costs 3.7× the MACs (19.5 M vs 5.3 M)
    and 4.7× the training time. `vectors`, when given, are the task's training-split word vectors the table
    starts from: the lever that makes the backbones learn text at all (0.572 from a random table).
    """

    def __init__(self, vocab_size: int, dim: int, vectors: torch.Tensor | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        if vectors is not None:
            if tuple(vectors.shape) != (vocab_size, dim):
                raise ConfigError(f"word vectors of shape {tuple(vectors.shape)} do not fit a {vocab_size} × {dim} "
                                  f"embedding")
            with torch.no_grad():
                self.embedding.weight.copy_(vectors)
                self.embedding.weight[0].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).transpose(1, 2).unsqueeze(2)


def sequence_mask(tokens: torch.Tensor, positions: int) -> torch.Tensor:
    """`[B, positions]` booleans: which of a feature map's positions along the text cover at least one word.

    Position j of a map `positions` long stands for tokens `[j·L/positions, (j+1)·L/positions)` (the windows
    of adaptive pooling); it is valid when that window starts before the text's last word. Padding sits at
    the end of each row (vocab.encode), so this is exact for the token map and a fair rule after strides.
    An empty text keeps position 0, so pooling always has something to take.
    """
    length = tokens.shape[-1]
    order = torch.arange(1, length + 1, device=tokens.device)
    words = ((tokens != 0).to(order.dtype) * order).amax(dim=-1).clamp_min(1)        # index of the last word + 1
    starts = torch.div(torch.arange(positions, device=tokens.device) * length, positions, rounding_mode="floor")
    return starts[None, :] < words[:, None]


def masked_pool(features: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool `[B, C, H, W]` over the positions `mask` `[B, W]` keeps, to `[B, C, 1, 1]`; padding never pools.

    "mean" averages the kept positions: the backbones' own global average pool without the padding (and
    fastText's bag of embeddings). "max" is max-over-time (Collobert et al. 2011, Kim 2014): masked positions
    take the map's own minimum rather than -inf, so the max is unchanged and the tensor keeps a finite range
    that int8 calibration can quantize. On rotten-tomatoes the two are within seed noise (validation, 3 seeds:
    MobileNetV2 0.745 mean / 0.739 max / 0.745 unmasked average; SqueezeNet 0.737 / 0.734 / 0.734).
    """
    keep = mask[:, None, None, :]
    if mode == "mean":
        weights = keep.to(features.dtype).expand(-1, 1, features.shape[2], -1)
        return (features * weights).sum(dim=(2, 3), keepdim=True) / weights.sum(dim=(2, 3), keepdim=True)
    floor = features.amin(dim=(2, 3), keepdim=True)
    # a copy: amax's backward needs its output, and a head may modify its input in place (EfficientNet's dropout)
    return torch.where(keep, features, floor).amax(dim=(2, 3), keepdim=True).clone()


def _split_kind(backbone: nn.Module) -> str:
    """How to run a backbone in two parts around the text pooling (features, then its head on a 1×1 map)."""
    from torchvision import models as tvm

    if isinstance(backbone, tvm.SqueezeNet):
        return "squeezenet"          # its global pool comes last: it pools class maps (dropout, 1×1 conv, ReLU)
    if isinstance(backbone, tvm.ResNet):
        return "resnet"
    if hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head"):
        return "timm"                # its own global pool is a no-op on the pooled 1×1 map
    if hasattr(backbone, "features") and hasattr(backbone, "classifier"):
        return "features"            # MobileNetV2, EfficientNet, the bag of embeddings
    if isinstance(backbone, nn.Sequential) and _pool_index(backbone) is not None:
        return "sequential"          # layers up to the global pool, then the rest
    return "whole"                   # unknown layout: the backbone pools by itself (padding included)


def _pool_index(seq: nn.Sequential) -> int | None:
    return next((i for i, m in enumerate(seq) if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))), None)


def _features(kind: str, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Everything before the backbone's global pool (which the text pooling replaces)."""
    b: Any = backbone   # laid out as `kind` says (see _kind), which the module type does not express
    if kind == "timm":
        return b.forward_features(x)
    if kind == "resnet":
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))
    if kind == "sequential":
        return b[: _pool_index(b)](x)
    if kind == "squeezenet":
        return b.classifier[:-1](b.features(x))
    return b.features(x)


def _head(kind: str, backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """Everything after the global pool, on the pooled `[B, C, 1, 1]` map."""
    b: Any = backbone   # laid out as `kind` says (see _kind), which the module type does not express
    if kind == "timm":
        return b.forward_head(pooled)
    if kind == "resnet":
        return b.fc(pooled.flatten(1))
    if kind == "squeezenet":
        return pooled.flatten(1)
    if kind == "sequential":
        return b[_pool_index(b):](pooled)
    return b.classifier(pooled.flatten(1))


class TextClassifier(nn.Sequential):
    """`[0]` the token embedding, `[1]` an image backbone whose global pool only sees the words: the ~half of
    each row that is padding never dilutes (mean) or wins (max) what the text says.

    A `Sequential` of the two so module paths stay `0.embedding`, `1.features.13`, ...; only the forward
    differs: the token ids are needed again at the pool to know where each text ends. `pool` is the task's
    choice; a backbone that sets `sequence_pool` (the bag of embeddings: "mean") keeps its own.
    """

    def __init__(self, embedding: TokenEmbeddingMap, backbone: nn.Module, pool: str = "mean"):
        super().__init__(embedding, backbone)
        self.split = _split_kind(backbone)
        self.pool = getattr(backbone, "sequence_pool", pool)
        if self.pool not in ("mean", "max"):
            raise ConfigError(f"text pooling must be mean or max, got {self.pool!r}")
        small_logits(backbone)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, backbone = self[0](tokens), self[1]
        if self.split == "whole":
            return backbone(x)
        features = _features(self.split, backbone, x)
        pooled = masked_pool(features, sequence_mask(tokens, features.shape[-1]), self.pool)
        return _head(self.split, backbone, pooled)


def small_logits(backbone: nn.Module, std: float = 0.01) -> None:
    """Start the classifier (the backbone's last Linear or Conv2d) at N(0, std), bias 0: small logits at step 0.

    MobileNetV2's and SqueezeNet's own classifier init. torchvision's EfficientNet draws it from U(±1/√classes)
    (the TF reference's rule, sized for 1000 classes): with 2 classes the first logits have a std of ~13 and the
    first epochs go to undoing that (rotten-tomatoes validation 0.639 with it, 0.730 with this; 3 epochs, seed 0).
    """
    last = [m for m in backbone.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if last:
        nn.init.normal_(last[-1].weight, 0.0, std)
        if last[-1].bias is not None:
            nn.init.zeros_(last[-1].bias)


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
                assert new.bias is not None  # replace_conv keeps the bias
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

    def final(self, default: int, along_width: bool = False) -> int:
        """The smallest map any downsampling layer produced: the final map's shorter side (or its width)."""
        return min((hw[1] if along_width else min(hw) for hw in self.outputs.values()), default=default)


def downsampling_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Strided convs and pools, in module order."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, DOWNSAMPLING) and max(_pair(m.stride)) > 1}


def relax_last_strides(model: nn.Module, height: int, width: int, min_final: int = 2,
                       channels: int | None = None) -> list[str]:
    """Set the last downsampling layers to stride 1 until the final map is at least `min_final` pixels.

    The small-input adaptation: late stages are cheap at low resolution, so keeping the stem's stride and
    relaxing the last downsampling costs far less than a stride-1 stem (measured on MobileNetV2 at 28 px:
    10.4 M vs 21.8 M MACs) while 28–32 px inputs still end on a 2×2 map, not 1×1.
    Sizes come from a real forward pass, so parallel branches (a ResNet block and its strided shortcut) are
    relaxed together, unpadded pools that would collapse a tiny map (SqueezeNet at 8 px) are relaxed too,
    and any architecture works without knowing its layout. Returns the relaxed layers' names.

    A map one pixel high (a text's sequence map) is first folded to one row (`fold_to_one_row`): it can only be
    downsampled along its width, and `min_final` then counts positions along the sequence.
    """
    one_row = height == 1
    if one_row:
        fold_to_one_row(model)
    layers = downsampling_layers(model)
    remaining = list(layers)
    channels = channels if channels is not None else _input_channels(model)
    changed: list[str] = []
    while True:
        probe = _probe(model, layers, channels, height, width)
        if probe.error is None and probe.final(width if one_row else min(height, width), one_row) >= min_final:
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


def fold_to_one_row(model: nn.Module) -> list[str]:
    """Make every 2-D conv and pool read a one-row map: kernel, stride, padding and dilation 1/0 along height.

    A `k×k` kernel on a one-pixel-high map would only ever multiply its middle row with data (the other rows
    see zero padding): dead weights that would be counted, pruned and stored. Folding sums the rows into one
    `1×k` kernel, which keeps the architecture's init scale for the smaller fan (a sum of k rows has k times
    the variance), and which computes exactly what the `k×k` kernel would on a map repeated along its height
    (away from its top and bottom edges).
    Returns the changed layers' names.
    """
    changed = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str):
                if max(_pair(m.kernel_size)[0], _pair(m.stride)[0]) == 1:
                    continue
            elif _pair(m.kernel_size)[0] == 1 and _pair(m.stride)[0] == 1 and _pair(m.padding)[0] == 0:
                continue
            with torch.no_grad():
                m.weight = nn.Parameter(m.weight.sum(dim=2, keepdim=True))
            m.kernel_size = (1, m.kernel_size[1])
            m.stride = (1, m.stride[1])
            m.dilation = (1, m.dilation[1])
            if not isinstance(m.padding, str):
                m.padding = (0, m.padding[1])
                m._reversed_padding_repeated_twice = [m.padding[1], m.padding[1], 0, 0]
            changed.append(name)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride, padding = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
            if kernel[0] == 1 and stride[0] == 1 and padding[0] == 0:
                continue
            m.kernel_size, m.stride, m.padding = (1, kernel[1]), (1, stride[1]), (0, padding[1])
            if isinstance(m, nn.MaxPool2d):
                m.dilation = (1, _pair(m.dilation)[1])
            changed.append(name)
    return changed


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
            probe.outputs[name] = cast("tuple[int, int]", tuple(out.shape[-2:]))   # [H, W] of a conv/pool output

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
    m: Any = layer   # a DOWNSAMPLING layer; torch types an nn.Module's attributes Tensor | Module
    stride = m.stride
    m.stride = (1, 1) if isinstance(stride, tuple) else 1
    if type(layer) not in DOWNSAMPLING or isinstance(m.padding, str):
        return
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        return
    kernel, padding = _pair(m.kernel_size), _pair(m.padding)
    dilation = _pair(layer.dilation) if isinstance(layer, nn.Conv2d) else (1, 1)
    same = tuple(max(p, d * (k - 1) // 2) for p, k, d in zip(padding, kernel, dilation))
    if same != padding:
        m.padding = same if isinstance(m.padding, tuple) or same[0] != same[1] else same[0]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ConfigError(f"{type(model).__name__} has no Conv2d to infer its input channels from; pass channels")
    return first.in_channels


def replace_conv(conv: nn.Conv2d, in_channels: int | None = None, stride: int | None = None) -> nn.Conv2d:
    """A fresh conv like `conv` with another input width or stride (weights re-initialised)."""
    # torch types conv sizes tuple[int, ...] (shared with Conv1d/Conv3d); a Conv2d's are pairs
    return nn.Conv2d(
        in_channels if in_channels is not None else conv.in_channels,
        conv.out_channels,
        cast(_Pair, conv.kernel_size),
        stride=stride if stride is not None else cast(_Pair, conv.stride),
        padding=cast("str | _Pair", conv.padding),
        dilation=cast(_Pair, conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
