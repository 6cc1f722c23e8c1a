"""Deployment targets (OpenVINO, ExecuTorch beside eager and ONNX Runtime) and the peers' own int8 quantizers.

Each runtime runs a tiny model and matches eager within its precision; a model a runtime cannot take is a clear
reason, never a crash; the peers' int8 really is int8 in storage and in the kernels their runtime executes, and a
suite that asks for it records accuracy and file size in every runtime.
"""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest
import torch

from slimbench.baselines import build_model
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.executorch_runtime import ExecutorchModel
from slimbench.deploy.latency import MeasureConfig
from slimbench.deploy.onnx_export import OnnxModel, export_onnx
from slimbench.deploy.openvino_runtime import ISA_CAP, OpenVinoModel
from slimbench.deploy.runtimes import deploy, get_runtime, runtime_names
from slimbench.harness.measure.quality import evaluate_test
from slimbench.harness.measure.runtime_quality import quality_by_runtime
from slimbench.methods import build_method
from slimbench.methods.int8_recipe import choose_weights
from slimbench.methods.quantization import static_int8_graph
from tests.conftest import method_context

# the largest |difference| from eager each float runtime may show on the tiny model's logits (float32 reordering)
FLOAT_TOLERANCE = {"onnxruntime": 1e-5, "openvino": 1e-4, "executorch": 1e-5}
TRAINED = {"width": 16, "epochs": 4}   # the `trained` fixture's tiny-cnn


@pytest.fixture(scope="module")
def model(task):
    torch.manual_seed(0)
    return build_model("tiny-cnn", task.spec, task.num_classes).eval()


@pytest.fixture(scope="module")
def ctx(task, trained):
    return method_context(task, trained)


def test_the_registry_lists_every_deployment_target():
    assert {"eager", "onnxruntime", "compile", "openvino", "openvino-default", "executorch"} <= set(runtime_names())


@pytest.mark.parametrize("runtime", sorted(FLOAT_TOLERANCE))
def test_a_float_runtime_matches_eager_within_its_precision(runtime, model, task):
    x = task.example_input(16)
    deployed = deploy(model, runtime, x, threads=1)
    assert deployed is not model
    with torch.inference_mode():
        want, got = model(x), deployed(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= FLOAT_TOLERANCE[runtime]
    # a batch larger than the one it was deployed with (ExecuTorch runs it in chunks)
    big = task.example_input(150)
    with torch.inference_mode():
        assert torch.allclose(deployed(big), model(big), atol=FLOAT_TOLERANCE[runtime])


def test_each_runtime_reports_its_own_file_and_what_ran(model, task):
    x = task.example_input(4)
    ov = get_runtime("openvino")
    deployed = deploy(model, "openvino", x, threads=1)
    assert ov.describe(deployed)["inference_precision"] == "float32"
    assert set(ov.describe(deployed)["layer_precisions"]) == {"f32"}
    assert ov.file_bytes(deployed) > 4 * sum(p.numel() for p in model.parameters())   # IR holds the fp32 weights
    et = deploy(model, "executorch", x, threads=1)
    assert get_runtime("executorch").file_bytes(et) == len(et.pte) > 4 * sum(p.numel() for p in model.parameters())
    assert get_runtime("onnxruntime").file_bytes(deploy(model, "onnxruntime", x, 1)) == len(export_onnx(model, x))


def test_openvino_default_precision_runs_or_says_why_it_cannot(model, task):
    """bf16 where the CPU has it; under slimbench's pinned kernels OpenVINO's oneDNN is capped to AVX2 and cannot
    run bf16, which must be a reason, not a crash."""
    x = task.example_input(8)
    try:
        deployed = deploy(model, "openvino-default", x, threads=1)
    except NotApplicableError as exc:
        assert os.environ.get(ISA_CAP) and ISA_CAP in str(exc)
        return
    precision = get_runtime("openvino-default").describe(deployed)["inference_precision"]
    with torch.inference_mode():
        diff = float((deployed(x) - model(x)).abs().max())
    assert diff <= (1e-4 if precision == "float32" else 0.1 * float(model(x).abs().max()))


def test_a_model_a_runtime_cannot_take_gets_a_reason(model, task):
    x = task.example_input(4)
    graph = OnnxModel(export_onnx(model, x), float_model=model)
    with pytest.raises(NotApplicableError, match="no torch program for ExecuTorch"):
        deploy(graph, "executorch", x, threads=1)
    with pytest.raises(NotApplicableError, match="no eager form"):
        deploy(graph, "eager", x, threads=1)
    assert isinstance(deploy(graph, "openvino", x, threads=1), OpenVinoModel)   # OpenVINO reads the same graph


def test_a_graph_openvino_cannot_compile_is_refused_with_the_plugins_reason(model, task, monkeypatch):
    """SqueezeNet's ceil-mode MaxPool has no bf16 kernel under AVX2-pinned oneDNN: a reason, not a crash."""
    def no_kernels(self):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\n"
                           "Supported primitive descriptors list is empty for node: /features/MaxPool type: Pooling\n")

    monkeypatch.setattr(OpenVinoModel, "compiled", property(no_kernels))
    monkeypatch.setenv(ISA_CAP, "AVX2")
    x = task.example_input(4)
    for runtime in ("openvino", "openvino-default"):
        with pytest.raises(NotApplicableError, match=r"AVX2.*Supported primitive descriptors list is empty for node"):
            deploy(model, runtime, x, threads=1)
    monkeypatch.delenv(ISA_CAP)
    with pytest.raises(NotApplicableError, match=r"cannot run this graph: Supported primitive"):
        deploy(model, "openvino", x, threads=1)
    out = quality_by_runtime(model, ("openvino",), "eager", model, evaluate_test(model, task), task, x)
    assert "/features/MaxPool" in out["openvino"].unavailable and out["openvino"].accuracy is None


