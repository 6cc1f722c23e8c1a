"""Speech tasks: log-mel adapter, the espeak-ng generator (determinism, cache), synth-kws, Speech Commands fixture."""

from __future__ import annotations

import dataclasses
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from slimbench.baselines.registry import build_model
from slimbench.core.errors import ConfigError, DatasetMissingError
from slimbench.tasks import build_task, espeak_synth, list_tasks
from slimbench.tasks.audio import LogMel, LogMelConfig, fit_length, hz_to_mel, mel_filterbank, mel_to_hz
from slimbench.tasks.espeak_synth import SILENCE, UNKNOWN, NoiseSettings, SynthSettings, generate, mix
from slimbench.tasks.speech import SynthKwsParams

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian espeak-ng not installed")
TINY = SynthSettings(keywords=("yes", "no", "up"), unknown_words=("cat", "dog"), clips_per_class=2, seed=5)


def test_registered():
    assert {"synth-kws", "speech-commands"} <= set(list_tasks())


def test_mel_filterbank_is_triangular_on_the_mel_scale():
    fb = mel_filterbank(n_fft=512, n_mels=20, sample_rate=16000, f_min=0.0)
    assert fb.shape == (257, 20) and fb.dtype == torch.float32
    assert float(fb.min()) == 0.0 and float(fb.max()) <= 1.0
    assert (fb.max(dim=0).values > 0.5).all()               # every filter catches some bins
    peaks = fb.argmax(dim=0)
    assert (peaks[1:] > peaks[:-1]).all()                   # ascending centres
    assert torch.allclose(mel_to_hz(hz_to_mel(torch.tensor([440.0, 4000.0]))), torch.tensor([440.0, 4000.0],
                          dtype=torch.float64))
    assert abs(float(hz_to_mel(1000.0)) - 1000.0) < 1.0    # HTK scale: 1000 Hz is ~1000 mel


def test_log_mel_shape_and_a_tone_lands_in_its_band():
    cfg = LogMelConfig()
    t = torch.arange(16000) / 16000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (300.0, 1000.0, 3000.0)])
    feats = LogMel(cfg)(tones, chunk=2)                     # chunking must not change the result
    assert feats.shape == (3, 1, 32, 51) and feats.dtype == torch.float32
    assert torch.allclose(feats, LogMel(cfg)(tones))
    fb = mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate, cfg.f_min)
    bin_hz = lambda f: round(f / (cfg.sample_rate / cfg.n_fft))  # noqa: E731
    for row, f in enumerate((300.0, 1000.0, 3000.0)):
        band = int(feats[row, 0, :, 25].argmax())
        assert fb[bin_hz(f), band] > 0.3, (f, band)
    with pytest.raises(ValueError, match="win_length"):
        LogMelConfig(win_length=1024)


def test_fit_length_centres_pads_and_crops():
    w = np.arange(1, 5, dtype=np.float32)
    assert fit_length(w, 8).tolist() == [0, 0, 1, 2, 3, 4, 0, 0]
    assert fit_length(w, 8, offset=3).tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
    assert fit_length(np.arange(10, dtype=np.float32), 4).tolist() == [3, 4, 5, 6]


def test_clip_plan_is_deterministic_and_varied():
    a, b = espeak_synth.plan_clips(TINY), espeak_synth.plan_clips(TINY)
    assert a == b and len(a) == 5 * 2
    assert TINY.classes == ["yes", "no", "up", UNKNOWN, SILENCE]
    assert {p.word for p in a if p.label == 3} <= {"cat", "dog"} and all(p.word is None for p in a if p.label == 4)
    many = espeak_synth.plan_clips(SynthSettings(clips_per_class=40))
    assert len({p.voice for p in many}) > 30 and len({p.pitch for p in many}) > 30
    assert espeak_synth.plan_clips(SynthSettings(clips_per_class=40, seed=1)) != many
    chosen = SynthKwsParams(keywords=["cat", "yes"]).settings()       # a keyword is never also an "unknown" word
    assert "cat" not in chosen.unknown_words and "dog" in chosen.unknown_words


def test_mix_places_speech_at_the_requested_snr():
    t = np.arange(8000) / 16000
    word = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)       # half a second, power 0.125
    speech = [word] * 30 + [np.zeros(0, np.float32)] * 10
    noise = NoiseSettings(snr_db=(10.0, 10.0), silence_rms=(0.01, 0.01), max_shift_ms=0.0)
    clips = mix(speech, noise, seed=[0, 1])
    assert clips.shape == (40, 16000) and clips.dtype == torch.float32
    centred = torch.from_numpy(fit_length(word, 16000))
    residual = clips[:30] - centred
    snr = 10 * torch.log10(torch.tensor(0.125) / residual.square().mean(dim=1))
    assert torch.allclose(snr, torch.full((30,), 10.0), atol=0.05)    # noise scaled to the spoken part's power
    assert torch.allclose(clips[30:].square().mean(dim=1).sqrt(), torch.full((10,), 0.01), rtol=1e-3)
    assert torch.equal(mix(speech, noise, seed=[0, 1]), clips)
    assert not torch.equal(mix(speech, noise, seed=[0, 2]), clips)      # another copy: fresh noise
    shifted = mix([word], NoiseSettings(snr_db=(60.0, 60.0), max_shift_ms=100.0), seed=3)[0]
    onset = int((shifted.abs() > 0.1).nonzero()[0])
    assert onset != 4000 and abs(onset - 4000) <= 1600                  # moved, by at most 100 ms


