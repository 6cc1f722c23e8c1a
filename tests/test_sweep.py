"""Methods against their random controls and sweep curves: the verdict follows the seeds' spread."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from record_parts import leaderboard_row, metrics

from slimbench.harness.report import sweep
from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.run.records import RunRecord

PARAMS = {"sparsity": 0.8, "scope": "global", "schedule": "gradual"}


def _record(method: str, seed: int, accuracy: float, params: dict | None = None) -> RunRecord:
    params = params or PARAMS
    return RunRecord(run_id=f"{method}-{seed}-{params['sparsity']}", suite="t", status="ok", task="fashion-mnist",
                     model="mobilenetv2", method=method, family="pruning", seed=seed,
                     config={"method": {"name": method, "params": params}}, metrics=metrics(accuracy=accuracy),
                     reference=None, compression=None, details={"params_given": {"sparsity": params["sparsity"],
                                                                             "schedule": params["schedule"]}})


def test_method_beats_its_control_only_beyond_the_seeds_spread():
    clear = [_record("prune.magnitude", s, a) for s, a in enumerate([0.85, 0.86, 0.84])] + \
            [_record("prune.random", s, a) for s, a in enumerate([0.60, 0.62, 0.58])]
    (row,) = sweep.control_rows(clear)
    assert row["seeds"] == [0, 1, 2] and abs(row["delta"] * 100 - 25.0) < 1e-9
    assert row["verdict"] == "beats the control beyond the seeds' spread"
    assert row["swept"] == {"sparsity": 0.8} and row["fixed"] == {"schedule": "gradual"}

    noisy = [_record("prune.magnitude", s, a) for s, a in enumerate([0.85, 0.60, 0.70])] + \
            [_record("prune.random", s, a) for s, a in enumerate([0.70, 0.68, 0.69])]
    assert sweep.control_rows(noisy)[0]["verdict"] == "inside the seeds' spread"

    worse = [_record("prune.magnitude", s, a) for s, a in enumerate([0.08, 0.08, 0.08])] + \
            [_record("prune.random", s, a) for s, a in enumerate([0.12, 0.13, 0.11])]
    assert sweep.control_rows(worse)[0]["verdict"] == "worse than the control beyond the seeds' spread"

    one = [_record("prune.magnitude", 0, 0.9), _record("prune.random", 0, 0.5)]
    assert sweep.control_rows(one)[0]["verdict"].startswith("1 seed")


def test_only_same_params_and_same_seeds_are_paired():
    other = {**PARAMS, "sparsity": 0.9}
    records = [_record("prune.magnitude", 0, 0.8), _record("prune.magnitude", 1, 0.8),
               _record("prune.random", 1, 0.5), _record("prune.random", 0, 0.4, other)]
    (row,) = sweep.control_rows(records)
    assert row["seeds"] == [1] and row["control_accuracy"] == 0.5
    failed = [*records[:2], dataclasses.replace(_record("prune.random", 0, 0.1), status="failed")]
    assert sweep.control_rows(failed) == []
    lines = sweep.controls_markdown(records)
    assert lines[0] == "## Methods against their random controls" and any("+30.00" in line for line in lines)


def test_sweep_plot_draws_a_curve_per_method_only_when_a_parameter_varies(tmp_path: Path):
    def row(method: str, sparsity: float | None, acc: float, comp: float) -> LeaderboardRow:
        given = {} if sparsity is None else {"sparsity": sparsity, "schedule": "gradual"}
        return leaderboard_row(method=method, family="baseline" if sparsity is None else "pruning",
                               params_given=json.dumps(given), accuracy=acc, accuracy_std=0.01, compression_x=comp,
                               latency_b1_ms=1.0, latency_bn_ms=10.0, seeds="0 1 2")

    rows = [row("baseline", None, 0.9, 1.0), row("prune.magnitude", 0.5, 0.89, 2.0),
            row("prune.magnitude", 0.9, 0.8, 9.0), row("prune.random", 0.5, 0.85, 2.0)]
    curves = sweep._curves(rows, "t")
    assert list(curves) == ["m · prune.magnitude (schedule=gradual)"]        # random has one point: no curve
    assert [r.compression_x for r in curves["m · prune.magnitude (schedule=gradual)"]] == [2.0, 9.0]
    assert sweep.plot(rows, "t", tmp_path / "sweep_t.png") and (tmp_path / "sweep_t.png").read_bytes()[:4] == b"\x89PNG"
    assert not sweep.plot(rows[:2], "t", tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_a_chain_label_shows_its_stages_with_their_knobs_and_changed_params_only():
    from slimbench.harness.report.stats import short_params

    stages = [{"name": "prune.magnitude", "params": {"sparsity": 0.8, "scope": "global", "include_classifier": True,
                                                     "finetune": True, "schedule": "gradual", "pruning_steps": 10,
                                                     "gradual_span": 0.75}},
              {"name": "share.kmeans", "params": {"clusters": 16, "init": "linear", "min_numel": 256,
                                                  "skip_depthwise": False, "keep_zeros": True, "finetune": True}}]
    assert short_params(json.dumps({"stages": stages})) == \
        "stages=prune.magnitude(sparsity=0.8, schedule=gradual) → share.kmeans(clusters=16)"
    assert short_params(json.dumps({"sparsity": 0.5, "scope": "layer"})) == "sparsity=0.5, scope=layer"


def test_mixed_precision_table_comes_from_the_record_of_the_lowest_seed():
    from slimbench.harness.report.layer_tables import markdown

    def rec(seed: int, precision: str) -> RunRecord:
        layers = [{"layer": "features.0", "op": "Conv", "params": 100, "loss_increase": 0.02, "accuracy_change": -0.01,
                   "precision": "float32"},
                  {"layer": "classifier", "op": "Gemm", "params": 300, "loss_increase": 0.0001, "accuracy_change": 0.0,
                   "precision": precision}]
        return RunRecord(run_id=f"m{seed}", suite="t", status="ok", task="synth-kws", model="mobilenetv2",
                         method="quant.mixed", family="quantization", seed=seed, config={},
                         metrics=metrics(accuracy=0.87, stored_bytes=1234), reference=None, compression=None,
                         details={"layers": layers, "params_given": {"max_accuracy_drop": 0.005},
                                  "search": [{"float_layers": 1, "loss_increase": 0.001, "accuracy_change": -0.002}]})

    lines = markdown([rec(1, "float32"), rec(0, "int8")])
    text = "\n".join(lines)
    assert "seed 0" in text and "seed 1" not in text
    assert "1 of 2 layers int8, holding 75.0 % of the weights" in text
    rows = [line for line in text.splitlines() if line.startswith("| classifier") or line.startswith("| features.0")]
    assert len(rows) == 2 and "int8" in rows[1] and "float32" in rows[0] and "Gemm" in rows[1]
    assert lines[0] == "## Mixed precision: each layer's measured sensitivity and chosen precision"
    assert markdown([]) == []
