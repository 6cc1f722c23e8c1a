"""Log-mel spectrograms in torch, batched: the speech adapter's waveform -> `[B, 1, n_mels, frames]` image.

The mel filterbank is built here (a dozen lines) because torchaudio has no build for the pinned torch and
librosa would pull numba/llvmlite just for one matrix; it follows the HTK mel scale with triangular filters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 480      # 30 ms
    hop_length: int = 320      # 20 ms -> 51 frames per second
    n_mels: int = 32
    f_min: float = 20.0
    f_max: float | None = None  # None = Nyquist
    eps: float = 1e-6           # log floor

    def __post_init__(self) -> None:
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in 1..n_fft ({self.n_fft}), got {self.win_length}")
        if self.hop_length < 1 or self.n_mels < 1:
            raise ValueError("hop_length and n_mels must be >= 1")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels ({self.n_mels}) cannot exceed n_fft // 2 + 1 ({self.n_fft // 2 + 1})")

    def frames(self, num_samples: int) -> int:
        """Frames of a centred STFT over `num_samples` samples."""
        return 1 + num_samples // self.hop_length

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters `[n_fft // 2 + 1, n_mels]` evenly spaced on the HTK mel scale, peak 1."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel:
    """Callable waveform `[N, samples]` -> log-mel `[N, 1, n_mels, frames]` (float32), computed in chunks."""

    def __init__(self, cfg: LogMelConfig):
        self.cfg = cfg
        self.filters = mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max)
        self.window = torch.hann_window(cfg.win_length)

    @torch.no_grad()
    def __call__(self, waves: torch.Tensor | np.ndarray, chunk: int = 1024) -> torch.Tensor:
        waves = torch.as_tensor(waves)
        if waves.dim() != 2:
            raise ValueError(f"expected waveforms [N, samples], got shape {tuple(waves.shape)}")
        cfg, out = self.cfg, []
        for start in range(0, len(waves), chunk):
            batch = waves[start:start + chunk].float()
            spec = torch.stft(batch, cfg.n_fft, cfg.hop_length, cfg.win_length, self.window,
                              center=True, pad_mode="reflect", return_complex=True)
            power = spec.real.square() + spec.imag.square()              # [B, freqs, frames]
            mel = torch.einsum("bft,fm->bmt", power, self.filters)
            out.append(torch.log(mel + cfg.eps).unsqueeze(1))
        if not out:
            return torch.empty(0, 1, cfg.n_mels, cfg.frames(waves.shape[-1]))
        return torch.cat(out)


def fit_length(wave: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Centre `wave` in `length` samples (zero-padded or cropped), shifted by `offset` samples."""
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(wave)) // 2 + offset          # where wave[0] lands in out
    src_lo, dst_lo = max(0, -start), max(0, start)
    n = min(len(wave) - src_lo, length - dst_lo)
    if n > 0:
        out[dst_lo:dst_lo + n] = wave[src_lo:src_lo + n]
    return out


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy), e.g. espeak's 22,050 Hz to 16 kHz."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(orig_sr, target_sr)
    return resample_poly(wave, target_sr // g, orig_sr // g).astype(np.float32)
