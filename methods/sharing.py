"""Weight sharing: per-layer k-means clustering (Han et al. 2016) and cross-layer tying (ALBERT's global sharing).

Both leave a plain float model whose stored form is smaller: a clustered layer holds at most k distinct values
(packed as a codebook plus fixed-width or Huffman-coded indices), and tied layers hold one tensor under two
names (packed once, with an alias). Neither changes the kernels that run: compute stays dense fp32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn
from torch.nn.utils import parametrize

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.structure import describe
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.pruning import prunable_weights

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def is_depthwise(module: nn.Module) -> bool:
    """One filter per input channel: few weights each, and clustering them costs more accuracy than elsewhere."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1 and module.groups == module.in_channels


def tied_parameters(model: nn.Module) -> set[int]:
    """ids of parameters that more than one module holds."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {pid for pid, n in seen.items() if n > 1}


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


# -- k-means ---------------------------------------------------------------------------------------------------
def kmeans_1d(values: np.ndarray, k: int, init: Literal["linear", "density"]) -> tuple[np.ndarray, np.ndarray]:
    """Centroids and each value's cluster (Lloyd's algorithm, sklearn) from Han et al.'s deterministic inits.

    linear: k centroids evenly spaced over [min, max], which keeps the rare large weights representable (Han et
    al. found it best); density: the k quantiles at (i + ½)/k, which crowds centroids where the weights are.
    """
    distinct = np.unique(values)
    if len(distinct) <= k:    # already k values or fewer: the exact values are the codebook
        return distinct, np.searchsorted(distinct, values)
    if init == "linear":
        start = np.linspace(values.min(), values.max(), k)
    else:
        start = np.quantile(values, (np.arange(k) + 0.5) / k)
    km = KMeans(n_clusters=k, init=start[:, None], n_init=1, random_state=0).fit(values[:, None])
    return km.cluster_centers_[:, 0], km.labels_


class SharedWeights(nn.Module):
    """Parametrization `weight = table[index]`: the forward is exactly the clustered weights.

    The codebook is the trainable parameter and the index map a buffer, so the assignment cannot change, and
    autograd's backward of the gather sums the gradients of each cluster's members into its centroid: Han et
    al.'s centroid fine-tuning with no custom training code. With `zero_slot` the last index means an exact
    zero that no gradient moves (weights removed by pruning stay removed).
    """

    index: torch.Tensor   # registered as a buffer

    def __init__(self, codebook: torch.Tensor, index: torch.Tensor, zero_slot: bool):
        super().__init__()
        self.codebook = nn.Parameter(codebook)
        self.register_buffer("index", index)
        self.zero_slot = zero_slot

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.codebook, self.codebook.new_zeros(1)]) if self.zero_slot else self.codebook
        return table[self.index]


def layer_weight(module: nn.Module, param: str = "weight") -> torch.Tensor:
    """`module.<param>` of a layer (its parametrized value while it has one)."""
    weight = getattr(module, param)
    assert isinstance(weight, torch.Tensor), f"{type(module).__name__}.{param} is not a tensor"
    return weight


def clusterable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The matrices that multiply a layer's input: conv / linear / embedding weights and a recurrent layer's input,
    hidden-state and projection matrices (position embeddings and class tokens are added, not multiplied: they stay
    fp32)."""
    pairs = prunable_weights(model)
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            pairs += [(module, name) for name, _ in module.named_parameters(recurse=False)
                      if name.startswith(("weight_ih_l", "weight_hh_l", "weight_hr_l"))]
    return pairs


def share_weights(module: nn.Module, k: int, init: Literal["linear", "density"], keep_zeros: bool,
                  param: str = "weight") -> dict[str, Any]:
    """Cluster `module.<param>` into ≤ k values and parametrize it as codebook[index]; returns what was done."""
    weight = layer_weight(module, param).detach()
    flat = weight.reshape(-1).float().cpu().numpy()   # numpy has no bfloat16
    zero = (flat == 0) if keep_zeros else np.zeros(flat.shape, dtype=bool)
    centroids, labels = kmeans_1d(flat[~zero], k, init)
    index = np.full(flat.shape, len(centroids), dtype=np.int64)
    index[~zero] = labels
    parametrize.register_parametrization(module, param, SharedWeights(
        torch.tensor(centroids, dtype=weight.dtype),
        torch.from_numpy(index).reshape(weight.shape).to(weight.device),
        bool(zero.any())))
    getattr(module.parametrizations, param).original.requires_grad_(False)   # only the codebook trains
    return {"clusters": len(centroids), "weights": int(flat.size), "zeros_kept": int(zero.sum())}


