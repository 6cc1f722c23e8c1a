"""The transformers suite's claims (configs/claims.yaml, `suites: [transformers]`) on hand-built records: a method
paired seed by seed with its own control (GPTQ with round-to-nearest, SmoothQuant with plain int8, Wanda with the
magnitude cell that does not fine-tune), a throughput claim read from the batch-N timing band rather than batch 1,
and every one of them "not measured" while the suite has no record."""

from __future__ import annotations

from typing import Any

import pytest
from record_parts import band, compression, metrics, reference

from slimbench.harness.replicate import claim_terms as terms
from slimbench.harness.replicate.claim_schema import Claim
from slimbench.harness.replicate.claims_file import load_claims
from slimbench.harness.replicate.evaluation import Line, evaluate
from slimbench.harness.replicate.measurements import SuiteData
from slimbench.harness.report.build import leaderboard_rows
from slimbench.harness.run.record_parts import GitState, Provenance
from slimbench.harness.run.records import RunRecord

REFERENCES = [0.85, 0.86, 0.84]          # the same-seed baselines' accuracies (seeds 0, 1, 2)
GPTQ = {"bits": 4, "group_size": 32, "include_classifier": False, "calibration_samples": 128}
INT8 = {"observer": "minmax", "calibration_samples": 512}
MAGNITUDE_CONTROL = {"sparsity": 0.5, "scope": "layer", "include_classifier": False, "finetune": False}


def _claim(claim_id: str) -> Claim:
    (claim,) = [c for c in load_claims() if c.id == claim_id]
    return claim


def _record(run_id: str, method: str, seed: int, loss_pts: float, params: dict[str, Any] | None = None, *,
            model: str = "vit", compute: str = "dense fp32", b1: float = 1.0, bn: float = 1.0,
            references: list[float] = REFERENCES) -> RunRecord:
    """A measured record `loss_pts` below its same-seed baseline; batch-1 and batch-64 speedups with ±0.05 bands."""
    ref = references[seed]
    acc = ref - loss_pts / 100
    return RunRecord(run_id=run_id, suite="transformers", status="ok", task="fashion-mnist", model=model,
                     method=method, family="baseline" if method == "baseline" else "quantization", seed=seed,
                     config={"method": {"name": method, "params": params or {}}},
                     metrics=metrics(accuracy=acc, macro_f1=acc, latency_b1_ms=10.0 / b1, latency_bn_ms=100.0 / bn,
                                     speedup={"eager": {"b1": band(b1, b1 - 0.05, b1 + 0.05),
                                                        "bn": band(bn, bn - 0.05, bn + 0.05)}}),
                     reference=reference(accuracy=ref, macro_f1=ref),
                     compression=compression(compute=compute, baseline=method == "baseline"),
                     details={"task": {"num_classes": 10}}, provenance=Provenance(git=GitState(commit="abc")))


def _rows(method: str, losses: list[float], params: dict[str, Any] | None = None, tag: str = "",
          **kwargs: Any) -> list[RunRecord]:
    return [_record(f"{tag or method}{s}", method, s, loss, params, **kwargs) for s, loss in enumerate(losses)]


def _judge(claim_id: str, records: list[RunRecord], references: list[float] = REFERENCES) -> list[Line]:
    records = _rows("baseline", [0.0, 0.0, 0.0], references=references) + records
    suite = SuiteData("transformers", leaderboard_rows(records), {r.run_id: r for r in records})
    return evaluate([_claim(claim_id)], [suite])


# -- with no record, each new claim is "not measured", naming the suite's command --------------------------------------

def test_every_transformers_claim_is_not_measured_until_the_suite_has_records():
    claims = [c for c in load_claims() if "transformers" in c.suites]
    assert {"tome-2x-throughput-off-the-shelf", "gptq-beats-rtn-4bit", "smoothquant-beats-plain-w8a8",
            "wanda-beats-magnitude-50-percent", "michel-heads-pruned-no-loss"} <= {c.id for c in claims}
    other = SuiteData("overview", leaderboard_rows(_rows("baseline", [0.0, 0.0, 0.0])), {})
    for line in evaluate(claims, [other]):                 # records of another suite are never read
        assert line.verdict == terms.NOT_MEASURED, (line.claim.id, line.verdict)
        assert line.reason == "run `slimbench run configs/transformers.yaml`"


# -- a method against its own control, seed by seed --------------------------------------------------------------------

def test_gptq_is_paired_with_round_to_nearest_on_the_same_grid_and_needs_an_rtn_loss():
    gptq = _rows("quant.gptq", [0.5, 0.4, 0.6], GPTQ)
    coarser = _rows("quant.rtn", [0.0, 0.0, 0.0], {**GPTQ, "group_size": 128}, tag="coarse")   # another grid: unpaired
    (line,) = _judge("gptq-beats-rtn-4bit", gptq + _rows("quant.rtn", [3.0, 3.2, 2.9], GPTQ) + coarser)
    assert line.verdict == terms.REPRODUCED, line.reason
    assert "quant.gptq0 quant.gptq1 quant.gptq2 vs quant.rtn" in line.where and "coarse" not in line.where
    assert line.measured.startswith("+2.53 pts") and "3 seeds, paired" in line.measured
    # GPTQ below its control, beyond the spread: the ordering is not reproduced
    (line,) = _judge("gptq-beats-rtn-4bit", _rows("quant.gptq", [5.0, 5.1, 4.9], GPTQ)
                     + _rows("quant.rtn", [2.0, 2.1, 1.9], GPTQ))
    assert line.verdict == terms.NOT_REPRODUCED, line.reason
    # round-to-nearest lost nothing at 4 bits: nothing for GPTQ to recover, so the row is not judged
    (line,) = _judge("gptq-beats-rtn-4bit", gptq + _rows("quant.rtn", [0.0, 0.1, -0.1], GPTQ))
    assert line.verdict == terms.NOT_TESTABLE and line.reason.startswith("PTQ lost nothing to recover: quant.rtn")


