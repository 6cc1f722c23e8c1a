"""What the Linear layers of a model see on calibration data: the statistics Wanda, GPTQ and SmoothQuant start from.

Each of them scores or corrects a layer's weights by its inputs (‖X_j‖₂ per input feature, the Gram matrix XᵀX,
max|X_j|), and GPTQ and Wanda take them layer after layer from the already-compressed earlier layers, as their papers
do. Forward hooks on the layers collect them from the task's training-split calibration batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from slimbench.methods.base import MethodContext
from slimbench.methods.pruning import output_layer


def linear_layers(model: nn.Module, include_classifier: bool, example: torch.Tensor | None = None
                  ) -> dict[str, nn.Linear]:
    """The model's `nn.Linear` layers by name; the classifier (the layer producing the logits) only if asked."""
    head = None if include_classifier else output_layer(model, example)
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}


def calibration_batches(ctx: MethodContext, samples: int) -> list[torch.Tensor]:
    """The inputs of `samples` training examples (never validation or test), in batches."""
    return [x for x, _ in ctx.task.calibration_dataloader(samples)]


@dataclass
class InputStats:
    """Running statistics of one layer's input rows (every token / position is one row of `features` values)."""

    features: int
    gram: bool = False
    rows: int = 0
    sq_sum: torch.Tensor = field(init=False)      # Σ x_j², float64
    abs_max: torch.Tensor = field(init=False)     # max |x_j|
    xtx: torch.Tensor | None = field(init=False)  # Σ x xᵀ (only with gram), float64

    def __post_init__(self) -> None:
        self.sq_sum = torch.zeros(self.features, dtype=torch.float64)
        self.abs_max = torch.zeros(self.features)
        self.xtx = torch.zeros(self.features, self.features, dtype=torch.float64) if self.gram else None

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, self.features).double()
        self.rows += rows.shape[0]
        self.sq_sum += (rows ** 2).sum(0)
        self.abs_max = torch.maximum(self.abs_max, rows.abs().amax(0).float())
        if self.xtx is not None:
            self.xtx += rows.T @ rows

    @property
    def norm(self) -> torch.Tensor:
        """‖X_j‖₂ over every input row, per feature (Wanda's activation term)."""
        return self.sq_sum.sqrt()


@contextmanager
def hooked_eval(model: nn.Module, handles: list[RemovableHandle]) -> Iterator[nn.Module]:
    """`model` in eval mode while the hooks behind `handles` observe it; afterwards, even if a pass failed, the
    hooks are removed and the model is back in the mode it came in, so measuring it leaves no trace on it."""
    training = model.training
    try:
        yield model.eval()
    finally:
        for h in handles:
            h.remove()
        model.train(training)


def hooked_pass(model: nn.Module, handles: list[RemovableHandle], example: torch.Tensor) -> None:
    """One forward pass of `example`'s first item, without gradients, for the hooks behind `handles` to observe."""
    with hooked_eval(model, handles), torch.no_grad():
        model(example[:1])


@torch.no_grad()
def collect(model: nn.Module, layers: dict[str, nn.Linear], batches: list[torch.Tensor],
            gram: bool = False) -> dict[str, InputStats]:
    """Input statistics of every layer in `layers` over `batches`, in one pass of the model (eval mode)."""
    stats = {name: InputStats(m.in_features, gram) for name, m in layers.items()}
    handles = [m.register_forward_pre_hook(lambda _m, args, s=stats[name]: s.add(args[0]))
               for name, m in layers.items()]
    with hooked_eval(model, handles):
        for x in batches:
            model(x)
    return stats


def forward_order(model: nn.Module, layers: dict[str, nn.Linear], example: torch.Tensor) -> list[str]:
    """The layers' names in the order a forward pass runs them (a layer run twice counts once, first time)."""
    seen: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=name: seen.append(n) if n not in seen else None)
               for name, m in layers.items()]
    hooked_pass(model, handles, example)
    return seen + [n for n in layers if n not in seen]


def sequential(model: nn.Module, layers: dict[str, nn.Linear], batches: list[torch.Tensor], gram: bool,
               process: Callable[[str, nn.Linear, InputStats], None]) -> None:
    """`process` each layer in forward order with its inputs as the already-processed earlier layers leave them.

    One calibration pass per layer: cheap for the benchmark's models, and what GPTQ (§4, "sequential") and Wanda
    (§5) do, so a layer compensates for the error of the layers before it.
    """
    for name in forward_order(model, layers, batches[0]):
        process(name, layers[name], collect(model, {name: layers[name]}, batches, gram)[name])
