"""Word vocabulary for text tasks: built from the training split only, then used for every split and method."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1; the embedding treats id 0 as padding


def word_analyzer() -> Callable[[str], list[str]]:
    """Lower-case word tokens, split exactly as the TF-IDF reference splits them (sklearn's analyzer)."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b").build_analyzer()


@dataclass
class WordVocab:
    """Token list where index = id: `<pad>`, `<unk>`, then training words by descending count."""

    words: list[str]
    min_count: int = 1
    _index: dict[str, int] = field(init=False, repr=False)
    _analyzer: Callable[[str], list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.words[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {self.words[:2]}")
        self._index = {w: i for i, w in enumerate(self.words)}
        self._analyzer = word_analyzer()

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2, max_size: int = 20000) -> WordVocab:
        """The `max_size - 2` most frequent words seen at least `min_count` times (ties broken alphabetically)."""
        analyzer = word_analyzer()
        counts = Counter(tok for text in texts for tok in analyzer(text))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *ranked[: max(max_size - 2, 0)]], min_count)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def tokens(self, text: str) -> list[str]:
        return self._analyzer(text)

    def encode(self, texts: Sequence[str], length: int) -> torch.Tensor:
        """Token ids `[N, length]` (int64): the first `length` tokens of each text, padded with 0 at the end."""
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self._index.get(tok, 1) for tok in self._analyzer(text)[:length]]
            if ids:
                out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def fingerprint(self) -> str:
        """Short hash of the word list, recorded with results so a run names the vocabulary it used."""
        return hashlib.sha256("\n".join(self.words).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {"words": list(self.words), "min_count": self.min_count}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordVocab:
        return cls(list(data["words"]), int(data.get("min_count", 1)))