@pytest.fixture
def espeak_calls(monkeypatch) -> list[list[str]]:
    """Every espeak-ng command line the generator runs, in order."""
    calls: list[list[str]] = []
    real = espeak_synth.run_espeak

    def counting(args: list[str]) -> bytes:
        calls.append(args)
        return real(args)

    monkeypatch.setattr(espeak_synth, "run_espeak", counting)
    return calls


@needs_espeak
def test_workers_asking_for_the_same_clips_at_once_synthesize_them_once(tmp_path, espeak_calls):
    calls = espeak_calls
    with ThreadPoolExecutor(max_workers=3) as pool:   # three Ray workers or shards starting together
        results = list(pool.map(lambda _: generate(TINY, tmp_path, workers=1), range(3)))
    assert len([c for c in calls if "--stdout" in c]) == 8          # one synthesis, not three
    assert sorted(r.meta["cached"] for r in results) == [False, True, True]
    assert all(r.labels.tolist() == results[0].labels.tolist() for r in results)


@needs_espeak
def test_generator_is_deterministic_and_its_cache_is_reused(tmp_path, espeak_calls):
    calls = espeak_calls
    first = generate(TINY, tmp_path / "a", workers=2)
    spoken = [c for c in calls if "--stdout" in c]
    assert len(spoken) == 8 and not first.meta["cached"]    # 4 word classes x 2 clips; silence needs no espeak
    assert first.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    lengths = [len(w) for w in first.speech]
    assert all(3000 < n < 16000 for n in lengths[:8]) and lengths[8:] == [0, 0]  # words last 0.2-1 s at 16 kHz
    assert all(w.dtype == np.float32 and 0.05 < np.abs(w).max() <= 1.0 for w in first.speech[:8])

    calls.clear()
    again = generate(TINY, tmp_path / "a", workers=1)
    assert again.meta["cached"] and not [c for c in calls if "--stdout" in c]  # only `--version` was asked
    assert all(np.array_equal(a, b) for a, b in zip(again.speech, first.speech))

    fresh = generate(TINY, tmp_path / "b", workers=1)          # regenerated elsewhere, one worker: same clips
    assert all(np.array_equal(a, b) for a, b in zip(fresh.speech, first.speech))
    other = generate(dataclasses.replace(TINY, seed=6), tmp_path / "a", workers=2)
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(other.speech, first.speech))
    assert len(list((tmp_path / "a").iterdir())) == 2         # one cache folder per settings


def test_missing_espeak_says_what_to_install(tmp_path):
    with pytest.raises(DatasetMissingError, match=r"apt-get install espeak-ng"):
        generate(TINY, tmp_path, binary=str(tmp_path / "no-such" / "espeak-ng"))
    with pytest.raises(DatasetMissingError, match=r"apt-get install espeak-ng"):
        build_task("synth-kws", {"root": str(tmp_path), "espeak": "/nonexistent/espeak-ng"})


@needs_espeak
def test_unknown_voice_variant_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no-such-variant"):
        generate(dataclasses.replace(TINY, variants=("m1", "no-such-variant")), tmp_path)


@needs_espeak
def test_synth_kws_task_shapes_and_normalisation(tmp_path):
    params = {"root": str(tmp_path), "keywords": ["yes", "no", "up"], "unknown": False, "clips_per_class": 10,
              "val_size": 6, "test_size": 6, "n_mels": 24, "hop_length": 400, "train_mixes": 2}
    task = build_task("synth-kws", params)
    assert task.class_names == ["yes", "no", "up", SILENCE]
    assert task.info["utterances"] == {"train": 28, "val": 6, "test": 6}
    assert (len(task.train), len(task.val), len(task.test)) == (56, 6, 6)  # training utterances mixed twice
    assert (task.spec.channels, task.spec.height, task.spec.width, task.spec.modality) == (1, 24, 41, "audio")
    for split in (task.train, task.val, task.test):
        assert split.x.shape[1:] == (1, 24, 41) and split.x.dtype == torch.float32 and split.y.dtype == torch.long
    assert abs(float(task.train.x.mean())) < 1e-4 and abs(float(task.train.x.std()) - 1) < 1e-3
    assert torch.bincount(task.test.y).tolist() == [2, 2, 1, 1]        # stratified: 6 clips over 4 classes
    assert torch.equal(task.train.y[:28], task.train.y[28:])           # copy 2 repeats the utterances ...
    assert not torch.allclose(task.train.x[:28], task.train.x[28:])    # ... with other noise and shift
    assert task.info["generator"]["utterances"] == 40 and task.info["features"]["log_mel"]["n_mels"] == 24
    model = build_model("tiny-cnn", task.spec, task.num_classes)
    assert model(task.example_input(3)).shape == (3, 4)
    again = build_task("synth-kws", params)
    assert torch.equal(again.train.x, task.train.x) and torch.equal(again.test.x, task.test.x)
    assert_corruptions_rebuild_the_test_split(task)
    with pytest.raises(ConfigError, match="val_size"):
        build_task("synth-kws", {**params, "test_size": 40})


