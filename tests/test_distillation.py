"""Distillation: loss formulas, the frozen teacher, feature hooks, adapters, fairness and real learning (digits)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.distillation import (
    DistillationModule,
    DistillLoss,
    FeaturePair,
    FeatureTap,
    attention_loss,
    hint_loss,
    logit_distillation_terms,
    resolve_path,
    soft_target_loss,
)
from slimbench.baselines.training import TrainedModel, fit
from slimbench.core.errors import ConfigError
from slimbench.harness.measure.quality import evaluate
from slimbench.harness.run.suite import load_suite
from slimbench.methods import MethodContext, build_method
from slimbench.tasks import Task
from slimbench.tasks.base import Split

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode")   # the frozen teacher

STUDENT = {"width": 16}
TEACHER = {"width": 32}
BUDGET = TrainConfig(epochs=6, batch_size=64, lr=0.01)


def tiny(task: Task, params: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny-cnn", task.spec, task.num_classes, params)


@pytest.fixture(scope="module")
def teacher(task: Task) -> TrainedModel:
    model = fit(tiny(task, TEACHER), task, TrainConfig(epochs=8, batch_size=64, lr=0.01), seed=0).model
    accuracy, _ = evaluate(model, task)
    return TrainedModel(model, {"test_accuracy": accuracy, "val_acc": None, "model": {"name": "tiny-cnn",
                                                                                      "params": TEACHER}})


@pytest.fixture(scope="module")
def student_alone(task: Task) -> TrainedModel:
    """The student-alone baseline as the harness trains it: seed, fresh init, `train:` budget."""
    model = fit(tiny(task, STUDENT), task, BUDGET, seed=0).model
    return TrainedModel(model, {"test_accuracy": evaluate(model, task)[0], "val_acc": None})


def context(task: Task, teacher: TrainedModel, baseline: TrainedModel) -> MethodContext:
    return MethodContext(
        task=task,
        finetune=lambda model, module=None, cfg=None: fit(model, task, cfg or BUDGET, seed=0, module=module).model,
        teacher=lambda: teacher, seed=0, budget=BUDGET, train_budget=BUDGET, baseline=baseline,
        fresh_model=lambda: build_model("tiny-cnn", task.spec, task.num_classes, STUDENT),
    )


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- loss formulas --------------------------------------------------------------------------------------------

def test_alpha_zero_is_cross_entropy(task, teacher):
    gen = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(32, 10, generator=gen), torch.randn(32, 10, generator=gen), torch.randint(0, 10, (32,))
    assert torch.equal(logit_distillation_terms(s, t, y, temperature=4.0, alpha=0.0)["loss"], F.cross_entropy(s, y))
    # and through the module, on real data: the total is the student's cross-entropy
    student = tiny(task, STUDENT)
    module = DistillationModule(student, teacher.model, task.num_classes, BUDGET, DistillLoss(alpha=0.0))
    x, y = task.train.x[:64], task.train.y[:64]
    terms = module.loss_terms(x, y)
    assert set(terms) == {"ce", "loss"}
    torch.testing.assert_close(terms["loss"], F.cross_entropy(student(x), y))


def test_soft_target_loss_golden_value():
    # student logits/T = [.5, 1, 1.5], teacher's reversed: KL = (p_hi - p_lo)·ln(e) exactly, times T² = 4.
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    e = math.exp
    expected = 4 * (e(1.5) - e(0.5)) / (e(0.5) + e(1.0) + e(1.5))
    assert soft_target_loss(s, t, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)   # 1.28064
    y = torch.tensor([0])
    mixed = logit_distillation_terms(s, t, y, temperature=2.0, alpha=0.25)["loss"]
    assert mixed.item() == pytest.approx(0.25 * expected + 0.75 * F.cross_entropy(s, y).item(), rel=1e-6)


def test_identical_teacher_gives_zero_distillation_terms(task, teacher):
    x, y = task.train.x[:64], task.train.y[:64]
    for loss in (DistillLoss(alpha=0.9), DistillLoss(alpha=0.5, beta=1.0, pairs=[FeaturePair("4", "4")]),
                 DistillLoss(beta=1.0, feature_kind="attention", pairs=[FeaturePair("2", "2"), FeaturePair("5", "5")])):
        student = copy.deepcopy(teacher.model)
        module = DistillationModule(student, copy.deepcopy(teacher.model), task.num_classes, BUDGET, loss,
                                    example=x[:4])
        module.model.eval()   # same mode as the teacher, so the two forward passes are the same function
        terms = module.loss_terms(x, y)
        for name in ("kd", "hint", "attention"):
            if name in terms:
                assert terms[name].item() == pytest.approx(0.0, abs=1e-6), (name, terms[name])
        assert any(name in terms for name in ("kd", "hint", "attention"))


def test_feature_terms_follow_their_papers():
    gen = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(4, 8, 8, 8, generator=gen), torch.randn(4, 8, 4, 4, generator=gen)
    # hint: MSE after pooling the student's larger map to the teacher's size
    assert hint_loss(fs, ft).item() == pytest.approx(F.mse_loss(F.adaptive_avg_pool2d(fs, 4), ft).item(), rel=1e-6)
    # attention: channel mean of squares, resized, L2-normalised per sample, then mean squared distance
    a_s = F.normalize(F.adaptive_avg_pool2d(fs.pow(2).mean(1, keepdim=True), 4).flatten(1), dim=1)
    a_t = F.normalize(ft.pow(2).mean(1).flatten(1), dim=1)
    assert attention_loss(fs, ft).item() == pytest.approx((a_s - a_t).pow(2).mean().item(), rel=1e-6)
    assert attention_loss(ft, 3 * ft).item() == pytest.approx(0.0, abs=1e-7)   # scale-free, as intended


# -- the frozen teacher ---------------------------------------------------------------------------------------

def test_gradients_and_updates_never_reach_the_teacher(task, teacher):
    frozen = copy.deepcopy(teacher.model)
    before = state_of(frozen)   # weights and BatchNorm running statistics
    student = tiny(task, STUDENT)
    loss = DistillLoss(alpha=0.5, beta=1.0, pairs=[FeaturePair("4", "4")])
    module = DistillationModule(student, frozen, task.num_classes, BUDGET, loss, example=task.train.x[:4])
    module.train()
    assert student.training and not any(m.training for m in frozen.modules())   # BN stays in eval
    terms = module.loss_terms(task.train.x[:64], task.train.y[:64])
    terms["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None for p in module.adapters.parameters())
    # a real Lightning fit (a few steps, validation in between) moves the student but not the teacher
    student_before = state_of(student)
    fit(student, task, dataclasses.replace(BUDGET, epochs=2, max_train_batches=3), seed=0, module=module)
    after = state_of(frozen)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any("running_mean" in k for k in before)
    assert not all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert not any(m.training for m in frozen.modules())


# -- feature hooks ----------------------------------------------------------------------------------------------

def test_feature_tap_captures_the_named_module(task):
    model = tiny(task, STUDENT).eval()
    x = task.train.x[:8]
    tap = FeatureTap(model, "4", "student")
    with torch.no_grad():
        model(x)
        assert torch.equal(tap.take(), model[:5](x))
    tap.remove()
    assert not any(m._forward_hooks for m in model.modules())
    # a dotted path inside a torchvision model, and the suffix rule for wrapped models (text tasks)
    mnv2 = build_model("mobilenetv2", task.spec, task.num_classes, {"width_mult": 0.5}).eval()
    tap = FeatureTap(mnv2, "features.13", "student")
    with torch.no_grad():
        mnv2(x)
        assert torch.equal(tap.take(), mnv2.features[:14](x))
    assert resolve_path(nn.Sequential(nn.Identity(), mnv2), "features.13", "student") == "1.features.13"


def test_unknown_module_path_is_one_clear_error(task, teacher, student_alone):
    method = build_method("distill.feature", {"layers": ["features.13"]})   # MobileNetV2 names on a tiny CNN
    with pytest.raises(ConfigError) as err:
        method.apply(copy.deepcopy(student_alone.model), context(task, teacher, student_alone))
    message = str(err.value)
    assert "'features.13' names no module" in message and "Valid module paths" in message
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8" in message
    student = tiny(task, STUDENT)
    with pytest.raises(ConfigError, match="teacher .*'9' names no module"):
        DistillationModule(student, tiny(task, TEACHER), task.num_classes, BUDGET,
                           DistillLoss(beta=1.0, pairs=[FeaturePair("4", "9")]), example=task.train.x[:4])
    assert not any(m._forward_hooks for m in student.modules())   # the student's hook came off again


@pytest.mark.parametrize("params, match", [
    ({"alpha": 1.5}, "alpha must be in"), ({"temperature": 0.0}, "temperature must be"),
    ({"kind": "gram"}, "must be one of"), ({"layers": ["4"], "teacher_layers": ["4", "5"]}, "pair one-to-one"),
    ({"layers": []}, "at least one"), ({"beta": -1.0}, "beta must be"),
])
def test_bad_parameters_fail_when_the_suite_is_read(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("distill.feature", params)


# -- the methods ----------------------------------------------------------------------------------------------

def test_alpha_zero_reproduces_the_student_alone(task, teacher, student_alone):
    """Same seed, same init, same budget: with no teacher term, distillation is exactly the baseline."""
    out = build_method("distill.logit", {"alpha": 0.0}).apply(copy.deepcopy(student_alone.model),
                                                              context(task, teacher, student_alone))
    ref = student_alone.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in out.model.state_dict().items())


def test_hint_adapter_is_trained_but_not_deployed(task, teacher, student_alone):
    method = build_method("distill.feature", {"kind": "hint", "layers": ["4"], "beta": 1.0})
    out = method.apply(copy.deepcopy(student_alone.model), context(task, teacher, student_alone))
    fresh = tiny(task, STUDENT)
    assert out.model.state_dict().keys() == fresh.state_dict().keys()
    assert sum(p.numel() for p in out.model.parameters()) == sum(p.numel() for p in fresh.parameters())
    assert not any(m._forward_hooks for m in out.model.modules())
    assert out.details["adapter_params"] == 32 * 64 + 2 * 64   # 1×1 conv 32→64 channels + BatchNorm
    assert out.details["loss"]["pairs"] == [{"student": "4", "teacher": "4"}]
    assert out.details["teacher_accuracy"] == teacher.meta["test_accuracy"]
    assert out.details["student_alone_accuracy"] == student_alone.meta["test_accuracy"]
    assert 0.0 < out.details["val_acc"] <= 1.0


def test_pure_distillation_learns_from_the_teacher_not_the_labels(task, teacher, student_alone):
    """α = 1 with the training labels shuffled: all the student can learn comes from the teacher."""
    gen = torch.Generator().manual_seed(0)
    noisy = copy.copy(task)
    noisy.train = Split(task.train.x, task.train.y[torch.randperm(len(task.train), generator=gen)])
    ctx = context(noisy, teacher, student_alone)
    method = build_method("distill.logit", {"alpha": 1.0, "temperature": 4.0})
    distilled = evaluate(method.apply(copy.deepcopy(student_alone.model), ctx).model, task)[0]
    untrained = TrainedModel(tiny(task, TEACHER, seed=1).eval(), {})
    ctx_random = context(noisy, untrained, student_alone)
    from_random = evaluate(method.apply(copy.deepcopy(student_alone.model), ctx_random).model, task)[0]
    print(f"teacher {teacher.meta['test_accuracy']:.3f}, alone {student_alone.meta['test_accuracy']:.3f}, "
          f"pure KD {distilled:.3f}, pure KD from an untrained teacher {from_random:.3f}")
    assert distilled > 0.80            # chance is 0.10
    assert from_random < 0.35          # the signal is the trained teacher's, not the labels'


# -- end to end through the harness ------------------------------------------------------------------------------

def test_suite_records_teacher_and_student_alone(tmp_path, smoke_config):
    from slimbench.harness.report.build import build_report
    from slimbench.harness.run.records import load_records
    from slimbench.harness.run.runner import SuiteRunner
    from slimbench.harness.run.suite import parse_suite

    smoke_config["methods"] = ["baseline", {"name": "distill.logit", "params": {"alpha": 0.5}},
                               {"name": "distill.feature", "params": {"layers": ["4"], "kind": "attention"}},
                               {"name": "distill.logit", "params": {"init": "baseline"}}]
    smoke_config["teacher"] = {"name": "tiny-cnn", "params": TEACHER, "train": {"epochs": 3, "batch_size": 64,
                                                                                "lr": 0.01}}
    runner = SuiteRunner(parse_suite(json.loads(json.dumps(smoke_config))), tmp_path, wandb_mode="disabled",
                         progress=False)
    outcome = runner.run()
    assert not outcome.failed and len(outcome.done) == 4
    records = load_records(runner.paths.runs)

    def record(method: str, **params):
        return next(r for r in records if r.method == method
                    and all(r.config["method"]["params"].get(k) == v for k, v in params.items()))

    base, kd = record("baseline"), record("distill.logit", init="scratch")
    warm = record("distill.logit", init="baseline")
    assert kd.details["budget"]["epochs"] == smoke_config["train"]["epochs"]      # from scratch: the baseline's budget
    assert warm.details["budget"]["epochs"] == smoke_config["finetune"]["epochs"]  # from the trained student
    assert kd.family == "distillation" and kd.compression.label == "storage dense fp32 · compute dense fp32"
    assert kd.reference.accuracy == base.metrics.accuracy == kd.details["student_alone_accuracy"]
    assert 0.1 < kd.details["teacher_accuracy"] <= 1.0
    assert kd.details["teacher"]["model"] == {"name": "tiny-cnn", "params": TEACHER}
    assert kd.metrics.params == base.metrics.params   # the deployed student is just the student
    assert record("distill.feature").details["loss"]["feature_kind"] == "attention"
    from slimbench.harness.report.distillation import distillation_rows

    rows = build_report(runner.paths.root)
    table = distillation_rows(rows, records)
    assert len(table) == 3   # the three distilled cells; the baseline has no teacher
    row = next(r for r in table if r["params_json"] == json.dumps(kd.config["method"]["params"], sort_keys=True))
    assert row["teacher"] == kd.details["teacher_accuracy"] and row["alone"] == base.metrics.accuracy
    assert row["gain"] == pytest.approx(kd.metrics.accuracy - base.metrics.accuracy)
    assert row["ordering"] == (row["teacher"] >= row["distilled"] > row["alone"])
    text = (runner.paths.root / "leaderboard.md").read_text()
    assert "Distillation against the student alone" in text and f"{row['teacher']:.4f}" in text
    assert Path(runner.paths.root / "leaderboard.csv").exists()


def test_distill_suite_file_is_valid():
    suite = load_suite(Path(__file__).resolve().parent.parent / "configs" / "distill.yaml")
    methods = {c.method.name for c in suite.cells}
    assert methods == {"baseline", "distill.logit", "distill.feature"}
    assert {c.seed for c in suite.cells} == {0, 1, 2}
    assert all(c.teacher.name != c.model.name or c.teacher.params != c.model.params for c in suite.cells)
    distilled = [c for c in suite.cells if c.method.name.startswith("distill.")]
    assert all("teacher" in c.config() for c in distilled)   # editing the teacher reruns these cells