def test_smoothquant_is_paired_with_plain_int8_of_the_same_observer_and_calibration():
    smooth = _rows("quant.smoothquant", [0.2, 0.3, 0.1], INT8)
    other = _rows("quant.ptq_int8", [9.0, 9.0, 9.0], {**INT8, "observer": "entropy"}, tag="entropy")
    (line,) = _judge("smoothquant-beats-plain-w8a8", smooth + _rows("quant.ptq_int8", [2.0, 2.2, 1.9], INT8) + other)
    assert line.verdict == terms.REPRODUCED, line.reason
    assert "vs quant.ptq_int8" in line.where and "entropy" not in line.where
    assert line.measured.startswith("+1.83 pts")
    # the same gap inside the seeds' spread: inconclusive, never reproduced on the mean alone
    noisy = _rows("quant.smoothquant", [-1.0, 3.0, 0.0], INT8)
    (line,) = _judge("smoothquant-beats-plain-w8a8", noisy + _rows("quant.ptq_int8", [2.0, 2.2, 1.9], INT8))
    assert line.verdict == terms.INCONCLUSIVE, line.reason


def test_wanda_is_compared_with_the_magnitude_cell_that_does_not_fine_tune():
    wanda = _rows("prune.wanda", [1.0, 1.2, 0.9], {"pattern": "unstructured", "include_classifier": False})
    finetuned = _rows("prune.magnitude", [0.0, 0.0, 0.0], {"sparsity": 0.5, "scope": "global",
                                                           "include_classifier": True, "finetune": True}, tag="ft")
    control = _rows("prune.magnitude", [6.0, 6.5, 5.5], MAGNITUDE_CONTROL, tag="oneshot")
    (line,) = _judge("wanda-beats-magnitude-50-percent", wanda + finetuned + control)
    assert line.verdict == terms.REPRODUCED, line.reason
    assert "oneshot0 oneshot1 oneshot2" in line.where and "ft0" not in line.where
    assert "finetune=False" in line.where
    # against the fine-tuned cell alone there is no like-for-like control: nothing is measured
    (line,) = _judge("wanda-beats-magnitude-50-percent", wanda + finetuned)
    assert line.verdict == terms.NOT_MEASURED


def test_two_to_four_wanda_is_paired_with_unstructured_wanda():
    unstructured = _rows("prune.wanda", [1.0, 1.2, 0.9], {"pattern": "unstructured", "calibration_samples": 128,
                                                         "include_classifier": False}, tag="u")
    two_four = _rows("prune.wanda", [4.0, 4.5, 3.8], {"pattern": "n:m", "calibration_samples": 128,
                                                      "include_classifier": False}, tag="nm")
    (line,) = _judge("wanda-2to4-below-unstructured", unstructured + two_four)
    assert line.verdict == terms.REPRODUCED, line.reason        # the claim is "lower": 2:4 below unstructured
    assert line.measured.startswith("-3.07 pts")


# -- throughput: the batch-N band, not batch 1 -------------------------------------------------------------------------

@pytest.mark.parametrize(("b1", "bn", "loss", "verdict"), [
    (1.0, 2.3, 0.0, terms.REPRODUCED),        # 2.3× at batch 64 (1.0× at batch 1): the claim is throughput
    (2.3, 1.0, 0.0, terms.NOT_REPRODUCED),    # 2.3× at batch 1 only: no throughput gain
    (1.0, 2.3, 1.0, terms.NOT_REPRODUCED),    # fast, but a 1-point loss breaks the ≤ 0.3-point condition
])
def test_token_merging_throughput_is_read_at_batch_n(b1: float, bn: float, loss: float, verdict: str):
    tight = [0.85, 0.8505, 0.8495]   # baselines 0.05 points apart: an interval narrow enough to decide 0.3 points
    merged = _rows("tokens.merge", [loss] * 3, {"r": 8}, compute="smaller dense", b1=b1, bn=bn, references=tight)
    (line,) = _judge("tome-2x-throughput-off-the-shelf", merged, tight)
    assert line.verdict == verdict, line.reason
    assert f"{bn:.2f}×" in line.measured and "leaderboard batch 64" in line.measured


def test_a_throughput_claim_needs_fewer_multiply_adds_executed():
    merged = _rows("tokens.merge", [0.0] * 3, {"r": 8}, compute="dense fp32", bn=2.3)
    (line,) = _judge("tome-2x-throughput-off-the-shelf", merged)
    assert line.verdict == terms.NOT_TESTABLE and line.reason.startswith("no smaller kernel")
