"""Corrupted test copies, per-class accuracy and compression-identified examples: the robustness measurement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from slimbench.baselines.registry import build_model
from slimbench.core.errors import ConfigError
from slimbench.harness.measure.quality import evaluate_test, pack_bits, robustness, unpack_bits
from slimbench.harness.report.robustness import identified_examples
from slimbench.tasks import build_task
from slimbench.tasks.base import InputSpec, Split, Task, stratified_subset
from slimbench.tasks.corruptions import TEXT, VISION, CorruptionSource, adjacent_swap, oov_substitution, word_dropout
from slimbench.tasks.text import TextParams, build_text_task

if TYPE_CHECKING:
    from slimbench.harness.run.records import RunRecord


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task("digits", {})


@pytest.fixture(scope="module")
def text_task() -> Task:
    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "the", "a", "very"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(300)]
    labels = np.array([int(sum(w in t.split() for w in ("good", "great", "fine")) >= 1) for t in texts])
    splits = {"train": np.arange(0, 200), "val": np.arange(200, 240), "test": np.arange(240, 300)}
    params = TextParams(seq_len=10, embed_dim=8, word_vectors="none", reference=False)
    return build_text_task("toy-text", ["neg", "pos"], texts, labels, splits, params, {})


def test_every_embedded_modality_declares_its_corruptions(digits, text_task):
    assert digits.corruption_names() == [c.name for c in VISION] == ["gaussian_noise", "blur", "contrast"]
    assert text_task.corruption_names() == [c.name for c in TEXT]
    with pytest.raises(ConfigError, match="unknown corruption 'fog'.*gaussian_noise"):
        digits.corrupted_test("fog", 1, 100)
    with pytest.raises(ConfigError, match="severities 0..3"):
        digits.corrupted_test("blur", 4, 100)


@pytest.mark.parametrize("which", ["digits", "text_task"])
def test_corruptions_are_deterministic_keep_labels_and_severity_0_is_the_clean_split(which, request):
    task = request.getfixturevalue(which)
    index = stratified_subset(task.test.y, 40, 0).sort().values
    for name in task.corruption_names():
        clean = task.corrupted_test(name, 0, 40)
        assert torch.equal(clean.x, task.test.x[index]) and torch.equal(clean.y, task.test.y[index])
        previous = clean.x
        for severity in (1, 2, 3):
            split = task.corrupted_test(name, severity, 40)
            assert torch.equal(split.y, clean.y)                              # labels never change
            assert split.x.shape == clean.x.shape and split.x.dtype == clean.x.dtype
            assert not torch.equal(split.x, clean.x)
            # the same stream in a fresh source (no cache): same seed -> same inputs, another seed -> others
            fresh = CorruptionSource(task.corruptions.raw, task.corruptions.to_input, task.corruptions.corruptions)
            assert torch.equal(fresh.inputs(index, name, severity, 0), split.x)
            if task.corruptions.get(name).random:
                assert not torch.equal(fresh.inputs(index, name, severity, 1), split.x)
            previous = split.x
        assert previous is not clean.x


def test_vision_severity_grows_the_damage(digits):
    index = stratified_subset(digits.test.y, 100, 0).sort().values
    clean = digits.test.x[index]
    for name in digits.corruption_names():
        gaps = [float((digits.corrupted_test(name, s, 100).x - clean).abs().mean()) for s in (1, 2, 3)]
        assert gaps[0] < gaps[1] < gaps[2], (name, gaps)


def test_text_corruptions_do_what_they_say():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 0, 0], [2, 3, 4, 0, 0, 0, 0, 0, 0, 0]])
    dropped = word_dropout(ids, 0.5, gen())
    for row, out in zip(ids, dropped):
        kept = out[out != 0].tolist()
        assert kept == [t for t in row.tolist() if t in kept] and len(kept) < (row != 0).sum()   # order kept, fewer
        assert (out[len(kept):] == 0).all()                                                     # padding at the end
    swapped = adjacent_swap(ids, 0.5, gen())
    assert sorted(swapped[0].tolist()) == sorted(ids[0].tolist()) and not torch.equal(swapped, ids)
    assert ((swapped == 0) == (ids == 0)).all()
    unk = oov_substitution(ids, 0.5, gen())
    changed = unk != ids
    assert changed.any() and (unk[changed] == 1).all() and (ids[changed] != 0).all()


def test_per_class_accuracy_weighted_by_counts_is_the_accuracy(digits):
    torch.manual_seed(0)
    model = build_model("tiny-cnn", digits.spec, digits.num_classes, {"width": 8}).eval()
    with torch.no_grad():   # a few steps of training so classes differ in accuracy
        opt = torch.optim.Adam(model.parameters(), 0.01)
        for _ in range(30):
            with torch.enable_grad():
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(digits.train.x[:256]), digits.train.y[:256]).backward()
                opt.step()
    model.eval()
    e = evaluate_test(model, digits)
    rob = robustness(model, digits, e.predictions, 100)
    counts, accs = np.array(rob.class_counts), np.array(rob.per_class_accuracy)
    assert counts.sum() == len(digits.test) == rob.test_examples
    assert float((counts * accs).sum() / counts.sum()) == pytest.approx(e.accuracy, abs=1e-5)
    assert len(set(np.round(accs, 3))) > 1
    flags = unpack_bits(rob.test_correct, rob.test_examples)
    assert np.array_equal(flags, rob.correct_flags()) and flags.mean() == pytest.approx(e.accuracy, abs=1e-6)
    assert set(rob.corrupted_accuracy) == set(digits.corruption_names())
    assert all(0 <= v <= 1 for per in rob.corrupted_accuracy.values() for v in per.values())
    assert rob.corrupted_examples == 100
    assert identified_examples(flags, flags) == 0        # a model against itself breaks nothing
    again = robustness(model, digits, evaluate_test(model, digits).predictions, 100)
    assert again == rob                                  # same model, same corrupted inputs: same figures


def test_identified_examples_count_only_what_the_reference_got_right():
    ref = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    model = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    assert identified_examples(ref, model) == 2 and identified_examples(model, ref) == 1
    assert np.array_equal(unpack_bits(pack_bits(torch.from_numpy(ref)), 6), ref)
    with pytest.raises(ValueError, match="different test splits"):
        identified_examples(ref, ref[:4])


def test_a_task_without_corruptions_still_gets_per_class_accuracy():
    x, y = torch.randn(60, 1, 4, 4), torch.arange(60) % 3
    task = Task("blobs", InputSpec(1, 4, 4), ["a", "b", "c"], Split(x, y), Split(x, y), Split(x, y))
    model = build_model("tiny-cnn", task.spec, 3, {"width": 4}).eval()
    rob = robustness(model, task, evaluate_test(model, task).predictions, 30)
    assert rob.corrupted_accuracy == {} and rob.mean_corrupted() is None and len(rob.per_class_accuracy) == 3


def _rob_record(run_id: str, method: str, seed: int, correct: list[int], labels: list[int], corrupted: float,
                teacher: bool = False) -> RunRecord:
    """A record whose robustness block is built from per-example right/wrong flags on a 2-class test split."""
    import record_parts

    from slimbench.harness.measure.figures import Robustness
    from slimbench.harness.run.record_parts import GitState, Provenance
    from slimbench.harness.run.records import RunRecord

    flags, y = torch.tensor(correct, dtype=torch.bool), torch.tensor(labels)
    counts = torch.bincount(y, minlength=2)
    per_class = [float(flags[y == c].float().mean()) for c in range(2)]
    acc = float(flags.float().mean())
    versions = {"task": 1, "model": 1, "method": 3, "training": 1, "measure": 2, **({"teacher": 1} if teacher else {})}
    config = {"task": {"name": "t"}, "model": {"name": "m"}, "train": {"epochs": 1}, "measure": {"rounds": 3},
              "method": {"name": method, "params": {}}, "versions": versions}
    robust = Robustness(classes=["neg", "pos"], class_counts=counts.tolist(), per_class_accuracy=per_class,
                        test_correct=pack_bits(flags), test_examples=len(flags))
    figures = dict(params=1, nonzero_params=1, stored_bytes=10, gzip_bytes=10, macs=1, latency_b1_ms=1.0,
                   latency_bn_ms=1.0)
    family = {"baseline": "baseline", "distill.logit": "distillation"}.get(method, "pruning")
    return RunRecord(run_id=run_id, suite="quick", status="ok", task="t", model="m", method=method, family=family,
                     seed=seed, config=config,
                     metrics=record_parts.metrics(accuracy=acc, macro_f1=acc, speedup={},
                                                  mean_corrupted_accuracy=corrupted, robustness=robust, **figures),
                     reference=record_parts.reference(accuracy=0.0, macro_f1=0.0, **figures),
                     compression=record_parts.compression(baseline=family == "baseline"), details={},
                     provenance=Provenance(git=GitState(commit="abc")))


def test_report_pairs_each_row_with_its_own_seed_baseline_and_sets_churn_beside_it():
    from slimbench.harness.report.build import leaderboard_rows

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    base0 = _rob_record("b0", "baseline", 0, [1, 1, 1, 1, 1, 1, 1, 0], labels, 0.60)
    base1 = _rob_record("b1", "baseline", 1, [1, 1, 1, 0, 1, 1, 1, 1], labels, 0.62)
    # class 0 loses two examples against baseline seed 0 (and one against seed 1)
    kd0 = _rob_record("k0", "distill.logit", 0, [0, 0, 1, 1, 1, 1, 1, 0], labels, 0.50, teacher=True)
    kd1 = _rob_record("k1", "distill.logit", 1, [0, 1, 1, 0, 1, 1, 1, 1], labels, 0.54, teacher=True)
    rows = {r.method: r.robustness for r in leaderboard_rows([base0, base1, kd0, kd1])}
    kd, base = rows["distill.logit"], rows["baseline"]
    assert kd.delta_corrupted == pytest.approx(((0.50 - 0.60) + (0.54 - 0.62)) / 2)
    assert kd.cie == pytest.approx((2 + 1) / 2)                           # right for the baseline, wrong for KD
    assert kd.cie_churn == pytest.approx(1.0) == base.cie_churn           # b0 vs b1: 1 each way
    assert kd.worst_class == "neg" and kd.delta_worst_class == pytest.approx(-(0.5 + 0.25) / 2)
    assert base.cie == 0 and base.delta_corrupted == 0 and base.worst_class is None
    assert base.worst_class_churn == pytest.approx(-25.0)                 # one class drops 1 of 4 between seeds
    assert kd.delta_corrupted_significant   # −0.09, beyond the paired spread (0.014) and the baseline's (0.014)


def test_replication_nets_the_worst_class_excess_of_baseline_churn():
    from slimbench.harness.replicate.claim_terms import INCONCLUSIVE, NOT_REPRODUCED
    from slimbench.harness.replicate.claims_file import parse_claims
    from slimbench.harness.replicate.evaluation import evaluate
    from slimbench.harness.replicate.measurements import SuiteData
    from slimbench.harness.report.build import leaderboard_rows

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    records = [_rob_record("b0", "baseline", 0, [1, 1, 1, 1, 1, 1, 1, 0], labels, 0.60),
               _rob_record("b1", "baseline", 1, [1, 1, 1, 0, 1, 1, 1, 1], labels, 0.62),
               _rob_record("k0", "prune.magnitude", 0, [0, 0, 1, 1, 1, 1, 1, 0], labels, 0.50),
               _rob_record("k1", "prune.magnitude", 1, [0, 1, 1, 0, 1, 1, 1, 1], labels, 0.54)]
    claims = parse_claims({"claims": [
        {"id": "few-classes", "source": "Hooker et al. 2019, Sec. 3.1", "claim": "damage in a few classes",
         "published": {"unit": "pts", "text": "no figure"}, "comparison": "worst class excess less churn",
         "rule": {"test": "ordering", "direction": "lower", "no_effect": 0}, "kind": "records",
         "records": {"value": "worst_class_excess_pts", "where": {"method": "prune.magnitude"},
                     "versus": {"method": "baseline"}}, "suites": ["quick"]},
        {"id": "corrupted", "source": "brief", "claim": "pruning is more robust",
         "published": {"unit": "pts", "text": "no figure"}, "comparison": "corrupted Δ",
         "rule": {"test": "ordering", "direction": "higher", "no_effect": 0}, "kind": "records",
         "records": {"value": "corrupted_accuracy_pts", "where": {"method": "prune.magnitude"},
                     "versus": {"method": "baseline"}}, "suites": ["quick"]},
    ]}, "test")
    suite = SuiteData("quick", leaderboard_rows(records), {r.run_id: r for r in records})
    few, corrupted = evaluate(claims, [suite])
    # excess per seed: (−50 + 25) and (−25 + 12.5) pts; between baseline seeds −25 both ways: net +6.25 ± 8.84
    assert few.measured.startswith("+6.25") and "8.84" in few.measured and few.verdict == INCONCLUSIVE   # across 0
    assert corrupted.measured.startswith("-9.00") and corrupted.verdict == NOT_REPRODUCED
    unpaired = {"id": "x", "source": "s", "claim": "c", "comparison": "c", "published": {"unit": "pts", "text": "t"},
                "rule": {"test": "ordering", "direction": "lower"}, "kind": "records", "suites": ["quick"],
                "records": {"value": "worst_class_excess_pts", "where": {"method": "x"}}}
    with pytest.raises(ConfigError, match="measured against the baseline"):
        parse_claims({"claims": [unpaired]}, "test")
