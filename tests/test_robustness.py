"""Corrupted test copies, per-class accuracy and compression-identified examples: the robustness measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimbench.baselines.registry import build_model
from slimbench.core.errors import ConfigError
from slimbench.harness.measure import evaluate_test, pack_bits, robustness, unpack_bits
from slimbench.harness.robustness import identified_examples
from slimbench.tasks import build_task
from slimbench.tasks.base import InputSpec, Split, Task, stratified_subset
from slimbench.tasks.corruptions import TEXT, VISION, CorruptionSource, adjacent_swap, oov_substitution, word_dropout
from slimbench.tasks.text import build_text_task, TextParams


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task("digits", {})


@pytest.fixture(scope="module")
def text_task() -> Task:
    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "the", "a", "very"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(300)]
    labels = np.array([int(sum(w in t.split() for w in ("good", "great", "fine")) >= 1) for t in texts])
    splits = {"train": np.arange(0, 200), "val": np.arange(200, 240), "test": np.arange(240, 300)}
    params = TextParams(seq_len=10, embed_dim=8, word_vectors="none", reference=False)
    return build_text_task("toy-text", ["neg", "pos"], texts, labels, splits, params, {})


def test_every_embedded_modality_declares_its_corruptions(digits, text_task):
    assert digits.corruption_names() == [c.name for c in VISION] == ["gaussian_noise", "blur", "contrast"]
    assert text_task.corruption_names() == [c.name for c in TEXT]
    with pytest.raises(ConfigError, match="unknown corruption 'fog'.*gaussian_noise"):
        digits.corrupted_test("fog", 1, 100)
    with pytest.raises(ConfigError, match="severities 0..3"):
        digits.corrupted_test("blur", 4, 100)


@pytest.mark.parametrize("which", ["digits", "text_task"])
def test_corruptions_are_deterministic_keep_labels_and_severity_0_is_the_clean_split(which, request):
    task = request.getfixturevalue(which)
    index = stratified_subset(task.test.y, 40, 0).sort().values
    for name in task.corruption_names():
        clean = task.corrupted_test(name, 0, 40)
        assert torch.equal(clean.x, task.test.x[index]) and torch.equal(clean.y, task.test.y[index])
        previous = clean.x
        for severity in (1, 2, 3):
            split = task.corrupted_test(name, severity, 40)
            assert torch.equal(split.y, clean.y)                              # labels never change
            assert split.x.shape == clean.x.shape and split.x.dtype == clean.x.dtype
            assert not torch.equal(split.x, clean.x)
            # the same stream in a fresh source (no cache): same seed -> same inputs, another seed -> others
            fresh = CorruptionSource(task.corruptions.raw, task.corruptions.to_input, task.corruptions.corruptions)
            assert torch.equal(fresh.inputs(index, name, severity, 0), split.x)
            if task.corruptions.get(name).random:
                assert not torch.equal(fresh.inputs(index, name, severity, 1), split.x)
            previous = split.x
        assert previous is not clean.x


def test_vision_severity_grows_the_damage(digits):
    index = stratified_subset(digits.test.y, 100, 0).sort().values
    clean = digits.test.x[index]
    for name in digits.corruption_names():
        gaps = [float((digits.corrupted_test(name, s, 100).x - clean).abs().mean()) for s in (1, 2, 3)]
        assert gaps[0] < gaps[1] < gaps[2], (name, gaps)


def test_text_corruptions_do_what_they_say():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 0, 0], [2, 3, 4, 0, 0, 0, 0, 0, 0, 0]])
    dropped = word_dropout(ids, 0.5, gen())
    for row, out in zip(ids, dropped):
        kept = out[out != 0].tolist()
        assert kept == [t for t in row.tolist() if t in kept] and len(kept) < (row != 0).sum()   # order kept, fewer
        assert (out[len(kept):] == 0).all()                                                     # padding at the end
    swapped = adjacent_swap(ids, 0.5, gen())
    assert sorted(swapped[0].tolist()) == sorted(ids[0].tolist()) and not torch.equal(swapped, ids)
    assert ((swapped == 0) == (ids == 0)).all()
    unk = oov_substitution(ids, 0.5, gen())
    changed = unk != ids
    assert changed.any() and (unk[changed] == 1).all() and (ids[changed] != 0).all()


def test_per_class_accuracy_weighted_by_counts_is_the_accuracy(digits):
    torch.manual_seed(0)
    model = build_model("tiny-cnn", digits.spec, digits.num_classes, {"width": 8}).eval()
    with torch.no_grad():   # a few steps of training so classes differ in accuracy
        opt = torch.optim.Adam(model.parameters(), 0.01)
        for _ in range(30):
            with torch.enable_grad():
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(digits.train.x[:256]), digits.train.y[:256]).backward()
                opt.step()
    model.eval()
    e = evaluate_test(model, digits)
    rob = robustness(model, digits, e.predictions, 100)
    counts, accs = np.array(rob["class_counts"]), np.array(rob["per_class_accuracy"])
    assert counts.sum() == len(digits.test) == rob["test_examples"]
    assert float((counts * accs).sum() / counts.sum()) == pytest.approx(e.accuracy, abs=1e-5)
    assert len(set(np.round(accs, 3))) > 1
    flags = unpack_bits(rob["test_correct"], rob["test_examples"])
    assert flags.mean() == pytest.approx(e.accuracy, abs=1e-6)
    assert set(rob["corrupted_accuracy"]) == set(digits.corruption_names())
    assert all(0 <= v <= 1 for per in rob["corrupted_accuracy"].values() for v in per.values())
    assert rob["corrupted_examples"] == 100
    assert identified_examples(flags, flags) == 0        # a model against itself breaks nothing
    again = robustness(model, digits, evaluate_test(model, digits).predictions, 100)
    assert again == rob                                  # same model, same corrupted inputs: same figures


def test_identified_examples_count_only_what_the_reference_got_right():
    ref = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    model = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    assert identified_examples(ref, model) == 2 and identified_examples(model, ref) == 1
    assert np.array_equal(unpack_bits(pack_bits(torch.from_numpy(ref)), 6), ref)
    with pytest.raises(ValueError, match="different test splits"):
        identified_examples(ref, ref[:4])


def test_a_task_without_corruptions_still_gets_per_class_accuracy():
    x, y = torch.randn(60, 1, 4, 4), torch.arange(60) % 3
    task = Task("blobs", InputSpec(1, 4, 4), ["a", "b", "c"], Split(x, y), Split(x, y), Split(x, y))
    model = build_model("tiny-cnn", task.spec, 3, {"width": 4}).eval()
    rob = robustness(model, task, evaluate_test(model, task).predictions, 30)
    assert "corrupted_accuracy" not in rob and len(rob["per_class_accuracy"]) == 3
