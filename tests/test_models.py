"""The model zoo: published ImageNet sizes, every model on every small input spec, timm names, clear errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never try to download in tests

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import models as tvm  # noqa: E402

from slimbench.baselines import MODELS, build_model  # noqa: E402
from slimbench.baselines.layers import relax_last_strides  # noqa: E402
from slimbench.baselines.timm_models import UnknownTimmArchError  # noqa: E402
from slimbench.core.errors import ConfigError, UnknownNameError  # noqa: E402
from slimbench.deploy import counting  # noqa: E402
from slimbench.tasks.base import InputSpec  # noqa: E402

IMAGENET = InputSpec(3, 224, 224)
SMALL_SPECS = {
    "gray28": InputSpec(1, 28, 28),
    "rgb32": InputSpec(3, 32, 32),
    "gray8": InputSpec(1, 8, 8),
    "text64x32": InputSpec(1, 64, 32, modality="text", token_vocab=500),
}
ZOO = ["mobilenetv2", "squeezenet", "efficientnet_b0", "resnet18", "timm/resnet18"]


def count_params(model: nn.Module) -> int:
    return counting.count_params(model)[0]


def example_batch(spec: InputSpec, batch: int = 2) -> torch.Tensor:
    if spec.token_vocab:
        return torch.randint(1, spec.token_vocab, (batch, *spec.input_shape))
    return torch.randn(batch, *spec.input_shape)


def final_map(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Smallest map any spatial (kernel > 1) conv or pool produces: the map the classifier pools over."""
    sizes: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: sizes.append(tuple(out.shape[-2:])))
             for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and m.kernel_size not in (1, (1, 1))]
    model(x)
    for h in hooks:
        h.remove()
    return min(sizes, key=min)


@pytest.mark.parametrize(("name", "params", "published_params", "published_mmacs"), [
    ("mobilenetv2", {}, 3_504_872, 300.8),
    ("squeezenet", {}, 1_235_496, 349.2),
    ("efficientnet_b0", {}, 5_288_548, 385.8),
    ("resnet18", {}, 11_689_512, 1814.1),
    ("timm/resnet18", {}, 11_689_512, 1814.1),
    ("squeezenet", {"version": 1.0}, 1_248_424, 818.9),
])
def test_imagenet_configuration_has_published_size(name: str, params: dict, published_params: int,
                                                   published_mmacs: float) -> None:
    model = build_model(name, IMAGENET, 1000, params)
    assert count_params(model) == published_params
    assert round(counting.count_macs(model, torch.randn(1, 3, 224, 224)) / 1e6, 1) == published_mmacs


def test_efficientnet_multipliers_scale_like_the_published_family() -> None:
    b1 = build_model("efficientnet_b0", IMAGENET, 1000, {"depth_mult": 1.1})
    assert count_params(b1) == count_params(tvm.efficientnet_b1()) == 7_794_184  # B1 = B0 with depth × 1.1
    narrow = build_model("efficientnet_b0", InputSpec(1, 28, 28), 10, {"width_mult": 0.5})
    assert count_params(narrow) < count_params(build_model("efficientnet_b0", InputSpec(1, 28, 28), 10)) / 2
    with pytest.raises(ConfigError, match="width_mult"):
        build_model("efficientnet_b0", IMAGENET, 10, {"width_mult": 0})


@pytest.mark.parametrize("spec_name", SMALL_SPECS)
@pytest.mark.parametrize("name", ZOO)
def test_small_inputs_train_and_keep_a_large_enough_final_map(name: str, spec_name: str) -> None:
    spec = SMALL_SPECS[spec_name]
    torch.manual_seed(0)
    model = build_model(name, spec, 7)
    x = example_batch(spec)
    assert x.dtype == spec.input_dtype
    model.train()
    logits = model(x)
    assert logits.shape == (2, 7)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        h, w = final_map(model, x)
    if spec.token_vocab:   # text is a one-row map (embedding as channels over the sequence): its length is what stays
        assert h == 1 and w >= 2, (name, spec_name, (h, w))
    else:
        assert min(h, w) >= 2, (name, spec_name, (h, w))


def test_text_models_own_their_embedding() -> None:
    spec = SMALL_SPECS["text64x32"]
    model = build_model("timm/resnet18", spec, 2)
    assert isinstance(model[0].embedding, nn.Embedding) and model[0].embedding.num_embeddings == 500


