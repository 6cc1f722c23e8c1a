"""The text adapter: masked max-over-time pooling, one-row sequence maps, train-only word vectors, and every
image backbone learning a small synthetic text task through it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from slimbench.baselines import build_model  # noqa: E402
from slimbench.baselines.classifier import TrainConfig  # noqa: E402
from slimbench.baselines.layers import (  # noqa: E402
    TextClassifier,
    TokenEmbeddingMap,
    fold_to_one_row,
    masked_pool,
    sequence_mask,
)
from slimbench.baselines.training import fit  # noqa: E402
from slimbench.deploy.structure import describe, load_into  # noqa: E402
from slimbench.tasks.text import TextParams, build_text_task  # noqa: E402

# --- pooling ----------------------------------------------------------------------------------------------

def test_sequence_mask_marks_the_positions_that_cover_words():
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0],      # 3 words
                           [5, 0, 0, 0, 0, 0, 0, 0],      # 1 word
                           [0, 0, 0, 0, 0, 0, 0, 0],      # empty: position 0 is kept
                           [5, 6, 7, 8, 9, 5, 6, 7]])     # full
    assert sequence_mask(tokens, 8).sum(1).tolist() == [3, 1, 1, 8]
    assert sequence_mask(tokens, 4).tolist() == [[True, True, False, False], [True, False, False, False],
                                                 [True, False, False, False], [True] * 4]
    assert sequence_mask(tokens, 3).sum(1).tolist() == [2, 1, 1, 3]   # windows start at 0, 2, 5


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_pooling_ignores_padding(mode):
    """A hand-made batch where only the padded positions differ pools to the same vector."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 7, 0]])
    mask = sequence_mask(tokens, 6)
    words = torch.randn(2, 5, 1, 6, generator=gen)
    loud_padding = words.clone()
    loud_padding[~mask[:, None, None, :].expand_as(words)] = 100.0    # padding far above every word
    quiet_padding = words.clone()
    quiet_padding[~mask[:, None, None, :].expand_as(words)] = -100.0
    a, b, c = (masked_pool(x, mask, mode) for x in (words, loud_padding, quiet_padding))
    assert a.shape == (2, 5, 1, 1)
    assert torch.equal(a, b) and torch.equal(a, c)
    expected = words[0, :, 0, :3].amax(-1) if mode == "max" else words[0, :, 0, :3].mean(-1)
    assert torch.allclose(a[0].flatten(), expected)
    unmasked = words.amax(dim=(2, 3)) if mode == "max" else words.mean(dim=(2, 3))
    assert not torch.allclose(a.flatten(1), unmasked)     # the mask really changed what pooled


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_text_classifier_pools_only_words(pool):
    """Through a whole model: whatever the features are at padded positions, the logits do not change."""
    torch.manual_seed(0)
    model = build_model("tiny-cnn", spec(vocab=50, length=12, dim=8, pool=pool), 3).eval()
    assert isinstance(model, TextClassifier) and model.split == "sequential" and model.pool == pool
    tokens = torch.tensor([[4, 9, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0]])   # 4 words; the last features are 6 long
    last_features = model[1][5]
    with torch.no_grad():
        clean = model(tokens)

        def overwrite(positions: slice, value: float):  # noqa: ANN202
            def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
                out = out.clone()
                out[..., positions] = value
                return out
            handle = last_features.register_forward_hook(hook)
            logits = model(tokens)
            handle.remove()
            return logits

        assert torch.equal(overwrite(slice(2, None), 1e3), clean)     # positions 2-5 cover padding only
        assert not torch.allclose(overwrite(slice(0, 2), 1e3), clean)  # positions 0-1 hold the words


# --- layout -----------------------------------------------------------------------------------------------

def spec(vocab: int = 500, length: int = 48, dim: int = 16, pool: str = "mean"):
    from slimbench.tasks.text import TextInputSpec

    return TextInputSpec(1, length, dim, modality="text", token_vocab=vocab, pool=pool)


def test_embedding_is_channels_over_a_one_row_sequence():
    emb = TokenEmbeddingMap(20, 4)
    x = torch.tensor([[1, 2, 3, 0, 0]])
    out = emb(x)
    assert out.shape == (1, 4, 1, 5)
    assert torch.equal(out[0, :, 0, 1], emb.embedding.weight[2]) and not out[0, :, 0, 3:].any()


def test_folding_keeps_what_a_square_kernel_computes_on_a_repeated_row():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    row = torch.randn(1, 4, 1, 11)
    square = conv(row.expand(-1, -1, 7, -1))[:, :, 2:3]   # an interior row of the tall map
    folded = nn.Sequential(conv, nn.MaxPool2d(3, 2, ceil_mode=True))
    assert fold_to_one_row(folded) == ["0", "1"]
    assert conv.kernel_size == (1, 3) and conv.stride == (1, 2) and conv.padding == (0, 1)
    assert torch.allclose(conv(row), square, atol=1e-5)
    assert folded(row).shape == (1, 6, 1, 3)


