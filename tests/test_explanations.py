"""Explanations in every record: attributions that are faithful to the model that made them (deletion falls faster
than in a random order; a model with re-initialized weights does worse, Adebayo et al. 2018), agreement of a model
with itself is 1, the floor is two baseline seeds' agreement, and records without the part read and report as
before. Training time: every fit timed per epoch, and the claims that read both."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import fit
from slimbench.harness.measure.explanation_data import (
    ATTRIBUTION_METHODS,
    EXPLANATIONS_VERSION,
    GRADIENT_X_INPUT,
    INTEGRATED_GRADIENTS,
    Agreement,
    Explanations,
    Faithfulness,
    agreement,
    encode_attributions,
    seed_floor,
)
from slimbench.harness.measure.explanations import (
    ExplainConfig,
    attribute,
    curve,
    explain,
    explanation_subset,
    faithfulness,
    modality,
    probabilities,
    random_scores,
    ranks,
)
from slimbench.harness.report.build import csv_text, leaderboard_rows, markdown_text
from slimbench.harness.run.record_parts import BaselineTraining, Fit
from slimbench.harness.run.records import RunRecord, read_record
from slimbench.tasks.text import TextParams, build_text_task

TRAINED = {"width": 16, "epochs": 4}   # the `trained` fixture's tiny-cnn
ROOT = Path(__file__).resolve().parent.parent
DEPLOYED = "the deployed model"


def _fit(task, name: str, seed: int, epochs: int = 4, **params):  # noqa: ANN001, ANN202
    torch.manual_seed(seed)
    model = build_model(name, task.spec, task.num_classes, params)
    return fit(model, task, TrainConfig(epochs=epochs, batch_size=64, lr=0.01, channels_last=False), seed=seed,
               progress=False)


@pytest.fixture(scope="module")
def other_seed(task):  # noqa: ANN001, ANN201
    """The same tiny-cnn trained with seed 1: a second baseline seed."""
    return _fit(task, "tiny-cnn", 1, width=16).model.eval()


@pytest.fixture(scope="module")
def randomized(task):  # noqa: ANN001, ANN201
    """tiny-cnn with re-initialized (never trained) weights: Adebayo et al.'s model randomization."""
    torch.manual_seed(123)
    return build_model("tiny-cnn", task.spec, task.num_classes, {"width": 16}).eval()


@pytest.fixture(scope="module")
def text_task():  # noqa: ANN201
    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "the", "a", "very"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(400)]
    labels = np.array([int(sum(w in t.split() for w in ("good", "great", "fine")) >= 1) for t in texts])
    splits = {"train": np.arange(0, 280), "val": np.arange(280, 320), "test": np.arange(320, 400)}
    params = TextParams(seq_len=10, embed_dim=8, word_vectors="none", reference=False)
    return build_text_task("toy-text", ["neg", "pos"], texts, labels, splits, params, {})


def _score(e: Explanations, name: str = INTEGRATED_GRADIENTS) -> float:
    f = e.faithfulness[name]
    return f.insertion_auc - f.deletion_auc


# -- faithfulness, on real attributions of trained models -------------------------------------------------------------

def test_deletion_in_the_models_own_order_falls_faster_than_in_a_random_order(task, trained):
    e = explain(trained, trained, DEPLOYED, task, None)
    assert e.unavailable is None and e.examples == 32 and e.features == 64 and e.random_deletion_auc is not None
    for name in ATTRIBUTION_METHODS:
        f = e.faithfulness[name]
        assert f.deletion_auc < e.random_deletion_auc - 0.05, (name, f, e.random_deletion_auc)
        assert f.insertion_auc > f.deletion_auc + 0.2, (name, f)
    # the curves themselves: after a sixteenth of the pixels, the attributed order has taken more probability away
    m = modality(task)
    x, _ = explanation_subset(task, 32)
    target = probabilities(trained, x).argmax(dim=1)
    valid = m.valid(x)
    scores = attribute(trained, x, target, m, ExplainConfig())[INTEGRATED_GRADIENTS]
    own = curve(trained, x, target, ranks(scores, valid), valid, m, 16, insertion=False)
    rand = curve(trained, x, target, ranks(random_scores(valid.shape), valid), valid, m, 16, insertion=False)
    assert np.allclose(own[:, 0], rand[:, 0])                            # both start from the untouched input
    assert own[:, 1:5].mean() < rand[:, 1:5].mean() - 0.1
    assert np.allclose(own[:, -1], rand[:, -1], atol=1e-6)              # and end at the all-removed input
    ends = (probabilities(trained, x), probabilities(trained, m.apply(x, valid)))   # computed once per explanation
    for insertion in (False, True):
        alone = curve(trained, x, target, ranks(scores, valid), valid, m, 16, insertion)
        assert np.allclose(curve(trained, x, target, ranks(scores, valid), valid, m, 16, insertion, ends), alone,
                           atol=1e-5)


