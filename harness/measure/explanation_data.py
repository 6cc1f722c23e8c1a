"""What a record keeps of a model's explanations, and the agreement arithmetic reports redo on stored attributions.

Plain data and numpy without torch, like the rest of a record's figures: a report reads a baseline cell's stored
attributions and computes the baseline's seed-to-seed agreement (the noise floor of every agreement figure) without
loading a model.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

# Bump when anything that produces an explanation figure changes (explanations.py): the cells that measure
# explanations, and only those, then rerun (it enters a run_id only with `measure.explanations` on).
EXPLANATIONS_VERSION = 1

DEPLOYED_MODEL = "the deployed model"   # `Explanations.attributed` when the deployed model had gradients itself
INTEGRATED_GRADIENTS = "integrated_gradients"
GRADIENT_X_INPUT = "gradient_x_input"
ATTRIBUTION_METHODS = (INTEGRATED_GRADIENTS, GRADIENT_X_INPUT)


@dataclass
class Faithfulness:
    """Petsiuk et al. 2018's deletion and insertion curves of one attribution method, as areas (mean over examples)
    under the predicted class's probability, the x axis the fraction of the input's features removed or added."""

    deletion_auc: float              # most-attributed removed first: lower = the attributions found what matters
    insertion_auc: float             # most-attributed added first to an all-removed input: higher = the same


@dataclass
class Agreement:
    """How far two models' attributions of the same examples agree (mean over examples)."""

    spearman: float                  # rank correlation over every feature
    top_k_overlap: float             # shared share of the top `top_fraction` features


@dataclass
class Explanations:
    """Attributions of the deployed model on a fixed stratified subset of the test split, their faithfulness and their
    agreement with the same-seed baseline's on the same examples."""

    examples: int                    # the subset's size
    seed: int                        # the seed that drew it (the same subset for every cell of a task)
    features: int                    # features an input has (pixels, spectrogram bins, token positions)
    attributed: str                  # which torch model was attributed (a runtime graph has no gradients)
    removed: str                     # what a removed feature is set to, for this modality
    ig_steps: int                    # Integrated Gradients' interpolation steps
    curve_steps: int                 # points of each deletion / insertion curve, past the first
    top_fraction: float              # the share of features top-k overlap compares
    clean_probability: float         # the predicted class's probability on the untouched inputs, mean
    faithfulness: dict[str, Faithfulness] = field(default_factory=dict)   # per method (ATTRIBUTION_METHODS)
    random_deletion_auc: float | None = None   # the deletion curve in a random order: what no attribution gives
    # per attribution method, against the same-seed baseline's attributions; None in the baseline's own cell
    agreement: dict[str, Agreement] | None = None
    # the baseline cell only: its Integrated Gradients attributions, float16 `examples × features` in base64, so a
    # report can set two baseline seeds side by side (`encode_attributions`)
    attributions: str | None = None
    unavailable: str | None = None   # why nothing else was measured (a model without gradients or a float source)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanations:
        agreement = data.get("agreement")
        return cls(**{**data, "faithfulness": {k: Faithfulness(**v) for k, v in data.get("faithfulness", {}).items()},
                      "agreement": None if agreement is None else {k: Agreement(**v) for k, v in agreement.items()}})

    def stored_attributions(self) -> np.ndarray | None:
        """The stored Integrated Gradients attributions (`examples × features`), None where not kept."""
        return None if self.attributions is None else decode_attributions(self.attributions, self.examples)


def encode_attributions(values: np.ndarray) -> str:
    """Each example scaled to its largest magnitude, then float16: ranks are all an agreement reads, and two bytes a
    feature keep them (ties only between values within 0.1 % of each other)."""
    scale = np.abs(values).max(axis=1, keepdims=True)
    scaled = values / np.where(scale > 0, scale, 1.0)
    return base64.b64encode(np.ascontiguousarray(scaled, dtype="<f2").tobytes()).decode()


def decode_attributions(text: str, examples: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float64).reshape(examples, -1)


def top_k(features: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * features))


def agreement(a: np.ndarray, b: np.ndarray, fraction: float, valid: np.ndarray | None = None) -> Agreement:
    """Spearman correlation and top-k overlap of two `examples × features` attributions, example by example, over
    each example's valid features (a text's words, not its padding), then averaged.

    Ties share their mean rank, so a feature both models give the same attribution (none, for instance) cannot
    count as agreement or disagreement by the order it happens to be stored in.
    """
    if a.shape != b.shape:
        raise ValueError(f"attributions of different shapes cannot be compared: {a.shape} vs {b.shape}")
    keep = np.ones(a.shape, dtype=bool) if valid is None else valid
    rhos, overlaps = [], []
    for x, y, k in zip(a, b, keep):
        x, y = x[k], y[k]
        if len(x) < 2:
            continue
        rx, ry = rankdata(x), rankdata(y)
        sx, sy = rx.std(), ry.std()
        rhos.append(1.0 if sx == sy == 0 else 0.0 if sx == 0 or sy == 0 else
                    float(np.mean((rx - rx.mean()) * (ry - ry.mean())) / (sx * sy)))
        n = top_k(len(x), fraction)
        top_x, top_y = np.argsort(-x, kind="stable")[:n], np.argsort(-y, kind="stable")[:n]
        overlaps.append(len(np.intersect1d(top_x, top_y)) / n)
    if not rhos:
        raise ValueError("no example has two features to rank")
    return Agreement(round(float(np.mean(rhos)), 6), round(float(np.mean(overlaps)), 6))


def seed_agreements(stored: dict[int, Explanations]) -> list[Agreement]:
    """The baseline's own agreement between every two of its seeds on the same examples (from the attributions its
    cells kept): what retraining alone moves attributions. Empty under two seeds that kept them."""
    kept = {s: (e, v) for s, e in stored.items() if (v := e.stored_attributions()) is not None}
    seeds = sorted(kept)
    return [agreement(kept[a][1], kept[b][1], kept[a][0].top_fraction, _valid(kept[a][1], kept[b][1]))
            for i, a in enumerate(seeds) for b in seeds[i + 1:]]


def seed_floor(stored: dict[int, Explanations]) -> Agreement | None:
    """The noise floor of agreement: the baseline's seed-to-seed agreement, mean over seed pairs; a compressed model
    that agrees with its baseline at least this well has not moved its attributions beyond what retraining does.
    None under two seeds that kept their attributions."""
    pairs = seed_agreements(stored)
    if not pairs:
        return None
    return Agreement(round(float(np.mean([p.spearman for p in pairs])), 6),
                     round(float(np.mean([p.top_k_overlap for p in pairs])), 6))


def _valid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Features either model attributes: a text's padding gets exactly zero from both (it is the removed value)."""
    return (a != 0) | (b != 0)


__all__ = ["ATTRIBUTION_METHODS", "DEPLOYED_MODEL", "EXPLANATIONS_VERSION", "GRADIENT_X_INPUT", "INTEGRATED_GRADIENTS",
           "Agreement", "Explanations", "Faithfulness", "agreement", "decode_attributions", "encode_attributions",
           "seed_agreements", "seed_floor", "top_k"]
