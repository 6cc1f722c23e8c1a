"""Pruning: exact sparsity, random ≠ magnitude, the gradual schedule, channel pruning that really shrinks and
reloads."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.distillation import DistillationModule
from slimbench.baselines.training import TrainedModel, fit
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.counting import count_macs, count_params
from slimbench.deploy.structure import describe, load_into
from slimbench.methods import MethodContext, build_method
from slimbench.methods.channel_pruning import (
    Layout,
    global_ratios,
    group_scores,
    make_importance,
    plan_pruning,
    pruned_copy,
    round_budget,
    widths,
)
from slimbench.methods.pruning import lamp_counts, polynomial_sparsity, prunable_weights, schedule_batches
from slimbench.tasks.base import InputSpec, Task

FINETUNE = TrainConfig(epochs=2, batch_size=64, lr=0.002, channels_last=False)
TRAINED = {"width": 16, "epochs": 3}   # the `trained` fixture's tiny-cnn


class Calls:
    """Counts fine-tunes and the budgets they ran; `forbid` makes any fine-tune a test failure."""

    def __init__(self, task: Task, forbid: bool = False, budget: TrainConfig = FINETUNE):
        self.task, self.forbid, self.budget, self.budgets, self.modules = task, forbid, budget, [], []

    def __call__(self, model: nn.Module, module=None, cfg: TrainConfig | None = None) -> nn.Module:
        assert not self.forbid, "fine-tuning started although the target was impossible"
        self.budgets.append(cfg or self.budget)
        self.modules.append(module)
        return fit(model, self.task, cfg or self.budget, seed=0, module=module).model


def context(task: Task, model: nn.Module, seed: int = 0, forbid: bool = False,
            budget: TrainConfig = FINETUNE) -> MethodContext:
    return MethodContext(task=task, finetune=Calls(task, forbid, budget), teacher=lambda: TrainedModel(model),
                         seed=seed, budget=budget, train_budget=budget, baseline=TrainedModel(model),
                         fresh_model=lambda: build_model("tiny-cnn", task.spec, task.num_classes, {"width": 16}))


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight == 0 for m, _ in prunable_weights(model)]


# -- unstructured: exact sparsity, random vs magnitude ------------------------------------------------------------

@pytest.mark.parametrize("method", ["prune.magnitude", "prune.random"])
@pytest.mark.parametrize("scope", ["global", "layer", "lamp"])
def test_achieved_sparsity_is_exact(task, trained, method, scope):
    sparsity = 0.7
    out = build_method(method, {"sparsity": sparsity, "scope": scope, "finetune": False}).apply(
        copy.deepcopy(trained), context(task, trained))
    pairs = prunable_weights(out.model)
    zeros = [int((m.weight == 0).sum()) for m, _ in pairs]
    sizes = [m.weight.numel() for m, _ in pairs]
    if scope == "layer":
        assert zeros == [round(sparsity * n) for n in sizes]
    else:
        assert sum(zeros) == round(sparsity * sum(sizes))
    assert out.achieved["sparsity"] == round(sum(zeros) / sum(sizes), 6)
    assert not any(hasattr(m, "weight_orig") for m, _ in pairs)   # masks baked into plain weights


def test_random_masks_differ_from_magnitude_and_follow_the_seed(task, trained):
    def pruned(method: str, seed: int) -> list[torch.Tensor]:
        out = build_method(method, {"sparsity": 0.5, "finetune": False}).apply(
            copy.deepcopy(trained), context(task, trained, seed=seed))
        return masks(out.model)

    magnitude, random0, random0_again, random1 = (pruned("prune.magnitude", 0), pruned("prune.random", 0),
                                                  pruned("prune.random", 0), pruned("prune.random", 1))
    flat = lambda ms: torch.cat([m.flatten() for m in ms])  # noqa: E731
    assert torch.equal(flat(random0), flat(random0_again))          # seeded: reproducible
    assert not torch.equal(flat(random0), flat(random1))            # and the seed matters
    overlap = (flat(random0) & flat(magnitude)).float().sum() / flat(magnitude).float().sum()
    assert 0.4 < overlap < 0.6   # random picks the magnitude-pruned half at chance rate, not the same weights
    # magnitude removed the smallest weights; random did not
    weights = torch.cat([m.weight.flatten() for m, _ in prunable_weights(trained)]).abs()
    assert weights[flat(magnitude)].max() <= weights[~flat(magnitude)].min()
    assert weights[flat(random0)].mean() > 2 * weights[flat(magnitude)].mean()


def test_lamp_never_empties_a_layer_where_global_ranking_does_and_random_gets_its_allocation(task, trained):
    """A layer whose weights are all small is emptied by one global threshold at high sparsity; LAMP's
    layer-normalised scores keep its largest weights. Random pruning with scope lamp prunes exactly as many
    weights per layer as magnitude (the allocation comes from magnitudes), but picks other weights."""
    net = copy.deepcopy(trained)
    small = prunable_weights(net)[2][0]     # the classifier: 320 of 5072 weights
    with torch.no_grad():
        small.weight.mul_(1e-3)              # a layer on a far smaller scale than the rest
    pairs = lambda m: prunable_weights(m)  # noqa: E731

    def pruned(method: str, scope: str) -> nn.Module:
        return build_method(method, {"sparsity": 0.9, "scope": scope, "finetune": False}).apply(
            copy.deepcopy(net), context(task, net)).model

    global_, lamp, random_lamp = pruned("prune.magnitude", "global"), pruned("prune.magnitude", "lamp"), \
        pruned("prune.random", "lamp")
    assert not pairs(global_)[2][0].weight.any()                                  # emptied by the global ranking
    assert all(m.weight.any() for m, _ in pairs(lamp))                             # LAMP keeps every layer
    counts = lambda m: [int((w.weight == 0).sum()) for w, _ in pairs(m)]  # noqa: E731
    assert counts(lamp) == counts(random_lamp)                                     # same allocation
    assert not torch.equal(torch.cat([w.weight.flatten() == 0 for w, _ in pairs(lamp)]),
                           torch.cat([w.weight.flatten() == 0 for w, _ in pairs(random_lamp)]))
    # the allocation is LAMP's: the scores of kept weights are never below those of pruned ones, layer by layer
    sizes = [w.weight.numel() for w, _ in pairs(net)]
    assert sum(counts(lamp)) == round(0.9 * sum(sizes))
    assert lamp_counts(pairs(copy.deepcopy(net)), 0.9) == counts(lamp)


# -- the gradual schedule -----------------------------------------------------------------------------------------

def test_polynomial_schedule_is_monotone_and_ends_on_target():
    steps, final = 7, 0.9
    values = [polynomial_sparsity(t, steps, final) for t in range(steps + 1)]
    assert values[0] == 0.0 and values[-1] == final
    assert all(b > a for a, b in zip(values, values[1:]))
    assert all(b - a < a - z for z, a, b in zip(values, values[1:], values[2:]))   # steep first, then levels off
    assert schedule_batches(20, 4) == {0: 1, 5: 2, 10: 3, 15: 4}
    assert schedule_batches(20, 4, span=0.5) == {0: 1, 2: 2, 5: 3, 8: 4}   # then 12 batches to recover
    with pytest.raises(ConfigError, match="pruning_steps"):
        schedule_batches(3, 4)


@pytest.mark.parametrize("method, scope", [("prune.magnitude", "global"), ("prune.random", "global"),
                                           ("prune.magnitude", "layer"), ("prune.random", "lamp")])
def test_gradual_pruning_reaches_the_target_at_its_last_step(task, trained, method, scope):
    sparsity, steps = 0.8, 5
    ctx = context(task, trained, budget=dataclasses.replace(FINETUNE, channels_last=True))   # as the harness trains
    out = build_method(method, {"sparsity": sparsity, "scope": scope, "schedule": "gradual",
                                "pruning_steps": steps}).apply(copy.deepcopy(trained), ctx)
    history = out.details["steps"]
    assert [h["step"] for h in history] == list(range(1, steps + 1))
    assert [h["sparsity"] for h in history] == [round(polynomial_sparsity(k, steps, sparsity), 6)
                                                for k in range(1, steps + 1)]
    assert all(b["achieved"] > a["achieved"] for a, b in zip(history, history[1:]))
    assert history[-1]["sparsity"] == sparsity
    batches = [h["batch"] for h in history]
    total = 2 * len(task.train_dataloader(64))   # FINETUNE: 2 epochs at batch 64; default span 0.75
    assert batches[0] == 0 and batches == sorted(batches) and batches[-1] == round(4 * (0.75 * total) / 5)
    pairs = prunable_weights(out.model)
    zeros = [int((m.weight == 0).sum()) for m, _ in pairs]
    sizes = [m.weight.numel() for m, _ in pairs]
    if scope == "layer":    # masks kept while training: exactly the target at the end
        assert zeros == [round(sparsity * n) for n in sizes]
    else:
        assert sum(zeros) == round(sparsity * sum(sizes))
    assert len(ctx.finetune.budgets) == 1


def test_gradual_refuses_more_steps_than_batches_before_training(task, trained):
    method = build_method("prune.magnitude", {"sparsity": 0.5, "schedule": "gradual", "pruning_steps": 10_000})
    with pytest.raises(ConfigError, match="pruning_steps .*10000.* exceeds"):
        method.apply(copy.deepcopy(trained), context(task, trained, forbid=True))


# -- parameters are checked when the suite is read ----------------------------------------------------------------

@pytest.mark.parametrize("name, params, message", [
    ("prune.magnitude", {"sparsity": 1.0}, r"sparsity must be ≥ 0 and < 1, got 1\.0"),
    ("prune.random", {"sparsity": -0.1}, r"sparsity must be ≥ 0 and < 1, got -0\.1"),
    ("prune.random", {"pruning_steps": 0}, r"pruning_steps must be ≥ 1, got 0"),
    ("prune.random", {"gradual_span": 0.0}, r"gradual_span must be > 0 and ≤ 1, got 0\.0"),
    ("prune.magnitude", {"schedule": "gradual", "finetune": False}, r"gradual.*needs finetune"),
    ("prune.magnitude", {"schedule": "cubic"}, r"schedule.* must be one of \['oneshot', 'gradual'\]"),
    ("prune.channel", {"channel_ratio": 1.0}, r"channel_ratio must be ≥ 0 and < 1, got 1\.0"),
    ("prune.channel", {"macs_ratio": 1.0}, r"macs_ratio must be > 1, got 1\.0"),
    ("prune.channel", {"macs_ratio": 2.0, "rounds": 0}, r"rounds must be ≥ 1, got 0"),
    ("prune.channel", {}, r"exactly one target, macs_ratio .* or channel_ratio"),
    ("prune.channel", {"macs_ratio": 2.0, "channel_ratio": 0.3}, r"exactly one target"),
    ("prune.channel", {"macs_ratio": 2.0, "importance": "fisher"}, r"importance.* must be one of \['l1', 'l2'"),
])
def test_bad_params_are_one_config_error(name, params, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_method(name, params)
    assert str(info.value).count("\n") == 0 and name in str(info.value)


# -- structured channel pruning -----------------------------------------------------------------------------------

class ProbeTask:
    """The slice of a task view channel pruning reads without fine-tuning: example inputs and a few batches."""

    def __init__(self, spec: InputSpec, classes: int = 10):
        self.spec, self.num_classes = spec, classes

    def example_input(self, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(n)
        if self.spec.token_vocab:
            return torch.randint(1, self.spec.token_vocab, (n, self.spec.height), generator=gen)
        return torch.randn(n, *self.spec.input_shape, generator=gen)

    def train_dataloader(self, batch_size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.example_input(8), torch.arange(8) % self.num_classes) for _ in range(2)]


def probe_context(spec: InputSpec) -> MethodContext:
    never = Calls(None, forbid=True)  # type: ignore[arg-type]
    return MethodContext(task=ProbeTask(spec), finetune=never, teacher=lambda: None, seed=0, budget=FINETUNE,
                         train_budget=FINETUNE, baseline=None, fresh_model=lambda: None)  # type: ignore[arg-type]


SMALL = InputSpec(1, 16, 16)
TEXT = InputSpec(1, 24, 16, modality="text", token_vocab=300)


@pytest.mark.parametrize("name, spec, params", [
    ("mobilenetv2", SMALL, {"channel_ratio": 0.3, "rounds": 2}),
    ("squeezenet", SMALL, {"macs_ratio": 2.0, "importance": "l2"}),    # the MACs search on the cheapest backbone
    ("efficientnet_b0", SMALL, {"channel_ratio": 0.3, "importance": "taylor"}),
    ("mobilenetv2", TEXT, {"channel_ratio": 0.3, "importance": "random"}),
    ("mobilenetv2", SMALL, {"macs_ratio": 2.0, "importance": "taylor", "allocation": "global",
                            "shared_channels": "keep"}),
    ("mobilenetv2", SMALL, {"params_ratio": 1.54}),    # a parameter budget: about 35 % fewer parameters
])
def test_channel_pruning_shrinks_and_reloads_identically(tmp_path: Path, name, spec, params):
    torch.manual_seed(0)
    model = build_model(name, spec, 10).eval()
    ctx = probe_context(spec)
    x = ctx.task.example_input(4)
    out = build_method("prune.channel", {**params, "finetune": False}).apply(copy.deepcopy(model), ctx)
    pruned = out.model.eval()
    assert out.compute == "physical"
    with torch.no_grad():
        logits = pruned(x)
    assert logits.shape == (4, 10)
    params_before, params_after = count_params(model)[0], count_params(pruned)[0]
    macs_before, macs_after = count_macs(model, x[:1]), count_macs(pruned, x[:1])
    assert params_after < 0.75 * params_before and macs_after < 0.75 * macs_before
    if "macs_ratio" in params:
        assert macs_before / macs_after >= params["macs_ratio"]
        assert out.achieved["macs_ratio"] == round(macs_before / macs_after, 4)
    if "params_ratio" in params:   # reached, and by the least channel fraction that reaches it (not far past)
        assert 1.54 <= params_before / params_after < 1.54 * 1.15
        assert out.requested == {"params_ratio": 1.54}
        assert out.achieved["params_ratio"] == round(params_before / params_after, 4)
    kept = out.details["kept_channels"]
    assert kept and all(new < old and new % 8 == 0 for new, old in kept.values())   # round_to 8 by default
    # never pruned: the class outputs (above), the input channels, the text embedding
    stem = lambda net: next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels  # noqa: E731
    assert stem(pruned) == stem(model)
    embeddings = lambda net: [m.weight.shape for m in net.modules() if isinstance(m, nn.Embedding)]  # noqa: E731
    assert embeddings(pruned) == embeddings(model) and (spec.token_vocab is None) == (not embeddings(model))
    # a weights_only file (structure + state dict) rebuilds the pruned network from a fresh model
    path = tmp_path / "model.pt"
    torch.save({"structure": json.loads(json.dumps(describe(pruned))), "state": pruned.state_dict()}, path)
    blob = torch.load(path, weights_only=True)
    fresh = load_into(build_model(name, spec, 10), blob["structure"], blob["state"]).eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), logits)
    assert count_params(fresh)[0] == params_after


@pytest.mark.parametrize("name, shared", [
    # the bottleneck outputs that residual sums add together, one per stage with repeated blocks
    ("mobilenetv2", {"features.3.conv.2", "features.6.conv.2", "features.10.conv.2", "features.13.conv.2",
                     "features.16.conv.2"}),
    ("squeezenet", None),   # every Fire module's two expand convs feed one concatenation
])
def test_keeping_shared_channels_prunes_only_inside_blocks(name, shared):
    torch.manual_seed(0)
    model = build_model(name, SMALL, 10).eval()
    ctx = probe_context(SMALL)
    x = ctx.task.example_input(2)
    layout = Layout.of(model, x[:1])
    if shared is not None:
        assert set(layout.shared) == shared
    else:
        assert layout.shared and all("expand" in root for root in layout.shared)
    before = widths(model)
    out = build_method("prune.channel", {"channel_ratio": 0.5, "shared_channels": "keep", "finetune": False}).apply(
        copy.deepcopy(model), ctx)
    after = widths(out.model)
    # a kept group keeps every layer it couples: the outputs added or concatenated and the inputs reading them
    for root in layout.shared:
        assert after[root] == before[root]
    pruned = [k for k in before if after[k] < before[k]]
    assert pruned and not set(pruned) & set(layout.shared)
    assert out.details["shared_channels"] == "keep"
    with torch.no_grad():
        assert out.model(x).shape == (2, 10)


@pytest.mark.slow
def test_channel_pruning_reaches_a_macs_target_inside_blocks_alone():
    model = build_model("mobilenetv2", SMALL, 10).eval()
    x = probe_context(SMALL).task.example_input(1)
    layout = Layout.of(model, x)
    both, inner = (plan_pruning(model, x, layout, macs_ratio=2.0, round_to=8, keep_shared=k) for k in (False, True))
    assert both.macs_ratio >= 2.0 and inner.macs_ratio >= 2.0
    assert inner.ratio > both.ratio   # fewer groups to prune: each loses more of its channels
    with pytest.raises(NotApplicableError, match="out of reach: .*shared_channels: keep"):
        plan_pruning(model, x, layout, macs_ratio=1000.0, round_to=8, keep_shared=True)


@pytest.mark.slow
def test_a_global_ranking_prunes_where_channels_matter_least():
    """allocation: global: one ranking over every group's normalised scores, so a group with half its channels dead
    (zero weights) loses those first and more than the others, each group keeping its floor, MACs target met."""
    torch.manual_seed(0)
    model = build_model("mobilenetv2", SMALL, 10).eval()
    x = probe_context(SMALL).task.example_input(1)
    layout = Layout.of(model, x)
    dead = "features.4.conv.1.0"                          # one block's inner group: expansion → depthwise → projection
    with torch.no_grad():                                 # every other channel of it dead in every layer it spans
        for name in ("features.4.conv.0.0", "features.4.conv.0.1", "features.4.conv.1.0", "features.4.conv.1.1"):
            layer = model.get_submodule(name)
            layer.weight[::2] = 0.0
            if getattr(layer, "bias", None) is not None:
                layer.bias[::2] = 0.0
        model.get_submodule("features.4.conv.2").weight[:, ::2] = 0.0
    scores = group_scores(model, x, layout, make_importance("l1"))
    assert set(scores) == {root for root, _ in layout.groups}
    plan = plan_pruning(model, x, layout, macs_ratio=2.0, round_to=8, keep_shared=True,
                        allocate=lambda f: global_ratios(scores, layout, f, 8, True))
    uniform = plan_pruning(model, x, layout, macs_ratio=2.0, round_to=8, keep_shared=True)
    assert plan.macs_ratio >= 2.0 and plan.ratios is not None and uniform.ratios is None
    inner = [root for root, _ in layout.groups if root not in layout.shared]
    assert plan.ratios[dead] >= 0.5 > uniform.ratio          # every dead channel goes, and more than a uniform share
    assert len({round(plan.ratios[r], 3) for r in inner}) > 3                # groups lose different fractions
    assert all(plan.ratios[r] == 0.0 for r in layout.shared)  # kept whole
    pruned = model
    for fraction in (0.999, plan.ratio):                       # at the extreme every group sits at its floor
        ratios = global_ratios(scores, layout, fraction, 8, True)
        pruned = pruned_copy(model, x, layout, fraction, 8, True, ratios)
        assert all(w >= min(8, dict(layout.groups)[r]) for r, w in widths(pruned).items() if r in dict(layout.groups))
    width = dict(layout.groups)[dead]
    assert widths(pruned)[dead] == int(width * (1 - plan.ratios[dead])) // 8 * 8 <= width // 2


def test_channel_pruning_recovers_from_the_unpruned_models_features(task, trained):
    """kd_features: hints (MSE) from the unpruned model's features at the same module paths; a learned adapter maps
    the pruned width back to the unpruned one, and the hint term is trained down."""
    ctx = context(task, trained)
    out = build_method("prune.channel", {"channel_ratio": 0.5, "recover": "distill", "kd_features": ["4"],
                                         "kd_beta": 2.0}).apply(copy.deepcopy(trained), ctx)
    (module,) = ctx.finetune.modules
    assert module.loss.beta == 2.0 and [(p.student, p.teacher) for p in module.loss.pairs] == [("4", "4")]
    (adapter,) = module.adapters
    assert adapter[0].in_channels == out.model[4].num_features == 16 and adapter[0].out_channels == 32
    assert out.details["kd"]["features"] == ["4"] and out.details["kd"]["beta"] == 2.0
    x, y = task.val.x[:256], task.val.y[:256]

    def hint(model: nn.Module, adapters: dict | None) -> float:   # the hint term of a fresh module (hooks attached)
        probe = DistillationModule(copy.deepcopy(model), copy.deepcopy(trained), task.num_classes, FINETUNE,
                                   module.loss, example=x[:8])
        if adapters is not None:
            probe.adapters.load_state_dict(adapters)
        with torch.no_grad():
            value = float(probe.eval().loss_terms(x, y)["hint"])
        probe.remove_hooks()
        return value

    torch.manual_seed(0)
    pruned_only = build_method("prune.channel", {"channel_ratio": 0.5, "finetune": False}).apply(
        copy.deepcopy(trained), context(task, trained)).model
    assert hint(out.model, module.adapters.state_dict()) < 0.85 * hint(pruned_only, None)   # measured 1.48 vs 1.93
    with pytest.raises(ConfigError, match="kd_features .* set recover: distill"):
        build_method("prune.channel", {"macs_ratio": 2.0, "kd_features": ["4"]})


def test_channel_pruning_fine_tunes_in_rounds_within_the_budget(task, trained):
    ctx = context(task, trained)
    out = build_method("prune.channel", {"macs_ratio": 2.0, "rounds": 2, "importance": "taylor"}).apply(
        copy.deepcopy(trained), ctx)
    assert len(ctx.finetune.budgets) == 2 and all(b.epochs == 1 for b in ctx.finetune.budgets)  # 2 epochs split
    assert out.achieved["macs_ratio"] >= 2.0
    accuracy = (out.model(task.val.x).argmax(1) == task.val.y).float().mean()
    assert accuracy > 0.5   # pruned and fine-tuned, it still classifies digits


def test_channel_pruning_recovers_against_the_unpruned_model(task, trained):
    """recover: distill fine-tunes each round against the model as it was before pruning, not the suite's teacher."""
    x = task.val.x[:256]
    with torch.no_grad():
        before = trained(x)
    ctx = context(task, trained)
    ctx = dataclasses.replace(ctx, teacher=lambda: pytest.fail("the suite's teacher is not this method's"))
    out = build_method("prune.channel", {"macs_ratio": 2.0, "rounds": 2, "recover": "distill", "kd_alpha": 1.0}
                       ).apply(copy.deepcopy(trained), ctx)
    assert len(ctx.finetune.modules) == 2
    for module in ctx.finetune.modules:
        assert isinstance(module, DistillationModule) and module.loss.alpha == 1.0
        assert count_macs(module.teacher, x[:1]) == count_macs(trained, x[:1])   # the unpruned network, frozen
        with torch.no_grad():
            assert torch.allclose(module.teacher(x), before)
    assert out.details["recover"] == "distill" and out.achieved["macs_ratio"] >= 2.0
    # labels never entered the loss (alpha 1): the pruned model learned the unpruned one's predictions
    with torch.no_grad():
        agree = (out.model(x).argmax(1) == before.argmax(1)).float().mean()
    assert agree > 0.8


