"""Low-rank factorization: truncated SVD of Linear / 1×1 conv layers, Tucker-2 of k×k convolutions.

Each factorized layer becomes an `nn.Sequential` of standard torch layers with fewer parameters and
multiply-adds, so the result is a physically smaller dense network: the same kernels run, on thinner layers,
and `slimbench.deploy.structure` rebuilds it from a `weights_only` file. Ranks come from the retained energy
(squared singular values) or from a target parameter ratio per factorized layer; fine-tuning then recovers
what the truncation lost. A layer whose factorized form would not be smaller is left as it is.

The decompositions are a few lines of `torch.linalg.svd`; tensorly would add a dependency for one HOSVD.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import bounded, check_ranges
from slimbench.deploy.counting import count_macs
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.pruning import output_layer

DEFAULT_PARAMS_RATIO = 2.0
NEGLIGIBLE_MACS_CUT = 0.02   # fewer multiply-adds than this share of the model's is no compute claim


def layer_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep `energy` of the squared sum (the Frobenius norm)."""
    sq = singular_values.detach().double() ** 2
    kept = torch.cumsum(sq, 0) / sq.sum().clamp_min(1e-300)
    return min(int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype)).item()) + 1, len(sq))


def retained(singular_values: torch.Tensor, rank: int) -> float:
    sq = singular_values.detach().double() ** 2
    return float(sq[:rank].sum() / sq.sum().clamp_min(1e-300))


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD in float64: the factors of a full-rank split then reproduce the layer to float32 precision."""
    return torch.linalg.svd(matrix.detach().double(), full_matrices=False)


# -- truncated SVD -----------------------------------------------------------------------------------------
def svd_target(module: nn.Module) -> bool:
    """Exactly nn.Linear (subclasses such as attention's out_proj are read as raw weights) or an ungrouped 1×1 conv."""
    if type(module) is nn.Linear:
        return True
    return ((type(module) is nn.Conv1d or type(module) is nn.Conv2d) and module.groups == 1
            and all(k == 1 for k in module.kernel_size))


def _matrix(layer: nn.Linear | nn.Conv1d | nn.Conv2d) -> torch.Tensor:
    return layer.weight.reshape(layer.weight.shape[0], -1)


def _svd_layer(module: nn.Module) -> nn.Linear | nn.Conv1d | nn.Conv2d:
    """A module `svd_target` accepted, as the layer type it is."""
    assert isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)), type(module)
    return module


