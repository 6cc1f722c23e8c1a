"""Low-rank factorization: exact at full rank, really smaller at a params ratio, standard layers that reload."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.layers import TokenEmbeddingMap
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.counting import count_macs, count_params
from slimbench.deploy.structure import describe, load_into
from slimbench.methods import MethodContext, build_method
from slimbench.methods.lowrank import energy_rank, retained, svd_factorize, tucker2_factorize
from slimbench.tasks.base import InputSpec, Split, Task
from tests.conftest import method_context, train_tiny


def small_net(classes: int = 10) -> nn.Sequential:
    """k×k convs, a strided 1×1 conv, a depthwise conv and two Linear layers: every case the methods tell apart."""
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 48, 1, stride=2, padding=0), nn.BatchNorm2d(48), nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.ReLU(),                      # depthwise
        nn.Conv2d(48, 64, 3, padding=1, bias=True), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, classes),
    )


@pytest.fixture(scope="module")
def trained(task: Task) -> nn.Module:
    """small_net rather than tiny-cnn: it holds every kind of layer the factorizations tell apart."""
    return train_tiny(task, lambda: small_net(task.num_classes), epochs=3)


def make_ctx(task: Task, model: nn.Module, finetune=None) -> MethodContext:
    return method_context(task, model, finetune=finetune, fresh=lambda: small_net(task.num_classes))


def apply(name: str, model: nn.Module, task: Task, ctx_finetune=None, **params):  # noqa: ANN001, ANN201
    return build_method(name, params).apply(copy.deepcopy(model), make_ctx(task, model, ctx_finetune))


def no_finetune(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN201
    raise AssertionError("fine-tuning must not start")


# -- the decompositions are exact at full rank -------------------------------------------------------------
@pytest.mark.parametrize("layer,shape", [
    (nn.Linear(40, 30), (5, 40)),
    (nn.Linear(24, 64, bias=False), (5, 24)),
    (nn.Conv2d(16, 24, 1, stride=2, padding=1), (2, 16, 9, 9)),
    (nn.Conv1d(12, 20, 1), (3, 12, 7)),
])
def test_svd_at_full_rank_reproduces_the_layer(layer, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    full = min(layer.weight.shape[:2])
    pair = svd_factorize(layer, full)
    assert [type(m) for m in pair] == [type(layer)] * 2
    assert pair[0].bias is None and (pair[1].bias is None) == (layer.bias is None)
    with torch.no_grad():
        assert torch.allclose(pair(x), layer(x), atol=1e-5, rtol=0)
        truncated = svd_factorize(layer, full // 2)(x)
    assert (truncated - layer(x)).abs().max() > 1e-3    # a truncated rank really changes the output


@pytest.mark.parametrize("conv", [
    nn.Conv2d(8, 12, 3, stride=2, padding=1),
    nn.Conv2d(6, 10, (3, 5), padding=(2, 4), dilation=2, bias=False),
    nn.Conv2d(5, 7, 3, padding=1, padding_mode="reflect"),
])
def test_tucker_at_full_ranks_reproduces_the_conv(conv):
    torch.manual_seed(0)
    x = torch.randn(2, conv.in_channels, 11, 11)
    seq = tucker2_factorize(conv, conv.in_channels, conv.out_channels)
    kinds = [(m.kernel_size, m.stride) for m in seq]
    assert kinds == [((1, 1), (1, 1)), (conv.kernel_size, conv.stride), ((1, 1), (1, 1))]
    with torch.no_grad():
        assert torch.allclose(seq(x), conv(x), atol=1e-5, rtol=0)
        assert torch.allclose(tucker2_factorize(conv, None, conv.out_channels)(x), conv(x), atol=1e-5, rtol=0)


def test_energy_rank_is_the_smallest_rank_keeping_that_energy():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.5])   # squared: 16, 4, 1, 1, 0.25 of 22.25
    assert energy_rank(s, 0.7) == 1 and energy_rank(s, 0.89) == 2
    assert energy_rank(s, 0.9) == 3 and energy_rank(s, 1.0) == 5
    assert retained(s, 2) == pytest.approx(20 / 22.25)


# -- the methods -------------------------------------------------------------------------------------------
def test_svd_halves_the_factorized_layers_and_saves_macs(trained, task):
    out = apply("lowrank.svd", trained, task, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False)
    layers = {row["layer"]: row for row in out.details["layers"]}
    assert set(layers) == {"3", "12"}                     # the strided 1×1 conv and the hidden Linear
    assert out.details["skipped"] == {"14": "classifier (include_classifier: false)"}
    for name, row in layers.items():
        before = count_params(trained.get_submodule(name))[0]
        after = count_params(out.model.get_submodule(name))[0]
        assert (row["params_before"], row["params_after"]) == (before, after)
        assert after <= before / 2
    assert isinstance(out.model[3], nn.Sequential) and out.model[3][0].stride == (2, 2)
    assert type(out.model[8]) is nn.Conv2d and torch.equal(out.model[8].weight, trained[8].weight)  # k×k: Tucker's
    example = task.example_input(1)
    assert out.achieved["macs"] == count_macs(out.model, example) < count_macs(trained, example)
    assert out.compute == "physical" and out.achieved["factorized_params_ratio"] >= 2.0


def test_global_svd_allocation_spends_ranks_where_energy_is_and_keeps_the_shared_budget(trained, task):
    """Two layers, one with a spectrum that falls fast: the shared budget gives it a lower rank than the flat one,
    keeps more total energy than halving each layer, and the factorized layers together are at most half."""
    from slimbench.methods.lowrank import global_svd_ranks

    fast, flat = torch.tensor([10.0, 1.0, 0.1, 0.01] + [0.001] * 28), torch.ones(32)
    shapes = {"fast": (32, 32, False, 32 * 32), "flat": (32, 32, False, 32 * 32)}
    ranks = global_svd_ranks({"fast": fast, "flat": flat}, shapes, 2.0)
    assert ranks["fast"] < 8 < ranks["flat"]
    assert sum(r * 64 for r in ranks.values()) <= 32 * 32
    per_layer = retained(fast, 8) + retained(flat, 8)            # params_ratio 2 per layer: rank 8 each
    assert retained(fast, ranks["fast"]) + retained(flat, ranks["flat"]) > per_layer

    out = apply("lowrank.svd", trained, task, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False,
                allocation="global")
    before = sum(row["params_before"] for row in out.details["layers"])
    after = sum(row["params_after"] for row in out.details["layers"])
    assert after <= before / 2 and out.achieved["factorized_params_ratio"] >= 2.0
    assert {row["layer"] for row in out.details["layers"]} == {"3", "12"}
    with pytest.raises(ConfigError, match="allocation 'global' shares a params_ratio budget"):
        build_method("lowrank.svd", {"energy": 0.9, "allocation": "global"})


def test_whitened_svd_is_exact_at_full_rank_and_loses_less_output_on_data_when_truncated(trained, task):
    """W = U·S·(Vh·L⁻¹) exactly, so full rank reproduces the layer; truncated, it discards the directions the
    training inputs use least, so the layer's output error on data is below the plain SVD's at the same rank."""
    from slimbench.methods.lowrank import input_cholesky

    method = build_method("lowrank.svd", {"whiten": True, "params_ratio": 2.0})
    layer = trained[3]                                   # the strided 1×1 conv, 24 → 48
    chol = input_cholesky(trained, [("3", layer)], task.calibration_dataloader(256))["3"]
    x = torch.relu(trained[1](trained[0](task.val.x[:200])))    # the layer's real inputs
    full = svd_factorize(layer, 24, method.factors(layer, chol))
    assert torch.allclose(full(x), layer(x), atol=1e-5)
    errors = {}
    for name, factors in (("plain", None), ("whitened", method.factors(layer, chol))):
        errors[name] = (svd_factorize(layer, 6, factors)(x) - layer(x)).norm().item()
    assert errors["whitened"] < 0.9 * errors["plain"], errors
    out = apply("lowrank.svd", trained, task, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False,
                whiten=True, allocation="global")
    assert out.achieved["factorized_params_ratio"] >= 2.0


def test_tucker_halves_dense_kxk_convs_and_leaves_depthwise(trained, task):
    out = apply("lowrank.tucker", trained, task, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False)
    layers = {row["layer"]: row for row in out.details["layers"]}
    assert set(layers) == {"0", "8"}                      # never the depthwise conv "6"
    assert type(out.model[6]) is nn.Conv2d and out.model[6].groups == 48
    for name in layers:
        seq = out.model.get_submodule(name)
        assert isinstance(seq, nn.Sequential) and all(type(m) is nn.Conv2d for m in seq)
        assert count_params(seq)[0] <= count_params(trained.get_submodule(name))[0] / 2
    example = task.example_input(1)
    assert count_macs(out.model, example) < count_macs(trained, example)
    # the 1-channel stem has no input mode to compress: its Tucker form is the core then one 1×1
    assert len(out.model[0]) == 2 and layers["0"]["rank_in"] == 1


@pytest.mark.parametrize("name", ["lowrank.svd", "lowrank.tucker"])
def test_fine_tuned_factorized_model_reloads_to_identical_outputs(name, trained, task):
    out = apply(name, trained, task, params_ratio=2.0)
    buf = io.BytesIO()
    torch.save({"structure": describe(out.model), "state": out.model.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = load_into(small_net(task.num_classes), saved["structure"], saved["state"]).eval()
    x = task.val.x[:32]
    with torch.no_grad():
        assert torch.equal(fresh(x), out.model.eval()(x))
    assert count_params(fresh) == count_params(out.model)


def test_energy_rule_keeps_at_least_that_energy(trained, task):
    out = apply("lowrank.svd", trained, task, ctx_finetune=no_finetune, energy=0.8, include_classifier=True,
                finetune=False)
    rows = out.details["layers"]
    assert rows and out.requested == {"energy": 0.8}
    for row in rows:
        s = torch.linalg.svdvals(trained.get_submodule(row["layer"]).weight.flatten(1).double())
        assert row["energy_kept"] >= 0.8 > retained(s, row["rank"] - 1)   # the smallest such rank
    considered = ({r["layer"] for r in rows}
                  | {n for n, why in out.details["skipped"].items() if "classifier" not in why})
    assert "14" in considered


def test_nothing_to_factorize_is_refused_before_fine_tuning(task):
    # a 1×1 conv too narrow to shrink (1→4), a depthwise conv, and the classifier
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(144, 10))
    for name in ("lowrank.svd", "lowrank.tucker"):
        with pytest.raises(NotApplicableError, match="nothing to factorize"):
            apply(name, model, task, ctx_finetune=no_finetune, params_ratio=2.0)


def test_text_embedding_is_never_factorized():
    gen = torch.Generator().manual_seed(0)
    splits = [Split(torch.randint(1, 300, (64, 12), generator=gen), torch.randint(0, 2, (64,), generator=gen))
              for _ in range(3)]
    task = Task("tokens", InputSpec(1, 12, 32, modality="text", token_vocab=300), ["neg", "pos"], *splits)
    model = nn.Sequential(TokenEmbeddingMap(300, 32), nn.Flatten(), nn.Linear(12 * 32, 128), nn.ReLU(),
                          nn.Linear(128, 2))
    out = apply("lowrank.svd", model, task, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False)
    assert [r["layer"] for r in out.details["layers"]] == ["2"]
    assert type(out.model[0].embedding) is nn.Embedding
    assert torch.equal(out.model[0].embedding.weight, model[0].embedding.weight)


def test_mobilenetv2_factorizes_its_1x1_convs_and_only_the_stem_for_tucker():
    model = build_model("mobilenetv2", InputSpec(1, 28, 28), 10).eval()
    view = Task("x", InputSpec(1, 28, 28), [str(i) for i in range(10)],
                *[Split(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)) for _ in range(3)])
    svd = apply("lowrank.svd", model, view, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False)
    tucker = apply("lowrank.tucker", model, view, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False)
    ones = [n for n, m in model.named_modules() if type(m) is nn.Conv2d and m.kernel_size == (1, 1)]
    assert len(svd.details["layers"]) + len(svd.details["skipped"]) == len(ones) + 1   # + the Linear classifier
    assert [r["layer"] for r in tucker.details["layers"]] == ["features.0.0"]   # every other k×k conv is depthwise


def test_factorizing_a_sliver_of_the_compute_claims_no_faster_compute():
    model = build_model("resnet18", InputSpec(1, 28, 28), 10).eval()   # SVD finds only the three 1×1 shortcuts
    view = Task("x", InputSpec(1, 28, 28), [str(i) for i in range(10)],
                *[Split(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)) for _ in range(3)])
    out = apply("lowrank.svd", model, view, ctx_finetune=no_finetune, params_ratio=2.0, finetune=False)
    macs = out.details["macs"]
    assert len(out.details["layers"]) == 3 and 0.98 * macs["before"] < macs["after"] < macs["before"]
    assert out.compute == "dense"


@pytest.mark.parametrize("name", ["lowrank.svd", "lowrank.tucker"])
@pytest.mark.parametrize("params,match", [
    ({"energy": 0.9, "params_ratio": 2.0}, "not both"),
    ({"energy": 1.5}, "energy"),
    ({"energy": 0.0}, "energy"),
    ({"params_ratio": 1.0}, "params_ratio"),
])
def test_bad_parameters_are_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match):
        build_method(name, params)


def test_lowrank_methods_take_and_leave_float_models():
    for name in ("lowrank.svd", "lowrank.tucker"):
        method = build_method(name)
        assert method.consumes == frozenset({"float"}) and method.produces == "float"
        assert method.rule == {"params_ratio": 2.0}
