"""Weight sharing: k-means codebooks with fine-tuned centroids, cross-layer ties, and their real stored forms."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import fit
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.packing import Packed, pack_state_dict, unpack_state_dict
from slimbench.deploy.structure import describe, load_into
from slimbench.methods import MethodContext, build_method
from slimbench.methods.distillation import validation_accuracy
from slimbench.methods.sharing import SharedWeights, repeated_runs, share_weights
from slimbench.tasks.base import InputSpec, Task
from tests.conftest import method_context

FINETUNE = TrainConfig(epochs=1, batch_size=64, lr=0.002, channels_last=False)
# the `trained` fixture's tiny-cnn: ~43k weights, nearly all in layers big enough for a codebook to pay off
TRAINED = {"width": 48, "epochs": 6}


def make_ctx(task: Task, model: nn.Module, finetune=None) -> MethodContext:
    return method_context(task, model, finetune=finetune,
                          fresh=lambda: build_model("tiny-cnn", task.spec, task.num_classes, {"width": 48}))


def stored_bytes(model: nn.Module) -> int:
    return pack_state_dict(model.state_dict()).nbytes


def test_centroid_gradients_are_summed_per_cluster():
    layer = nn.Linear(6, 4, bias=False)
    index = torch.randint(0, 3, (4, 6))
    parametrize.register_parametrization(layer, "weight", SharedWeights(torch.tensor([-1.0, 0.5, 2.0]), index, False))
    upstream = torch.randn(4, 6)
    (layer.weight * upstream).sum().backward()
    codebook = layer.parametrizations.weight[0].codebook
    expected = torch.zeros(3).index_add_(0, index.reshape(-1), upstream.reshape(-1))
    assert torch.allclose(codebook.grad, expected)
    assert torch.equal(layer.weight, torch.tensor([-1.0, 0.5, 2.0])[index])


def test_centroid_finetuning_keeps_the_assignment(task, trained):
    """A real fine-tune moves the centroids but never a weight from its cluster: ≤ k values per layer after it."""
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def finetune(model, module=None, cfg=None):
        def snapshot():
            return {name: (m.parametrizations.weight[0].index.clone(),
                           m.parametrizations.weight[0].codebook.detach().clone())
                    for name, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}
        seen["before"] = snapshot()
        out = fit(model, task, FINETUNE, seed=0, progress=False).model
        seen["after"] = snapshot()
        return out

    out = build_method("share.kmeans", {"clusters": 8}).apply(copy.deepcopy(trained), make_ctx(task, trained, finetune))
    assert set(seen["before"]) == {"0", "3", "8"} == set(out.details["clustered"])
    for name, (index, codebook) in seen["after"].items():
        index0, codebook0 = seen["before"][name]
        assert torch.equal(index, index0)                        # the assignment is fixed
        assert not torch.equal(codebook, codebook0)              # the centroids were trained
        weight = out.model.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter) and not parametrize.is_parametrized(out.model.get_submodule(name))
        assert torch.equal(weight, codebook[index])              # the weights are exactly codebook values
        assert len(torch.unique(weight)) <= 8
    assert "parametrizations" not in "".join(out.model.state_dict())   # a plain state dict


def test_16_clusters_store_over_6x_smaller_and_keep_accuracy(task, trained):
    out = build_method("share.kmeans", {"clusters": 16}).apply(copy.deepcopy(trained), make_ctx(task, trained))
    for name in out.details["clustered"]:
        assert len(torch.unique(out.model.get_submodule(name).weight)) <= 16
    assert out.details["kept_fp32"] == {}
    ratio = stored_bytes(trained) / stored_bytes(out.model)
    assert ratio >= 6.0, ratio
    formats = pack_state_dict(out.model.state_dict()).formats()
    assert formats.get("codebook", 0) + formats.get("huffman", 0) == 3
    before, after = validation_accuracy(trained, task), validation_accuracy(out.model, task)
    assert after >= before - 0.03, (before, after)


def test_recurrent_matrices_are_clustered_and_stored_as_codebooks(task):
    """A GRU's input and hidden-state matrices hold most of its weights: they get codebooks like any layer."""
    gru = build_model("gru", task.spec, task.num_classes, {"hidden": 32})
    out = build_method("share.kmeans", {"clusters": 16}).apply(copy.deepcopy(gru), make_ctx(task, gru))
    recurrent = {"features.gru.weight_ih_l0", "features.gru.weight_hh_l0"}
    assert recurrent <= set(out.details["clustered"]), out.details
    assert not any(name.startswith("features.gru.weight") for name in out.details["kept_fp32"])
    rnn = out.model.get_submodule("features.gru")
    for param in ("weight_ih_l0", "weight_hh_l0"):
        weight = getattr(rnn, param)
        assert isinstance(weight, nn.Parameter) and len(torch.unique(weight)) <= 16
    assert out.achieved["clustered_share"] > 0.9
    packed = pack_state_dict(out.model.state_dict())
    assert packed.formats().get("codebook", 0) + packed.formats().get("huffman", 0) >= 3
    assert stored_bytes(gru) / stored_bytes(out.model) >= 4.0
    out.model.eval()(task.val.x[:4])   # the recurrent kernel runs on the plain clustered weights