def test_a_model_with_randomized_weights_explains_worse_than_the_trained_one(task, trained, randomized):
    """Adebayo et al. 2018's model-randomization check: attributions that do not depend on the weights would pass
    as faithful for the re-initialized model too."""
    ours = explain(trained, trained, DEPLOYED, task, None)
    rand = explain(randomized, randomized, DEPLOYED, task, None)
    for name in ATTRIBUTION_METHODS:
        assert _score(rand, name) < _score(ours, name) - 0.1, name
    # the randomized model's attributions explain the trained model worse than its own do
    m = modality(task)
    x, _ = explanation_subset(task, 32)
    target = probabilities(trained, x).argmax(dim=1)
    valid = m.valid(x)
    borrowed = attribute(randomized, x, target, m, ExplainConfig())[INTEGRATED_GRADIENTS]
    theirs = faithfulness(trained, x, target, borrowed, valid, m, 16)
    assert theirs.deletion_auc > ours.faithfulness[INTEGRATED_GRADIENTS].deletion_auc + 0.05
    # and they do not agree with the trained model's
    own = attribute(trained, x, target, m, ExplainConfig())[INTEGRATED_GRADIENTS]
    assert agreement(own.numpy(), borrowed.numpy(), 0.1).spearman < 0.5


# -- agreement and its floor -------------------------------------------------------------------------------------------

def test_a_model_agrees_with_itself_exactly(task, trained):
    a = np.random.default_rng(0).normal(size=(5, 30))
    assert agreement(a, a.copy(), 0.1) == Agreement(1.0, 1.0)
    assert agreement(a, -a, 0.1).spearman == -1.0
    e = explain(trained, trained, DEPLOYED, task, copy.deepcopy(trained))
    assert e.attributions is None and e.agreement is not None
    assert e.agreement == {name: Agreement(1.0, 1.0) for name in ATTRIBUTION_METHODS}


def test_the_floor_is_two_baseline_seeds_agreement_on_the_same_examples(task, trained, other_seed):
    cells = {0: explain(trained, trained, DEPLOYED, task, None),
             1: explain(other_seed, other_seed, DEPLOYED, task, None)}
    assert all(e.attributions is not None and e.agreement is None for e in cells.values())   # baseline cells keep them
    floor = seed_floor(cells)
    assert floor is not None and seed_floor({0: cells[0]}) is None
    # the same figure computed from the models: float16 storage keeps the ranks
    m = modality(task)
    x, _ = explanation_subset(task, 32)
    a, b = (attribute(model, x, probabilities(model, x).argmax(dim=1), m, ExplainConfig())[INTEGRATED_GRADIENTS]
            for model in (trained, other_seed))
    direct = agreement(a.numpy(), b.numpy(), 0.1)
    assert abs(floor.spearman - direct.spearman) < 0.01 and abs(floor.top_k_overlap - direct.top_k_overlap) < 0.05
    assert 0.0 < floor.spearman < 0.99
    # a compressed cell compares with its own seed's baseline; its agreement beside that floor
    other = explain(other_seed, other_seed, DEPLOYED, task, trained)
    assert other.agreement is not None
    assert other.agreement[INTEGRATED_GRADIENTS].spearman == pytest.approx(direct.spearman, abs=1e-6)


def test_text_removes_whole_words_and_never_its_padding(text_task):
    model = _fit(text_task, "bag-of-embeddings", 0, epochs=6).model.eval()
    m = modality(text_task)
    x, _ = explanation_subset(text_task, 32)
    valid = m.valid(x)
    assert m.tokens and torch.equal(valid, x != 0) and not valid.all()
    scores = attribute(model, x, probabilities(model, x).argmax(dim=1), m, ExplainConfig())
    for name in ATTRIBUTION_METHODS:
        assert scores[name].shape == x.shape
    assert (scores[INTEGRATED_GRADIENTS][~valid] == 0).all()    # padding is the reference: no attribution
    e = explain(model, model, DEPLOYED, text_task, None)
    assert e.features == 10 and "padding" in e.removed
    assert e.faithfulness[INTEGRATED_GRADIENTS].deletion_auc < e.random_deletion_auc
    assert seed_floor({0: e, 1: e}) == Agreement(1.0, 1.0)     # padding left out of the ranks
    everything_removed = m.apply(x, valid)
    assert (everything_removed == 0).all()


