"""Keyword clips synthesized with Debian's espeak-ng: the embedded, offline stand-in for Speech Commands.

Each utterance draws a voice, a voice variant, pitch, speed and loudness and is resampled to 16 kHz. The
classes mirror the 12-class Speech Commands task: ten keywords, `_unknown_` (other words) and `_silence_`.
Utterances are synthesized once (espeak runs in a thread pool, one process per clip, so every core is used)
into a cache folder keyed by the speech settings and the espeak-ng version, identical for the same seed.
Placement in the one-second clip (random shift) and coloured background noise at a random SNR are added
afterwards by `mix` (vectorised, seconds for thousands of clips), so a training utterance can be mixed
several times with fresh noise, and changing the noise never re-runs espeak.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from slimbench.core.errors import ConfigError, DatasetMissingError
from slimbench.tasks.audio import fit_length, resample

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird",
                 "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward",
                 "follow", "learn", "visual")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "croak", "Andy", "aunty", "john", "max", "steph", "paul", "linda", "robert")
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}   # power spectrum ~ 1 / f^exponent
FORMAT_VERSION = 2  # bump when the generator's output changes for the same settings
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu; ./reproduce.sh setup does this)"


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines the synthesized utterances (and therefore the cache key)."""

    keywords: tuple[str, ...] = KEYWORDS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS   # empty: no `_unknown_` class
    silence: bool = True                             # a `_silence_` class of noise-only clips
    clips_per_class: int = 300
    seed: int = 0
    voices: tuple[str, ...] = VOICES
    variants: tuple[str, ...] = VARIANTS
    pitch: tuple[int, int] = (25, 75)               # espeak -p range (0-99)
    speed: tuple[int, int] = (120, 210)             # espeak -s range, words per minute
    amplitude: tuple[int, int] = (40, 160)          # espeak -a range (loudness)
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if not self.keywords or self.clips_per_class < 1:
            raise ConfigError("synth-kws needs at least one keyword and clips_per_class >= 1")
        if not self.voices or not self.variants:
            raise ConfigError("synth-kws needs at least one voice and one variant")
        _check_ranges(pitch=self.pitch, speed=self.speed, amplitude=self.amplitude)

    @property
    def classes(self) -> list[str]:
        return [*self.keywords, *([UNKNOWN] if self.unknown_words else []), *([SILENCE] if self.silence else [])]


@dataclass(frozen=True)
class NoiseSettings:
    """How an utterance becomes a one-second clip: placement and background noise."""

    snr_db: tuple[float, float] = (5.0, 30.0)         # speech-to-noise ratio range
    silence_rms: tuple[float, float] = (0.002, 0.05)  # noise level of `_silence_` clips (log-uniform)
    max_shift_ms: float = 100.0                       # random offset from the centre
    num_samples: int = 16000
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        _check_ranges(snr_db=self.snr_db, silence_rms=self.silence_rms)
        if self.silence_rms[0] <= 0 or self.max_shift_ms < 0 or self.num_samples < 1:
            raise ConfigError("synth-kws: silence_rms must be > 0, max_shift_ms >= 0 and num_samples >= 1")


def _check_ranges(**ranges: tuple[float, float]) -> None:
    for name, rng in ranges.items():
        if len(rng) != 2 or rng[0] > rng[1]:
            raise ConfigError(f"synth-kws: {name} must be a range [low, high], got {list(rng)}")


@dataclass(frozen=True)
class ClipPlan:
    label: int
    word: str | None          # None for silence
    voice: str
    pitch: int
    speed: int
    amplitude: int


@dataclass
class SynthData:
    speech: list[np.ndarray]   # per utterance: the spoken word at 16 kHz, silence trimmed (empty for `_silence_`)
    labels: np.ndarray         # [N] int64
    classes: list[str]
    meta: dict


