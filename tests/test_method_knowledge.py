"""What the reports know about a method comes from the method: its random control, its compression knobs, its family's
place and its own report section. A plugin file that declares them gets its pairing, labels, sweep and section from
a real run with no edit of the harness."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from slimbench.baselines import MODELS
from slimbench.harness.report import sweep
from slimbench.harness.report.build import build_report
from slimbench.harness.report.stats import knobs, short_params
from slimbench.harness.run.records import load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import load_suite
from slimbench.methods import FAMILIES, METHODS, build_method, family_rank
from tests.conftest import SMOKE

PLUGIN = '''
"""Zero a share of each layer's weights, the smallest or at random: a method family from outside slimbench."""
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from slimbench.core.params import bounded
from slimbench.methods import Method, MethodContext, Outcome, ReportTable, register_method


def zeroed_rows(details: dict[str, Any]) -> list[list[Any]]:
    return [[row["layer"], row["zeroed"], row["of"]] for row in details.get("zeroed_layers", [])]


def zeroed_summary(details: dict[str, Any], metrics: dict[str, Any]) -> str:
    total = sum(row["zeroed"] for row in details["zeroed_layers"])
    return f"{total} weights zeroed; test accuracy {metrics['accuracy']:.4f}."


@dataclass
class Zeroing(Method):
    family: ClassVar[str] = "zeroing"
    uses_finetune: ClassVar[bool] = False
    knobs: ClassVar[tuple[str, ...]] = ("share",)
    share: float = bounded(0.5, ge=0.0, lt=1.0)
    min_numel: int = bounded(0, ge=0)          # smaller layers keep every weight

    def scores(self, weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, model, ctx: MethodContext) -> Outcome:
        generator = torch.Generator().manual_seed(ctx.seed)
        zeroed = []
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if weight.dim() < 2 or weight.numel() < self.min_numel:
                    continue
                k = int(self.share * weight.numel())
                weight.view(-1)[self.scores(weight, generator).flatten().argsort()[:k]] = 0.0
                zeroed.append({"layer": name, "zeroed": k, "of": weight.numel()})
        return Outcome(model, details={"zeroed_layers": zeroed})


@register_method("test.kn.zero_smallest")
@dataclass
class ZeroSmallest(Zeroing):
    """Zeroes each layer's smallest weights."""

    control: ClassVar[str | None] = "test.kn.zero_random"
    report_tables: ClassVar[tuple[ReportTable, ...]] = (ReportTable(
        title="Zeroed weights per layer", intro="How many weights each layer lost.",
        headers=("layer", "zeroed", "of"), rows=zeroed_rows, summary=zeroed_summary),)

    def scores(self, weight, generator):
        return weight.abs()


@register_method("test.kn.zero_random")
@dataclass
class ZeroRandom(Zeroing):
    """Zeroes random weights of each layer: the control."""

    def scores(self, weight, generator):
        return torch.rand(weight.shape, generator=generator)