def test_round_budget_splits_the_fine_tune_budget():
    quick = TrainConfig(epochs=1, max_train_batches=94)
    assert round_budget(quick, 1, 445) is quick
    three = round_budget(quick, 3, 445)
    assert (three.epochs, three.max_train_batches) == (1, 31)
    assert round_budget(TrainConfig(epochs=4), 2, 50).epochs == 2
    odd = round_budget(TrainConfig(epochs=3, max_train_batches=None), 2, 10)
    assert odd.epochs * odd.max_train_batches * 2 <= 3 * 10 + 2 * odd.epochs


@pytest.mark.parametrize("model, params, message", [
    ("tiny", {"macs_ratio": 1000.0}, r"macs_ratio 1000 is out of reach: .* gets [0-9.]+× fewer MACs"),
    ("linear", {"macs_ratio": 2.0}, r"no prunable channels"),
])
def test_impossible_targets_raise_before_fine_tuning(task, trained, model, params, message):
    net = trained if model == "tiny" else nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(NotApplicableError, match=message):
        build_method("prune.channel", params).apply(copy.deepcopy(net), context(task, trained, forbid=True))


def test_unstructured_skips_squeezenets_conv_classifier_when_asked():
    model = build_model("squeezenet", SMALL, 10)
    ctx = probe_context(SMALL)
    pairs = prunable_weights(model, include_classifier=False, example=ctx.task.example_input(1))
    assert model.classifier[1] not in [m for m, _ in pairs] and len(pairs) == len(prunable_weights(model)) - 1
    out = build_method("prune.magnitude", {"sparsity": 0.9, "include_classifier": False, "finetune": False}).apply(
        model, ctx)
    assert not (out.model.classifier[1].weight == 0).any()
    assert abs(out.achieved["sparsity"] - 0.9) < 1e-5