def test_a_model_without_gradients_says_so_instead_of_failing_the_cell(task, trained):
    e = explain(trained, None, "nothing", task, None)
    assert e.unavailable and not e.faithfulness and e.random_deletion_auc is None
    assert Explanations.from_dict(json.loads(json.dumps(e.__dict__, default=lambda o: o.__dict__))) == e


# -- records, reports and claims ---------------------------------------------------------------------------------------

def _explanations(deletion: float, insertion: float, spearman: float | None = None,
                  stored: np.ndarray | None = None) -> Explanations:
    faithful = {INTEGRATED_GRADIENTS: Faithfulness(deletion, insertion),
                GRADIENT_X_INPUT: Faithfulness(deletion + 0.05, insertion - 0.05)}
    agreed = None if spearman is None else {name: Agreement(spearman, 0.5) for name in ATTRIBUTION_METHODS}
    return Explanations(examples=4, seed=0, features=6, attributed=DEPLOYED, removed="the mean", ig_steps=16,
                        curve_steps=16, top_fraction=0.1, clean_probability=0.9, faithfulness=faithful,
                        random_deletion_auc=0.4, agreement=agreed,
                        attributions=None if stored is None else encode_attributions(stored))


def _record(run_id: str, method: str, seed: int, e: Explanations | None, fit_seconds: float | None = None,
            suite: str = "explain") -> RunRecord:
    import record_parts

    from slimbench.harness.run.record_parts import GitState, Provenance

    config = {"task": {"name": "t"}, "model": {"name": "m"}, "train": {"epochs": 1},
              "measure": {"rounds": 3, "threads": 1}, "method": {"name": method, "params": {}},
              "versions": {"task": 1, "model": 1, "method": 1, "training": 1, "measure": 2, "explanations": 1}}
    base = BaselineTraining(task={"name": "t"}, model={"name": "m"}, train={"batch_size": 64}, seed=seed,
                            selected_epoch=0, epochs=2, val_acc=0.9, test_accuracy=0.9, test_macro_f1=0.9,
                            train_seconds=2.0, checkpoint="c", sha256="s", epoch_seconds=[1.0, 1.0], train_batches=10)
    fits = [] if fit_seconds is None else [Fit([fit_seconds], 10, 64, [0.9], 0, fit_seconds)]
    return RunRecord(run_id=run_id, suite=suite, status="ok", task="t", model="m", method=method,
                     family="baseline" if method == "baseline" else "pruning", seed=seed, config=config,
                     metrics=record_parts.metrics(explanations=e), reference=record_parts.reference(),
                     compression=record_parts.compression(baseline=method == "baseline"), baseline_training=base,
                     fits=fits, provenance=Provenance(git=GitState(commit="abc", dirty=False)))


def _suite_records() -> list[RunRecord]:
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(4, 6))
    stored = [shared + 0.5 * rng.normal(size=(4, 6)) for _ in range(3)]
    return [*(_record(f"b{s}", "baseline", s, _explanations(0.20, 0.60, stored=stored[s])) for s in range(3)),
            *(_record(f"p{s}", "prune.magnitude", s, _explanations(0.10 + 0.01 * s, 0.70, spearman=0.95),
                      fit_seconds=0.5) for s in range(3))]


def test_a_record_with_the_part_round_trips_and_an_old_one_reads_and_reports_as_before():
    rec = _suite_records()[3]
    assert RunRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    old = read_record(ROOT / "results" / "quick" / "runs" / sorted(p.name for p in (ROOT / "results/quick/runs")
                                                                  .glob("*.json"))[0])
    assert old.metrics is None or old.metrics.explanations is None
    assert old.fits == [] and (old.baseline_training is None or old.baseline_training.epoch_seconds is None)
    for name in ("explanations", "fits", "epoch_seconds"):
        assert f'"{name}"' not in json.dumps(old.to_dict())        # written back without the parts it never had
    committed = [read_record(p) for p in sorted((ROOT / "results" / "quick" / "runs").glob("*.json"))]
    rows = leaderboard_rows(committed)
    assert rows and not any(r.explanations.measured for r in rows)
    assert "explanations_" not in csv_text(rows).splitlines()[0]
    assert ": explanations" not in markdown_text(rows, committed, "quick")


