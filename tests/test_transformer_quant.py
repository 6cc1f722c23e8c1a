"""Wanda, GPTQ / round-to-nearest and SmoothQuant on a tiny ViT: each method's defining property, measured.

- prune.wanda: the exact N:M pattern, the activation-weighted criterion, the N:M storage format decoded back;
- quant.gptq / quant.rtn: int4 codes really packed two to a byte in MatMulNBits, reloaded from the stored form,
  ONNX Runtime's output equal to the dequantized torch model's, GPTQ's layer error below round-to-nearest's;
- quant.smoothquant: the smoothed float model computes the same function, and the deployed one runs int8 kernels.
"""

from __future__ import annotations

import copy
import io
import math
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from slimbench.baselines import build_model
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.matmul_nbits import nbits_weights
from slimbench.deploy.onnx_export import OnnxModel, onnx_from_payload
from slimbench.deploy.runtimes import stored_form
from slimbench.harness.measure.evidence import compute_evidence, storage_evidence
from slimbench.harness.report.low_bit import packed_bits_per_weight
from slimbench.methods import build_method
from slimbench.methods.gptq import gptq, reconstruction_error, rtn
from slimbench.methods.layer_inputs import InputStats
from slimbench.methods.smoothquant import norm_consumers, smooth
from slimbench.methods.wanda import is_nm, nm_decode, nm_encode, nm_mask, wanda_scores
from slimbench.tasks.base import InputSpec
from tests.conftest import method_context, train_tiny

torch.set_num_threads(1)
VIT = {"dim": 32, "depth": 2, "heads": 2}


@pytest.fixture(scope="module")
def vit(task):  # noqa: ANN001, ANN201
    return train_tiny(task, lambda: build_model("vit", task.spec, task.num_classes, VIT), epochs=3)


def run(name: str, model: nn.Module, task, **params):  # noqa: ANN001, ANN201
    return build_method(name, params).apply(copy.deepcopy(model), method_context(task, model))


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


