"""Attention and recurrent baselines beside the CNNs: a ViT (timm), a keyword transformer, a BERT-style text encoder
and a GRU, all built for a task's input spec like the image backbones.

Every model reads the same image-like `[B, C, H, W]` input and, apart from the ViT's square patches, takes its
sequence along the width: one token (or time step) per column of `C × H` values. That is a frame of a log-mel
spectrogram (the keyword-spotting layout), a word of the text adapter's `D × 1 × L` embedding map, or a pixel
column of an image, so one architecture serves every embedded task, `digits` included.

The attention layers keep two properties the transformer methods rely on, and keep them through a `weights_only`
reload (deploy/structure.py rebuilds only standard layers and loads the state dict):
- a layer's head count is read from its `qkv` weight, so removing heads is slicing two `nn.Linear`s;
- a block's token-merging amount is a buffer in the state dict (mirrored as a Python int for tracing), so a
  merged model reloads as merged and exports with a constant merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from slimbench.baselines.registry import register_model
from slimbench.core.errors import ConfigError
from slimbench.core.params import bounded
from slimbench.tasks.base import InputSpec


class HeadAttention(nn.Module):
    """Multi-head self-attention in timm's layout (fused `qkv`, `proj`) whose head count follows its weights.

    timm's `Attention` keeps `num_heads` as a constructor constant, so a model with heads removed could not be
    rebuilt from its constructor; here the heads are `qkv.out_features / (3 · head_dim)`. `size` (tokens each row
    stands for after merging) adds log-size to the attention logits, ToMe's proportional attention; `key_mask`
    (`[B, N]`, True = a real token) keeps padding out of every softmax. Accepts timm's `attn_layer` arguments.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, **_timm_kwargs: Any):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * num_heads * self.head_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(num_heads * self.head_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def num_heads(self) -> int:
        # the last Linear in `qkv`: a method may have factorized it into a Sequential of two (lowrank.svd)
        last = [m for m in self.qkv.modules() if isinstance(m, nn.Linear)][-1]
        return last.out_features // (3 * self.head_dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if is_causal:
            raise ConfigError("the benchmark's encoders attend both ways; causal attention is not built here")
        return self.attend(x, key_mask=attn_mask)[0]

    def attend(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
               size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention output and the keys averaged over heads (ToMe's similarity metric)."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias: torch.Tensor | None = None
        if size is not None:
            bias = size.log()[:, None, None, :, 0]
        if key_mask is not None:
            blocked = torch.zeros(key_mask.shape, dtype=x.dtype, device=x.device).masked_fill(~key_mask, -math.inf)
            blocked = blocked[:, None, None, :]
            bias = blocked if bias is None else bias + blocked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))
        return out, k.mean(dim=1)


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, r: int,
                    protected: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching (Bolya et al. 2023, Algorithm 1): merge the `r` most similar (even, odd)
    token pairs by size-weighted average; the first `protected` tokens (class token) are never merged.

    Written out here rather than taken from the ToMe package (not on PyPI for this torch, and it patches timm
    classes at run time); `scatter_add` rather than `scatter_reduce` so the graph exports to ONNX.
    """
    n_tokens = x.shape[1]
    r = min(r, (n_tokens - protected) // 2)
    if r <= 0:
        return x, size
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[:, ::2, :], metric[:, 1::2, :]
    scores = a @ b.transpose(-1, -2)
    if protected:
        keep = torch.arange(scores.shape[1], device=x.device) < (protected + 1) // 2
        scores = scores.masked_fill(keep[None, :, None], -math.inf)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx = edge_idx[:, r:, :].sort(dim=1).values        # kept in order: the class token stays first
    src_idx = edge_idx[:, :r, :]
    dst_idx = node_idx[..., None].gather(dim=1, index=src_idx)

    def merge(t: torch.Tensor) -> torch.Tensor:
        src, dst = t[:, ::2, :], t[:, 1::2, :]
        c = t.shape[-1]
        unm = src.gather(1, unm_idx.expand(-1, -1, c))
        moved = src.gather(1, src_idx.expand(-1, -1, c))
        dst = dst.scatter_add(1, dst_idx.expand(-1, -1, c), moved)
        return torch.cat([unm, dst], dim=1)

    x = merge(x * size)
    size = merge(size)
    return x / size, size


class MergingBlock(Block):
    """timm's pre-norm transformer block that can merge `r` tokens between attention and MLP (ToMe's placement).

    `r` is 0 in every baseline; `tokens.merge` sets it. The buffer `merge_r` carries it in the state dict, and the
    Python int `r` (what the forward reads) follows it on load, so tracing and export see a constant.
    """

    merge_r: torch.Tensor

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.register_buffer("merge_r", torch.zeros((), dtype=torch.long))
        self.r = 0
        self.sizes: torch.Tensor | None = None
        self.protected = 0

    def set_merge(self, r: int) -> None:
        self.r = int(r)
        self.merge_r.fill_(self.r)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.r = int(self.merge_r)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """One block; the sizes of merged tokens pass between blocks through `sizes` (see `run_blocks`), so the
        block is still called as a module and forward hooks (feature distillation, attributions) see its output."""
        attn: Any = self.attn      # a HeadAttention (the models here build their blocks with it)
        out, keys = attn.attend(self.norm1(x), attn_mask, self.sizes)
        x = x + self.drop_path1(self.ls1(out))
        if self.r > 0:
            if attn_mask is not None:
                raise ConfigError("token merging on padded sequences is not built: it would mix words and padding")
            x, self.sizes = bipartite_merge(x, self.sizes if self.sizes is not None else torch.ones_like(x[..., :1]),
                                            keys, self.r, self.protected)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def run_blocks(blocks: nn.Sequential, x: torch.Tensor, key_mask: torch.Tensor | None = None,
               protected: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The blocks in order on tokens that may stand for several inputs each; returns the tokens and their sizes
    (`[B, N, 1]`, None while no block merged). Each block reads and leaves the sizes in its `sizes` attribute."""
    size: torch.Tensor | None = None
    for blk in blocks:
        if not isinstance(blk, MergingBlock):
            raise TypeError(f"run_blocks runs MergingBlocks, got {type(blk).__name__}")
        blk.sizes, blk.protected = size, protected
        try:
            x = blk(x, attn_mask=key_mask)
            size = blk.sizes
        finally:
            blk.sizes = None   # no tensor of this call stays behind on the module (copies, state, pickling)
    return x, size