def find_espeak(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise DatasetMissingError(f"espeak-ng not found (looked for {binary!r} on PATH); the synth-kws task "
                                  f"synthesizes its clips with it: {INSTALL_HINT}")
    return path


def run_espeak(args: list[str]) -> bytes:
    """One espeak-ng call; its WAV (or version text) comes back on stdout."""
    done = subprocess.run(args, capture_output=True, timeout=60)
    if done.returncode != 0 or not done.stdout:
        raise ConfigError(f"`{' '.join(args)}` failed (exit {done.returncode}): "
                          f"{done.stderr.decode(errors='replace').strip() or 'no output'}")
    return done.stdout


def espeak_version(path: str) -> tuple[str, Path | None]:
    """The version line (without the data path, which varies between machines) and the voice data folder."""
    text = run_espeak([path, "--version"]).decode(errors="replace").strip()
    version, _, data = text.partition("Data at:")
    return " ".join(version.split()), (Path(data.strip()) if data.strip() else None)


def check_variants(variants: tuple[str, ...], data_dir: Path | None) -> None:
    """espeak silently ignores an unknown `+variant`; refuse it instead of generating mislabeled settings."""
    folder = data_dir / "voices" / "!v" if data_dir else None
    if folder is None or not folder.is_dir():
        return
    known = sorted(p.name for p in folder.iterdir())
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ConfigError(f"unknown espeak-ng voice variant(s) {unknown}; installed variants: {', '.join(known)}")


def plan_clips(s: SynthSettings) -> list[ClipPlan]:
    """Draw every utterance's settings from one seeded generator, class by class (so the plan is deterministic)."""
    rng = np.random.default_rng(s.seed)
    plans = []
    for label, name in enumerate(s.classes):
        for _ in range(s.clips_per_class):
            if name == SILENCE:
                word = None
            elif name == UNKNOWN:
                word = str(rng.choice(s.unknown_words))
            else:
                word = name
            voice = f"{rng.choice(s.voices)}+{rng.choice(s.variants)}"
            plans.append(ClipPlan(
                label=label, word=word, voice=voice,
                pitch=int(rng.integers(s.pitch[0], s.pitch[1] + 1)),
                speed=int(rng.integers(s.speed[0], s.speed[1] + 1)),
                amplitude=int(rng.integers(s.amplitude[0], s.amplitude[1] + 1)),
            ))
    return plans


def coloured_noise(colours: np.ndarray, length: int, seed: int) -> torch.Tensor:
    """`[n, length]` unit-RMS noise, row i with power spectrum 1/f^k of colour `colours[i]` (index into
    NOISE_COLOURS), shaped in the frequency domain (torch FFT: float32, multi-threaded)."""
    gen = torch.Generator().manual_seed(seed)
    spectrum = torch.fft.rfft(torch.randn(len(colours), length, generator=gen))
    freqs = torch.arange(spectrum.shape[1], dtype=torch.float32).clamp_min(1.0)
    shaping = torch.stack([freqs ** (-k / 2) for k in NOISE_COLOURS.values()])
    noise = torch.fft.irfft(spectrum * shaping[torch.as_tensor(colours)], length)
    return noise / noise.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)


def mix(speech: list[np.ndarray], noise: NoiseSettings, seed: int | list[int], chunk: int = 512) -> torch.Tensor:
    """One-second clips `[N, num_samples]`: each utterance shifted from the centre, plus noise at a random SNR.

    Empty utterances (`_silence_`) become noise alone at a log-uniform level. All draws come from `seed`,
    so a split mixed twice with different seeds gives two augmented copies of the same utterances.
    """
    rng = np.random.default_rng(seed)
    n, length = len(speech), noise.num_samples
    max_shift = int(noise.max_shift_ms * noise.sample_rate / 1000)
    shifts = rng.integers(-max_shift, max_shift + 1, n)
    snr = rng.uniform(*noise.snr_db, n)
    level = np.exp(rng.uniform(np.log(noise.silence_rms[0]), np.log(noise.silence_rms[1]), n))
    colours = rng.integers(0, len(NOISE_COLOURS), n)
    power = np.asarray([np.mean(w**2) if len(w) else 0.0 for w in speech])  # of the spoken part, not the padding
    scale = np.where(power > 0, np.sqrt(power / 10 ** (snr / 10)), level)
    out = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        placed = torch.from_numpy(np.stack([fit_length(speech[i], length, int(shifts[i])) for i in range(start, stop)]))
        bg = coloured_noise(colours[start:stop], length, int(rng.integers(2**62)))
        out.append((placed + bg * torch.from_numpy(scale[start:stop]).float()[:, None]).clamp_(-1.0, 1.0))
    return torch.cat(out) if out else torch.zeros(0, length)