def test_a_graph_that_crashes_openvino_is_refused_and_the_process_survives(model, task, monkeypatch):
    """The probe runs the graph in a child first: a child killed by a signal becomes a refusal naming it."""
    from slimbench.deploy import openvino_runtime as ovr

    real_probe = ovr.PROBE
    monkeypatch.setattr(ovr, "_PROBED", {})
    monkeypatch.setattr(ovr, "PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    x = task.example_input(4)
    with pytest.raises(NotApplicableError, match=r"crashed the process running it \(SIGSEGV\)"):
        deploy(model, "openvino", x, threads=1)
    with pytest.raises(NotApplicableError, match="SIGSEGV"):   # remembered: the graph is not probed twice
        deploy(model, "openvino", x, threads=1)
    monkeypatch.setattr(ovr, "_PROBED", {})
    monkeypatch.setattr(ovr, "PROBE", real_probe)
    assert isinstance(deploy(model, "openvino", x, threads=1), OpenVinoModel)
    assert list(ovr._PROBED.values()) == [None]   # the real probe ran the graph in its child and it survived


def test_deployed_models_travel_to_the_latency_process(model, task):
    x = task.example_input(4)
    for runtime in ("openvino", "executorch"):
        deployed = deploy(model, runtime, x, threads=1)
        back = pickle.loads(pickle.dumps(deployed))
        with torch.inference_mode():
            assert torch.allclose(back(x), deployed(x))
    assert isinstance(back, ExecutorchModel)


def test_a_suite_names_only_registered_runtimes():
    with pytest.raises(ConfigError, match="unknown runtime 'tflite'.*openvino"):
        MeasureConfig(runtimes=("eager", "tflite"))   # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="listed twice"):
        MeasureConfig(runtimes=("eager", "eager"))   # type: ignore[arg-type]


def test_quality_by_runtime_evaluates_each_and_keeps_the_reasons(model, task):
    x = task.example_input(8)
    graph = OnnxModel(export_onnx(model, x), float_model=model)
    evaluation = evaluate_test(graph, task)
    out = quality_by_runtime(graph, ("eager", "onnxruntime", "openvino", "executorch"), "onnxruntime", graph,
                             evaluation, task, x)
    assert out["onnxruntime"].agreement == 1.0 and out["onnxruntime"].accuracy == evaluation.accuracy
    assert out["openvino"].agreement >= 0.99 and out["openvino"].file_bytes
    assert "no eager form" in out["eager"].unavailable and out["eager"].accuracy is None
    assert "ExecuTorch" in out["executorch"].unavailable


@pytest.mark.parametrize("name,runtime", [("peer.ort_quantize_static", "onnxruntime"), ("peer.nncf_int8", "openvino")])
def test_a_peer_quantizer_is_int8_in_its_own_runtime(name, runtime, trained, task, ctx):
    outcome = build_method(name, {"calibration_samples": 64}).apply(trained, ctx)
    assert outcome.runtime == runtime and isinstance(outcome.model, OnnxModel)
    assert outcome.compute == "physical" and outcome.achieved["int8_weight_fraction"] > 0.5
    deployed = deploy(outcome.model, runtime, task.example_input(8), threads=1)
    float_acc = evaluate_test(trained, task).accuracy
    assert abs(evaluate_test(deployed, task).accuracy - float_acc) < 0.05   # int8 keeps the tiny model's accuracy
    if runtime == "openvino":
        precisions = get_runtime("openvino").describe(deployed)["layer_precisions"]
        assert precisions.get("u8", 0) + precisions.get("i8", 0) >= sum(precisions.values()) / 2


def test_auto_weights_choose_by_validation_accuracy_and_measured_speed(trained, task, ctx):
    p = build_method("quant.ptq_int8", {"calibration_samples": 64})
    with static_int8_graph(trained, ctx.task, p) as graph:
        graphs = {"per_channel": graph.quantize(per_channel=True), "per_tensor": graph.quantize(per_channel=False)}
    x, y = ctx.task.val.x[:256], ctx.task.val.y[:256]
    chosen, recipe = choose_weights(graphs, x, y, task.example_input(1), max_accuracy_drop=0.0)
    per_channel, per_tensor = recipe["candidates"]["per_channel"], recipe["candidates"]["per_tensor"]
    cost = per_channel["val_accuracy"] - per_tensor["val_accuracy"]
    faster = min(recipe["b1_speedup_rounds"]) > 1
    assert chosen == ("per_tensor" if faster and cost <= 0 else "per_channel")
    # an unreachable budget (per-tensor would have to gain 100 points) always keeps per-channel
    assert choose_weights(graphs, x, y, task.example_input(1), max_accuracy_drop=-1.0)[0] == "per_channel"
    assert np.isfinite(per_tensor["b1_ms"]) and per_tensor["b1_ms"] > 0


def test_weights_auto_is_ptq_only():
    with pytest.raises(ConfigError, match="quant.ptq_int8's"):
        build_method("quant.mixed", {"weights": "auto"})
    with pytest.raises(ConfigError, match="per_channel"):
        build_method("quant.qat_int8", {"weights": "per_tensor"})


def test_a_runtimes_suite_reports_every_model_in_every_runtime_from_its_records(smoke_config, tmp_path):
    """Two seeds of baseline, slimbench's int8, ONNX Runtime's and ExecuTorch's own quantizers, measured in three
    runtimes (and ExecuTorch, where its peer deploys): every figure of runtimes.md comes from the records (accuracy in
    each runtime, Δ paired with the baseline there), and each peer has its row beside slimbench's int8."""
    from slimbench.harness.report.build import build_report
    from slimbench.harness.report.runtimes import runtime_rows
    from slimbench.harness.run.records import load_records
    from slimbench.harness.run.runner import SuiteRunner
    from slimbench.harness.run.suite import parse_suite

    calibration = {"calibration_samples": 64}
    smoke_config.update(seeds=[0, 1], methods=["baseline", {"name": "quant.ptq_int8", "params": calibration},
                                              {"name": "peer.ort_quantize_static", "params": calibration},
                                              {"name": "peer.xnnpack_int8", "params": calibration}])
    smoke_config["measure"].update(runtimes=["eager", "onnxruntime", "openvino"], runtime_accuracy=True,
                                   peak_memory=False, robustness=False)
    runner = SuiteRunner(parse_suite(smoke_config), tmp_path, wandb_mode="disabled", progress=False)
    runner.run()
    records = load_records(tmp_path / "smoke" / "runs")
    assert len(records) == 8 and all(r.status == "ok" for r in records)
    int8 = next(r for r in records if r.method == "quant.ptq_int8" and r.seed == 0)
    assert int8.metrics is not None and set(int8.metrics.by_runtime) == {"eager", "onnxruntime", "openvino"}
    assert int8.metrics.by_runtime["onnxruntime"].accuracy == int8.metrics.accuracy
    assert "no eager form" in (int8.metrics.by_runtime["eager"].unavailable or "")
    build_report(tmp_path / "smoke")
    text = (tmp_path / "smoke" / "runtimes.md").read_text()
    assert "peer.ort_quantize_static" in text and "## slimbench's int8 beside the peers'" in text
    from slimbench.harness.report.runtimes import versus_peers

    versus = {row[3]: row for row in versus_peers(records)}
    assert set(versus) == {"peer.ort_quantize_static (calibration_samples=64)",
                           "peer.xnnpack_int8 (calibration_samples=64)"}
    xnnpack = versus["peer.xnnpack_int8 (calibration_samples=64)"]
    assert xnnpack[4] == "onnxruntime vs executorch" and xnnpack[-1] == "2" and xnnpack[3] in text
    program = next(r for r in records if r.method == "peer.xnnpack_int8" and r.seed == 0)
    assert "runs only in ExecuTorch" in (program.metrics.by_runtime["openvino"].unavailable or "")
    assert program.reference.stored_form == "executorch fp32 .pte (XNNPACK)"
    assert program.metrics.stored_bytes == program.metrics.by_runtime["executorch"].file_bytes
    rows = {(r.method, r.runtime): r for r in runtime_rows(records)}
    row = rows[("quant.ptq_int8", "openvino")]
    bases = {r.seed: r for r in records if r.method == "baseline"}
    def in_openvino(rec):
        return rec.metrics.by_runtime["openvino"].accuracy

    want = [100 * (in_openvino(r) - in_openvino(bases[r.seed])) for r in records if r.method == "quant.ptq_int8"]
    assert row.delta_pts == pytest.approx(sum(want) / 2) and row.seeds == 2 and row.delta_ci_pts is not None
    assert f"{row.accuracy:.4f}" in text and rows[("quant.ptq_int8", "onnxruntime")].deployed
    assert (tmp_path / "smoke" / "runtimes.csv").read_text().count("\n") == len(rows) + 1


def test_an_executorch_program_is_lowered_once_and_reread_from_disk(model, task, tmp_path, monkeypatch):
    """The evaluating process and the timing process share lowered programs through the disk cache."""
    from slimbench.deploy import executorch_runtime as et

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(et, "_PROGRAMS", collections.OrderedDict())   # an earlier test may hold this program
    x = task.example_input(4)
    first = et.lower_to_xnnpack(model, x, 64)
    assert len(list((tmp_path / "slimbench" / "executorch").glob("*.pte"))) == 1
    et._PROGRAMS.clear()   # a fresh process: nothing in memory

    def must_not_lower(*args, **kwargs):
        raise AssertionError("lowered again instead of reading the cached program")

    import executorch.exir

    monkeypatch.setattr(executorch.exir, "to_edge_transform_and_lower", must_not_lower)
    assert et.lower_to_xnnpack(model, x, 64) == first
