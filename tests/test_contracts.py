"""Contracts every registered method and model must keep, run end to end through the harness on tiny data.

A new method or model is covered the moment it registers: it runs as a cell, and its record must hold every
field, labels consistent with the measured figures, verified claims, and an artifact that reloads
(`weights_only=True`) to the model that was measured.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from slimbench.baselines import MODELS, build_model
from slimbench.deploy.runtimes import load_artifact
from slimbench.harness.measure.quality import evaluate
from slimbench.harness.run.records import RunRecord, load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import parse_suite
from slimbench.methods import METHODS
from tests.conftest import SMOKE

# the sequence models at a few thousand weights: every method that runs on them (`example`) stays seconds long
TINY_SEQUENCE = {"dim": 32, "depth": 2, "heads": 4}
MODEL_PARAMS = {"mobilenetv2": {"width_mult": 0.25}, "vit": {**TINY_SEQUENCE, "patch": 2}, "kwt": TINY_SEQUENCE,
                "text-encoder": TINY_SEQUENCE, "gru": {"hidden": 16}}
# every registered method except throw-away ones other test modules register for their own tests
METHOD_NAMES = [name for name in METHODS.names() if not name.startswith("test.")]
RECORD_FIELDS = ("run_id", "suite", "status", "task", "model", "method", "family", "seed", "config", "metrics",
                 "reference", "compression", "provenance", "hardware", "artifact", "wall_seconds")
PROVENANCE_FIELDS = ("versions", "git", "created")
METRIC_FIELDS = ("accuracy", "macro_f1", "params", "nonzero_params", "stored_bytes", "gzip_bytes", "macs",
                 "latency_b1_ms", "latency_bn_ms", "runtime", "latency", "speedup")


def _suite(methods: list, models: list, **extra) -> dict:
    config = copy.deepcopy(SMOKE)
    config.update(methods=methods, models=models, **extra)
    config["train"] = {**config["train"], "max_train_batches": 6}
    config["finetune"] = {**config["finetune"], "max_train_batches": 4}
    config["measure"] = {**config["measure"], "peak_memory": False}
    return config


@pytest.fixture(scope="module")
def method_records(tmp_path_factory) -> dict[str, tuple[RunRecord, Path]]:
    """Every registered method as one cell (on the model and params of its `example`): its record and suite folder."""
    by_model: dict[str, list] = {}
    for name in METHOD_NAMES:
        model, params = copy.deepcopy(METHODS.get(name).example)
        by_model.setdefault(model, []).append({"name": name, "params": params} if params else name)
    root = tmp_path_factory.mktemp("contracts")
    records: dict[str, tuple[RunRecord, Path]] = {}
    failures: dict[str, str] = {}
    for model, methods in by_model.items():
        if "baseline" not in methods:
            methods = ["baseline", *methods]
        models = [{"name": model, "params": MODEL_PARAMS.get(model, {})}]
        runner = SuiteRunner(parse_suite(_suite(methods, models, suite=f"contracts-{model}")), root,
                             wandb_mode="disabled", progress=False)
        failures.update(runner.run().failed)
        for rec in load_records(runner.paths.runs):
            if rec.method != "baseline" or model == "tiny-cnn":
                records[rec.method] = (rec, runner.paths.root)
    records["_failures"] = failures  # type: ignore[assignment]
    return records


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.slow
def test_every_method_keeps_the_record_contract(method_records, method):
    failures = method_records["_failures"]
    assert not [k for k in failures if f"/{method}" in k], failures
    rec, _ = method_records[method]
    data = rec.to_dict()
    for name in RECORD_FIELDS:
        assert data[name] not in (None, "", {}) or name == "details", name
    for name in PROVENANCE_FIELDS:
        assert data["provenance"][name] not in (None, "", {}), name
    for name in METRIC_FIELDS:
        assert data["metrics"][name] is not None, name
    assert rec.status == "ok" and rec.family == METHODS.get(method).family
    assert set(rec.config["versions"]) >= {"task", "model", "method", "training", "measure"}
    assert rec.hardware.instruction_sets is not None and rec.provenance.versions["torch"]
    comp = rec.compression
    assert comp.verified, comp.disagreements            # a built-in method's claims hold
    # labels consistent with the measured figures
    if rec.family == "baseline":
        assert comp.label == "reference"
    if "sparse" in comp.storage:
        assert comp.achieved["sparsity"] >= 0.05
    if comp.compute.startswith("smaller dense"):
        assert rec.metrics.macs < rec.reference.macs
    if comp.compute == "masked":
        assert comp.achieved["sparsity"] >= 0.05 and rec.metrics.macs == rec.reference.macs
    if comp.storage == "dense fp32" and rec.metrics.runtime == "eager":
        assert rec.metrics.stored_bytes <= rec.reference.state_dict_stored_bytes
    if "int8" in comp.compute:
        assert comp.evidence.compute.kernels.get("int8", 0) + comp.evidence.compute.kernels.get("uint8", 0) > 0


@pytest.mark.slow
def test_an_int8_graph_is_int8_storage_and_int8_compute_against_a_folded_fp32_graph(method_records):
    """Evidence rule for int8: the stored tensors are int8 and ONNX Runtime's optimized graph runs int8 kernels;
    the compression ratio is against the BatchNorm-folded fp32 graph of the same runtime (about 4×, not more)."""
    rec, _ = method_records["quant.ptq_int8"]
    comp = rec.compression
    assert comp.storage == "int8" and comp.compute == "int8", comp
    assert rec.reference.stored_form == "onnx fp32, BatchNorm folded"
    ratio = rec.reference.stored_bytes / rec.metrics.stored_bytes
    assert 2.5 < ratio <= 4.0            # per-channel scales cost a little on a model of a few thousand weights
    assert rec.reference.state_dict_stored_bytes > rec.reference.stored_bytes   # BN folded: fewer fp32 bytes


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.slow
def test_every_method_artifact_reloads_to_the_measured_model(method_records, method):
    rec, root = method_records[method]
    data = (root / rec.artifact.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec.artifact.sha256
    from slimbench.tasks import build_task

    task = build_task("digits")
    params = rec.config["model"]["params"]
    model = load_artifact(data, lambda: build_model(rec.model, task.spec, task.num_classes, params))
    accuracy, _ = evaluate(model, task)
    assert accuracy == pytest.approx(rec.metrics.accuracy, abs=1e-9)


@pytest.mark.parametrize("model", MODELS.names())
@pytest.mark.slow
def test_every_model_trains_measures_and_reloads(model, tmp_path: Path):
    config = _suite(["baseline"], [{"name": model, "params": MODEL_PARAMS.get(model, {})}], suite="models")
    config["train"] = {**config["train"], "epochs": 1, "max_train_batches": 2}
    runner = SuiteRunner(parse_suite(config), tmp_path, wandb_mode="disabled", progress=False)
    outcome = runner.run()
    assert not outcome.failed, outcome.failed
    (rec,) = load_records(runner.paths.runs)
    assert rec.metrics.params > 0 and rec.metrics.macs > 0 and 0.0 <= rec.metrics.accuracy <= 1.0
    assert rec.compression.label == "reference" and rec.compression.verified
    task = runner.task(runner.suite.cells[0].task)
    data = (runner.paths.root / rec.artifact.path).read_bytes()
    reloaded = load_artifact(data, lambda: build_model(model, task.spec, task.num_classes, MODEL_PARAMS.get(model, {})))
    assert evaluate(reloaded, task)[0] == pytest.approx(rec.metrics.accuracy, abs=1e-9)


GOLDEN_SUITE = {**SMOKE, "suite": "golden"}


def test_golden_run_ids():
    """run_ids are hashes of the resolved cell config and the code versions: any change here is deliberate."""
    suite = parse_suite(json.loads(json.dumps(GOLDEN_SUITE)))
    assert {c.label: c.run_id for c in suite.cells} == GOLDEN_RUN_IDS


GOLDEN_RUN_IDS: dict[str, str] = {
    "digits/tiny-cnn/baseline/s0": "e1d54d2a26e4",
    "digits/tiny-cnn/prune.magnitude[sparsity=0.5]/s0": "ed672ec9e3f1",
}


@pytest.mark.slow
def test_bench_latency_times_a_pruned_artifact_against_its_baseline_at_every_batch(method_records, tmp_path: Path):
    """The latency-vs-batch benchmark reloads the channel-pruned artifact and its same-seed baseline, times both
    in both runtimes at every batch size, and its MACs ratio is the records' own count."""
    from slimbench.core.errors import SlimbenchError
    from slimbench.harness.measure import batch_latency as latency_batch

    rec, root = method_records["prune.channel"]
    base = next(r for r in load_records(root / "runs") if r.method == "baseline")
    timings = latency_batch.measure(root, "prune.channel", [1, 4], None, rounds=2, min_run_time=0.01, threads=1)
    assert sorted((t.runtime, t.batch) for t in timings) == [("eager", 1), ("eager", 4), ("onnxruntime", 1),
                                                            ("onnxruntime", 4)]
    for t in timings:
        assert t.run_id == rec.run_id and t.rounds == 2
        assert t.macs_ratio == pytest.approx(base.metrics.macs / rec.metrics.macs) and t.macs_ratio > 1.3
        assert t.speedup == pytest.approx(t.reference_ms / t.model_ms) and t.low <= t.high
    paths = latency_batch.write(tmp_path, "channel", timings, 1)
    assert json.loads(paths[0].read_text())["timings"][0]["run_id"] == rec.run_id
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SlimbenchError, match=r"no finished record matches method 'prune.nothing'.*prune.channel"):
        latency_batch.select(load_records(root / "runs"), "prune.nothing", None)
