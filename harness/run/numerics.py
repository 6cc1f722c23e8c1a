"""Which kernels computed a record's figures, so comparisons and reports know when figures must match exactly."""

from __future__ import annotations

from collections import Counter

from slimbench.harness.run.records import RunRecord


def numerics(rec: RunRecord) -> str:
    """`pinned-avx2`, or `native <capability> on <cpu>` for records computed with the machine's own kernels
    (records from before pinning say nothing and are native)."""
    hw = rec.hardware
    if hw.kernels is not None and hw.kernels.pinned:
        return hw.kernels.numerics
    return f"native {hw.torch_cpu_capability or '?'} on {hw.cpu or '?'}"


def same_kernels(a: RunRecord, b: RunRecord) -> bool:
    """Both computed with the same pinned kernels, torch and thread count, or natively on the same CPU model,
    instruction sets, torch and thread count: then every figure but latency is deterministic and must be equal."""
    if a.provenance.versions.get("torch") != b.provenance.versions.get("torch"):
        return False
    if a.hardware.torch_threads != b.hardware.torch_threads:   # threads change reduction order
        return False
    if numerics(a).startswith("pinned") or numerics(b).startswith("pinned"):   # the same variables, the same values
        ka, kb = a.hardware.kernels, b.hardware.kernels
        return numerics(a) == numerics(b) and ka is not None and kb is not None and ka.pins == kb.pins
    ha, hb = a.hardware, b.hardware
    return ((ha.cpu, ha.instruction_sets, ha.torch_cpu_capability)
            == (hb.cpu, hb.instruction_sets, hb.torch_cpu_capability))


def measured(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.metrics is not None]


def mixed_numerics_note(records: list[RunRecord]) -> str | None:
    """A warning line for a suite whose records were computed with different kernels (None when they agree); a
    record without figures (failed or n/a) computed nothing, so its kernels do not count."""
    kinds = Counter(numerics(r) for r in measured(records))
    if len(kinds) <= 1:
        return None
    parts = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    return (f"⚠ These records mix numerics ({parts}): figures computed with different kernels are different "
            f"samples of the seed distribution, so rows of different kinds do not compare exactly; rerun the suite "
            f"with pinned kernels (the default) to make them comparable.")


def numerics_line(records: list[RunRecord]) -> str:
    """One sentence for a report header: what computed the figures, and that latency used native kernels."""
    note = mixed_numerics_note(records)
    if note:
        return note
    kind = numerics((measured(records) or records)[0])
    if kind.startswith("pinned"):
        return (f"Numerics: every figure but latency computed with kernels pinned to "
                f"{kind.removeprefix('pinned-').upper()} (the same on any x86-64 CPU); latency timed with the "
                f"machine's native kernels.")
    return f"Numerics: {kind} (not pinned: figures match exactly only on the same kind of CPU)."
