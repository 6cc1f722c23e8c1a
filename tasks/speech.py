"""Speech tasks: synthesized keyword spotting (embedded default, espeak-ng) and Speech Commands v2 (real).

Both hand the model a log-mel spectrogram `[B, 1, n_mels, frames]` computed in torch and normalised with
training-split statistics, so every image backbone reads speech unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from slimbench.core.errors import ConfigError, DatasetMissingError
from slimbench.tasks.audio import LogMel, LogMelConfig, resample
from slimbench.tasks.base import (
    InputSpec,
    Split,
    Task,
    TaskParams,
    normalise_images,
    split_train_val,
    stratified_subset,
)
from slimbench.tasks.corruptions import SPEECH, CorruptionSource, normaliser
from slimbench.tasks.espeak_synth import (
    KEYWORDS,
    SILENCE,
    UNKNOWN,
    UNKNOWN_WORDS,
    NoiseSettings,
    SynthSettings,
    generate,
    mix,
)
from slimbench.tasks.registry import register_task
from slimbench.tasks.vision import DEFAULT_DATA_ROOT

SAMPLE_RATE = 16000
MIX_CHUNK = 512  # clips mixed and featurised at a time: only features (1/10 of the waveform size) are kept


@dataclass
class SpeechParams(TaskParams):
    n_mels: int = 32
    n_fft: int = 512
    win_length: int = 480       # 30 ms
    hop_length: int = 320       # 20 ms: 51 frames per 1 s clip

    def log_mel(self) -> LogMelConfig:
        try:
            return LogMelConfig(SAMPLE_RATE, self.n_fft, self.win_length, self.hop_length, self.n_mels)
        except ValueError as exc:
            raise ConfigError(f"speech features: {exc}") from None


def speech_task(name: str, classes: list[str], splits: dict[str, Split], cfg: LogMelConfig,
                info: dict[str, Any], test_waves: Callable[[torch.Tensor], torch.Tensor]) -> Task:
    """Log-mel splits -> Task, normalised with training mean/std only; `test_waves` fetches test clips (by position
    in the test split) for the corrupted copies, which are featurised exactly as the test split was."""
    stats = normalise_images(splits["train"], splits["val"], splits["test"])
    spec = InputSpec(1, cfg.n_mels, cfg.frames(SAMPLE_RATE), modality="audio")
    log_mel, normalise = LogMel(cfg), normaliser(stats)
    corruptions = CorruptionSource(test_waves, lambda waves: normalise(log_mel(waves)), SPEECH)
    return Task(name, spec, classes, splits["train"], splits["val"], splits["test"],
                info={**info, "features": {"log_mel": cfg.to_dict(), "normalisation": stats}}, corruptions=corruptions)


# --- synth-kws (embedded) ------------------------------------------------------------------------------

@dataclass
class SynthKwsParams(SpeechParams):
    clips_per_class: int = 300            # utterances synthesized per class
    train_mixes: int = 3                  # each training utterance mixed this often with fresh noise and shift
    keywords: list[str] | None = None     # None = the ten Speech Commands keywords
    unknown: bool = True                  # `_unknown_` class of other words
    silence: bool = True                  # `_silence_` class of noise only
    snr_db: tuple[float, float] = (5.0, 30.0)
    max_shift_ms: float = 100.0
    generator_seed: int = 0
    espeak: str = "espeak-ng"             # binary name or path
    workers: int | None = None            # parallel espeak processes (None = all cores)
    val_size: int = 360                   # utterances, carved (stratified) after the test split
    test_size: int | None = 720

    def settings(self) -> SynthSettings:
        keywords = tuple(self.keywords) if self.keywords is not None else KEYWORDS
        return SynthSettings(
            keywords=keywords,
            unknown_words=tuple(w for w in UNKNOWN_WORDS if w not in keywords) if self.unknown else (),
            silence=self.silence,
            clips_per_class=self.clips_per_class, seed=self.generator_seed,
        )

    def noise(self) -> NoiseSettings:
        # a config file gives a list; NoiseSettings checks that it is a [low, high] pair
        return NoiseSettings(snr_db=cast("tuple[float, float]", tuple(self.snr_db)), max_shift_ms=self.max_shift_ms)


@register_task("synth-kws")
def synth_kws(params: SynthKwsParams) -> Task:
    """Keyword spotting on espeak-ng clips (10 words + unknown + silence, 1 s at 16 kHz), synthesized once, cached."""
    cfg, noise = params.log_mel(), params.noise()
    if params.train_mixes < 1:
        raise ConfigError(f"synth-kws: train_mixes must be >= 1, got {params.train_mixes}")
    data = generate(params.settings(), Path(params.root) if params.root else None, params.espeak, params.workers)
    labels = torch.from_numpy(data.labels)
    n = len(labels)
    if params.test_size is None or params.test_size + params.val_size >= n:
        raise ConfigError(f"synth-kws: val_size + test_size must be below the {n} utterances generated, "
                          f"got {params.val_size} + {params.test_size}")
    # split utterances first, so every noisy copy of one utterance stays in one split
    test_idx = stratified_subset(labels, params.test_size, params.split_seed + 2)
    rest = torch.ones(n, dtype=torch.bool)
    rest[test_idx] = False
    rest_idx = rest.nonzero().flatten()
    train_ids, val_ids = split_train_val(rest_idx, labels[rest_idx], params)
    log_mel, splits, waves = LogMel(cfg), {}, []
    for code, (name, ids, copies) in enumerate((("train", train_ids.x, params.train_mixes),
                                               ("val", val_ids.x, 1), ("test", test_idx, 1))):
        utterances = [data.speech[i] for i in ids.tolist()]
        feats = []
        for c in range(copies):
            for start in range(0, len(utterances), MIX_CHUNK):
                mixed = mix(utterances[start:start + MIX_CHUNK], noise, [params.generator_seed, code, c, start])
                feats.append(log_mel(mixed))
                if name == "test":
                    waves.append(mixed)      # kept for the corrupted copies (720 clips: ~46 MB)
        splits[name] = Split(torch.cat(feats), labels[ids].repeat(copies))
    test_waves = torch.cat(waves)
    keep = ("espeak", "utterances", "generation_seconds", "workers", "cache", "cached")
    info = {"source": "espeak-ng synthesis",
            "generator": {k: data.meta.get(k) for k in keep},
            "utterances": {"train": len(train_ids), "val": len(val_ids), "test": len(test_idx)},
            "train_mixes": params.train_mixes, "noise": asdict(noise)}
    return speech_task("synth-kws", data.classes, splits, cfg, info, lambda idx: test_waves[idx])


# --- Speech Commands v2 (real) -------------------------------------------------------------------------

SPEECH_COMMANDS_URL = "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
BACKGROUND = "_background_noise_"


@dataclass(frozen=True)
class Item:
    """One clip: a wav file, or (for `_silence_`) a one-second crop of a background-noise file at a volume."""

    path: Path
    label: int
    offset: int = 0
    frames: int = -1          # -1 = the whole file
    volume: float = 1.0


def find_speech_commands(root: Path) -> Path | None:
    for folder in (root, root / "SpeechCommands" / "speech_commands_v0.02", root / "speech_commands_v0.02"):
        if (folder / "testing_list.txt").exists() and (folder / "validation_list.txt").exists():
            return folder
    return None


def speech_commands_items(folder: Path, num_classes: int, seed: int, unknown_fraction: float = 0.1,
                          silence_fraction: float = 0.1) -> tuple[list[str], dict[str, list[Item]]]:
    """Official split lists -> items per split; the 12-class variant adds sampled `_unknown_` and `_silence_`.

    As in TensorFlow's speech_commands recipe: per split, unknown and silence clips each number
    `fraction × known clips`; silence is a random one-second crop of a `_background_noise_` file at a random volume.
    """
    import soundfile as sf

    words = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_"))
    if num_classes == 35:
        classes = words
    elif num_classes == 12:
        classes = [*KEYWORDS, UNKNOWN, SILENCE]
    else:
        raise ConfigError(f"speech-commands: classes must be 12 or 35, got {num_classes}")
    listed = {split: {line.strip() for line in (folder / name).read_text().splitlines() if line.strip()}
              for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt"))}
    known: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    unknown: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    for word in words:
        for wav in sorted((folder / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            split = "val" if rel in listed["val"] else "test" if rel in listed["test"] else "train"
            if word in classes and word not in (UNKNOWN, SILENCE):
                known[split].append(Item(wav, classes.index(word)))
            else:
                unknown[split].append(Item(wav, classes.index(UNKNOWN) if UNKNOWN in classes else -1))
    if num_classes == 35:
        return classes, known
    noise_files = sorted((folder / BACKGROUND).glob("*.wav"))
    if not noise_files:
        raise DatasetMissingError(f"no {BACKGROUND}/*.wav under {folder}: the 12-class task needs them for _silence_")
    frames = {p: sf.info(str(p)).frames for p in noise_files}
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "val", "test"):
        n_extra = math.ceil(len(known[split]) * unknown_fraction)
        pool = unknown[split]
        picks = [pool[i] for i in rng.permutation(len(pool))[:n_extra]]
        silence = []
        for _ in range(math.ceil(len(known[split]) * silence_fraction)):
            path = noise_files[int(rng.integers(len(noise_files)))]
            offset = int(rng.integers(0, max(frames[path] - SAMPLE_RATE, 0) + 1))
            silence.append(Item(path, classes.index(SILENCE), offset, SAMPLE_RATE, float(rng.uniform(0, 1))))
        out[split] = known[split] + picks + silence
    return classes, out


def read_clip(item: Item) -> np.ndarray:
    """One second at 16 kHz (padded at the end like the recordings' reference pipeline)."""
    import soundfile as sf

    wave, sr = sf.read(str(item.path), start=item.offset, frames=item.frames, dtype="float32", always_2d=True)
    wave = resample(wave.mean(axis=1), sr, SAMPLE_RATE)[:SAMPLE_RATE] * item.volume
    return np.pad(wave, (0, SAMPLE_RATE - len(wave))).astype(np.float32)


def clip_features(items: Sequence[Item], log_mel: LogMel, chunk: int = 2048, workers: int = 4) -> torch.Tensor:
    """Read and featurise in chunks, so only the features of a 100k-clip split are kept in memory."""
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), chunk):
            waves = np.stack(list(pool.map(read_clip, items[start:start + chunk])))
            out.append(log_mel(torch.from_numpy(waves)))
    return torch.cat(out) if out else torch.empty(0, 1, log_mel.cfg.n_mels, log_mel.cfg.frames(SAMPLE_RATE))


