"""Keyword clips synthesized with Debian's espeak-ng: the embedded, offline stand-in for Speech Commands.

Each clip draws a voice, a voice variant, pitch, speed and loudness, is resampled to 16 kHz, centred (with a
small random shift) in one second and mixed with coloured noise at a random SNR. The classes mirror the
12-class Speech Commands task: ten keywords, `_unknown_` (other words) and `_silence_` (noise only).
Clips are generated once (espeak runs in a thread pool, one process per clip, so every core is used) into a
cache folder keyed by the settings and the espeak-ng version, and are identical for the same seed.
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

from harness.errors import ConfigError, DatasetMissingError
from tasks.audio import fit_length, resample

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird",
                 "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward",
                 "follow", "learn", "visual")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "croak", "Andy", "aunty", "john", "max", "steph", "paul", "linda", "robert")
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}   # power spectrum ~ 1 / f^exponent
FORMAT_VERSION = 1  # bump when the generator's output changes for the same settings
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu; ./reproduce.sh setup does this)"


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines the generated clips (and therefore the cache key)."""

    keywords: tuple[str, ...] = KEYWORDS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS   # empty: no `_unknown_` class
    silence: bool = True                             # a `_silence_` class of noise-only clips
    clips_per_class: int = 250
    seed: int = 0
    voices: tuple[str, ...] = VOICES
    variants: tuple[str, ...] = VARIANTS
    pitch: tuple[int, int] = (25, 75)               # espeak -p range (0-99)
    speed: tuple[int, int] = (120, 210)             # espeak -s range, words per minute
    amplitude: tuple[int, int] = (40, 160)          # espeak -a range (loudness)
    snr_db: tuple[float, float] = (5.0, 30.0)       # speech-to-noise ratio range
    silence_rms: tuple[float, float] = (0.002, 0.05)  # noise level of `_silence_` clips (log-uniform)
    max_shift_ms: float = 100.0                     # random offset from the centre
    sample_rate: int = 16000
    num_samples: int = 16000

    def __post_init__(self) -> None:
        if not self.keywords or self.clips_per_class < 1:
            raise ConfigError("synth-kws needs at least one keyword and clips_per_class >= 1")
        if not self.voices or not self.variants:
            raise ConfigError("synth-kws needs at least one voice and one variant")
        for name, (lo, hi) in {"pitch": self.pitch, "speed": self.speed, "amplitude": self.amplitude,
                               "snr_db": self.snr_db, "silence_rms": self.silence_rms}.items():
            if lo > hi:
                raise ConfigError(f"synth-kws: {name} range must be (low, high), got ({lo}, {hi})")

    @property
    def classes(self) -> list[str]:
        return [*self.keywords, *([UNKNOWN] if self.unknown_words else []), *([SILENCE] if self.silence else [])]


@dataclass(frozen=True)
class ClipPlan:
    label: int
    word: str | None          # None for silence
    voice: str
    pitch: int
    speed: int
    amplitude: int
    snr_db: float
    shift: int                # samples
    colour: str
    noise_rms: float          # used for silence clips only


@dataclass
class SynthData:
    waves: np.ndarray          # [N, num_samples] float32 in [-1, 1]
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
    """Draw every clip's settings from one seeded generator, class by class (so the plan is deterministic)."""
    rng = np.random.default_rng(s.seed)
    max_shift = int(s.max_shift_ms * s.sample_rate / 1000)
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
                snr_db=float(rng.uniform(*s.snr_db)),
                shift=int(rng.integers(-max_shift, max_shift + 1)),
                colour=str(rng.choice(list(NOISE_COLOURS))),
                noise_rms=float(np.exp(rng.uniform(np.log(s.silence_rms[0]), np.log(s.silence_rms[1])))),
            ))
    return plans


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f^k power spectrum (white, pink, brown), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (NOISE_COLOURS[colour] / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


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


def mix(speech: np.ndarray | None, plan: ClipPlan, s: SynthSettings, index: int) -> np.ndarray:
    """Place the word in the clip and add noise at the planned SNR (noise alone for silence)."""
    rng = np.random.default_rng([s.seed, index])
    noise = coloured_noise(s.num_samples, plan.colour, rng)
    if speech is None:
        clip = noise * plan.noise_rms
    else:
        clip = fit_length(speech, s.num_samples, plan.shift)
        power = float(np.mean(speech**2)) if len(speech) else 0.0   # power of the spoken part, not the padding
        clip = clip + noise * np.sqrt(power / 10 ** (plan.snr_db / 10))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def cache_key(s: SynthSettings, version: str) -> str:
    blob = json.dumps({"settings": asdict(s), "espeak": version, "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimbench" / "synth-kws"


def generate(s: SynthSettings, cache_root: Path | None = None, binary: str = "espeak-ng",
             workers: int | None = None) -> SynthData:
    """Clips for `s`, read from the cache when present, else synthesized and cached (atomic write)."""
    path = find_espeak(binary)
    version, data_dir = espeak_version(path)
    folder = (cache_root or default_cache_root()) / cache_key(s, version)
    clips, meta_file = folder / "clips.npz", folder / "meta.json"
    if clips.exists() and meta_file.exists():
        with np.load(clips) as data:
            waves, labels = data["waves"].astype(np.float32) / 32767.0, data["labels"].astype(np.int64)
        meta = json.loads(meta_file.read_text())
        return SynthData(waves, labels, meta["classes"], {**meta, "cache": str(folder), "cached": True})

    check_variants(s.variants, data_dir)
    plans = plan_clips(s)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1

    def clip(i: int) -> np.ndarray:
        plan = plans[i]
        return mix(speak(path, plan, s.sample_rate) if plan.word else None, plan, s, i)

    with ThreadPoolExecutor(max_workers=workers) as pool:   # threads wait on espeak processes: cores stay busy
        waves = np.stack(list(pool.map(clip, range(len(plans)))))
    labels = np.asarray([p.label for p in plans], dtype=np.int64)
    pcm = np.round(waves * 32767.0).astype(np.int16)
    seconds = time.perf_counter() - start
    meta = {"classes": s.classes, "settings": asdict(s), "espeak": version, "format": FORMAT_VERSION,
            "clips": len(labels), "generation_seconds": round(seconds, 2), "workers": workers}
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, waves=pcm, labels=labels)
    os.replace(tmp.name, clips)
    tmp_meta = meta_file.with_suffix(f".{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_file)
    return SynthData(pcm.astype(np.float32) / 32767.0, labels, s.classes, {**meta, "cache": str(folder),
                                                                          "cached": False})