def trim_silence(wave: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop espeak's leading and trailing silence so that centring places the spoken word itself."""
    loud = np.flatnonzero(np.abs(wave) > threshold * (np.abs(wave).max() + 1e-12))
    return wave[loud[0]:loud[-1] + 1] if len(loud) else wave


def speak(binary: str, plan: ClipPlan, sample_rate: int) -> np.ndarray:
    """The spoken word at `sample_rate`, silence trimmed."""
    import soundfile as sf

    wav = run_espeak([binary, "--stdout", "-v", plan.voice, "-p", str(plan.pitch), "-s", str(plan.speed),
                      "-a", str(plan.amplitude), "--", plan.word or ""])
    wave, sr = sf.read(io.BytesIO(wav), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return trim_silence(resample(wave, sr, sample_rate))


def cache_key(s: SynthSettings, version: str) -> str:
    blob = json.dumps({"settings": asdict(s), "espeak": version, "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimbench" / "synth-kws"


def _unpack(pcm: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    ends = np.cumsum(lengths)
    return [pcm[e - n:e].astype(np.float32) / 32767.0 for e, n in zip(ends, lengths)]


def generate(s: SynthSettings, cache_root: Path | None = None, binary: str = "espeak-ng",
             workers: int | None = None) -> SynthData:
    """Utterances for `s`, read from the cache when present, else synthesized and cached (atomic write).

    The cache holds the trimmed utterances back to back as 16-bit PCM plus their lengths (about half the
    size of padded one-second clips).
    """
    path = find_espeak(binary)
    version, data_dir = espeak_version(path)
    folder = (cache_root or default_cache_root()) / cache_key(s, version)
    folder.mkdir(parents=True, exist_ok=True)
    # Parallel workers (Ray tasks, shards) that need the same clips at once: one synthesizes, the others wait
    # for it and read its cache instead of spending their cores on the same espeak runs.
    with FileLock(str(folder / "utterances.lock")):
        return _cached(folder) or _synthesize(s, path, version, data_dir, folder, workers)


def _cached(folder: Path) -> SynthData | None:
    clips, meta_file = folder / "utterances.npz", folder / "meta.json"
    if not (clips.exists() and meta_file.exists()):
        return None
    with np.load(clips) as data:
        speech, labels = _unpack(data["pcm"], data["lengths"]), data["labels"].astype(np.int64)
    meta = json.loads(meta_file.read_text())
    return SynthData(speech, labels, meta["classes"], {**meta, "cache": str(folder), "cached": True})


def _synthesize(s: SynthSettings, path: str, version: str, data_dir: Path | None, folder: Path,
                workers: int | None) -> SynthData:
    clips, meta_file = folder / "utterances.npz", folder / "meta.json"
    check_variants(s.variants, data_dir)
    plans = plan_clips(s)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:   # threads wait on espeak processes: cores stay busy
        spoken = list(pool.map(lambda p: speak(path, p, s.sample_rate) if p.word else np.zeros(0, np.float32),
                               plans))
    lengths = np.asarray([len(w) for w in spoken], dtype=np.int64)
    pcm = np.round(np.clip(np.concatenate(spoken), -1.0, 1.0) * 32767.0).astype(np.int16)
    labels = np.asarray([p.label for p in plans], dtype=np.int64)
    seconds = time.perf_counter() - start
    meta = {"classes": s.classes, "settings": asdict(s), "espeak": version, "format": FORMAT_VERSION,
            "utterances": len(labels), "generation_seconds": round(seconds, 2), "workers": workers}
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, pcm=pcm, lengths=lengths, labels=labels)
    os.replace(tmp.name, clips)
    tmp_meta = meta_file.with_suffix(f".{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_file)
    return SynthData(_unpack(pcm, lengths), labels, s.classes, {**meta, "cache": str(folder), "cached": False})
