"""Every runtime a model can run in, timed beside its reference in the same interleaved rounds, and the speedup
bands those rounds give.

Each model is deployed in each runtime it can run in (`deploy.runtimes.deploy`), with the reference (trained fp32
baseline) deployed the same way, so each ratio compares like with like.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch
from torch import nn

from slimbench.core.errors import NotApplicableError
from slimbench.deploy.latency.timing import MeasureConfig, latency_rounds_ms
from slimbench.deploy.runtimes import deploy


def latency_by_runtime(model: nn.Module, reference: nn.Module | None, deployed: str,
                       examples: dict[str, torch.Tensor], cfg: MeasureConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """`{"model"|"reference": {runtime: {"<example>_ms": ...} | {"unavailable": reason}}}`.

    All runnable (runtime, role) pairs are timed in the same interleaved rounds. The deployed runtime must run
    both the model and the reference: otherwise the headline ratio would compare different runtimes.
    `reference=None` says the model is the reference (the baseline cell): it is timed once and both roles
    hold those timings, rather than timing two copies of the same weights.
    """
    runtimes = list(cfg.runtimes) + ([deployed] if deployed not in cfg.runtimes else [])
    roles = (("model", model),) if reference is None else (("model", model), ("reference", reference))
    probe = next(iter(examples.values()))
    callables: dict[str, nn.Module] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {"model": {}, "reference": {}}
    for runtime in runtimes:
        for role, m in roles:
            try:
                callables[f"{runtime}/{role}"] = deploy(m, runtime, probe, cfg.threads)
            except NotApplicableError as exc:
                if runtime == deployed:
                    raise NotApplicableError(f"deployed runtime {runtime!r} cannot run the {role}: {exc}") from None
                out[role][runtime] = {"unavailable": str(exc)}
    for key, x in examples.items():
        for name, rounds in latency_rounds_ms(callables, x, cfg).items():
            runtime, role = name.split("/")
            out[role].setdefault(runtime, {}).update({f"{key}_ms": statistics.median(rounds),
                                                      f"{key}_rounds_ms": rounds})
    if reference is None:
        out["reference"] = copy.deepcopy(out["model"])
    return out


def speedup_bands(latency: dict[str, dict[str, dict[str, Any]]], deployed: str) -> dict[str, dict[str, Any]]:
    """Reference ÷ model latency per runtime and timed example (batch): the median ratio and its band over
    interleaved rounds.

    Each round times the model and the reference back to back, so a per-round ratio cancels slow drift of a
    shared machine; the band (lowest to highest round ratio) is the noise a speedup has to clear.
    """
    out: dict[str, dict[str, Any]] = {}
    for runtime, timings in latency["model"].items():
        ref = latency["reference"].get(runtime, {})
        for key in (k.removesuffix("_rounds_ms") for k in timings if k.endswith("_rounds_ms")):   # every example timed
            m, r = timings.get(f"{key}_rounds_ms"), ref.get(f"{key}_rounds_ms")
            if not m or not r:
                continue
            ratios = sorted(rr / mm for mm, rr in zip(m, r))
            out.setdefault(runtime, {})[key] = {
                "ratio": ref[f"{key}_ms"] / timings[f"{key}_ms"], "low": ratios[0], "high": ratios[-1],
                "rounds": len(ratios), "deployed": runtime == deployed}
    return out