def svd_factorize(layer: nn.Linear | nn.Conv1d | nn.Conv2d, rank: int,
                  factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> nn.Sequential:
    """Two thin layers, `in → rank` (no bias) then `rank → out` (the bias), from the rank-`rank` truncated SVD.

    The singular values are split evenly (√S on each side), so both factors start at the same scale for
    fine-tuning. A strided or padded 1×1 conv keeps stride and padding on the first factor: the second then
    runs on the already subsampled map (same output, fewer multiply-adds). `factors`: the layer's SVD if known.
    """
    u, s, vh = factors if factors is not None else _svd(_matrix(layer))
    root = s[:rank].sqrt()
    first_w, second_w = root[:, None] * vh[:rank], u[:, :rank] * root[None, :]
    kw: dict[str, Any] = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    out_dim, in_dim = _matrix(layer).shape
    first: nn.Linear | nn.Conv1d | nn.Conv2d
    second: nn.Linear | nn.Conv1d | nn.Conv2d
    if isinstance(layer, nn.Linear):
        first = nn.Linear(in_dim, rank, bias=False, **kw)
        second = nn.Linear(rank, out_dim, bias=layer.bias is not None, **kw)
    else:
        conv = type(layer)
        # torch types a conv's stride/padding/dilation as tuple[int, ...], its constructor's as fixed-length tuples
        first = conv(in_dim, rank, 1, bias=False, padding_mode=layer.padding_mode, **kw,
                     stride=layer.stride, padding=layer.padding, dilation=layer.dilation)  # type: ignore[arg-type]
        second = conv(rank, out_dim, 1, bias=layer.bias is not None, **kw)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if layer.bias is not None:
            assert second.bias is not None   # built with bias=True just above
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def svd_params(in_dim: int, out_dim: int, rank: int, bias: bool) -> int:
    return rank * (in_dim + out_dim) + (out_dim if bias else 0)


# -- Tucker-2 ----------------------------------------------------------------------------------------------
def tucker_target(module: nn.Module) -> bool:
    """An ungrouped k×k Conv2d (k > 1 in some dimension); depthwise/grouped convs are not Tucker targets."""
    return type(module) is nn.Conv2d and module.groups == 1 and any(k > 1 for k in module.kernel_size)


def hosvd(weight: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Left singular vectors and values of the output-channel and input-channel unfoldings of a conv kernel."""
    out_c, in_c = weight.shape[:2]
    u_out, s_out, _ = _svd(weight.reshape(out_c, -1))
    u_in, s_in, _ = _svd(weight.transpose(0, 1).reshape(in_c, -1))
    return (u_out, s_out), (u_in, s_in)


def tucker2_factorize(conv: nn.Conv2d, rank_in: int | None, rank_out: int | None,
                      factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Sequential:
    """1×1 (in → rank_in) → k×k core (rank_in → rank_out, the conv's stride/padding/dilation) → 1×1 (→ out, bias).

    Factors are the HOSVD's: the core is the kernel projected onto the leading input- and output-channel
    singular vectors. `None` leaves a mode unfactorized (its projection would be a square rotation the core
    absorbs: only extra parameters), so the Sequential has two layers instead of three. `factors`: the
    kernel's (output, input) singular vectors if known.
    """
    w = conv.weight.detach().double()
    if factors is None:
        (u_out, _), (u_in, _) = hosvd(conv.weight)
    else:
        u_out, u_in = factors
    core = w
    if rank_out is not None:
        core = torch.einsum("oikl,or->rikl", core, u_out[:, :rank_out])
    if rank_in is not None:
        core = torch.einsum("rikl,is->rskl", core, u_in[:, :rank_in])
    kw: dict[str, Any] = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    has_bias = conv.bias is not None
    layers: list[nn.Conv2d] = []
    with torch.no_grad():
        if rank_in is not None:
            first = nn.Conv2d(conv.in_channels, rank_in, 1, bias=False, **kw)
            first.weight.copy_(u_in[:, :rank_in].T[:, :, None, None])
            layers.append(first)
        # torch types a conv's kernel_size/stride/padding/dilation as tuple[int, ...], its constructor's as pairs
        middle = nn.Conv2d(core.shape[1], core.shape[0], bias=has_bias and rank_out is None,
                           padding_mode=conv.padding_mode, **kw,
                           kernel_size=conv.kernel_size, stride=conv.stride,  # type: ignore[arg-type]
                           padding=conv.padding, dilation=conv.dilation)  # type: ignore[arg-type]
        middle.weight.copy_(core)
        layers.append(middle)
        if rank_out is not None:
            last = nn.Conv2d(rank_out, conv.out_channels, 1, bias=has_bias, **kw)
            last.weight.copy_(u_out[:, :rank_out][:, :, None, None])
            layers.append(last)
        if conv.bias is not None:
            bias = layers[-1].bias
            assert bias is not None   # the last layer was built with bias=has_bias
            bias.copy_(conv.bias)
    return nn.Sequential(*layers)


def tucker2_params(in_c: int, out_c: int, kernel: int, rank_in: int | None, rank_out: int | None, bias: bool) -> int:
    """Parameters of `tucker2_factorize`'s layers; `kernel` is kh·kw, `None` = that mode not factorized."""
    r_in, r_out = rank_in or in_c, rank_out or out_c
    return ((in_c * rank_in if rank_in else 0) + r_in * r_out * kernel + (rank_out * out_c if rank_out else 0)
            + (out_c if bias else 0))


def _mode_rank(rank: int, full: int) -> int | None:
    return None if rank >= full else rank


def tucker2_ranks_for_budget(conv: nn.Conv2d, s_in: torch.Tensor, s_out: torch.Tensor, budget: int
                             ) -> tuple[int | None, int | None] | None:
    """The rank pair within `budget` parameters that discards the least kernel energy, or None if none fits.

    HOSVD's error is bounded by the energy each mode's truncation discards, summed over the modes, so that sum
    is the objective; for each input rank the largest output rank that fits is the best one, hence one pass.
    """
    in_c, out_c, kernel = conv.in_channels, conv.out_channels, math.prod(conv.kernel_size)
    bias = conv.bias is not None
    best: tuple[float, int | None, int | None] | None = None
    for r_in in range(1, len(s_in) + 1):
        mode_in = _mode_rank(r_in, in_c)
        fixed = (in_c * r_in if mode_in else 0) + (out_c if bias else 0)
        width = (r_in if mode_in else in_c) * kernel
        # a factorized output mode costs width + out_c per rank; keeping all outputs costs width per channel
        r_out = min((budget - fixed) // (width + out_c), len(s_out))
        candidates = [r_out] if r_out >= 1 else []
        if fixed + width * out_c <= budget:
            candidates.append(out_c)
        for r in candidates:
            mode_out = _mode_rank(r, out_c)
            if tucker2_params(in_c, out_c, kernel, mode_in, mode_out, bias) > budget:
                continue
            lost = (1 - retained(s_in, r_in)) + (1 - retained(s_out, min(r, len(s_out))))
            if best is None or lost < best[0] - 1e-12:
                best = (lost, mode_in, mode_out)
    return None if best is None or (best[1], best[2]) == (None, None) else (best[1], best[2])


def input_cholesky(model: nn.Module, targets: list[tuple[str, nn.Module]], loader: Any) -> dict[str, torch.Tensor]:
    """Lower Cholesky factor L of each target layer's input second moment E[x xᵀ] (features × features, float64)
    over the loader's batches, with a small ridge (1e-6 of the mean diagonal) so a dead input keeps L invertible.
    Every layer sees the trained model's own activations: one pass, no layer waits for another's truncation."""
    moments: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = inputs[0].detach()
            if not isinstance(module, nn.Linear):     # convs: features on dim 1; Linear: the last dim
                x = x.movedim(1, -1)
            x = x.reshape(-1, x.shape[-1])
            moments[name] = moments.get(name, 0) + x.double().T @ x.double()
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in targets]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for x, _y in loader:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    out = {}
    for name, m in moments.items():
        m = m / counts[name]
        ridge = 1e-6 * float(m.diagonal().mean().clamp_min(1e-12))
        out[name] = torch.linalg.cholesky(m + ridge * torch.eye(m.shape[0], dtype=m.dtype))
    return out


def global_svd_ranks(spectra: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int, bool, int]],
                     params_ratio: float) -> dict[str, int]:
    """Ranks for all layers together so their factorized parameters total at most 1/params_ratio of the dense
    ones, discarding the least energy (each layer's squared singular values as shares of its own total).

    Each extra rank of a layer costs in + out parameters and keeps its next singular value's share; the shares
    fall within a layer at a fixed cost, so taking the best share per parameter first, greedily, is optimal
    (a fractional knapsack over concave gains). Every layer keeps rank ≥ 1, and no layer gets a rank at which
    the two thin layers would hold as many parameters as the dense one. Written by hand: no library allocates
    SVD ranks under a shared parameter budget.
    """
    budget = sum(before for *_, before in shapes.values()) / params_ratio
    ranks, used, gains = {}, 0, []
    for name, s in spectra.items():
        in_dim, out_dim, bias, before = shapes[name]
        cap = min(len(s), (before - (out_dim if bias else 0) - 1) // (in_dim + out_dim))
        if cap < 1:
            continue
        share = (s.double() ** 2) / (s.double() ** 2).sum().clamp_min(1e-300)
        ranks[name], used = 1, used + svd_params(in_dim, out_dim, 1, bias)
        gains += [(float(share[r]) / (in_dim + out_dim), name, r) for r in range(1, cap)]
    if used > budget:
        raise NotApplicableError(f"lowrank.svd: rank 1 everywhere already holds {used} parameters, more than "
                                 f"1/{params_ratio} of the {int(budget * params_ratio)} dense ones")
    for _gain, name, r in sorted(gains, key=lambda g: (-g[0], g[1], g[2])):
        in_dim, out_dim, *_ = shapes[name]
        if ranks[name] == r and used + in_dim + out_dim <= budget:
            ranks[name], used = r + 1, used + in_dim + out_dim
    return ranks


# -- the methods -------------------------------------------------------------------------------------------
@dataclass
class LayerPlan:
    name: str
    replacement: nn.Module
    row: dict[str, Any]


@dataclass
class LowRank(Method):
    """Shared parameters and flow: choose ranks per layer, replace the layers, fine-tune."""
    structure_from_data: ClassVar[bool] = True   # ranks chosen from the trained weights

    family: ClassVar[str] = "low_rank"
    knobs: ClassVar[tuple[str, ...]] = ("energy", "params_ratio")
    name: ClassVar[str]
    decomposition: ClassVar[str]
    energy: float | None = bounded(None, gt=0.0, le=1.0)   # keep this share of each layer's squared singular values
    params_ratio: float | None = bounded(None, gt=1.0)     # or: this many times fewer parameters per layer (default 2)
    include_classifier: bool = False     # the classifier's rank would have to drop below the number of classes
    finetune: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, self.name)
        if self.energy is not None and self.params_ratio is not None:
            raise ConfigError(f"{self.name}: give energy ({self.energy}) or params_ratio ({self.params_ratio}), "
                              f"not both")

    @property
    def rule(self) -> dict[str, float]:
        if self.energy is not None:
            return {"energy": self.energy}
        return {"params_ratio": self.params_ratio if self.params_ratio is not None else DEFAULT_PARAMS_RATIO}

    @abc.abstractmethod
    def is_target(self, module: nn.Module) -> bool:
        """Is this module a layer this decomposition applies to?"""

    @abc.abstractmethod
    def plan_layer(self, name: str, module: nn.Module, rank: int | None = None,
                   stats: torch.Tensor | None = None) -> LayerPlan | str:
        """The layer's factorized replacement (at `rank` when an allocation chose it), or why it stays as it is."""

    def layer_statistics(self, model: nn.Module, targets: list[tuple[str, nn.Module]],
                         ctx: MethodContext) -> dict[str, torch.Tensor]:
        """Per-layer statistics of the training data a decomposition weighs its error by (none: plain weights)."""
        return {}

    def allocate(self, targets: list[tuple[str, nn.Module]], stats: dict[str, torch.Tensor]) -> dict[str, int]:
        """Ranks chosen across layers at once (none: each layer by its own rule)."""
        return {}

    def not_applicable(self, model: nn.Module) -> str | None:
        classifier = output_layer(model)
        layers = [m for name, m in model.named_modules() if name and self.is_target(m)]
        if any(m is not classifier or self.include_classifier for m in layers):
            return None
        return (f"{type(model).__name__} has no layer {self.decomposition} factorizes"
                + (" besides its classifier (include_classifier: false)" if layers else ""))

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        example = ctx.task.example_input(1)
        classifier = output_layer(model, example)
        macs_before = count_macs(model, example)
        plans: list[LayerPlan] = []
        skipped: dict[str, str] = {}
        targets: list[tuple[str, nn.Module]] = []
        for name, module in model.named_modules():
            if not name or not self.is_target(module):   # the model itself is not replaceable in place
                continue
            if module is classifier and not self.include_classifier:
                skipped[name] = "classifier (include_classifier: false)"
                continue
            targets.append((name, module))
        stats = self.layer_statistics(model, targets, ctx)
        ranks = self.allocate(targets, stats)
        for name, module in targets:
            plan = self.plan_layer(name, module, ranks.get(name), stats.get(name))
            if isinstance(plan, str):
                skipped[name] = plan
            else:
                plans.append(plan)
        if not plans:
            why = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:6]) or "it has no such layer"
            raise NotApplicableError(f"{self.name}: nothing to factorize in {type(model).__name__} at {self.rule}: "
                                     f"{why}")
        for plan in plans:
            model.set_submodule(plan.name, plan.replacement)
        if self.finetune:
            model = ctx.finetune(model)
        before = sum(p.row["params_before"] for p in plans)
        after = sum(p.row["params_after"] for p in plans)
        macs = count_macs(model, example)
        return Outcome(
            model,
            # thinner dense layers: the same kernels do less work, unless the factorized layers were a sliver of it
            compute="physical" if macs <= (1 - NEGLIGIBLE_MACS_CUT) * macs_before else "dense",
            requested=dict(self.rule),
            achieved={"factorized_layers": len(plans), "factorized_params_ratio": round(before / after, 4),
                      "macs": macs},
            details={"decomposition": self.decomposition, "layers": [p.row for p in plans], "skipped": skipped,
                     "factorized_params": {"before": before, "after": after},
                     "macs": {"before": macs_before, "after": macs}, "finetuned": self.finetune},
        )


