"""Structured channel pruning with torch-pruning's dependency graph: a physically smaller dense network.

Unstructured masks leave dense kernels unchanged (no speedup); removing whole channels makes every layer
smaller, so the network runs fewer MACs in any runtime. torch-pruning's DependencyGraph (Fang et al. 2023)
finds the layers that must lose the same channels together: a conv and its BatchNorm, the depthwise conv
after it, every block that adds into the same residual stream, the squeeze-excite convs that scale a
channel, the branches a concatenation joins (SqueezeNet's Fire). The result is made of the same standard
layers, only narrower, so `slimbench.deploy.structure` rebuilds it from a `weights_only` file.

Every prunable layer loses the same fraction of its channels (torch-pruning's local pruning): the pruned
architecture depends only on that fraction, not on the importance criterion, so l1 / l2 / taylor / random
rows compare the same shapes (same MACs, same latency) and the target is checked on a copy before any
fine-tuning. A MACs target is turned into that fraction by bisection, measured with the harness's counter.

Kept channel counts are multiples of `round_to` (8 by default): ONNX Runtime's CPU convolutions work on blocks
of 8/16 channels. MobileNetV2 (28×28) at 2× fewer MACs with arbitrary counts ran slower than the unpruned
model there, while counts rounded to 8 ran faster (batch 1/8/64, one thread, interleaved runs).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.distillation import DistillLoss, FeaturePair
from slimbench.baselines.transformers import HeadAttention
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import added, bounded, check_ranges
from slimbench.deploy.counting import count_macs
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.distillation import finetune_against
from slimbench.methods.pruning import output_layer, seeded, step_seed

Criterion = Literal["l1", "l2", "taylor", "random"]
Recovery = Literal["finetune", "distill"]
Shared = Literal["prune", "keep"]
Allocation = Literal["uniform", "global"]
CHANNEL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
MAX_RATIO = 1.0 - 1e-6        # every group at its floor: the most the dependency graph can remove
RATIO_TOLERANCE = 1e-3        # bisection precision of the channel fraction (one channel in 1000)


@dataclass(frozen=True)
class Layout:
    """What pruning may touch, found once on the unpruned model and named by module path (copies share names).

    `ignored`: layers whose outputs keep their width — the classifier (its outputs are the classes) and the
    text embedding (the input representation the first conv reads, like an image's channels). Input channels
    need no entry: nothing upstream of the first layer can be pruned. `groups`: (root layer, channel count)
    of every group of channels the dependency graph removes together. `shared`: the roots of groups that a residual
    sum or a concatenation couples across blocks (the channels every block of a stage reads and writes).
    """

    ignored: tuple[str, ...]
    groups: tuple[tuple[str, int], ...]
    shared: tuple[str, ...] = ()

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor) -> Layout:
        model.eval()   # tracing runs a forward pass: no BatchNorm statistics update, no stochastic depth
        names = {m: n for n, m in model.named_modules()}
        head = output_layer(model, example)
        ignored = ([head] if head is not None else []) + [m for m in model.modules() if isinstance(m, nn.Embedding)]
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        found = list(graph.get_all_groups(ignored_layers=ignored))
        groups = [(names[g[0][0].target.module], graph.get_out_channels(g[0][0].target.module)) for g in found]
        shared = [names[g[0][0].target.module] for g in found if couples_blocks(g)]
        return cls(tuple(names[m] for m in ignored), tuple(groups), tuple(shared))


def couples_blocks(group: tp.Group) -> bool:
    """Does a residual sum or a concatenation join these channels (torch-pruning's traced add / sub / cat ops)?

    A multiplication (squeeze-excite's scale) or an activation couples channels inside one block only.
    """
    for dep, _ in group:
        for node in (dep.source, dep.target):
            op = node.module
            if isinstance(op, tp.ops._ConcatOp):
                return True
            if isinstance(op, tp.ops._ElementWiseOp) and any(k in str(op._grad_fn) for k in ("AddBackward",
                                                                                                "SubBackward")):
                return True
    return False


def make_importance(kind: Criterion) -> tp.importance.Importance:
    """torch-pruning's criterion for each name; the group score is the mean over the coupled layers."""
    if kind == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.RandomImportance()


def build_pruner(model: nn.Module, example: torch.Tensor, layout: Layout, importance: tp.importance.Importance,
                 ratio: float, steps: int = 1, round_to: int = 1, keep_shared: bool = False,
                 ratios: dict[str, float] | None = None) -> tp.pruner.BasePruner:
    """A local pruner removing `ratio` of every prunable group's channels (or `ratios[root]` of each group's,
    from `global_ratios`) over `steps` steps; within a group the criterion picks which channels go.

    Kept counts are int(C·(1-ratio)) rounded down to a multiple of `round_to`; a group that would fall below
    `round_to` channels keeps `round_to` (or all of them if it is narrower), so no layer is ever emptied.
    `keep_shared`: the groups a residual sum or concatenation couples keep every channel.
    """
    model.eval()
    kept = set(layout.shared) if keep_shared else set()
    if ratios is not None:
        fixed = {model.get_submodule(root): ratios[root] for root, _ in layout.groups}
    else:
        fixed = {model.get_submodule(root): (0.0 if root in kept else floor_ratio(width, round_to))
                 for root, width in layout.groups if root in kept or int(width * (1 - ratio)) < round_to}
    return tp.pruner.BasePruner(
        model, example, importance=importance, pruning_ratio=ratio, pruning_ratio_dict=fixed or None,
        iterative_steps=steps, ignored_layers=[model.get_submodule(n) for n in layout.ignored],
        global_pruning=False, round_to=round_to if round_to > 1 else None,
    )


def floor_ratio(width: int, round_to: int) -> float:
    """The ratio that leaves min(round_to, width) channels: int(width·(1-r)) = that count (0.5 absorbs rounding)."""
    return max(0.0, 1.0 - (min(round_to, width) + 0.5) / width)


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv / linear layer, by module path."""
    return {name: (m.out_channels if isinstance(m, (nn.Conv1d, nn.Conv2d)) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, CHANNEL_LAYERS)}


def pruned_copy(model: nn.Module, example: torch.Tensor, layout: Layout, ratio: float, round_to: int = 1,
                keep_shared: bool = False, ratios: dict[str, float] | None = None) -> nn.Module:
    """A copy of `model` pruned at `ratio` or `ratios` (shapes depend on the fractions alone, not on which channels
    the criterion picks, so the cheapest criterion is used)."""
    trial = copy.deepcopy(model)
    build_pruner(trial, example, layout, tp.importance.MagnitudeImportance(p=1), ratio, round_to=round_to,
                 keep_shared=keep_shared, ratios=ratios).step()
    return trial


def group_scores(model: nn.Module, example: torch.Tensor, layout: Layout,
                 importance: tp.importance.Importance) -> dict[str, torch.Tensor]:
    """Every prunable group's per-channel importance by root name; torch-pruning's criteria divide each group's
    scores by their mean, so scores of different groups compare (what one global ranking needs)."""
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    ignored = [model.get_submodule(n) for n in layout.ignored]
    widths_ = dict(layout.groups)
    scores = {}
    for group in graph.get_all_groups(ignored_layers=ignored):
        root = names[group[0][0].target.module]
        imp = importance(group)
        # a group scored other than channel for channel (grouped convolutions) is left out: never pruned
        if imp is not None and root in widths_ and imp.numel() == widths_[root]:
            scores[root] = imp.detach().float().flatten()
    return scores


def global_ratios(scores: dict[str, torch.Tensor], layout: Layout, fraction: float, round_to: int,
                  keep_shared: bool) -> dict[str, float]:
    """Each group's pruning fraction when the `fraction` least important channels of the whole network go (one
    ranking over every group's normalised scores), each group kept at or above its floor of `round_to` channels."""
    kept = set(layout.shared) if keep_shared else set()
    rankable = [s for root, s in scores.items() if root not in kept]
    if not rankable:
        raise NotApplicableError("prune.channel: allocation: global found no channels to rank (every prunable group "
                                 "is kept whole or scored other than channel for channel); use allocation: uniform")
    pool = torch.cat(rankable)
    threshold = torch.quantile(pool, fraction) if fraction > 0 else pool.min() - 1
    return {root: (0.0 if root in kept or root not in scores
                   else min(float((scores[root] <= threshold).float().mean()), floor_ratio(width, round_to)))
            for root, width in layout.groups}


@dataclass
class Plan:
    """The per-layer channel fraction that meets the target, checked on a pruned copy before any training."""

    ratio: float
    base_macs: int
    macs: int
    base_params: int
    ratios: dict[str, float] | None = None     # per group, when one global ranking allocates the pruning
    params: int = 0                            # of the pruned copy

    def size(self, of: str) -> int:
        """The quantity a target is set on: "macs" or "params"."""
        return self.macs if of == "macs" else self.params

    @property
    def macs_ratio(self) -> float:
        return self.base_macs / max(self.macs, 1)


def plan_pruning(model: nn.Module, example: torch.Tensor, layout: Layout, *, macs_ratio: float | None = None,
                 channel_ratio: float | None = None, params_ratio: float | None = None, round_to: int = 1,
                 keep_shared: bool = False,
                 who: str = "prune.channel", allocate: Callable[[float], dict[str, float]] | None = None) -> Plan:
    """Find the channel fraction for the target and prove it reachable on a copy; NotApplicableError otherwise.

    `allocate`: the fraction is of the whole network's channels, turned into per-group fractions by it (global
    ranking); otherwise every group loses that fraction."""
    if keep_shared and not set(dict(layout.groups)) - set(layout.shared):
        raise NotApplicableError(f"{who}: shared_channels: keep leaves nothing to prune in {type(model).__name__}: "
                                 "every prunable group is joined by a residual sum or a concatenation")
    if not layout.groups:
        raise NotApplicableError(
            f"{who}: {type(model).__name__} has no prunable channels: its only conv/linear layers are the "
            "classifier (whose outputs are the classes) or the embedding")
    model.eval()
    base_macs = count_macs(model, example)
    base_params = sum(p.numel() for p in model.parameters())

    def measure(ratio: float) -> Plan:
        ratios = allocate(ratio) if allocate is not None else None
        trial = pruned_copy(model, example, layout, ratio, round_to, keep_shared, ratios)
        emptied = [name for name, width in widths(trial).items() if width == 0]
        if emptied:   # the floors make this impossible; a model torch-pruning mis-traces would land here
            raise NotApplicableError(f"{who}: pruning at {ratio:.4f} would empty {', '.join(emptied)}")
        return Plan(ratio, base_macs, count_macs(trial, example), base_params, ratios,
                    sum(p.numel() for p in trial.parameters()))

    if channel_ratio is not None:
        return measure(channel_ratio)
    of, wanted = ("macs", macs_ratio) if macs_ratio is not None else ("params", params_ratio)
    assert wanted is not None
    target = (base_macs if of == "macs" else base_params) / wanted
    lo, hi, best = bracket(measure, target, wanted, of)
    if best is None:
        most = measure(MAX_RATIO)
        if most.size(of) > target:
            base = base_macs if of == "macs" else base_params
            raise NotApplicableError(
                f"{who}: {of}_ratio {wanted:g} is out of reach: with every prunable layer at its minimum "
                + ("(the channels residual sums and concatenations share kept whole, shared_channels: keep) "
                   if keep_shared else "") +
                f"({round_to} channel{'s' if round_to > 1 else ''}) the dependency graph gets "
                f"{base / max(most.size(of), 1):.2f}× fewer {'MACs' if of == 'macs' else 'parameters'} "
                f"({most.size(of):,} of {base:,}); the classifier's outputs, "
                "the input channels and the embedding are never pruned")
        hi, best = MAX_RATIO, most
    while hi - lo > RATIO_TOLERANCE:
        mid = (lo + hi) / 2
        trial = measure(mid)
        if trial.size(of) <= target:
            hi, best = mid, trial
        else:
            lo = mid
    return best


def bracket(measure: Callable[[float], Plan], target: float, ratio: float, of: str = "macs",
            width: float = 0.08) -> tuple[float, float, Plan | None]:
    """(lo, hi, plan at hi) around the answer, guessed from size ≈ base·(1-p)² (most MACs and most parameters are
    channels × channels).

    Saves about half the bisection's pruned copies. Returns (guess + width, 1, None) when that misses the target.
    """
    guess = 1.0 - 1.0 / math.sqrt(ratio)
    hi = min(MAX_RATIO, guess + width)
    best = measure(hi)
    if best.size(of) > target:
        return hi, 1.0, None
    lo = max(0.0, guess - width)
    while lo > 0.0:          # p = 0 prunes nothing: a valid lower end without measuring it
        trial = measure(lo)
        if trial.size(of) > target:
            break
        hi, best, lo = lo, trial, max(0.0, lo - width)
    return lo, hi, best


def round_budget(cfg: TrainConfig, rounds: int, batches_per_epoch: int) -> TrainConfig:
    """One round's share of the fine-tune budget, so all rounds together train about as long as one fine-tune.

    Whole epochs when they divide evenly; otherwise the total batches are split and each round's epochs
    draw that many batches (rounded up, at most one batch per epoch more than an exact split).
    """
    if rounds == 1:
        return cfg
    per_epoch = min(batches_per_epoch, cfg.max_train_batches or batches_per_epoch)
    if cfg.epochs % rounds == 0:
        return dataclasses.replace(cfg, epochs=cfg.epochs // rounds)
    share = max(1, (cfg.epochs * per_epoch) // rounds)
    epochs = math.ceil(share / per_epoch)
    return dataclasses.replace(cfg, epochs=epochs, max_train_batches=math.ceil(share / epochs))


def accumulate_gradients(model: nn.Module, batches: Callable[[], Any], count: int) -> None:
    """Cross-entropy gradients summed over `count` training batches, for Taylor importance (|w · ∂L/∂w|).

    Eval mode: BatchNorm uses its running statistics and keeps them, dropout and stochastic depth are off,
    so estimating importance does not change the model.
    """
    model.eval()
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(batches()):
        if i >= count:
            break
        F.cross_entropy(model(x), y).backward()


@register_method("prune.channel")
@dataclass
class ChannelPruning(Method):
    """Structured channel pruning (torch-pruning dependency graph) to a MACs or channel target: smaller, faster."""
    structure_from_data: ClassVar[bool] = True   # channels chosen from the trained weights

    family: ClassVar[str] = "pruning"
    name: ClassVar[str] = "prune.channel"
    knobs: ClassVar[tuple[str, ...]] = ("macs_ratio", "channel_ratio", "params_ratio")
    example: ClassVar[tuple[str, dict[str, Any]]] = ("tiny-cnn", {"macs_ratio": 1.5})

    importance: Criterion = "l1"
    macs_ratio: float | None = bounded(None, gt=1.0)      # target: base MACs / pruned MACs (2.0 = half the MACs)
    channel_ratio: float | None = bounded(None, ge=0.0, lt=1.0)  # or: fraction of each layer's channels to remove
    rounds: int = bounded(1, ge=1)                        # prune → fine-tune rounds sharing the fine-tune budget
    finetune: bool = True
    taylor_batches: int = bounded(4, ge=1)                # training batches whose gradients score channels
    round_to: int = bounded(8, ge=1)                      # kept channel counts are multiples of this (see above)
    # How each round's fine-tune recovers: labels alone, or distilled from the unpruned model (its logits as soft
    # targets, Hinton KD with kd_alpha and kd_temperature): the same batches, plus one forward pass of the unpruned
    # model per batch. A pruned network that lost whole channels has to relearn features; the unpruned model's
    # output distribution says more per example than the label (the recovery most channel-pruning papers use).
    # keep: the channels residual sums and concatenations share across blocks (MobileNetV2's bottleneck stream,
    # SqueezeNet's Fire outputs) keep their width, and only the channels inside blocks (expansions, squeezes) are
    # pruned, more deeply for the same MACs target. The stream is what every later block reads.
    shared_channels: Shared = added("prune")
    recover: Recovery = added("finetune")
    kd_alpha: float = added(0.9, ge=0.0, le=1.0)
    kd_temperature: float = added(4.0, gt=0.0)
    # and, with recover: distill, the unpruned model's features at these module paths (FitNets hints, MSE, weight
    # kd_beta): a pruned network keeps every module path, and with shared_channels: keep the block outputs keep
    # their width too, so each hint compares the same channels (a learned 1×1 adapter where widths differ)
    kd_features: list[str] | None = added(None)
    kd_beta: float = added(1.0, ge=0.0)
    # uniform: every group loses the same fraction (the shapes do not depend on the criterion); global: one ranking
    # of every prunable channel by the criterion's normalised scores, so groups whose channels matter less lose
    # more (torch-pruning's global pruning, with each group's floor of round_to channels kept)
    allocation: Allocation = added("uniform")
    # or: base parameters / pruned parameters (1.54 = about 35 % fewer), the target a parameter budget states
    params_ratio: float | None = added(None, gt=1.0)

    def __post_init__(self) -> None:
        check_ranges(self, self.name)
        targets = {"macs_ratio": self.macs_ratio, "channel_ratio": self.channel_ratio,
                   "params_ratio": self.params_ratio}
        if sum(v is not None for v in targets.values()) != 1:
            raise ConfigError(f"{self.name}: give exactly one target, macs_ratio (> 1, e.g. 2.0 for half the MACs), "
                              f"params_ratio (> 1, e.g. 1.54 for about 35 % fewer parameters) or channel_ratio "
                              f"(in [0, 1)); got " + ", ".join(f"{k}={v}" for k, v in targets.items()))
        if self.kd_features is not None and self.recover != "distill":
            raise ConfigError(f"{self.name}: kd_features are hints from the unpruned model, used while recovering "
                              f"by distillation; set recover: distill (got recover: {self.recover})")

    def not_applicable(self, model: nn.Module) -> str | None:
        if any(isinstance(m, HeadAttention) for m in model.modules()):
            return ("its attention layers split channels into heads, which channel pruning would cut across "
                    "(prune.heads removes whole heads)")
        if any(isinstance(m, nn.RNNBase) for m in model.modules()):
            return "torch-pruning's dependency graph does not shrink a recurrent layer's hidden units"
        return None

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        example = ctx.task.example_input(1)
        layout = Layout.of(model, example)
        keep = self.shared_channels == "keep"
        allocate = None
        # Taylor gradients of the unpruned model, once: the global ranking and the first round's pruner read the same
        has_gradients = False
        if self.allocation == "global":   # the scores decide the shapes: scored once, on the unpruned model
            if self.importance == "taylor":
                accumulate_gradients(model, ctx.task.train_dataloader, self.taylor_batches)
                has_gradients = True
            scores = group_scores(model, example, layout, make_importance(self.importance))
            allocate = lambda fraction: global_ratios(scores, layout, fraction, self.round_to, keep)  # noqa: E731
        plan = plan_pruning(model, example, layout, macs_ratio=self.macs_ratio, channel_ratio=self.channel_ratio,
                            params_ratio=self.params_ratio, round_to=self.round_to, keep_shared=keep, who=self.name,
                            allocate=allocate)   # raises before any training
        before = widths(model)
        unpruned = copy.deepcopy(model).eval() if self.recover == "distill" else None
        pruner = build_pruner(model, example, layout, make_importance(self.importance), plan.ratio, self.rounds,
                              self.round_to, keep, plan.ratios)
        budget = (round_budget(ctx.budget, self.rounds, len(ctx.task.train_dataloader(ctx.budget.batch_size)))
                  if self.finetune else None)
        for step in range(1, self.rounds + 1):
            if self.importance == "taylor" and not has_gradients:
                accumulate_gradients(model, ctx.task.train_dataloader, self.taylor_batches)
            has_gradients = False
            with seeded(step_seed(ctx.seed, step)):
                pruner.step()
            model.zero_grad(set_to_none=True)
            if self.finetune:
                assert budget is not None   # set above whenever self.finetune
                tuned = self.recover_round(model, unpruned, ctx, budget)
                if tuned is not model:   # the pruner's graph holds this model's modules: keep training them
                    model.load_state_dict(tuned.state_dict())
        model.eval()
        after = widths(model)
        macs = count_macs(model, example)
        if macs != plan.macs:
            raise RuntimeError(f"{self.name}: pruned to {macs:,} MACs, the plan promised {plan.macs:,}")
        params = sum(p.numel() for p in model.parameters())
        requested = next({k: v} for k, v in (("macs_ratio", self.macs_ratio), ("params_ratio", self.params_ratio),
                                              ("channel_ratio", self.channel_ratio)) if v is not None)
        return Outcome(
            model,
            compute="physical",   # narrower dense layers: every runtime runs fewer MACs
            requested=requested,
            achieved={"macs_ratio": round(plan.base_macs / macs, 4),
                      "params_ratio": round(plan.base_params / params, 4),
                      "channel_ratio": round(1 - sum(after.values()) / sum(before.values()), 4)},
            details={"importance": self.importance, "rounds": self.rounds, "recover": self.recover,
                     "shared_channels": self.shared_channels, "allocation": self.allocation,
                     "kd": ({"alpha": self.kd_alpha, "temperature": self.kd_temperature,
                             "features": self.kd_features, "beta": self.kd_beta if self.kd_features else None}
                            if unpruned is not None else None),
                     "layer_ratio": round(plan.ratio, 6),
                     "round_budget": budget and {"epochs": budget.epochs,
                                                 "max_train_batches": budget.max_train_batches},
                     "kept_channels": {k: [after[k], v] for k, v in before.items() if k in after and after[k] != v},
                     "empty_layers": [k for k, v in after.items() if v == 0]},
        )

    def recover_round(self, model: nn.Module, unpruned: nn.Module | None, ctx: MethodContext,
                      budget: TrainConfig) -> nn.Module:
        if unpruned is None:
            return ctx.finetune(model, cfg=budget)
        hints = [FeaturePair(path, path) for path in self.kd_features or []]
        loss = DistillLoss(alpha=self.kd_alpha, temperature=self.kd_temperature, feature_kind="hint",
                           beta=self.kd_beta if hints else 0.0, pairs=hints)
        return finetune_against(model, unpruned, ctx, budget, loss)[0]
