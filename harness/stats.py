"""Small summaries shared by every report: mean and spread over seeds, and a parameter dict in one line."""

from __future__ import annotations

import json
import statistics


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def std(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single seed (the report says when a row has one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: list[float]) -> tuple[float, float]:
    return mean(values), std(values)


def short_params(params_json: str) -> str:
    params = json.loads(params_json)
    return ", ".join(f"{k}={v}" for k, v in params.items()) if params else ""