@register_method("lowrank.svd")
@dataclass
class SvdFactorization(LowRank):
    """Truncated SVD of Linear and 1×1 conv layers into two thin layers, ranks by energy or params ratio.

    Embeddings are never factorized (a text model's token table is looked up, not multiplied), nor grouped
    1×1 convs; k×k convs are lowrank.tucker's.
    """

    name: ClassVar[str] = "lowrank.svd"
    decomposition: ClassVar[str] = "svd"
    example: ClassVar[tuple[str, dict[str, Any]]] = ("mobilenetv2", {})   # needs 1×1 convs to factorize
    # layer: every layer params_ratio× smaller; global: the factorized layers together params_ratio× smaller, ranks
    # spent where they keep the most energy (a layer whose spectrum falls fast gives up more rank)
    allocation: Literal["layer", "global"] = "layer"
    # whiten: truncate W·S instead of W, S the Cholesky factor of the layer's input second moment on training
    # batches (SVD-LLM's truncation-aware whitening): the discarded part is the output error on data, not the
    # weights' error, so the truncated network starts far closer to the trained one
    whiten: bool = False
    calibration_samples: int = bounded(512, ge=1)   # training examples the input moments are measured on

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.allocation == "global" and self.energy is not None:
            raise ConfigError(f"{self.name}: allocation 'global' shares a params_ratio budget between layers; "
                              f"with energy ({self.energy}) every layer already keeps the same share")

    def is_target(self, module: nn.Module) -> bool:
        return svd_target(module)

    def layer_statistics(self, model: nn.Module, targets: list[tuple[str, nn.Module]],
                         ctx: MethodContext) -> dict[str, torch.Tensor]:
        if not self.whiten:
            return {}
        return input_cholesky(model, targets, ctx.task.calibration_dataloader(self.calibration_samples))

    def factors(self, module: nn.Linear | nn.Conv1d | nn.Conv2d,
                chol: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U, S, Vh) with U·diag(S)·Vh = the layer's matrix; whitened: the SVD of W·L, with Vh·L⁻¹ folded back."""
        if chol is None:
            return _svd(_matrix(module))
        u, s, vh = _svd(_matrix(module).double() @ chol)
        return u, s, torch.linalg.solve_triangular(chol, vh, upper=False, left=False)

    def allocate(self, targets: list[tuple[str, nn.Module]], stats: dict[str, torch.Tensor]) -> dict[str, int]:
        if self.allocation != "global":
            return {}
        layers = [(name, _svd_layer(m)) for name, m in targets]
        return global_svd_ranks({name: self.factors(m, stats.get(name))[1] for name, m in layers},
                                {name: (_matrix(m).shape[1], _matrix(m).shape[0], m.bias is not None, layer_params(m))
                                 for name, m in layers}, self.rule["params_ratio"])

    def plan_layer(self, name: str, module: nn.Module, rank: int | None = None,
                   stats: torch.Tensor | None = None) -> LayerPlan | str:
        module = _svd_layer(module)
        out_dim, in_dim = _matrix(module).shape
        bias = module.bias is not None
        before = layer_params(module)
        factors = self.factors(module, stats)
        s = factors[1]
        if self.allocation == "global":
            if rank is None:
                return f"{in_dim}→{out_dim}: the global allocation keeps it dense (no rank saves parameters)"
        elif self.energy is not None:
            rank = energy_rank(s, self.energy)
        else:
            budget = before / self.rule["params_ratio"]
            rank = min(int((budget - (out_dim if bias else 0)) // (in_dim + out_dim)), len(s))
            if rank < 1:
                return f"{in_dim}→{out_dim}: even rank 1 has more than 1/{self.rule['params_ratio']} of its parameters"
        after = svd_params(in_dim, out_dim, rank, bias)
        if after >= before:
            return f"{in_dim}→{out_dim} at rank {rank}: {after} parameters, not fewer than {before}"
        return LayerPlan(name, svd_factorize(module, rank, factors), {
            "layer": name, "type": type(module).__name__, "in": in_dim, "out": out_dim, "rank": rank,
            "full_rank": len(s), "energy_kept": round(retained(s, rank), 6), "params_before": before,
            "params_after": after})


@register_method("lowrank.tucker")
@dataclass
class TuckerFactorization(LowRank):
    """Tucker-2 (HOSVD) of k×k convolutions: 1×1 → k×k core → 1×1, ranks by energy or params ratio.

    Only ungrouped convs: a depthwise conv has one input channel per filter, so there is no channel mode to
    compress (and its k×k filters are already the cheapest part of a MobileNet block). 1×1 convs and Linear
    layers are lowrank.svd's.
    """

    name: ClassVar[str] = "lowrank.tucker"
    decomposition: ClassVar[str] = "tucker"

    def is_target(self, module: nn.Module) -> bool:
        return tucker_target(module)

    def plan_layer(self, name: str, module: nn.Module, rank: int | None = None,
                   stats: torch.Tensor | None = None) -> LayerPlan | str:
        assert isinstance(module, nn.Conv2d)   # is_target let only Conv2d through
        conv = module
        in_c, out_c, kernel = conv.in_channels, conv.out_channels, math.prod(conv.kernel_size)
        bias = conv.bias is not None
        before = layer_params(conv)
        (u_out, s_out), (u_in, s_in) = hosvd(conv.weight)
        if self.energy is not None:
            rank_in = _mode_rank(energy_rank(s_in, self.energy), in_c)
            rank_out = _mode_rank(energy_rank(s_out, self.energy), out_c)
            if rank_in is None and rank_out is None:
                return f"{in_c}→{out_c} k{conv.kernel_size}: full ranks keep {self.energy} of the energy"
        else:
            ranks = tucker2_ranks_for_budget(conv, s_in, s_out, int(before / self.rule["params_ratio"]))
            if ranks is None:
                return (f"{in_c}→{out_c} k{conv.kernel_size}: no rank pair has at most 1/{self.rule['params_ratio']} "
                        f"of its {before} parameters")
            rank_in, rank_out = ranks
        after = tucker2_params(in_c, out_c, kernel, rank_in, rank_out, bias)
        if after >= before:
            return f"{in_c}→{out_c} at ranks ({rank_in}, {rank_out}): {after} parameters, not fewer than {before}"
        return LayerPlan(name, tucker2_factorize(conv, rank_in, rank_out, (u_out, u_in)), {
            "layer": name, "in": in_c, "out": out_c, "kernel": list(conv.kernel_size),
            "rank_in": rank_in or in_c, "rank_out": rank_out or out_c,
            "energy_kept": {"in": round(retained(s_in, rank_in or len(s_in)), 6),
                            "out": round(retained(s_out, rank_out or len(s_out)), 6)},
            "params_before": before, "params_after": after})