def test_mobilenetv2_small_input_relaxation_is_pinned() -> None:
    """The layers relaxed before the rule learned pooling and branches; cached baselines depend on it."""
    expected = {(28, 28): ["features.14.conv.1.0"], (32, 32): ["features.14.conv.1.0"],
                (64, 32): ["features.14.conv.1.0"], (48, 48): [],
                (16, 16): ["features.14.conv.1.0", "features.7.conv.1.0"],
                (8, 8): ["features.14.conv.1.0", "features.7.conv.1.0", "features.4.conv.1.0"]}
    for (h, w), names in expected.items():
        assert relax_last_strides(tvm.mobilenet_v2(width_mult=0.5), h, w) == names


def test_relaxation_handles_pools_and_residual_shortcuts() -> None:
    squeeze = tvm.squeezenet1_1()
    assert relax_last_strides(squeeze, 8, 8) == ["features.8", "features.5", "features.2"]  # strided max-pools
    assert squeeze.features[2].stride == 1 and squeeze.features[2].padding == 1  # a relaxed pool keeps the size
    resnet = tvm.resnet18()
    assert relax_last_strides(resnet, 28, 28) == ["layer4.0.downsample.0", "layer4.0.conv1"]  # both branches
    assert build_model("resnet18", IMAGENET, 10).layer4[0].conv1.stride == (2, 2)  # large inputs untouched


def test_relaxation_says_when_an_input_is_too_small() -> None:
    with pytest.raises(ConfigError, match="cannot run on 1×3×3"):
        relax_last_strides(nn.Sequential(nn.Conv2d(1, 4, 5), nn.Flatten()), 3, 3)


def test_squeezenet_classifier_follows_params() -> None:
    model = build_model("squeezenet", SMALL_SPECS["gray28"], 5, {"dropout": 0.3})
    dropout, final_conv = model.classifier[0], model.classifier[1]
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.3
    assert final_conv.out_channels == 5 and model.features[0].in_channels == 1
    assert isinstance(model.classifier[2], nn.ReLU)  # the paper's classifier: dropout, 1×1 conv, ReLU, pool
    linear_logits = build_model("squeezenet", SMALL_SPECS["gray28"], 5, {"final_relu": False})
    assert isinstance(linear_logits.classifier[2], nn.Identity)
    assert (linear_logits.eval()(torch.randn(64, 1, 28, 28)) < 0).any()
    assert build_model("squeezenet", IMAGENET, 10, {"version": 1.0}).features[0].kernel_size == (7, 7)
    with pytest.raises(ConfigError, match="version must be 1.0 or 1.1"):
        build_model("squeezenet", IMAGENET, 10, {"version": 1.2})


def test_gray_stem_keeps_the_architecture_init_scale() -> None:
    torch.manual_seed(0)
    gray = build_model("squeezenet", SMALL_SPECS["gray28"], 10).features[0].weight
    torch.manual_seed(0)
    rgb = tvm.squeezenet1_1(num_classes=10).features[0].weight
    assert torch.allclose(gray, rgb.sum(dim=1, keepdim=True))


def test_timm_params_reach_timm_and_bad_ones_are_named() -> None:
    model = build_model("timm/resnet18", SMALL_SPECS["gray28"], 3, {"drop_rate": 0.25})
    assert model.drop_rate == 0.25 and model.conv1.in_channels == 1
    with pytest.raises(ConfigError, match="rejected parameters \\['no_such_param'\\]"):
        build_model("timm/resnet18", SMALL_SPECS["gray28"], 3, {"no_such_param": 1})
    with pytest.raises(ConfigError, match="pretrained cannot be set"):
        build_model("timm/resnet18", SMALL_SPECS["gray28"], 3, {"pretrained": True})


def test_timm_model_with_fixed_input_size_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match="img_size"):
        build_model("timm/vit_tiny_patch16_224", SMALL_SPECS["gray28"], 3)
    vit = build_model("timm/vit_tiny_patch16_224", SMALL_SPECS["gray28"], 3, {"img_size": 28, "patch_size": 4})
    assert vit(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_unknown_names_list_the_valid_choices() -> None:
    with pytest.raises(UnknownTimmArchError, match="close matches: resnet18,") as exc:
        build_model("timm/resnet181", SMALL_SPECS["gray28"], 3)
    assert isinstance(exc.value, UnknownNameError) and "resnet18d" in str(exc.value)
    with pytest.raises(UnknownNameError) as exc:
        build_model("resnet", SMALL_SPECS["gray28"], 3)
    for name in ("mobilenetv2", "squeezenet", "efficientnet_b0", "resnet18", "tiny-cnn"):
        assert name in str(exc.value) and name in MODELS