def test_pruned_zeros_stay_zero_outside_the_clusters(task, trained):
    model = copy.deepcopy(trained)
    ctx = make_ctx(task, trained)
    pruned = build_method("prune.magnitude", {"sparsity": 0.8, "finetune": False}).apply(model, ctx).model
    zeros = {n: (pruned.get_submodule(n).weight == 0).clone() for n in ("0", "3", "8")}
    out = build_method("share.kmeans", {"clusters": 16}).apply(pruned, ctx)
    for name, mask in zeros.items():
        weight = out.model.get_submodule(name).weight
        assert torch.equal(weight == 0, mask)                    # pruned stays pruned, nothing else becomes zero
        assert len(torch.unique(weight[weight != 0])) <= 16
        assert out.details["clustered"][name]["zeros_kept"] == int(mask.sum())
    packed = pack_state_dict(out.model.state_dict())
    assert packed.meta["3.weight"]["format"] in ("relative_huffman", "relative_codebook")   # 82 % zeros there
    assert stored_bytes(trained) / packed.nbytes >= 12   # mask + ~3.5-bit codes; biases and BN stay fp32


def test_depthwise_and_tiny_layers_follow_their_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.Conv2d(32, 32, 3, groups=32), nn.Conv2d(32, 64, 1),
                          nn.Flatten(), nn.Linear(64, 3))
    def kmeans(**params):
        method = build_method("share.kmeans", {"clusters": 4, "finetune": False, **params})
        return method.apply(copy.deepcopy(model), None)

    out = kmeans(min_numel=200)
    assert out.details["kept_fp32"] == {"4": "192 weights < min_numel 200"}
    assert {n: c["clusters"] for n, c in out.details["clustered"].items()} == {"0": 4, "1": 4, "2": 4}
    out = kmeans(depthwise_clusters=32, min_numel=0)
    assert out.details["clustered"]["1"]["clusters"] == 32 and out.details["clustered"]["2"]["clusters"] == 4
    assert len(torch.unique(out.model[1].weight)) == 32 and len(torch.unique(out.model[2].weight)) == 4
    out = kmeans(skip_depthwise=True, min_numel=0)
    assert out.details["kept_fp32"] == {"1": "depthwise (skip_depthwise)"}
    assert torch.equal(out.model[1].weight, model[1].weight)