class ViT(VisionTransformer):
    """timm's VisionTransformer with `HeadAttention` in `MergingBlock`s; blocks run one by one so merged tokens
    carry their sizes from block to block."""

    def forward_features(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                         is_causal: bool = False) -> torch.Tensor:
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        x, _ = run_blocks(self.blocks, x, attn_mask, self.num_prefix_tokens)
        return self.norm(x)


def _timm_vit(img_size: tuple[int, int], patch: tuple[int, int], channels: int, num_classes: int, dim: int,
              depth: int, heads: int, mlp_ratio: float, dropout: float) -> ViT:
    return ViT(img_size=img_size, patch_size=patch, in_chans=channels, num_classes=num_classes, embed_dim=dim,
               depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=True, class_token=True,
               global_pool="token", drop_rate=dropout, dynamic_img_pad=True, block_fn=MergingBlock,
               attn_layer=HeadAttention, embed_layer=partial(PatchEmbed, strict_img_size=False))


@dataclass
class TransformerParams:
    dim: int = bounded(64, ge=8)
    depth: int = bounded(4, ge=1)
    heads: int = bounded(4, ge=1)
    mlp_ratio: float = bounded(2.0, gt=0.0)
    dropout: float = bounded(0.0, ge=0.0, lt=1.0)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")


@dataclass
class ViTParams(TransformerParams):
    patch: int = bounded(4, ge=1)   # patch side; an input smaller than two patches a side takes half its side


def _no_text(name: str, spec: InputSpec) -> None:
    if spec.modality == "text":
        raise ConfigError(f"{name} reads images and spectrograms; text tasks take 'text-encoder' (padding-aware "
                          f"attention and pooling) or 'gru'")


