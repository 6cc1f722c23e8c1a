"""Which kernels computed a record's figures, so comparisons and reports know when figures must match exactly."""

from __future__ import annotations

from collections import Counter

from slimbench.harness.run.records import RunRecord


def numerics(rec: RunRecord) -> str:
    """`pinned-avx2`, or `native <capability> on <cpu>` for records computed with the machine's own kernels
    (records from before pinning say nothing and are native)."""
    hw = rec.hardware
    kernels = hw.get("kernels") or {}
    if str(kernels.get("numerics", "")).startswith("pinned"):
        return str(kernels["numerics"])
    return f"native {hw.get('torch_cpu_capability', '?')} on {hw.get('cpu', '?')}"


def same_kernels(a: RunRecord, b: RunRecord) -> bool:
    """Both computed with the same pinned kernels, torch and thread count, or natively on the same CPU model,
    instruction sets, torch and thread count: then every figure but latency is deterministic and must be equal."""
    if a.versions.get("torch") != b.versions.get("torch"):
        return False
    if a.hardware.get("torch_threads") != b.hardware.get("torch_threads"):   # threads change reduction order
        return False
    if numerics(a).startswith("pinned") or numerics(b).startswith("pinned"):   # the same variables, the same values
        return numerics(a) == numerics(b) and a.hardware["kernels"].get("pins") == b.hardware["kernels"].get("pins")
    keys = ("cpu", "instruction_sets", "torch_cpu_capability")
    return all(a.hardware.get(k) == b.hardware.get(k) for k in keys)


def mixed_numerics_note(records: list[RunRecord]) -> str | None:
    """A warning line for a suite whose records were computed with different kernels (None when they agree)."""
    kinds = Counter(numerics(r) for r in records)
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
    kind = numerics(records[0])
    if kind.startswith("pinned"):
        return (f"Numerics: every figure but latency computed with kernels pinned to {kind.removeprefix('pinned-').upper()} "
                f"(the same on any x86-64 CPU); latency timed with the machine's native kernels.")
    return f"Numerics: {kind} (not pinned: figures match exactly only on the same kind of CPU)."
