"""Runtimes in measurement: every model timed where it runs, beside the baseline in the same runtime."""

from __future__ import annotations

import functools
import json
import statistics
import time

import pytest
import torch
from torch import nn

from slimbench.baselines import build_model
from slimbench.core.errors import NotApplicableError, UnknownNameError
from slimbench.deploy.latency import MeasureConfig, latency_by_runtime, latency_rounds_ms
from slimbench.deploy.onnx_export import OnnxModel, export_onnx
from slimbench.deploy.runtimes import deploy, stored_form, torch_form
from slimbench.harness.run.records import load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import parse_suite

FAST = MeasureConfig(latency_batch=8, threads=1, warmup=1, min_run_time=0.01, rounds=1, peak_memory=False)


@pytest.fixture(scope="module")
def model(task):
    torch.manual_seed(0)
    return build_model("tiny-cnn", task.spec, task.num_classes).eval()


def _median_ms(models, example, cfg) -> dict[str, float]:
    return {name: statistics.median(v) for name, v in latency_rounds_ms(models, example, cfg).items()}


def test_onnxruntime_runs_the_exported_model_with_fixed_threads(model, task):
    x = task.test.x[:16]
    ort_model = deploy(model, "onnxruntime", x, threads=1)
    assert isinstance(ort_model, OnnxModel) and ort_model.session.get_session_options().intra_op_num_threads == 1
    with torch.inference_mode():
        assert torch.allclose(ort_model(x), model(x), atol=1e-5)
        assert ort_model(x[:1]).shape == (1, 10)   # dynamic batch axis
    assert torch_form(ort_model) is model
    assert stored_form(model).nbytes == sum(v.numel() * v.element_size() for v in model.state_dict().values())


def test_every_runtime_is_timed_for_model_and_reference(model, task):
    examples = {"b1": task.example_input(1), "bn": task.example_input(8)}
    out = latency_by_runtime(model, model, "eager", examples, FAST)
    for role in ("model", "reference"):
        assert set(out[role]) == {"eager", "onnxruntime"}
        for timings in out[role].values():
            assert timings["b1_ms"] > 0 and timings["bn_ms"] > 0


def test_the_baseline_is_timed_once_and_serves_as_its_own_reference(model, task):
    examples = {"b1": task.example_input(1), "bn": task.example_input(8)}
    out = latency_by_runtime(model, None, "eager", examples, FAST)
    assert set(out["model"]) == {"eager", "onnxruntime"}
    assert out["reference"] == out["model"] and out["reference"] is not out["model"]


def test_latency_is_the_time_a_call_really_takes():
    """On the real clock only bounds a busy machine cannot break: a call lasts at least its sleep, and a no-op is
    far quicker than a 2 ms sleep."""
    def sleeper(x: torch.Tensor) -> torch.Tensor:   # a "model" whose cost is known: at least 2 ms per call
        time.sleep(0.002)
        return x

    cfg = MeasureConfig(threads=1, warmup=2, min_run_time=0.05, rounds=2)
    ms = _median_ms({"sleep": sleeper, "noop": lambda x: x}, torch.zeros(1), cfg)
    assert ms["sleep"] >= 2.0
    assert ms["noop"] < ms["sleep"] / 10