@dataclass
class SpeechCommandsParams(SpeechParams):
    classes: int = 12             # 12 (10 keywords + unknown + silence) or 35 (every word)
    download: bool = False        # fetch the 2.3 GB archive when the folder is missing (needs internet)
    val_size: int = 5000          # cap on the official validation list (stratified subsample)


@register_task("speech-commands")
def speech_commands(params: SpeechCommandsParams) -> Task:
    """Google Speech Commands v2 (wav folders + official validation/testing lists), 12 or 35 classes."""
    root = Path(params.root) if params.root else DEFAULT_DATA_ROOT
    folder = find_speech_commands(root)
    if folder is None and params.download:
        from torchvision.datasets.utils import download_and_extract_archive

        target = root / "SpeechCommands" / "speech_commands_v0.02"
        try:
            download_and_extract_archive(SPEECH_COMMANDS_URL, str(root / "SpeechCommands"), str(target))
        except OSError as exc:
            raise DatasetMissingError(f"Speech Commands download to {target} failed: {exc}") from None
        folder = find_speech_commands(root)
    if folder is None:
        raise DatasetMissingError(
            f"Speech Commands v2 not found under {root} (looked for validation_list.txt and testing_list.txt in it, "
            f"SpeechCommands/speech_commands_v0.02/ and speech_commands_v0.02/). Pass `root:` naming the extracted "
            f"folder, or `download: true` on a machine with internet ({SPEECH_COMMANDS_URL})."
        )
    classes, items = speech_commands_items(folder, params.classes, params.split_seed)
    cfg = params.log_mel()
    log_mel = LogMel(cfg)
    caps = {"train": params.train_size, "val": params.val_size, "test": params.test_size}
    splits, chosen = {}, {}
    for split, split_items in items.items():
        labels = torch.tensor([it.label for it in split_items], dtype=torch.long)
        if len(labels) == 0:
            raise DatasetMissingError(f"Speech Commands under {folder} has no {split} clips")
        keep = stratified_subset(labels, caps[split], params.split_seed + 3).sort().values
        chosen[split] = [split_items[i] for i in keep.tolist()]
        splits[split] = Split(clip_features(chosen[split], log_mel), labels[keep])
    info = {"source": str(folder), "split": "official validation_list.txt / testing_list.txt",
            "classes_variant": params.classes}
    test_items = chosen["test"]     # read again only for the few clips a corrupted subset needs
    return speech_task("speech-commands", classes, splits, cfg, info,
                       lambda idx: torch.from_numpy(np.stack([read_clip(test_items[i]) for i in idx.tolist()])))
