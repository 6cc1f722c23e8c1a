"""Unstructured pruning: magnitude and random masks (torch.nn.utils.prune), one-shot or on a gradual schedule.

Magnitude and random pruning share everything (which weights are candidates, global or per-layer ranking,
the schedule, fine-tuning with masks kept, baking the masks in) and differ only in torch's pruning method that
picks the weights: `L1Unstructured` ranks by |w|, `RandomUnstructured` draws uniformly. Random is the control
every pruning table needs (Blalock et al. 2020): a criterion is only worth its name if it beats it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn.utils import prune

from slimbench.baselines.classifier import ClassifierModule, TrainConfig
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import bounded, check_ranges
from slimbench.methods.base import Method, MethodContext, Outcome, register_method

PRUNABLE = (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Embedding)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)      # layers whose outputs can be a network's logits
Pairs = list[tuple[nn.Module, str]]


def output_layer(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module | None:
    """The layer that produces the logits: the last Conv/Linear a forward pass on `example` runs.

    Without an example, the last one registered (torchvision and timm register their classifier last).
    Forward order also finds SqueezeNet's 1×1-conv classifier, which a "last Linear" rule misses.
    """
    if example is None:
        return next((m for m in reversed(list(model.modules())) if isinstance(m, WEIGHTED)), None)
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
               for m in model.modules() if isinstance(m, WEIGHTED)]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return order[-1] if order else None


def prunable_weights(model: nn.Module, include_classifier: bool = True,
                     example: torch.Tensor | None = None, every_matrix: bool = False) -> Pairs:
    """Every (module, "weight") of conv / linear / embedding layers, in model order (the classifier optional).

    `every_matrix` adds every other parameter of two or more dimensions (a GRU's input and recurrent matrices, a
    ViT's position embedding and class token): the tensors the stored form counts as weights, so a sparsity
    claimed over these is the sparsity measured.
    """
    pairs: Pairs = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
    if every_matrix:
        layers = {id(m) for m, _ in pairs}
        pairs += [(m, name) for m in model.modules() for name, p in m.named_parameters(recurse=False)
                  if p.dim() >= 2 and not (id(m) in layers and name == "weight")]
    if not include_classifier:
        head = output_layer(model, example)
        pairs = [(m, n) for m, n in pairs if m is not head]
    return pairs


def weight_sparsity(pairs: Pairs) -> float:
    total = sum(getattr(m, n).numel() for m, n in pairs)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in pairs)
    return zeros / max(total, 1)


def polynomial_sparsity(step: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta 2017, eq. 1: s_t = s_f + (s_i - s_f)(1 - t/n)^3; rises fast, then levels off at s_f (t = n)."""
    if step >= steps:
        return final
    return final + (initial - final) * (1.0 - step / steps) ** 3


def _pruned(module: nn.Module, name: str) -> int:
    mask = getattr(module, name + "_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def _numel(module: nn.Module, name: str) -> int:
    return getattr(module, name).numel()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from the global generator (torch's random pruning does) without disturbing the caller's stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def mask_to(pairs: Pairs, sparsity: float, scope: str, method: type[prune.BasePruningMethod],
            generator_seed: int | None = None) -> None:
    """Grow the masks so exactly round(sparsity · n) weights are pruned (n: all weights, or each layer's; `lamp`:
    all weights, split between layers by `lamp_counts`).

    The amount handed to torch is the integer number of *additional* weights: torch's PruningContainer picks
    them among the still unpruned ones, so masks only grow, the count is exact, and the reparametrization
    (`weight_orig` that the optimizer holds) stays the same tensor while training.
    """
    rng = seeded(generator_seed) if generator_seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():   # RandomUnstructured draws from the global generator
        if scope == "global":
            # global_unstructured flattens weights and masks with view(-1): channels-last training tensors need a
            # contiguous copy (the mask buffer is replaced by one; the forward hook reads it by name)
            for module, name in pairs:
                mask = getattr(module, name + "_mask", None)
                if mask is not None and not mask.is_contiguous():
                    setattr(module, name + "_mask", mask.contiguous())
            scores = {(m, n): getattr(m, n).detach().contiguous() for m, n in pairs}
            total = sum(_numel(m, n) for m, n in pairs)
            more = round(sparsity * total) - sum(_pruned(m, n) for m, n in pairs)
            prune.global_unstructured(pairs, pruning_method=method, importance_scores=scores, amount=max(more, 0))
        else:
            counts = (lamp_counts(pairs, sparsity) if scope == "lamp"
                      else [round(sparsity * _numel(m, n)) for m, n in pairs])
            for (module, name), count in zip(pairs, counts):
                method.apply(module, name, amount=max(count - _pruned(module, name), 0))


def lamp_counts(pairs: Pairs, sparsity: float) -> list[int]:
    """Weights to prune per layer by LAMP (Lee et al. 2021): one global ranking of layer-normalised scores.

    A weight's score is w² over the sum of w'² of every weight at least as large in its layer, so each layer's
    largest weight scores 1 and no layer is emptied before the others, the failure of a plain global ranking at
    high sparsity (one scale for all layers zeroes the layers whose weights are small). Already pruned weights
    score 0 and are counted first, so masks only grow and the total is exactly round(sparsity · n). The counts
    depend on magnitudes alone: random pruning with `scope: lamp` takes the same per-layer counts and picks
    within each layer at random, which isolates the criterion from the allocation.
    """
    scores = []
    for module, name in pairs:
        w2 = getattr(module, name).detach().reshape(-1).double() ** 2
        ordered, order = torch.sort(w2)
        suffix = torch.flip(torch.cumsum(torch.flip(ordered, [0]), 0), [0])   # Σ of w'² ≥ each ordered w²
        score = torch.empty_like(w2)
        score[order] = torch.where(suffix > 0, ordered / suffix.clamp_min(1e-300), torch.zeros_like(ordered))
        scores.append(score)
    layer = torch.cat([torch.full((len(sc),), i) for i, sc in enumerate(scores)])
    k = round(sparsity * len(layer))
    chosen = layer[torch.sort(torch.cat(scores), stable=True).indices[:k]]
    return torch.bincount(chosen, minlength=len(pairs)).tolist()


class GradualPruningModule(ClassifierModule):
    """Fine-tuning that raises the masks' sparsity on Zhu & Gupta's schedule at evenly spaced batches.

    Step k of n (k = 1..n) happens before batch round((k-1)·span·T/n) of the T fine-tuning batches, so the
    last step reaches the target with the rest of the budget left to recover from it. An epoch validated before
    the last step is not reported to the best-weights keeper: the model handed back carries the target masks.
    """

    def __init__(self, model: nn.Module, num_classes: int, cfg: TrainConfig, method: UnstructuredPruning,
                 pairs: Pairs, seed: int):
        super().__init__(model, num_classes, cfg)
        self.method, self.pairs, self.seed = method, pairs, seed
        self.batches_seen = 0
        self.plan: dict[int, int] = {}
        self.history: list[dict[str, float]] = []

    @property
    def reached_target(self) -> bool:
        return bool(self.history) and self.history[-1]["step"] == self.method.pruning_steps

    def on_train_start(self) -> None:
        self.plan = schedule_batches(int(self.trainer.estimated_stepping_batches), self.method.pruning_steps,
                                     self.method.gradual_span)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.plan.get(self.batches_seen)
        if step is not None:
            target = polynomial_sparsity(step, self.method.pruning_steps, self.method.sparsity)
            self.method.mask(self.pairs, target, step_seed(self.seed, step))
            self.history.append({"step": step, "batch": self.batches_seen, "sparsity": round(target, 6),
                                 "achieved": round(_mask_sparsity(self.pairs), 6)})
        self.batches_seen += 1

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.reached_target:
            super().validation_step(batch, batch_idx)


def schedule_batches(total_batches: int, steps: int, span: float = 1.0) -> dict[int, int]:
    """Batch index → pruning step (1..steps), evenly spread over the first `span` of the batches.

    Zhu & Gupta prune over a window and keep training after it; with span 1 the last step still leaves
    total/steps batches to recover.
    """
    window = span * total_batches
    if steps > window:
        raise ConfigError(f"pruning_steps ({steps}) exceeds the {int(window)} fine-tuning batches the schedule spans "
                          f"({span:g} of {total_batches}); use at most {int(window)}")
    return {round((k - 1) * window / steps): k for k in range(1, steps + 1)}


def step_seed(seed: int, step: int) -> int:
    """A distinct random stream per (cell seed, pruning step), so random masks differ across seeds and steps."""
    return seed * 100_003 + step


def _mask_sparsity(pairs: Pairs) -> float:
    return sum(_pruned(m, n) for m, n in pairs) / max(sum(_numel(m, n) for m, n in pairs), 1)


def finetune_batches(ctx: MethodContext, cfg: TrainConfig) -> int:
    """Optimizer steps one fine-tune runs: epochs × batches per epoch (capped by max_train_batches), as Lightning."""
    per_epoch = len(ctx.task.train_dataloader(cfg.batch_size))
    if cfg.max_train_batches:
        per_epoch = min(per_epoch, cfg.max_train_batches)
    return cfg.epochs * per_epoch


@dataclass
class UnstructuredPruning(Method):
    """Shared mechanism of magnitude and random pruning; subclasses name torch's method that picks the weights."""

    family: ClassVar[str] = "pruning"
    name: ClassVar[str]
    pruning_method: ClassVar[type[prune.BasePruningMethod]]
    seeded: ClassVar[bool] = False          # does the pick draw random numbers (seeded from the cell's seed)?
    knobs: ClassVar[tuple[str, ...]] = ("sparsity",)

    sparsity: float = bounded(0.5, ge=0.0, lt=1.0)
    scope: Literal["global", "layer", "lamp"] = "global"   # lamp: layer-adaptive (Lee et al. 2021), no layer emptied
    include_classifier: bool = True
    finetune: bool = True
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    pruning_steps: int = bounded(10, ge=1)  # gradual: mask updates spread over the fine-tuning batches
    gradual_span: float = bounded(0.75, gt=0.0, le=1.0)   # gradual: the first fraction of batches they span

    def __post_init__(self) -> None:
        check_ranges(self, self.name)
        if self.schedule == "gradual" and not self.finetune:
            raise ConfigError(f"{self.name}: schedule 'gradual' prunes while fine-tuning, so it needs finetune: "
                              "true (or use schedule 'oneshot')")

    def mask(self, pairs: Pairs, sparsity: float, seed: int) -> None:
        mask_to(pairs, sparsity, self.scope, self.pruning_method, seed if self.seeded else None)

    def apply(self, model: nn.Module, ctx: MethodContext | None) -> Outcome:
        example = ctx.task.example_input(1) if ctx is not None else None
        pairs = prunable_weights(model, self.include_classifier, example, every_matrix=True)
        if not pairs:
            raise NotApplicableError(f"{self.name} needs Conv/Linear/Embedding layers; {type(model).__name__} has none")
        seed = ctx.seed if ctx is not None else 0
        details: dict[str, Any] = {"schedule": self.schedule}
        if self.schedule == "gradual":
            assert ctx is not None, "gradual pruning fine-tunes: it needs a MethodContext"
            schedule_batches(finetune_batches(ctx, ctx.budget), self.pruning_steps, self.gradual_span)   # fail early
            self.mask(pairs, 0.0, seed)       # reparametrize first: the optimizer must hold `weight_orig`
            module = GradualPruningModule(model, ctx.task.num_classes, ctx.budget, self, pairs, seed)
            model = ctx.finetune(model, module=module)
            if not module.reached_target:
                raise RuntimeError(f"{self.name}: fine-tuning ended before the last pruning step")
            details["steps"] = module.history
        else:
            self.mask(pairs, self.sparsity, step_seed(seed, 0))
            if self.finetune:
                assert ctx is not None, "fine-tuning needs a MethodContext"
                model = ctx.finetune(model)   # masks stay applied: pruned weights stay zero while training
        for module_, name in pairs:
            prune.remove(module_, name)       # bake the mask in: a plain state dict whose zeros are real
        achieved = weight_sparsity(pairs)
        names = {id(m): n for n, m in model.named_modules()}
        empty = [names[id(m)] for m, n in pairs if not getattr(m, n).any()]  # a fully pruned layer blocks the signal
        with torch.no_grad():
            total = sum(p.numel() for p in model.parameters())
            zeros = sum(int((p == 0).sum()) for p in model.parameters())
        return Outcome(
            model,
            compute="simulated",  # zeros in dense tensors: dense kernels run unchanged
            requested={"sparsity": self.sparsity},
            achieved={"sparsity": round(achieved, 6), "model_sparsity": round(zeros / total, 6)},
            details={**details, "empty_layers": empty},
        )


@register_method("prune.magnitude")
@dataclass
class MagnitudePruning(UnstructuredPruning):
    """Unstructured L1-magnitude pruning (global or per layer) to a target sparsity, one-shot or gradual, fine-tuned."""

    name: ClassVar[str] = "prune.magnitude"
    control: ClassVar[str | None] = "prune.random"   # the same masks' count, drawn at random
    pruning_method: ClassVar[type[prune.BasePruningMethod]] = prune.L1Unstructured
    version: ClassVar[int] = 2      # the classifier is found by forward order (SqueezeNet's conv head too)


@register_method("prune.random")
@dataclass
class RandomPruning(UnstructuredPruning):
    """Unstructured random pruning (seeded) with prune.magnitude's sparsity, scope and fine-tuning: the control."""

    name: ClassVar[str] = "prune.random"
    pruning_method: ClassVar[type[prune.BasePruningMethod]] = prune.RandomUnstructured
    seeded: ClassVar[bool] = True