def test_the_leaderboard_sets_faithfulness_beside_the_baseline_and_agreement_beside_its_floor():
    records = _suite_records()
    rows = {r.method: r for r in leaderboard_rows(records)}
    base, pruned = rows["baseline"].explanations, rows["prune.magnitude"].explanations
    assert base.floor_spearman is not None and pruned.floor_spearman == base.floor_spearman
    assert pruned.delta_deletion_auc == pytest.approx(-0.09) and pruned.delta_insertion_auc == pytest.approx(0.10)
    assert pruned.delta_deletion_significant and pruned.agreement_spearman == pytest.approx(0.95)
    assert pruned.inside_floor is (0.95 >= base.floor_spearman - (pruned.floor_spearman_std or 0.0))
    header = csv_text(list(rows.values())).splitlines()[0]
    assert "explanations_delta_deletion_auc" in header and "explanations_floor_spearman" in header
    text = markdown_text(list(rows.values()), records, "explain")
    assert "### t: explanations" in text and "-9.00 *" in text and "0.950 / 0.50" in text


def test_the_new_claims_read_faithfulness_agreement_and_training_time_from_records():
    from slimbench.harness.replicate.claims_file import load_claims
    from slimbench.harness.replicate.evaluation import evaluate
    from slimbench.harness.replicate.measurements import SuiteData

    records = _suite_records()
    claims = [c for c in load_claims() if c.id in ("interpretability-pruning", "faster-training-pruning",
                                                   "compression-deforms-attributions")]
    suite = SuiteData("explain", leaderboard_rows(records), {r.run_id: r for r in records})
    lines = {line.claim.id: line for line in evaluate(claims, [suite])}
    # insertion − deletion: 0.60 − (0.10, 0.11, 0.12) against 0.40: +19 pts on average
    assert lines["interpretability-pruning"].value == pytest.approx(19.0)
    assert "agreement with the baseline ρ 0.950" in lines["interpretability-pruning"].measured
    # the baseline trains 20 s per 1,280 examples, the fine-tune 0.5 s per 640
    assert lines["faster-training-pruning"].value == pytest.approx((2.0 / 1280) / (0.5 / 640))
    floor = seed_floor({r.seed: r.metrics.explanations for r in records if r.method == "baseline"})
    assert floor is not None
    assert lines["compression-deforms-attributions"].value == pytest.approx(100 * (0.95 - floor.spearman), abs=1e-3)
    # records measured without explanations or timings leave the rows out: not measured, never failed
    bare = [_record(r.run_id, r.method, r.seed, None, suite="explain") for r in records]
    empty = SuiteData("explain", leaderboard_rows(bare), {r.run_id: r for r in bare})
    assert {line.verdict for line in evaluate(claims, [empty])} == {"not measured"}


# -- training time and the run_id --------------------------------------------------------------------------------------

def test_every_fit_is_timed_per_epoch_without_its_validation(task):
    result = _fit(task, "tiny-cnn", 0, epochs=2, width=8)
    assert len(result.epoch_seconds) == 2 and all(s > 0 for s in result.epoch_seconds)
    assert result.train_batches == -(-len(task.train) // 64)
    assert sum(result.epoch_seconds) < result.seconds


def test_explanations_enter_a_run_id_only_when_measured(smoke_config):
    from slimbench.harness.run.suite import parse_suite

    off = parse_suite(copy.deepcopy(smoke_config)).cells[0]
    smoke_config["measure"]["explanations"] = True
    on = parse_suite(smoke_config).cells[0]
    assert "explanations" not in off.config()["measure"] and "explanations" not in off.config()["versions"]
    assert on.config()["measure"]["explanations"] is True
    assert on.config()["versions"]["explanations"] == EXPLANATIONS_VERSION and on.run_id != off.run_id


def test_a_suite_with_explanations_records_them_and_its_fits(tmp_path, smoke_config):
    from slimbench.harness.report.build import build_report
    from slimbench.harness.run.records import load_records
    from slimbench.harness.run.runner import SuiteRunner
    from slimbench.harness.run.suite import parse_suite

    smoke_config["measure"]["explanations"] = True
    runner = SuiteRunner(parse_suite(smoke_config), tmp_path, wandb_mode="disabled", progress=False)
    assert not runner.run().failed
    records = {r.method: r for r in load_records(runner.paths.runs)}
    base, pruned = records["baseline"], records["prune.magnitude"]
    assert base.metrics and base.metrics.explanations and base.metrics.explanations.attributions
    assert pruned.metrics and pruned.metrics.explanations and pruned.metrics.explanations.agreement
    assert "measure.explanations" in pruned.wall_seconds and not base.fits and len(pruned.fits) == 1
    assert base.baseline_training and base.baseline_training.epoch_seconds
    build_report(runner.paths.root)
    assert "### digits: explanations" in (runner.paths.root / "leaderboard.md").read_text()