def test_latency_reports_the_per_call_time_in_bounded_blocks(monkeypatch):
    """On a fake clock that each call advances by a known cost, the figures and the number of calls are exact."""
    clock, calls = [0.0], []

    def sleeper(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        clock[0] += 0.002
        return x

    def noop(x: torch.Tensor) -> torch.Tensor:
        clock[0] += 1e-6
        return x

    timer = torch.utils.benchmark.Timer   # loaded by slimbench.deploy.latency, after it quiets cpp_extension
    monkeypatch.setattr(torch.utils.benchmark, "Timer", functools.partial(timer, timer=lambda: clock[0]))
    cfg = MeasureConfig(threads=1, warmup=2, min_run_time=0.05, rounds=2)
    ms = _median_ms({"sleep": sleeper, "noop": noop}, torch.zeros(1), cfg)
    assert ms == {"sleep": pytest.approx(2.0), "noop": pytest.approx(0.001)}
    # blocks of 10 ms, 50 ms per round: about 2 + 2 × 25 calls (plus the timer's warm-ups), not an open-ended
    # calibration
    assert 40 <= len(calls) <= 80


def test_an_onnx_model_is_timed_in_onnxruntime_only_and_says_why(model, task):
    onnx_model = OnnxModel(export_onnx(model, task.example_input(2)), float_model=model)
    examples = {"b1": task.example_input(1), "bn": task.example_input(8)}
    out = latency_by_runtime(onnx_model, model, "onnxruntime", examples, FAST)
    assert out["model"]["onnxruntime"]["b1_ms"] > 0 and out["reference"]["onnxruntime"]["bn_ms"] > 0
    assert "no eager form" in out["model"]["eager"]["unavailable"]
    assert out["reference"]["eager"]["b1_ms"] > 0   # the eager baseline stays measured, for the cross-runtime view


def test_a_deployed_runtime_that_cannot_run_the_model_is_an_error(model, task):
    onnx_model = OnnxModel(export_onnx(model, task.example_input(2)), float_model=model)
    with pytest.raises(NotApplicableError, match="deployed runtime 'eager'"):
        latency_by_runtime(onnx_model, model, "eager", {"b1": task.example_input(1)}, FAST)
    with pytest.raises(UnknownNameError, match="valid runtimes: compile, eager, executorch, onnxruntime, openvino"):
        deploy(model, "tensorrt", task.example_input(1), threads=1)


def test_torch_compile_runtime(task):
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = task.test.x[:4]
    compiled = deploy(small, "compile", x, threads=1)
    with torch.inference_mode():
        assert torch.allclose(compiled(x), small(x), atol=1e-5)


@pytest.fixture(scope="module")
def quant_suite(tmp_path_factory):
    from tests.conftest import SMOKE

    config = json.loads(json.dumps(SMOKE))
    config["methods"] = ["baseline", {"name": "quant.ptq_int8", "params": {"calibration_samples": 128}}]
    root = tmp_path_factory.mktemp("results")
    runner = SuiteRunner(parse_suite(config), root, wandb_mode="disabled", progress=False)
    outcome = runner.run()
    return runner, outcome


def test_records_carry_per_runtime_latency_and_the_deployed_runtime(quant_suite):
    runner, outcome = quant_suite
    assert not outcome.failed
    records = {r.method: r for r in load_records(runner.paths.runs)}
    base, ptq = records["baseline"], records["quant.ptq_int8"]
    assert base.metrics.runtime == "eager" and ptq.metrics.runtime == "onnxruntime"
    assert set(base.metrics.latency) == set(base.reference.latency) == {"eager", "onnxruntime"}
    # headline latency = the deployed runtime, compared with the baseline deployed the same way
    assert ptq.metrics.latency_b1_ms == ptq.metrics.latency["onnxruntime"]["b1_ms"]
    assert ptq.reference.latency_b1_ms == ptq.reference.latency["onnxruntime"]["b1_ms"]
    assert ptq.reference.runtime == "onnxruntime" and ptq.reference.latency["eager"]["bn_ms"] > 0
    assert "unavailable" in ptq.metrics.latency["eager"]
    assert ptq.compression.storage == "int8" and ptq.compression.compute.startswith("int8")
    assert ptq.compression.verified
    # like for like: the fp32 reference as an ONNX graph with BatchNorm folded, as the int8 graph has it
    assert ptq.reference.stored_form == "onnx fp32, BatchNorm folded"
    assert ptq.metrics.stored_bytes < ptq.reference.stored_bytes / 3
    assert ptq.reference.stored_bytes <= ptq.reference.state_dict_stored_bytes
    assert ptq.metrics.macs == base.metrics.macs and ptq.metrics.params == base.metrics.params
    assert abs(ptq.metrics.accuracy - base.metrics.accuracy) < 0.05   # measured by running the int8 model
