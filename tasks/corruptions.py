"""Corrupted test inputs: what a compressed model keeps beyond the clean average (in the style of the -C benchmarks).

A task adapter declares a `CorruptionSource`: how to fetch test examples in the domain a corruption acts on (pixels
in [0, 1], waveforms, token ids), how to turn them into model inputs exactly as the clean test split was made, and
which corruptions apply. Corrupted splits are drawn from a fixed stratified subset of the test split only, seeded by
(seed, corruption, severity), and cached on the task; severity 0 is the clean subset.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from slimbench.core.errors import ConfigError

Fn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """A named corruption and its strength at severities 1..k (severity 0 = strength 0 = unchanged)."""

    name: str
    levels: tuple[float, ...]
    fn: Fn                       # (batch in the corruption domain, strength, generator) -> corrupted batch
    unit: str = ""
    random: bool = True          # draws from the generator (blur, contrast and gain do not)

    def apply(self, x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
        if not 0 <= severity <= len(self.levels):
            raise ConfigError(f"corruption {self.name!r} has severities 0..{len(self.levels)}, got {severity}")
        if severity == 0:
            return x.clone()
        # a stable per-(seed, name, severity) stream: the same corrupted split in every process and run
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{self.name}/{severity}".encode()))
        return self.fn(x.clone(), self.levels[severity - 1], gen)


@dataclass
class CorruptionSource:
    """What a task hands the harness so it can build corrupted copies of its test split."""

    raw: Callable[[torch.Tensor], torch.Tensor]        # test-split positions -> inputs in the corruption domain
    to_input: Callable[[torch.Tensor], torch.Tensor]   # corruption domain -> model input, as the test split was made
    corruptions: tuple[Corruption, ...]
    _cache: dict[tuple[str, int, int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def names(self) -> list[str]:
        return [c.name for c in self.corruptions]

    def get(self, name: str) -> Corruption:
        for c in self.corruptions:
            if c.name == name:
                return c
        raise ConfigError(f"unknown corruption {name!r}; this task has {', '.join(self.names())}")

    def inputs(self, index: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
        key = (name, severity, seed, hash(tuple(index.tolist())))
        if key not in self._cache:
            self._cache[key] = self.to_input(self.get(name).apply(self.raw(index), severity, seed))
        return self._cache[key]


# -- vision: pixels in [0, 1], [N, C, H, W] ---------------------------------------------------------------------

def gaussian_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float, _gen: torch.Generator) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur as blur

    radius = max(1, int(3 * sigma + 0.5))
    return blur(x, [2 * radius + 1] * 2, [sigma, sigma]).clamp_(0, 1)


def contrast(x: torch.Tensor, factor: float, _gen: torch.Generator) -> torch.Tensor:
    """Pull every pixel towards the image's mean (ImageNet-C's contrast): factor 1 = unchanged."""
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return ((x - mean) * factor + mean).clamp_(0, 1)


VISION = (
    Corruption("gaussian_noise", (0.08, 0.18, 0.38), gaussian_noise, "σ"),      # ImageNet-C severities 1, 3, 5
    Corruption("blur", (0.6, 1.0, 1.5), gaussian_blur, "σ px", random=False),    # scaled from 224² to ~30 px images
    # milder than ImageNet-C's 0.4-0.05: models trained without augmentation reach chance by 0.4
    Corruption("contrast", (0.8, 0.6, 0.4), contrast, "factor", random=False),
)


# -- speech: waveforms [N, samples] at 16 kHz ----------------------------------------------------------------------

def white_noise_snr(x: torch.Tensor, snr_db: float, gen: torch.Generator) -> torch.Tensor:
    """White noise at `snr_db` below each clip's own power (silent clips get noise at a fixed floor)."""
    power = x.square().mean(dim=-1, keepdim=True).clamp_min(1e-8)
    noise = torch.randn(x.shape, generator=gen)
    return x + noise * (power / 10 ** (snr_db / 10)).sqrt()


def time_shift(x: torch.Tensor, seconds: float, gen: torch.Generator) -> torch.Tensor:
    """Shift each clip left or right (random direction) by `seconds`, zero-filled."""
    shift = int(round(seconds * 16000))
    signs = torch.randint(0, 2, (x.shape[0],), generator=gen) * 2 - 1
    out = torch.zeros_like(x)
    for i, s in enumerate(signs.tolist()):
        if s > 0:
            out[i, shift:] = x[i, :-shift]
        else:
            out[i, :-shift] = x[i, shift:]
    return out


def gain(x: torch.Tensor, db: float, _gen: torch.Generator) -> torch.Tensor:
    """A quieter (or louder, clipped to the sample range) speaker: gain in dB."""
    return (x * 10 ** (db / 20)).clamp_(-1, 1)


SPEECH = (
    Corruption("white_noise", (5.0, 0.0, -5.0), white_noise_snr, "SNR dB"),   # training mixed coloured noise at 5-30 dB
    Corruption("time_shift", (0.15, 0.2, 0.3), time_shift, "s"),              # training shifted at most 0.1 s
    Corruption("gain", (-6.0, -12.0, -18.0), gain, "dB", random=False),      # features are normalised, not levelled
)


# -- text: token ids [N, L]; 0 = padding (at the end), 1 = out of vocabulary ------------------------------------

PAD_ID, UNK_ID = 0, 1


def _pick(ids: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(ids.shape, generator=gen) < p) & (ids != PAD_ID)


def word_dropout(ids: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Drop a share `p` of the words; the rest close up, padding fills the end."""
    keep = ~_pick(ids, p, gen) & (ids != PAD_ID)
    out = torch.zeros_like(ids)
    for i in range(ids.shape[0]):
        kept = ids[i][keep[i]]
        out[i, : len(kept)] = kept
    return out


def adjacent_swap(ids: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Swap a share `p` of words with their right neighbour (left to right, a word moves at most once)."""
    out = ids.clone()
    picks = _pick(ids, p, gen)
    lengths = (ids != PAD_ID).sum(dim=1)
    for i in range(ids.shape[0]):
        j = 0
        while j < int(lengths[i]) - 1:
            if picks[i, j]:
                out[i, j], out[i, j + 1] = out[i, j + 1].clone(), out[i, j].clone()
                j += 2
            else:
                j += 1
    return out


def oov_substitution(ids: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Replace a share `p` of words by out-of-vocabulary words (typos, rare names): they read as `<unk>`."""
    return torch.where(_pick(ids, p, gen), torch.full_like(ids, UNK_ID), ids)


TEXT = (
    Corruption("word_dropout", (0.1, 0.25, 0.5), word_dropout, "share"),
    Corruption("adjacent_swap", (0.1, 0.25, 0.5), adjacent_swap, "share"),
    Corruption("oov_substitution", (0.1, 0.25, 0.5), oov_substitution, "share"),
)


def normaliser(stats: dict[str, list[float]], dims: int = 4) -> Callable[[torch.Tensor], torch.Tensor]:
    """The training split's per-channel normalisation, as `normalise_images` applied it to the test split."""
    shape = (1, -1) + (1,) * (dims - 2)
    mean = torch.tensor(stats["mean"], dtype=torch.float32).view(shape)
    std = torch.tensor(stats["std"], dtype=torch.float32).view(shape)
    return lambda x: ((x.float() - mean) / std).contiguous()

