"""Explanations of a deployed model: Captum attributions on a fixed subset of the test split, how faithful they are to
the deployed model (deletion and insertion curves, Petsiuk et al. 2018, "RISE") and how far they agree with the
same-seed baseline's attributions of the same examples.

The subset is stratified and drawn with one seed, so every cell of a task, its baseline included, explains the same
examples; its size and the step counts are `ExplainConfig`'s.

Which class: the deployed model's prediction on the untouched input, so the attributions explain the decision the
deployed model makes and the curves follow that class's probability as the deployed model (an ONNX Runtime graph
included) computes it. A runtime graph has no gradients: its attributions come from the float model it was deployed
from, and the record says so; the curves then show how well the float model's explanation describes the deployed one.

"Removed" is the same value for Integrated Gradients' reference and for the curves, per modality:
- images: each channel's training-split mean (0 after the task's normalisation), a grey with no edge in it;
- spectrograms: each mel bin's training-split mean over clips and frames, the usual energy at that frequency (a
  constant spectrogram would carry energy no clip has at low or high frequencies);
- tokens: the padding id, whose embedding is the zero row the models already ignore; a word is removed whole, and
  attributions are taken at the embedding's output (token ids have no gradient) and summed over its dimensions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerGradientXActivation, LayerIntegratedGradients, Saliency
from torch import nn

from slimbench.deploy.executorch_runtime import ExecutorchModel
from slimbench.deploy.onnx_export import OnnxModel
from slimbench.harness.measure.explanation_data import (
    DEPLOYED_MODEL,
    GRADIENT_X_INPUT,
    INTEGRATED_GRADIENTS,
    Agreement,
    Explanations,
    Faithfulness,
    agreement,
    encode_attributions,
)
from slimbench.harness.measure.quality import _test_split
from slimbench.tasks.base import Task, stratified_subset

SUBSET_SEED = 0          # one subset per task: every cell and its baseline explain the same examples
PAD_ID = 0               # tasks/vocab.py: id 0 is <pad>, embedded as the zero row
BATCH = 256              # inputs per forward (and per Integrated Gradients chunk): bounded memory at any subset size


@dataclass(frozen=True)
class ExplainConfig:
    """The sizes that set an explanation's cost and precision, chosen to keep explaining a model near a tenth of a
    baseline cell (the shortest cell: nothing trains) and at a few per cent of a cell that fine-tunes; the cost grows
    linearly with `examples` (the suite's `measure.explanation_examples`).

    32 examples: 3-4 per class on ten classes; twice as many moved MobileNetV2's Fashion-MNIST AUCs in the third
    decimal, far inside the seed-to-seed spread the report sets a Δ against. 16 Integrated Gradients steps on
    Captum's Gauss-Legendre nodes: their ranks (all that agreement and the curves read) agree with 64 steps' far more
    closely than two baseline seeds' agree with each other. 16 curve steps: removing 1/16 of the features at a time
    resolves the early fall that separates a faithful order from a random one.
    """

    examples: int = 32
    ig_steps: int = 16
    curve_steps: int = 16
    top_fraction: float = 0.1    # top-k overlap compares the top 10 % of features


@dataclass
class Modality:
    """How one task's inputs are attributed, split into features and removed."""

    tokens: bool
    removed: torch.Tensor        # broadcasts to a batch of inputs; the padding id for tokens
    describe: str

    def features(self, attributions: torch.Tensor) -> torch.Tensor:
        """`examples × features`: a pixel's or bin's channels summed (one feature each), a word's dimensions summed."""
        return attributions.sum(dim=-1) if self.tokens else attributions.sum(dim=1).flatten(1)

    def apply(self, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """`x` with the `chosen` features (`examples × features`) replaced by the removed value."""
        mask = chosen if self.tokens else chosen.view(x.shape[0], 1, *x.shape[2:])
        return torch.where(mask, self.removed.to(x.dtype), x)

    def valid(self, x: torch.Tensor) -> torch.Tensor:
        """The features an example has: a text's words (its padding is already removed), every pixel or bin."""
        return x != PAD_ID if self.tokens else torch.ones(x.shape[0], x[0, 0].numel(), dtype=torch.bool)


def modality(task: Task) -> Modality:
    if task.spec.token_vocab:
        return Modality(True, torch.tensor(PAD_ID), "the padding token (its embedding is the zero row)")
    x = task.train.x.float()
    if task.spec.modality == "audio":
        return Modality(False, x.mean(dim=(0, 3), keepdim=True),
                        "each mel bin's training-split mean (over clips and frames)")
    return Modality(False, x.mean(dim=(0, 2, 3), keepdim=True),
                    "each channel's training-split mean (0 after the task's normalisation)")


def explanation_subset(task: Task, examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stratified test subset every cell of the task explains (inputs, labels), in test-split order."""
    test = _test_split(task)
    index = stratified_subset(test.y, examples, SUBSET_SEED).sort().values
    return test.x[index], test.y[index]


@torch.inference_mode()
def probabilities(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Softmax of the model's outputs, in batches (the deployed runtime's own forward)."""
    return torch.cat([torch.as_tensor(model(x[i:i + BATCH])).float().softmax(dim=1) for i in range(0, len(x), BATCH)])


@contextlib.contextmanager
def input_gradients_only(model: nn.Module) -> Iterator[None]:
    """Attributions need gradients with respect to the input alone: weight gradients would cost a third of every
    backward pass and be thrown away. The model is shared (the reference is timed after this), so its flags return."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def embedding_layer(model: nn.Module) -> nn.Module:
    """The token embedding, where a text model's attributions are taken (the first nn.Embedding)."""
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise LookupError(f"{type(model).__name__} has no nn.Embedding to attribute token ids at")


def attribute(model: nn.Module, x: torch.Tensor, target: torch.Tensor, m: Modality, cfg: ExplainConfig
              ) -> dict[str, torch.Tensor]:
    """Integrated Gradients and Gradient × (input − removed) of `target`, `examples × features`.

    Gradient × input is the cheap method (one backward pass). Taken against the removed value rather than zero, it is
    Integrated Gradients with a single step: the two differ only in how curved the model is along the path.
    """
    model.eval()
    with input_gradients_only(model), torch.enable_grad():
        if m.tokens:
            layer = embedding_layer(model)
            ig = LayerIntegratedGradients(model, layer).attribute(
                x, baselines=torch.full_like(x, PAD_ID), target=target, n_steps=cfg.ig_steps,
                internal_batch_size=BATCH)
            gxi = LayerGradientXActivation(model, layer).attribute(x, target=target)
        else:
            reference = m.removed.expand_as(x).contiguous()
            ig = IntegratedGradients(model).attribute(x, baselines=reference, target=target, n_steps=cfg.ig_steps,
                                                      internal_batch_size=BATCH)
            gradient = Saliency(model).attribute(x.detach().clone().requires_grad_(), target=target, abs=False)
            gxi = gradient * (x - reference)
    return {INTEGRATED_GRADIENTS: m.features(ig.detach().float()), GRADIENT_X_INPUT: m.features(gxi.detach().float())}


def ranks(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each feature's place in the order, 0 = highest score; features an example lacks come after all of its own."""
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
    out = torch.empty_like(order)
    out.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return out.masked_fill(~valid, order.shape[1])


def curve(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor, order: torch.Tensor,
          valid: torch.Tensor, m: Modality, steps: int, insertion: bool,
          ends: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """The target's probability, `examples × (steps + 1)`, as the first 0, 1/steps, ..., all of each example's
    features in `order` are removed from the input (deletion) or restored to an all-removed input (insertion).

    `ends`: the probabilities of the untouched and of the all-removed inputs, which every curve of an example starts
    or ends at whatever the order; computed once by the caller, they spare each curve two of its forward passes.
    """
    counts = valid.sum(dim=1, keepdim=True)
    inner = range(1, steps) if ends is not None else range(steps + 1)
    inputs = [m.apply(x, ~chosen & valid if insertion else chosen)
              for chosen in (order < torch.round(counts * j / steps) for j in inner)]
    probs = probabilities(model, torch.cat(inputs)).view(len(inner), len(x), -1)
    if ends is not None:
        clean, emptied = ends
        first, last = (emptied, clean) if insertion else (clean, emptied)
        probs = torch.cat([first[None], probs, last[None]])
    picked = probs.gather(2, target.view(1, -1, 1).expand(steps + 1, -1, 1))
    return picked.squeeze(2).T.numpy()


def area(probs: np.ndarray) -> float:
    """Trapezoidal area under each example's curve on [0, 1], averaged over examples."""
    steps = probs.shape[1] - 1
    return round(float(((probs[:, :-1] + probs[:, 1:]).sum(axis=1) / (2 * steps)).mean()), 6)


def faithfulness(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                 scores: torch.Tensor, valid: torch.Tensor, m: Modality, steps: int,
                 ends: tuple[torch.Tensor, torch.Tensor] | None = None) -> Faithfulness:
    order = ranks(scores, valid)
    return Faithfulness(deletion_auc=area(curve(model, x, target, order, valid, m, steps, False, ends)),
                        insertion_auc=area(curve(model, x, target, order, valid, m, steps, True, ends)))


def random_scores(shape: torch.Size) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(SUBSET_SEED))


def explain_deployed(model: nn.Module, deployed: nn.Module, task: Task, baseline: nn.Module | None,
                     cfg: ExplainConfig = ExplainConfig()) -> Explanations:
    """`explain` for a cell's model as its runtime runs it. An ONNX Runtime graph computes the curves itself (int8
    kernels and all) and is attributed through its float source; eager and torch.compile run the same function, so
    the eager model computes both (a compiled model would recompile for every new batch shape)."""
    if isinstance(model, (OnnxModel, ExecutorchModel)):
        made = "ONNX Runtime graph" if isinstance(model, OnnxModel) else "ExecuTorch program"
        return explain(deployed, model.float_model, f"the float model the {made} was made from (a runtime "
                       "graph has no gradients)", task, baseline, cfg)
    return explain(deployed if isinstance(deployed, OnnxModel) else model, model, DEPLOYED_MODEL, task, baseline,
                   cfg)


def explain(deployed: Callable[[torch.Tensor], torch.Tensor], attributed: nn.Module | None, attributed_is: str,
            task: Task, baseline: nn.Module | None, cfg: ExplainConfig = ExplainConfig()) -> Explanations:
    """The deployed model's explanations on the task's explanation subset.

    `attributed` is the torch model whose gradients stand for the deployed one (itself, or the float model a runtime
    graph was made from; `attributed_is` says which, for the record). `baseline` is the same-seed trained baseline,
    attributed on the same examples for agreement; None in the baseline's own cell, which keeps its attributions
    instead so a report can compare baseline seeds (the noise floor of agreement).
    """
    m = modality(task)
    x, _ = explanation_subset(task, cfg.examples)
    clean = probabilities(deployed, x)
    target = clean.argmax(dim=1)
    valid = m.valid(x)
    described = Explanations(examples=len(x), seed=SUBSET_SEED, features=int(valid.shape[1]), attributed=attributed_is,
                             removed=m.describe, ig_steps=cfg.ig_steps, curve_steps=cfg.curve_steps,
                             top_fraction=cfg.top_fraction,
                             clean_probability=round(float(clean.max(dim=1).values.mean()), 6))
    if attributed is None:
        return replace(described, unavailable="no torch model to attribute (a runtime graph without its source)")
    try:
        scores = attribute(attributed, x, target, m, cfg)
    except (RuntimeError, LookupError) as exc:   # no gradients through it: say why rather than fail the cell
        return replace(described, unavailable=f"{type(exc).__name__}: {str(exc)[:200]}")
    agreed: dict[str, Agreement] | None = None
    stored = None
    if baseline is None:
        stored = encode_attributions(scores[INTEGRATED_GRADIENTS].numpy())
    else:
        base_target = probabilities(baseline.eval(), x).argmax(dim=1)
        base_scores = attribute(baseline, x, base_target, m, cfg)
        agreed = {name: agreement(scores[name].numpy(), base_scores[name].numpy(), cfg.top_fraction,
                                  valid.numpy()) for name in scores}
    # the curves last: a runtime's own thread pool computes them, and torch's gradients are done by then
    ends = (clean, probabilities(deployed, m.apply(x, valid)))
    faithful = {name: faithfulness(deployed, x, target, s, valid, m, cfg.curve_steps, ends)
                for name, s in scores.items()}
    random_order = ranks(random_scores(valid.shape), valid)
    random_auc = area(curve(deployed, x, target, random_order, valid, m, cfg.curve_steps, False, ends))
    return replace(described, faithfulness=faithful, random_deletion_auc=random_auc, agreement=agreed,
                   attributions=stored)