@register_method("share.kmeans")
@dataclass
class KMeansSharing(Method):
    """Per-layer k-means weight sharing (Han et al. 2016): ≤ k values per layer, centroids fine-tuned."""

    family: ClassVar[str] = "weight_sharing"
    knobs: ClassVar[tuple[str, ...]] = ("clusters",)
    clusters: int = 16                          # codebook size per layer (2..256): log2(k)-bit indices
    init: Literal["linear", "density"] = "linear"
    min_numel: int = 256                        # smaller layers stay fp32: clustering saves them little storage
    skip_depthwise: bool = False                # depthwise convs stay fp32
    depthwise_clusters: int | None = None       # depthwise convs get their own codebook size (None: `clusters`)
    keep_zeros: bool = True                     # exact zeros (pruned weights) stay zero, outside the k clusters
    finetune: bool = True                       # fine-tune the centroids (assignment fixed)

    def __post_init__(self) -> None:
        for name in ("clusters", "depthwise_clusters"):
            value = getattr(self, name)
            if value is not None and not 2 <= value <= 256:
                raise ConfigError(f"share.kmeans: {name} must be an integer in 2..256 (indices of at most 8 bits), "
                                  f"got {value}")
        if self.min_numel < 0:
            raise ConfigError(f"share.kmeans: min_numel must be ≥ 0, got {self.min_numel}")
        if self.skip_depthwise and self.depthwise_clusters is not None:
            raise ConfigError("share.kmeans: skip_depthwise: true keeps depthwise convs fp32, so depthwise_clusters "
                              f"({self.depthwise_clusters}) would be ignored; set one of them")
        self.uses_finetune = self.finetune

    def plan(self, model: nn.Module) -> tuple[dict[str, tuple[str, str, int]], dict[str, str]]:
        """(tensor → (layer path, parameter, k) to cluster, tensor → why it stays fp32), keyed by layer name for a
        layer's `weight` and by `layer.parameter` for a recurrent layer's matrices."""
        names = {id(m): n for n, m in model.named_modules()}
        tied = tied_parameters(model)
        chosen: dict[str, tuple[str, str, int]] = {}
        kept: dict[str, str] = {}
        pairs = clusterable_weights(model)
        for module, param in pairs:
            name = names[id(module)] if param == "weight" else _join(names[id(module)], param)
            weight = layer_weight(module, param)
            if id(weight) in tied:
                kept[name] = "weight tied to another layer"
            elif weight.numel() < self.min_numel:
                kept[name] = f"{weight.numel()} weights < min_numel {self.min_numel}"
            elif is_depthwise(module) and self.skip_depthwise:
                kept[name] = "depthwise (skip_depthwise)"
            elif not weight.detach().any():
                kept[name] = "all weights zero"
            elif is_depthwise(module) and self.depthwise_clusters is not None:
                chosen[name] = (names[id(module)], param, self.depthwise_clusters)
            else:
                chosen[name] = (names[id(module)], param, self.clusters)
        covered = {(id(m), p) for m, p in pairs}
        for name, module in model.named_modules():   # the stored form counts these as weights too: say they stay
            for param, value in module.named_parameters(recurse=False):
                if value.dim() >= 2 and (id(module), param) not in covered:
                    kept[_join(name, param)] = "not a Conv/Linear/Embedding/recurrent weight"
        return chosen, kept

    def not_applicable(self, model: nn.Module) -> str | None:
        chosen, kept = self.plan(model)
        if chosen:
            return None
        return f"no layer to cluster in {type(model).__name__}: {kept or 'it has no Conv/Linear/Embedding/RNN'}"

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        chosen, kept = self.plan(model)
        if not chosen:
            raise NotApplicableError(f"share.kmeans: {self.not_applicable(model)}")
        clustered = {name: share_weights(model.get_submodule(path), k, self.init, self.keep_zeros, param)
                     for name, (path, param, k) in chosen.items()}
        if self.finetune:
            model = ctx.finetune(model)
        for path, param, _ in chosen.values():   # only the codebooks added here: a model's own parametrizations stay
            parametrize.remove_parametrizations(model.get_submodule(path), param, leave_parametrized=True)
        distinct = {name: int(torch.unique(layer_weight(model.get_submodule(path), param).detach()).numel())
                    for name, (path, param, _) in chosen.items()}
        total = sum(p.numel() for p in model.parameters())
        # the harness checks `distinct_values` against every weight tensor it stores, so claim it under that
        # name only when every weight tensor was clustered (zeros kept by pruning count as one more value)
        key = "distinct_values" if not kept else "distinct_values_in_clustered_layers"
        for name, n in distinct.items():
            clustered[name]["distinct_values"] = n
        return Outcome(
            model,
            compute="dense",   # a codebook is a storage form: the kernels still run dense fp32
            requested={"clusters": self.clusters},
            achieved={key: max(distinct.values()),
                      "clustered_share": round(sum(c["weights"] for c in clustered.values()) / total, 6)},
            details={"clustered": clustered, "kept_fp32": kept, "init": self.init,
                     "centroids_finetuned": self.finetune},
        )