# -- Wanda ---------------------------------------------------------------------------------------------------
def test_wanda_two_four_keeps_exactly_two_of_every_four_weights_per_row_and_stores_them_so(vit, task):
    out = run("prune.wanda", vit, task, pattern="n:m", calibration_samples=64)
    pruned = {n: m for n, m in linears(out.model).items() if n != "head"}
    for name, layer in pruned.items():
        w = layer.weight.detach()
        groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
        assert bool((groups == 2).all()), name          # exactly 2:4 (no group of a trained layer is all zeros)
    assert torch.equal(out.model.head.weight, vit.head.weight)        # the classifier stays dense
    assert out.achieved["layer_sparsity"] == 0.5 and out.achieved["nm_pattern"] is True
    assert out.compute == "simulated" and "no N:M sparse kernel on this CPU" in out.details["kernels"]
    storage = out.details["nm_storage"]
    numel = sum(m.weight.numel() for m in pruned.values())
    assert storage["values_bytes"] == numel // 2 * 4                  # the kept half, float32
    assert storage["index_bytes"] == math.ceil(numel // 2 * 2 / 8)    # 2 bits per kept value
    assert storage["ratio"] == pytest.approx(32 / 17, abs=0.01)


def test_wanda_unstructured_prunes_each_row_to_the_sparsity(vit, task):
    out = run("prune.wanda", vit, task, sparsity=0.25, calibration_samples=64)
    for name, layer in linears(out.model).items():
        if name != "head":
            per_row = (layer.weight == 0).sum(1)
            assert bool((per_row == round(0.25 * layer.in_features)).all()), name
    assert out.achieved["layer_sparsity"] == 0.25


def test_wanda_scores_weights_by_their_input_activations_not_their_magnitude_alone():
    weight = torch.tensor([[0.1, 1.0, 0.9, 0.8]])
    stats = InputStats(4)
    stats.add(torch.tensor([[100.0, 1.0, 1.0, 1.0]]))      # the small weight reads a large input
    keep = nm_mask(wanda_scores(weight, stats), 2, 4)
    assert keep.tolist() == [[True, True, False, False]]   # magnitude alone would drop 0.1 and keep 1.0, 0.9


def test_nm_format_decodes_to_the_weights_also_for_groups_with_fewer_nonzeros():
    w = torch.tensor([[0.0, 0.0, 0.0, 3.0, 1.0, 0.0, 2.0, 0.0]])
    assert is_nm(w, 2, 4) and not is_nm(torch.ones(1, 8), 2, 4)
    assert torch.equal(nm_decode(nm_encode(w, 2, 4), (1, 8), 2, 4), w)


def test_wanda_refuses_a_pattern_its_sparsity_contradicts():
    with pytest.raises(ConfigError, match="contradicts 2:4"):
        build_method("prune.wanda", {"pattern": "n:m", "sparsity": 0.7})


# -- GPTQ and round-to-nearest ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int4(vit, task):  # noqa: ANN001, ANN201
    return run("quant.gptq", vit, task, bits=4, group_size=32, calibration_samples=64)


def test_int4_weights_are_packed_two_per_byte_in_matmul_nbits(int4):
    graph = onnx.load_from_string(int4.model.onnx_bytes).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    packed = nbits_weights(graph)
    assert len(packed) == 8 == int4.achieved["layers"]         # qkv, proj, fc1, fc2 of both blocks; head stays float
    weights = sum(w.k * w.n for w in packed.values())
    code_bytes = sum(arrays[w.b].nbytes for w in packed.values())
    scale_bytes = sum(arrays[w.scales].nbytes for w in packed.values())
    assert code_bytes == weights // 2                         # K is a multiple of the group: no padding here
    assert scale_bytes == weights // 32 * 4                   # one float32 scale per 32 weights
    assert all(arrays[w.b].dtype == np.uint8 for w in packed.values())
    assert not any(a.dtype == np.float32 and a.shape == (w.k, w.n)   # no float copy of a quantized weight left
                   for w in packed.values() for a in arrays.values())
    ratio = 4 * weights / (code_bytes + scale_bytes + sum(arrays[w.zero_points].nbytes for w in packed.values()))
    assert ratio > 6.0                                        # vs fp32 on the quantized layers (group 32: 6.24×)
    storage = storage_evidence(stored_form(int4.model))
    assert storage.label.startswith("int4") and storage.encodings["int4"] == weights   # the rest: float head, embeds
    compute = compute_evidence(int4.model, int4.model.float_model, 1, 1, 0.0)
    assert compute.kernels["int4 weight-only"] == 8
    # the report's per-layer figure, read back from the storage evidence alone, is the ratio counted from the graph
    record = SimpleNamespace(compression=SimpleNamespace(evidence=SimpleNamespace(storage=storage)))
    encoding, n, bits = packed_bits_per_weight(record)  # type: ignore[arg-type]
    assert (encoding, n) == ("int4", weights) and 32 / bits == pytest.approx(ratio, rel=1e-9)


def test_int4_model_reloads_and_onnx_runtime_matches_the_dequantized_torch_model(int4, task):
    buf = io.BytesIO()
    torch.save(stored_form(int4.model).to_payload(), buf)
    reloaded = OnnxModel(onnx_from_payload(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)))
    x = task.val.x[:64]
    with torch.no_grad():
        expected = int4.model.float_model(x)
    torch.testing.assert_close(reloaded(x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(int4.model(x), expected, atol=1e-4, rtol=1e-4)
    graph = onnx.load_from_string(reloaded.onnx_bytes).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for w in nbits_weights(graph).values():                   # every stored code decodes to the torch weights
        codes, values = w.decode(arrays)
        assert codes.max() <= 15
        layer = next(m for m in linears(int4.model.float_model).values() if tuple(m.weight.shape) == (w.n, w.k)
                     and np.array_equal(m.weight.detach().numpy(), values.T))
        assert layer is not None


def test_gptq_layer_error_is_below_round_to_nearest_on_the_calibration_inputs(int4):
    errors = int4.details["layer_errors"]
    for name, e in errors.items():
        assert e["gptq"] <= e["rtn"], name
    relative = int4.details["relative_layer_error"]
    assert relative["gptq"] < 0.6 * relative["rtn"]


def test_gptq_compensates_correlated_inputs_where_rounding_cannot():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(64, 64, generator=gen)
    x = torch.randn(512, 64, generator=gen) @ mix                  # strongly correlated input features
    weight = torch.randn(48, 64, generator=gen)
    xtx = x.double().T @ x.double()
    for bits in (4, 8):
        q_gptq, q_rtn = gptq(weight, xtx, bits, 32, 0.01), rtn(weight, bits, 32)
        assert int(q_gptq.codes.max()) < 2 ** bits and int(q_rtn.codes.max()) < 2 ** bits
        assert reconstruction_error(weight, q_gptq, xtx) < 0.7 * reconstruction_error(weight, q_rtn, xtx)
    nearest = rtn(weight, 4, 32)
    grid_step = nearest.scales.repeat_interleave(32, dim=1)
    assert bool(((nearest.dequantize() - weight).abs() <= grid_step / 2 + 1e-6).all())   # rounds to nearest


def test_rtn_int8_with_the_classifier_runs_in_matmul_nbits_too(vit, task):
    out = run("quant.rtn", vit, task, bits=8, calibration_samples=32, include_classifier=True)
    x = task.val.x[:16]
    torch.testing.assert_close(out.model(x), out.model.float_model(x).detach(), atol=1e-4, rtol=1e-4)
    assert out.details["kernel_precisions"].get("int8 weight-only") == 9     # the head's Gemm (with its bias) too
    assert "head" in out.details["layer_errors"]


def test_weight_only_settings_are_checked():
    with pytest.raises(ConfigError, match="bits must be 4 or 8"):
        build_method("quant.gptq", {"bits": 3})
    with pytest.raises(ConfigError, match="power of two"):
        build_method("quant.rtn", {"group_size": 48})


# -- SmoothQuant ---------------------------------------------------------------------------------------------
def test_smoothing_preserves_the_float_function_and_moves_outliers_into_the_weights(vit, task):
    model = copy.deepcopy(vit)
    x = task.val.x[:64]
    with torch.no_grad():
        before = model(x)
    pairs = norm_consumers(model, x)
    assert pairs == {f"blocks.{i}.norm{j}": [f"blocks.{i}.{'attn.qkv' if j == 1 else 'mlp.fc1'}"]
                     for i in range(2) for j in (1, 2)}
    modules = dict(model.named_modules())
    for norm, names in pairs.items():
        act_max = torch.rand(modules[names[0]].in_features) * 10 + 0.1
        s = smooth(modules[norm], [modules[n] for n in names], act_max, 0.5)
        assert not torch.allclose(s, torch.ones_like(s))
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_smoothquant_deploys_int8_kernels(vit, task):
    out = run("quant.smoothquant", vit, task, calibration_samples=64)
    assert isinstance(out.model, OnnxModel) and out.compute == "physical" and out.runtime == "onnxruntime"
    x = task.val.x[:64]
    with torch.no_grad():                                       # the smoothed float model the int8 graph came from
        torch.testing.assert_close(out.model.float_model(x), vit(x), atol=1e-5, rtol=1e-5)
    assert out.achieved["int8_kernels"] > 0 and out.details["kernels"].get("QLinearMatMul", 0) > 0
    assert set(out.details["smoothing"]["folded_into"]) == {f"blocks.{i}.norm{j}" for i in range(2) for j in (1, 2)}
    logits = out.model(task.val.x[:256])
    accuracy = float((logits.argmax(1) == task.val.y[:256]).float().mean())
    assert accuracy > 0.5                                       # still a classifier (chance is 0.1)


def test_smoothquant_cuts_the_int8_error_an_activation_outlier_channel_causes_plain_int8(vit, task):
    """Two input channels of every smoothed layer made 40× larger (the LayerNorm scaled up, the Linear's columns
    down: the same float function) stretch plain int8's per-tensor activation range; smoothing moves them back."""
    model = copy.deepcopy(vit)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for norm, names in norm_consumers(model, task.val.x[:2]).items():
            modules[norm].weight[:2] *= 40
            modules[norm].bias[:2] *= 40
            for name in names:
                modules[name].weight[:, :2] /= 40
        x = task.val.x[:256]
        reference = vit(x)
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    error = {name: float(((run(name, model, task, calibration_samples=128).model(x) - reference) ** 2).mean())
             for name in ("quant.ptq_int8", "quant.smoothquant")}
    assert error["quant.smoothquant"] < 0.25 * error["quant.ptq_int8"], error


# -- applicability -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prune.wanda", "quant.gptq", "quant.rtn", "quant.smoothquant"])
def test_cnns_and_recurrent_models_are_declared_not_applicable(task, method):
    m = build_method(method)
    for name in ("tiny-cnn", "gru"):
        reason = m.not_applicable(build_model(name, task.spec, task.num_classes))
        assert reason and ("nn.Linear" in reason or "LayerNorm" in reason), (name, reason)
    for name in ("vit", "kwt", "text-encoder"):
        assert m.not_applicable(build_model(name, task.spec, task.num_classes, VIT)) is None, name


@pytest.mark.parametrize("method", ["quant.ptq_int8", "quant.qat_int8", "quant.mixed"])
def test_static_int8_refuses_a_model_whose_weights_are_mostly_recurrent(task, method):
    """On spectrogram frames a GRU holds nearly all its weights in the recurrence, which no int8 kernel reaches."""
    m = build_method(method)
    gru = build_model("gru", InputSpec(1, 40, 98, modality="audio"), 12)
    reason = m.not_applicable(gru) or ""
    assert "features.gru (GRU)" in reason and "mostly float" in reason, reason
    with pytest.raises(NotApplicableError, match="mostly float"):
        m.apply(gru, method_context(task, gru))
    assert m.not_applicable(build_model("tiny-cnn", task.spec, task.num_classes)) is None
