"""Small summaries shared by every report: mean and spread over seeds, and a parameter dict in one line."""

from __future__ import annotations

import json
import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slimbench.harness.run.records import RunRecord


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def std(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single seed (the report says when a row has one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: list[float]) -> tuple[float, float]:
    return mean(values), std(values)


def knobs() -> frozenset[str]:
    """Every registered method's compression knobs (`Method.knobs`): a sweep varies them, labels always show them."""
    from slimbench.methods import METHODS

    return frozenset(k for name in METHODS.names() for k in METHODS.get(name).knobs)


def params_given_json(rec: RunRecord) -> str:
    """The parameters the suite gave a cell's method (its defaults left out where the record says so), as a key."""
    return json.dumps(rec.details.get("params_given", rec.config["method"]["params"]), sort_keys=True)


def short_params(params_json: str) -> str:
    params = json.loads(params_json)
    return ", ".join(f"{k}={_short_value(v)}" for k, v in params.items()) if params else ""


def _short_value(value: object) -> str:
    """A chain's stages as `a(x=1) → b(y=2)`, each with only the parameters that differ from its defaults
    and its compression knobs (records hold every stage's resolved parameters, which would fill a table cell)."""
    if not (isinstance(value, list) and value and all(isinstance(s, dict) and "name" in s for s in value)):
        return str(value)
    import dataclasses

    from slimbench.core.errors import UnknownNameError
    from slimbench.methods import METHODS

    parts: list[str] = []
    swept = knobs()
    for stage in value:
        try:
            method: object = METHODS.get(stage["name"])
        except (UnknownNameError, TypeError):
            method = None
        fields = dataclasses.fields(method) if dataclasses.is_dataclass(method) else ()
        defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        given = {k: v for k, v in (stage.get("params") or {}).items()
                 if k in swept or k not in defaults or defaults[k] != v}
        parts.append(stage["name"] + (f"({', '.join(f'{k}={v}' for k, v in given.items())})" if given else ""))
    return " → ".join(parts)


# Timing rounds inside one process understate how much a speedup moves between two runs of the same cell
# (another process, other memory placement, a neighbour on a shared machine). Measured by running a suite twice on
# one machine (results/overview/reproduction.md): over 62 paired speedup ratios the run-to-run |log ratio| had a
# median of 0.026, a 95th percentile of 0.082 and a maximum of 0.158. A speedup band is widened by this share on
# each side before it is read: two runs agree when their widened bands overlap, and a speedup whose widened band
# contains 1 is noise.
RUN_TO_RUN_SPEEDUP = 0.08


def widened(low: float, high: float, share: float = RUN_TO_RUN_SPEEDUP) -> tuple[float, float]:
    return low * (1 - share), high * (1 + share)


def delta_text(delta: float, seeds: int, baseline_sigma: float | None, significant: bool) -> str:
    """A Δ in points with its noise mark: `*` beyond the seeds' spread, `(n.s.)` inside it; one seed is judged
    against 2σ of its baseline's seeds (one draw of Δ carries the noise of both sides), or only says so."""
    text = f"{100 * delta:+.2f}"
    if seeds >= 2:
        return text + (" *" if significant else " (n.s.)")
    if baseline_sigma is None:
        return text + " (1 seed)"
    return text + (" (1 seed, > 2σ baseline)" if abs(delta) > 2 * baseline_sigma
                   else " (1 seed, inside baseline spread)")