# -- cross-layer tying -----------------------------------------------------------------------------------------
def _signature(module: nn.Module) -> str | None:
    """Layer types, constructor arguments and parameter shapes: equal signatures can hold each other's weights."""
    shapes = [(n, list(p.shape)) for n, p in module.named_parameters()]
    if not shapes:
        return None
    return json.dumps([describe(module)["modules"], shapes], sort_keys=True)


def repeated_runs(model: nn.Module) -> list[list[str]]:
    """Maximal runs (≥ 2) of consecutive sibling modules with identical structure, in model order.

    In MobileNetV2 and EfficientNet these are the blocks after the first of each stage (the first changes the
    width or the stride). The search does not descend into a run: its blocks are tied whole.
    """
    runs: list[list[str]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        children = list(module.named_children())
        i = 0
        while i < len(children):
            sig, j = _signature(children[i][1]), i + 1
            while sig is not None and j < len(children) and _signature(children[j][1]) == sig:
                j += 1
            if j - i >= 2:
                runs.append([prefix + name for name, _ in children[i:j]])
            else:
                visit(children[i][1], f"{prefix}{children[i][0]}.")
            i = j

    visit(model, "")
    return runs


def tie_blocks(model: nn.Module, blocks: list[str], share_norms: bool) -> list[list[str]]:
    """Make blocks[1:] hold blocks[0]'s parameters (the same nn.Parameter objects); returns the tied names."""
    anchor = model.get_submodule(blocks[0])
    ties: list[list[str]] = []
    for path, layer in anchor.named_modules():
        if isinstance(layer, NORMS) and not share_norms:
            continue   # each block keeps its own normalisation: per-channel scale is cheap and lets tied blocks differ
        for pname, param in list(layer.named_parameters(recurse=False)):
            names = [_join(blocks[0], path, pname)]
            for other in blocks[1:]:
                setattr(model.get_submodule(_join(other, path)), pname, param)
                names.append(_join(other, path, pname))
            ties.append(names)
    return ties


@register_method("share.cross_layer")
@dataclass
class CrossLayerSharing(Method):
    """Cross-layer weight tying (ALBERT-style global sharing) of identical consecutive blocks, fine-tuned.

    `stages` picks the runs of identical consecutive blocks to tie, numbered in model order from 0 (None: all;
    for MobileNetV2 on small inputs: the repeated blocks of the 32-, 64-, 96- and 160-channel stages). Within a
    run, every `group_size` consecutive blocks share one set of weights (0: the whole run shares one, as ALBERT).
    The shared set starts from the first block's trained weights (independently trained blocks are not aligned,
    so their average would be no block at all); fine-tuning then trains it for all its users.
    """

    family: ClassVar[str] = "weight_sharing"
    name: ClassVar[str] = "share.cross_layer"
    example: ClassVar[tuple[str, dict[str, Any]]] = ("mobilenetv2", {})   # needs repeated identical blocks
    stages: list[int] | None = None
    group_size: int = 0
    share_norms: bool = False     # also tie norm layers' affine parameters (running statistics stay per block)
    finetune: bool = True

    def __post_init__(self) -> None:
        stages = self.stages
        if stages is not None and (not stages or min(stages) < 0 or len(set(stages)) != len(stages)):
            raise ConfigError(f"share.cross_layer: stages must be distinct run numbers ≥ 0 (or null for all), "
                              f"got {stages}")
        if self.group_size == 1 or self.group_size < 0:
            raise ConfigError(f"share.cross_layer: group_size must be 0 (a whole run shares) or ≥ 2, "
                              f"got {self.group_size}")
        self.uses_finetune = self.finetune

    def not_applicable(self, model: nn.Module) -> str | None:
        runs = repeated_runs(model)
        if not runs:
            return f"{type(model).__name__} has no consecutive blocks of identical structure to tie"
        missing = [s for s in self.stages or () if s >= len(runs)]
        if missing:
            return f"stages {missing} do not exist; {type(model).__name__} has {len(runs)} runs of identical blocks"
        return None

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        runs = repeated_runs(model)
        wanted = range(len(runs)) if self.stages is None else self.stages
        before = sum(p.numel() for p in model.parameters())
        ties: list[list[str]] = []
        groups: list[list[str]] = []
        for s in wanted:
            size = self.group_size or len(runs[s])
            for start in range(0, len(runs[s]), size):
                group = runs[s][start:start + size]
                if len(group) >= 2:
                    groups.append(group)
                    ties += tie_blocks(model, group, self.share_norms)
        if self.finetune:
            model = ctx.finetune(model)
        after = sum(p.numel() for p in model.parameters())   # parameters() counts a shared tensor once
        return Outcome(
            model,
            compute="dense",
            requested={"stages": list(wanted), "group_size": self.group_size},
            achieved={"distinct_params": after, "params_removed": before - after},
            details={"runs": runs, "tied_blocks": groups, "tied_parameters": ties},
        )
