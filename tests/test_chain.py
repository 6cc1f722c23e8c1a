"""Chains: stages run in order on private copies, every stage is kept, impossible chains fail at parse time."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from slimbench.baselines import build_model
from slimbench.core.errors import ConfigError
from slimbench.deploy.packing import pack_state_dict
from slimbench.harness.run.suite import load_suite
from slimbench.methods import METHODS, Method, MethodContext, Outcome, build_method, register_method
from slimbench.tasks.base import Task
from tests.conftest import method_context

DEEP_COMPRESSION = [{"name": "prune.magnitude", "params": {"sparsity": 0.8}},
                    {"name": "share.kmeans", "params": {"clusters": 8}}]
TRAINED = {"width": 32, "epochs": 4}   # the `trained` fixture's tiny-cnn


def make_ctx(task: Task, model: nn.Module, fits: list[int]) -> MethodContext:
    return method_context(task, model, on_fit=lambda: fits.append(1),
                          fresh=lambda: build_model("tiny-cnn", task.spec, task.num_classes, {"width": 32}))


@register_method("test.to_int8_graph")
@dataclass
class ToInt8Graph(Method):
    """A stand-in for a method that leaves a runtime graph, not a trainable torch model."""

    family: ClassVar[str] = "quantization"
    uses_finetune: ClassVar[bool] = False
    produces: ClassVar[str] = "onnx-int8"

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        raise AssertionError("a chain that cannot run must fail before any stage runs")


@pytest.fixture(scope="module", autouse=True)
def _unregister_stub():
    yield
    METHODS.unregister("test.to_int8_graph")


def test_a_chain_records_every_stage(task, trained):
    chain = build_method("chain", {"stages": DEEP_COMPRESSION})
    assert chain.family == "chain" and chain.uses_finetune and not chain.uses_teacher and chain.produces == "float"
    fits: list[int] = []
    out = chain.apply(copy.deepcopy(trained), make_ctx(task, trained, fits))
    assert len(fits) == 2                                                   # each stage fine-tuned once
    assert [s.method for s in out.stages] == ["prune.magnitude", "share.kmeans"] == out.details["chain"]
    assert out.stages[0].params["sparsity"] == 0.8 and out.stages[1].params["clusters"] == 8
    assert out.stages[1].params["init"] == "linear"                          # defaults recorded too
    assert out.model is out.stages[-1].outcome.model
    pruned, clustered = out.stages[0].outcome.model, out.stages[1].outcome.model
    assert pruned is not clustered
    for name in ("0", "3", "8"):
        w0, w1 = pruned.get_submodule(name).weight, clustered.get_submodule(name).weight
        assert len(torch.unique(w0[w0 != 0])) > 8                           # stage 1's model left as stage 1 made it
        assert len(torch.unique(w1[w1 != 0])) <= 8
        assert torch.equal(w0 == 0, w1 == 0)                                 # stage 2 kept stage 1's zeros
    assert out.stages[0].outcome.achieved["sparsity"] == pytest.approx(0.8, abs=1e-3)
    sizes = [pack_state_dict(m.state_dict()).nbytes for m in (trained, pruned, clustered)]
    assert sizes[0] > 2.5 * sizes[1] and sizes[1] > 2.0 * sizes[2], sizes   # each stage bought storage
    assert set(pack_state_dict(clustered.state_dict()).formats()) & {"relative_huffman", "relative_codebook"}


@pytest.mark.parametrize("stages, match", [
    ([{"name": "test.to_int8_graph"}, {"name": "prune.magnitude"}],
     "stage 2 \\(prune.magnitude\\) cannot follow stage 1 \\(test.to_int8_graph\\).*'onnx-int8'"),
    ([{"name": "quant.ptq_int8"}, {"name": "prune.magnitude", "params": {"sparsity": 0.5}}],
     "stage 2 \\(prune.magnitude\\) cannot follow stage 1 \\(quant.ptq_int8\\).*'onnx-int8'"),
    ([{"name": "prune.magnitude"}, {"name": "share.kmeanz"}], "stage 2 \\(share.kmeanz\\): unknown method"),
    ([{"name": "prune.magnitude", "params": {"sparsity": 1.5}}, {"name": "share.kmeans"}],
     "stage 1 \\(prune.magnitude\\).*sparsity"),
    ([{"name": "prune.magnitude"}, {"name": "share.kmeans", "params": {"clusterz": 16}}],
     "stage 2 \\(share.kmeans\\).*unknown parameter"),
    ([{"name": "prune.magnitude"}], "at least two"),
    ([{"name": "prune.magnitude"}, {"method": "share.kmeans"}], "stage 2 must be a mapping with 'name'"),
])
def test_an_invalid_chain_fails_when_built(stages, match):
    with pytest.raises(ConfigError, match=match):
        build_method("chain", {"stages": stages})


def test_an_invalid_chain_fails_when_the_suite_is_read_before_training(tmp_path, smoke_config, write_suite):
    smoke_config["methods"] = [{"name": "chain", "params": {"stages": [
        {"name": "test.to_int8_graph"}, {"name": "share.kmeans", "params": {"clusters": 16}}]}}]
    with pytest.raises(ConfigError, match="stage 2 \\(share.kmeans\\) cannot follow stage 1"):
        load_suite(write_suite(smoke_config))
    assert not (tmp_path / "results").exists()


def test_chain_takes_its_needs_from_its_stages(smoke_config, write_suite):
    kd_then_prune = build_method("chain", {"stages": [{"name": "distill.logit"}, {"name": "prune.magnitude"}]})
    assert kd_then_prune.uses_teacher and kd_then_prune.uses_finetune
    no_finetune = build_method("chain", {"stages": [{"name": "share.kmeans", "params": {"finetune": False}},
                                                    {"name": "baseline"}]})
    assert not no_finetune.uses_finetune and not no_finetune.uses_teacher
    smoke_config["methods"] = [{"name": "chain", "params": {"stages": DEEP_COMPRESSION}}]
    cell = load_suite(write_suite(smoke_config)).cells[0]
    config = cell.config()
    assert "finetune" in config and "teacher" not in config
    assert config["method"]["params"]["stages"][1]["params"]["clusters"] == 8


def test_the_deep_compression_suite_file_is_valid():
    from pathlib import Path

    suite = load_suite(Path(__file__).parents[1] / "configs" / "deep_compression.yaml")
    chains = [c for c in suite.cells if c.method.name == "chain"]
    assert chains and {c.seed for c in suite.cells} == {0, 1, 2}
    stages = chains[0].method.params["stages"]
    assert [s["name"] for s in stages] == ["prune.magnitude", "share.kmeans"]


def test_suite_rules_name_a_chain_by_the_stage_params_the_file_gave(smoke_config):
    """`extra_seeds` (and `exclude`) rules match a chain by its stages as written, not by every resolved default."""
    from slimbench.harness.run.suite import parse_suite

    def chain(sparsity: float) -> dict:
        return {"name": "chain", "params": {"stages": [
            {"name": "prune.magnitude", "params": {"sparsity": sparsity}},
            {"name": "share.kmeans", "params": {"clusters": 16}}]}}

    smoke_config["methods"] = ["baseline", chain(0.9), chain(0.5)]
    smoke_config["extra_seeds"] = [{"method": "chain", "params": chain(0.9)["params"], "seeds": [1, 2]}]
    suite = parse_suite(smoke_config)
    seeds = {(c.method.params["stages"][0]["params"]["sparsity"] if c.method.name == "chain" else None, c.seed)
             for c in suite.cells}
    assert {(0.9, 0), (0.9, 1), (0.9, 2), (0.5, 0)} <= seeds and (0.5, 1) not in seeds
    smoke_config["exclude"] = [{"method": "chain", "params": chain(0.5)["params"]}]
    smoke_config.pop("extra_seeds")
    assert {c.method.params["stages"][0]["params"]["sparsity"] for c in parse_suite(smoke_config).cells
            if c.method.name == "chain"} == {0.9}



def test_a_chain_record_measures_each_stage_once_and_its_last_stage_is_the_cell(tmp_path, smoke_config, monkeypatch):
    """The last stage is the chain's own result: its numbers are the cell's, not a second measurement of it."""
    from slimbench.harness.run.records import load_records
    from slimbench.harness.run.runner import SuiteRunner
    from slimbench.harness.run.suite import parse_suite

    smoke_config["methods"] = [{"name": "chain", "params": {"stages": DEEP_COMPRESSION}}]
    runner = SuiteRunner(parse_suite(smoke_config), tmp_path, wandb_mode="disabled", progress=False)
    measured = []
    measure = SuiteRunner.measure
    monkeypatch.setattr(SuiteRunner, "measure",
                        lambda self, result, *a, **k: measured.append(result.model) or measure(self, result, *a, **k))
    assert not runner.run().failed
    (record,) = load_records(runner.paths.runs)
    first, last = record.details["stages"]
    assert len(measured) == 2 and measured[0] is not measured[1]           # the cell, then stage 1; never stage 2 again
    assert last["metrics"] == record.metrics.to_dict()                       # timings included: the same measurement
    assert first["metrics"]["nonzero_params"] < 0.25 * first["metrics"]["params"]      # 80 % pruned, before sharing
    assert first["metrics"]["stored_bytes"] > last["metrics"]["stored_bytes"]           # sharing then shrank it