@pytest.mark.parametrize("name", ["mobilenetv2", "squeezenet", "efficientnet_b0", "resnet18"])
def test_backbones_read_the_sequence_map(name):
    torch.manual_seed(0)
    model = build_model(name, spec(), 2)
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    assert all((k if isinstance(k, tuple) else (k, k))[0] == 1 for k in kernels)   # no dead kernel rows
    sizes = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size[1] > 1:     # spatial convs (not SqueezeNet's 1×1 head)
            m.register_forward_hook(lambda _m, _a, out: sizes.append(tuple(out.shape[-2:])))
    model.eval()(torch.randint(1, 500, (2, 48)))
    assert all(h == 1 for h, _ in sizes) and min(w for _, w in sizes) >= 2     # strides along the text only
    state = model.state_dict()
    again = load_into(build_model(name, spec(), 2), describe(model), state)
    x = torch.randint(1, 500, (3, 48))
    x[0, 10:] = 0
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))


# --- word vectors from the training split only ---------------------------------------------------------

POSITIVE, NEGATIVE = ["great", "superb", "moving", "witty"], ["dull", "awful", "tedious", "stupid"]
NEUTRAL = ["the", "film", "a", "plot", "story", "actor", "scene", "its", "and", "of", "with", "this"]


def synthetic_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Reviews of 3-14 neutral words with one or two polar words: the label is the polarity."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(NEUTRAL, size=rng.integers(3, 15)))
        for _ in range(rng.integers(1, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.asarray(labels)


def synthetic_task(texts: list[str], labels: np.ndarray, n_test: int = 100, n_val: int = 100, **params):
    idx = np.arange(len(texts))
    splits = {"test": idx[:n_test], "val": idx[n_test:n_test + n_val], "train": idx[n_test + n_val:]}
    p = TextParams(**{"seq_len": 16, "embed_dim": 16, "reference": False, **params})
    return build_text_task("synthetic", ["neg", "pos"], texts, labels, splits, p, {})


def test_word_vectors_come_from_the_training_split_only():
    texts, labels = synthetic_corpus(500, seed=0)
    base = synthetic_task(texts, labels)
    vectors = base.spec.word_vectors
    assert vectors is not None and vectors.table.shape == (len(base.vocab), 16)
    assert base.describe()["input_spec"]["word_vectors"]["sha256_16"] == vectors.fingerprint()

    other_test = texts.copy()
    other_test[:100] = [t.replace("the", "witty").replace("film", "dull") for t in texts[:100]]
    other_labels = labels.copy()
    other_labels[:200] = 1 - labels[:200]                        # test and validation labels flipped too
    same = synthetic_task(other_test, other_labels).spec.word_vectors
    assert torch.equal(same.table, vectors.table)                 # bit-identical: test and val never read

    other_train = texts.copy()
    other_train[300] = texts[300] + " great great"
    assert not torch.equal(synthetic_task(other_train, labels).spec.word_vectors.table, vectors.table)

    model = build_model("mobilenetv2", base.spec, 2)
    assert torch.equal(model[0].embedding.weight, vectors.table)  # the model starts from them
    assert synthetic_task(texts, labels, word_vectors="none").spec.word_vectors is None


def test_word_vectors_carry_the_training_labels_polarity():
    texts, labels = synthetic_corpus(500, seed=0)
    task = synthetic_task(texts, labels)
    table, vocab = task.spec.word_vectors.table, task.vocab
    row = lambda w: table[vocab.words.index(w)]  # noqa: E731
    axis = torch.stack([row(w) for w in POSITIVE]).mean(0) - torch.stack([row(w) for w in NEGATIVE]).mean(0)
    assert all(row(w) @ axis > 0 for w in POSITIVE) and all(row(w) @ axis < 0 for w in NEGATIVE)
    assert not table[0].any() and abs(float(table[1:].std()) - 1.0) < 1e-4   # padding zero; nn.Embedding's scale


# --- every backbone learns a small text task -----------------------------------------------------------

# (params, lr): the suite's lr for each (SqueezeNet, without batch norm, trains at 1e-3); EfficientNet-B0 at half
# width and depth so that it too trains in seconds: the adapter's code path is the same
BACKBONES = {"mobilenetv2": ({}, 4e-3), "squeezenet": ({}, 1e-3),
             "efficientnet_b0": ({"width_mult": 0.5, "depth_mult": 0.5, "dropout": 0.0, "stochastic_depth_prob": 0.0},
                                 4e-3)}


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.slow
def test_every_backbone_learns_a_synthetic_text_task(name):
    texts, labels = synthetic_corpus(1500, seed=1)
    task = synthetic_task(texts, labels, seq_len=12)
    params, lr = BACKBONES[name]
    torch.manual_seed(0)
    model = build_model(name, task.spec, 2, params)
    result = fit(model, task, TrainConfig(epochs=3, batch_size=32, lr=lr), seed=0, progress=False)
    with torch.no_grad():
        correct = sum(int((result.model(x).argmax(1) == y).sum()) for x, y in task.test_dataloader())
    assert result.val_acc > 0.85 and correct / len(task.test) > 0.85     # chance is 0.5