'''
PLUGIN_METHODS = ("test.kn.zero_smallest", "test.kn.zero_random")
SHARES = (0.3, 0.6)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> tuple[Path, str]:
    """The plugin's methods and their control at two shares on the smoke task, run and reported: the results
    folder and its leaderboard.md. The registrations are removed afterwards, so other tests never see them."""
    root = tmp_path_factory.mktemp("knowledge")
    (root / "zeroing.py").write_text(PLUGIN)
    config = copy.deepcopy(SMOKE)
    config.update(suite="knowledge", imports=["zeroing.py"],
                  methods=["baseline", *({"name": m, "params": {"share": s, "min_numel": 0}}
                                         for m in PLUGIN_METHODS for s in SHARES)])
    config["train"] = {**config["train"], "max_train_batches": 6}
    config["measure"] = {**config["measure"], "peak_memory": False}
    (root / "suite.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        runner = SuiteRunner(load_suite(root / "suite.yaml"), root / "results", wandb_mode="disabled", progress=False)
        assert not runner.run().failed
        build_report(runner.paths.root)
        yield runner.paths.root, (runner.paths.root / "leaderboard.md").read_text()
    finally:
        for name in PLUGIN_METHODS:
            METHODS.unregister(name)


def test_a_plugin_method_is_paired_with_the_control_it_declares(plugin_run):
    root, report = plugin_run
    rows = sweep.control_rows(load_records(root / "runs"))
    assert [(r["method"], r["control"], r["swept"], r["fixed"], r["seeds"]) for r in rows] == [
        ("test.kn.zero_smallest", "test.kn.zero_random", {"share": s}, {"min_numel": 0}, [0]) for s in SHARES]
    assert all(r["verdict"] == "1 seed: no spread to judge against" for r in rows)
    assert "## Methods against their random controls" in report
    pair_lines = [line for line in report.splitlines() if "test.kn.zero_smallest vs test.kn.zero_random" in line]
    assert len(pair_lines) == 2 and "share=0.3" in pair_lines[0] and "min_numel=0" in pair_lines[0]


def test_a_plugin_knob_is_swept_and_always_shown(plugin_run):
    root, _ = plugin_run
    assert "share" in knobs()
    # a chain's label drops parameters at their defaults, except the knobs
    stage = {"name": "test.kn.zero_smallest", "params": {"share": 0.5, "min_numel": 0}}
    assert short_params(json.dumps({"stages": [stage]})) == "stages=test.kn.zero_smallest(share=0.5)"
    # both methods vary `share` at a fixed min_numel: one sweep curve each
    assert (root / "sweep_digits.png").read_bytes()[:4] == b"\x89PNG"


def test_a_plugin_report_section_comes_from_its_records(plugin_run):
    root, report = plugin_run
    records = {(r.method, r.details["params_given"]["share"]): r for r in load_records(root / "runs")
               if r.method in PLUGIN_METHODS}
    section = report[report.index("## Zeroed weights per layer"):]
    assert section.startswith("## Zeroed weights per layer\n\nHow many weights each layer lost.\n")
    for share in SHARES:
        layers = records["test.kn.zero_smallest", share].details["zeroed_layers"]
        assert [row["zeroed"] for row in layers] == [int(share * row["of"]) for row in layers] and len(layers) == 3
        heading = f"### digits · tiny-cnn · test.kn.zero_smallest (share={share}, min_numel=0), seed 0"
        block = section[section.index(heading):]
        accuracy = records["test.kn.zero_smallest", share].to_dict()["metrics"]["accuracy"]
        assert f"{sum(r['zeroed'] for r in layers)} weights zeroed; test accuracy {accuracy:.4f}." in block
        first = next(line for line in block.splitlines() if line.startswith("| 0.weight"))
        assert [cell.strip() for cell in first.split("|")[1:-1]] == ["0.weight", str(layers[0]["zeroed"]),
                                                                      str(layers[0]["of"])]
    assert "test.kn.zero_random (" not in section        # the control declares no section


def test_unknown_families_sort_after_the_declared_ones():
    ranks = [family_rank(f) for f in FAMILIES]
    assert ranks == sorted(ranks) and ranks[0] == family_rank("baseline")
    assert family_rank("chain") < family_rank("aaa") < family_rank("zeroing")


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not n.startswith("test.")])
def test_what_a_builtin_method_declares_is_consistent(name):
    cls = METHODS.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(cls.knobs) <= fields, f"{name}: knobs {cls.knobs} must be parameters"
    assert cls.family in FAMILIES
    if cls.control is not None:
        control = METHODS.get(cls.control)      # registered, with the same parameters so records pair
        assert {f.name for f in dataclasses.fields(control)} == fields and control.family == cls.family
        assert control.control is None
    model, params = cls.example
    assert model in MODELS.names()
    build_method(name, copy.deepcopy(params))