@register_model("vit")
def vit(spec: InputSpec, num_classes: int, params: ViTParams) -> nn.Module:
    """Vision Transformer (Dosovitskiy et al. 2021, timm) at the task's input size: square patches, a class token,
    tiny width and depth by default (4 blocks of 64 wide: ~0.14 M parameters) so it trains on a CPU in minutes."""
    _no_text("vit", spec)
    patch = min(params.patch, max(1, min(spec.height, spec.width) // 2))
    padded = (-(-spec.height // patch) * patch, -(-spec.width // patch) * patch)   # the last patch zero-padded
    return _timm_vit(padded, (patch, patch), spec.channels, num_classes, params.dim,
                     params.depth, params.heads, params.mlp_ratio, params.dropout)


@register_model("kwt")
def kwt(spec: InputSpec, num_classes: int, params: TransformerParams) -> nn.Module:
    """Keyword Transformer (Berg et al. 2021): each time frame of the log-mel map (all mel bins × 1 frame) is one
    token, a class token, a ViT encoder. timm's blocks are pre-norm (the paper reports post-norm slightly better)
    and the default is 4 blocks rather than KWT-1's 12 so that it trains here; `depth: 12, heads: 1` is KWT-1."""
    _no_text("kwt", spec)
    return _timm_vit((spec.height, spec.width), (spec.height, 1), spec.channels, num_classes, params.dim,
                     params.depth, params.heads, params.mlp_ratio, params.dropout)


class SequenceEncoder(nn.Module):
    """The encoder of a BERT-style classifier on the `C × H × W` map read as W tokens: a linear projection of each
    column, learned positions, LayerNorm, pre-norm blocks; returns the tokens as a `dim × 1 × W` map so a text
    wrapper pools them over the words only (masked mean).

    On text (`mask_padding`) the padding tokens, whose embedding is the zero row (padding_idx), are left out of
    every attention softmax; position 0 always counts, so an empty text still attends to something.
    """

    def __init__(self, features: int, positions: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                 dropout: float, mask_padding: bool):
        super().__init__()
        self.mask_padding = mask_padding
        self.embed = nn.Linear(features, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.norm_pre = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[MergingBlock(dim, heads, mlp_ratio, qkv_bias=True, attn_layer=HeadAttention)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoded tokens `[B, N, dim]` (fewer than W once merged) and the inputs each stands for."""
        mask = None
        if self.mask_padding:
            mask = x.abs().sum(dim=(1, 2)) > 0
            mask = mask | (torch.arange(mask.shape[1], device=x.device) == 0)
        seq = x.flatten(1, 2).transpose(1, 2)                       # [B, W, C·H]
        seq = self.drop(self.norm_pre(self.embed(seq) + self.pos_embed))
        seq, size = run_blocks(self.blocks, seq, mask)
        return self.norm(seq), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, size = self.tokens(x)
        if size is not None:   # merged tokens as a map would weigh a merged token like one word: keep the sum's weight
            seq = seq * size * (size.shape[1] / size.sum(dim=1, keepdim=True))
        return seq.transpose(1, 2).unsqueeze(2)


class SequenceClassifier(nn.Module):
    """`features` (a sequence model returning a `dim × 1 × T` map), mean over T, `classifier`.

    The `features` / `classifier` layout is what the text wrapper splits a backbone at: on text it pools the
    features over the words only (`sequence_pool`: mean) instead of this forward's plain mean.
    """

    sequence_pool = "mean"

    def __init__(self, features: nn.Module, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@register_model("text-encoder")
def text_encoder(spec: InputSpec, num_classes: int, params: TransformerParams) -> nn.Module:
    """BERT-style encoder (Devlin et al. 2019, pre-norm and small): on text, over the token embedding the text
    wrapper starts from the training-split word vectors, padding masked in attention, masked mean pooling."""
    encoder = SequenceEncoder(spec.channels * spec.height, spec.width, params.dim, params.depth, params.heads,
                              params.mlp_ratio, params.dropout, mask_padding=spec.modality == "text")
    return SequenceClassifier(encoder, params.dim, num_classes, params.dropout)


def step_pool(stride: int) -> nn.Module:
    """The average over `stride` time steps (the last one partial) that shortens a sequence before a recurrence."""
    return nn.AvgPool2d((1, stride), ceil_mode=True) if stride > 1 else nn.Identity()


class RecurrentFeatures(nn.Module):
    """An optional average over `stride` steps (fewer time steps before the recurrence), then a GRU; the outputs
    as a `hidden × 1 × T` map. Padding at the end of a text cannot reach the word positions of a forward GRU."""

    def __init__(self, features: int, hidden: int, layers: int, stride: int, dropout: float):
        super().__init__()
        self.pool = step_pool(stride)
        self.gru = nn.GRU(features, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.pool(x).flatten(1, 2).transpose(1, 2)          # [B, T, C·H]
        out, _ = self.gru(seq)
        return out.transpose(1, 2).unsqueeze(2)


@dataclass
class GRUParams:
    hidden: int = bounded(64, ge=1)
    layers: int = bounded(1, ge=1)
    stride: int = bounded(1, ge=1)      # steps averaged into one before the recurrence
    dropout: float = bounded(0.0, ge=0.0, lt=1.0)


@register_model("gru")
def gru(spec: InputSpec, num_classes: int, params: GRUParams) -> nn.Module:
    """A GRU (Cho et al. 2014) over frames (speech), words (text) or pixel columns (images), mean over its outputs
    (over the words only on text): the recurrent baseline of keyword spotting (Arik et al. 2017)."""
    if params.stride > spec.width:
        raise ConfigError(f"gru: stride {params.stride} exceeds the {spec.width} steps of the input")
    return SequenceClassifier(RecurrentFeatures(spec.channels * spec.height, params.hidden, params.layers,
                                                params.stride, params.dropout),
                              params.hidden, num_classes, params.dropout)