def assert_corruptions_rebuild_the_test_split(task) -> None:
    """Corrupted copies come from the test clips' waveforms: severity 0 is the test split's own features."""
    assert task.corruption_names() == ["white_noise", "time_shift", "gain"]
    for name in task.corruption_names():
        clean = task.corrupted_test(name, 0, None)
        assert torch.equal(clean.y, task.test.y)
        assert torch.allclose(clean.x, task.test.x, atol=1e-4)
        hard = task.corrupted_test(name, 3, None)
        assert torch.equal(hard.y, task.test.y) and (hard.x - task.test.x).abs().mean() > 0.05


# --- Speech Commands fixture in the official layout ------------------------------------------------------

def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def speech_commands_dir(tmp_path: Path) -> Path:
    import soundfile as sf

    root = tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    lists: dict[str, list[str]] = {"validation_list.txt": [], "testing_list.txt": []}
    for word, freq in (("yes", 400.0), ("no", 1200.0), ("cat", 2500.0)):
        (root / word).mkdir(parents=True)
        for i in range(6):
            name = f"spk{i}_nohash_0.wav"
            seconds = 0.5 if i == 0 else 1.0                  # a short clip gets padded
            sf.write(root / word / name, _tone(freq + 10 * i, seconds), 16000, subtype="PCM_16")
            if i == 4:
                lists["validation_list.txt"].append(f"{word}/{name}")
            if i == 5:
                lists["testing_list.txt"].append(f"{word}/{name}")
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav",
             np.random.default_rng(0).uniform(-0.5, 0.5, 48000).astype(np.float32), 16000, subtype="PCM_16")
    for name, rows in lists.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return tmp_path


def test_speech_commands_12_class_fixture(speech_commands_dir):
    task = build_task("speech-commands", {"root": str(speech_commands_dir)})
    assert task.class_names[:2] == ["yes", "no"] and task.class_names[-2:] == [UNKNOWN, SILENCE]
    assert task.num_classes == 12
    # known + ceil(10 %) unknown + ceil(10 %) silence per split
    assert (len(task.train), len(task.val), len(task.test)) == (10, 4, 4)
    counts = torch.bincount(task.train.y, minlength=12).tolist()
    assert counts[0] == 4 and counts[1] == 4 and counts[10] == 1 and counts[11] == 1
    assert_corruptions_rebuild_the_test_split(task)     # clips are read again from the wav files
    assert task.train.x.shape == (10, 1, 32, 51) and task.train.x.dtype == torch.float32
    assert task.spec.input_shape == (1, 32, 51) and task.spec.modality == "audio"
    # the test "yes" clip's features are the log-mel of its wav file (undoing the training normalisation)
    import soundfile as sf

    wave, _ = sf.read(Path(task.info["source"]) / "yes" / "spk5_nohash_0.wav", dtype="float32")
    expected = LogMel(LogMelConfig())(torch.from_numpy(wave)[None])
    stats = task.info["features"]["normalisation"]
    row = int((task.test.y == 0).nonzero()[0, 0])
    restored = task.test.x[row] * stats["std"][0] + stats["mean"][0]
    assert torch.allclose(restored, expected[0], atol=1e-3)


def test_speech_commands_35_class_fixture_and_padding(speech_commands_dir):
    task = build_task("speech-commands", {"root": str(speech_commands_dir), "classes": 35})
    assert task.class_names == ["cat", "no", "yes"]           # every word folder present becomes a class
    assert (len(task.train), len(task.val), len(task.test)) == (12, 3, 3)
    assert torch.bincount(task.train.y).tolist() == [4, 4, 4]
    stats = task.info["features"]["normalisation"]
    quiet = task.train.x * stats["std"][0] + stats["mean"][0]
    # spk0's half-second clip was padded at the end: its last frames are silent (log floor), others are not
    short = [i for i in range(len(task.train)) if quiet[i, 0, :, -5:].max() < -10]
    assert len(short) == 3


def test_speech_commands_missing_folder_and_bad_classes(tmp_path, speech_commands_dir):
    with pytest.raises(DatasetMissingError, match="download: true"):
        build_task("speech-commands", {"root": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="12 or 35"):
        build_task("speech-commands", {"root": str(speech_commands_dir), "classes": 20})