def test_linear_init_keeps_outliers_density_init_fits_the_bulk():
    """Han et al.'s trade-off: linear init spends a centroid on a rare large weight, density init does not."""
    torch.manual_seed(0)
    layer = nn.Linear(1000, 10)
    with torch.no_grad():
        layer.weight[0, 0] = 5.0
    lin, dens = copy.deepcopy(layer), copy.deepcopy(layer)
    share_weights(lin, 4, "linear", keep_zeros=True)
    share_weights(dens, 4, "density", keep_zeros=True)
    assert float(lin.weight.detach().max()) == pytest.approx(5.0) and float(dens.weight.detach().max()) < 1.0
    bulk = torch.ones_like(layer.weight, dtype=torch.bool)
    bulk[0, 0] = False
    with torch.no_grad():
        err_lin = float((lin.weight - layer.weight)[bulk].pow(2).mean())
        err_dens = float((dens.weight - layer.weight)[bulk].pow(2).mean())
    assert err_dens < 0.8 * err_lin, (err_dens, err_lin)   # measured: 2.3e-5 vs 3.8e-5


@pytest.mark.parametrize("params, match", [
    ({"clusters": 1}, "clusters must be an integer in 2..256"),
    ({"clusters": 300}, "clusters must be an integer in 2..256"),
    ({"depthwise_clusters": 512}, "depthwise_clusters must be"),
    ({"skip_depthwise": True, "depthwise_clusters": 64}, "set one of them"),
    ({"min_numel": -1}, "min_numel"),
    ({"init": "random"}, "must be one of"),
])
def test_bad_kmeans_parameters_fail_when_the_suite_is_read(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("share.kmeans", params)


# -- cross-layer tying --------------------------------------------------------------------------------------
def block(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())


def repeated_net(classes: int = 10) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), block(16), block(16), block(16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def test_mobilenetv2_runs_are_the_repeated_blocks_of_its_stages():
    model = build_model("mobilenetv2", InputSpec(1, 28, 28), 10, {})
    assert repeated_runs(model) == [["features.5", "features.6"], ["features.8", "features.9", "features.10"],
                                    ["features.12", "features.13"], ["features.15", "features.16"]]
    before = sum(p.numel() for p in model.parameters())
    out = build_method("share.cross_layer", {"stages": [1], "finetune": False}).apply(model, None)
    assert out.details["tied_blocks"] == [["features.8", "features.9", "features.10"]]
    block_weights = sum(p.numel() for n, p in model.features[8].named_parameters() if p.dim() > 1)
    assert before - sum(p.numel() for p in out.model.parameters()) == 2 * block_weights   # two copies gone
    assert out.model.features[10].conv[0][0].weight is out.model.features[8].conv[0][0].weight
    assert out.model.features[10].conv[0][1].weight is not out.model.features[8].conv[0][1].weight   # own BN
    with pytest.raises(NotApplicableError, match="stages \\[7\\] do not exist"):
        build_method("share.cross_layer", {"stages": [7], "finetune": False}).apply(model, None)
    # the tied model reloads from a weights_only file into a fresh MobileNetV2, ties and outputs intact
    packed = pack_state_dict(out.model.state_dict())
    assert packed.formats()["alias"] == 2 * 3                  # expand, depthwise, project weight × 2 blocks
    buf = io.BytesIO()
    torch.save({"packed": packed.to_payload(), "structure": describe(out.model)}, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    fresh = load_into(build_model("mobilenetv2", InputSpec(1, 28, 28), 10, {}), payload["structure"],
                      unpack_state_dict(Packed.from_payload(payload["packed"])))
    assert fresh.features[9].conv[2].weight is fresh.features[8].conv[2].weight
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(fresh.eval()(x), out.model.eval()(x))


def test_tied_layers_train_together_and_share_storage_after_reload(task, tmp_path):
    model = repeated_net(task.num_classes)
    before = sum(p.numel() for p in model.parameters())
    anchor = model[1][0].weight.detach().clone()
    out = build_method("share.cross_layer", {}).apply(model, make_ctx(task, model))
    tied = out.model
    assert out.details["tied_blocks"] == [["1", "2", "3"]]
    assert ["1.0.weight", "2.0.weight", "3.0.weight"] in out.details["tied_parameters"]
    assert before - sum(p.numel() for p in tied.parameters()) == 2 * (16 * 16 * 9 + 16)
    names = [n for n, _ in tied.named_parameters(remove_duplicate=False)]
    assert "3.0.weight" in names and "3.0.weight" not in [n for n, _ in tied.named_parameters()]
    assert tied[1][0].weight is tied[3][0].weight                  # still one tensor after fine-tuning
    assert not torch.equal(tied[1][0].weight.detach(), anchor)      # which fine-tuning trained
    structure = describe(tied)
    assert ["1.0.weight", "2.0.weight", "3.0.weight"] in structure["ties"]
    packed = pack_state_dict(tied.state_dict())
    assert packed.formats()["alias"] == 4                    # two weights and two biases stored by reference
    untied = pack_state_dict({k: v.clone() for k, v in tied.state_dict().items()})
    assert untied.nbytes - packed.nbytes == 2 * (16 * 16 * 9 + 16) * 4
    path = tmp_path / "model.pt"
    torch.save({"packed": packed.to_payload(), "structure": structure}, path)
    payload = torch.load(path, weights_only=True)
    fresh = load_into(repeated_net(task.num_classes), payload["structure"],
                      unpack_state_dict(Packed.from_payload(payload["packed"])))
    assert fresh[1][0].weight is fresh[2][0].weight is fresh[3][0].weight
    assert fresh[1][1].weight is not fresh[2][1].weight
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in tied.parameters())
    x = task.example_input(8)
    assert torch.equal(fresh.eval()(x), tied.eval()(x))


def test_cross_layer_refuses_models_without_repeated_blocks(task, trained):
    with pytest.raises(NotApplicableError, match="no consecutive blocks"):
        build_method("share.cross_layer", {}).apply(copy.deepcopy(trained), None)
    for params in ({"group_size": 1}, {"stages": []}, {"stages": [0, 0]}, {"stages": [-1]}):
        with pytest.raises(ConfigError):
            build_method("share.cross_layer", params)


def test_group_size_splits_a_run_into_shared_sets():
    model = nn.Sequential(*[block(8) for _ in range(5)])
    out = build_method("share.cross_layer", {"group_size": 2, "finetune": False}).apply(model, None)
    assert out.details["tied_blocks"] == [["0", "1"], ["2", "3"]]
    assert model[0][0].weight is model[1][0].weight and model[2][0].weight is model[3][0].weight
    assert model[1][0].weight is not model[2][0].weight and model[4][0].weight is not model[3][0].weight


def test_every_recurrent_matrix_is_clustered_and_a_models_own_parametrizations_stay(task):
    class Projected(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 32, proj_size=16, bidirectional=True, batch_first=True)
            self.head = nn.Linear(32, 24)
            self.extra = nn.Linear(24, 24)
            parametrize.register_parametrization(self.extra, "bias", _Doubled())

    model = Projected()
    matrices = {f"rnn.{n}" for n, p in model.rnn.named_parameters() if p.dim() == 2}
    assert any(".weight_hr_l0" in m for m in matrices) and any("_reverse" in m for m in matrices)
    out = build_method("share.kmeans", {"clusters": 8, "finetune": False}).apply(model, make_ctx(task, model))
    assert matrices <= set(out.details["clustered"]), out.details
    assert not any(name.startswith("rnn.") for name in out.details["kept_fp32"])
    for name in matrices:
        weight = getattr(out.model.rnn, name.removeprefix("rnn."))
        assert isinstance(weight, nn.Parameter) and len(torch.unique(weight)) <= 8
    assert parametrize.is_parametrized(out.model.extra, "bias")   # what the method did not add is not its to remove
    assert not parametrize.is_parametrized(out.model.rnn)


class _Doubled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x
