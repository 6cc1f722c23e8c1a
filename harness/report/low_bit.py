"""Weight-only low-bit layers measured on their own: a model whose linear layers are stored as packed int4 codes keeps
its embeddings, norms and other tensors in fp32, so its whole-file compression understates what the packing does
to the layers it applies to. The bits of the packed layers are what remains of the stored weight bits once the fp32
tensors' 32 bits each are taken out, read from the storage evidence of each record (codes, scales and zero points
as stored), never from the method's claim.
"""

from __future__ import annotations

from collections import defaultdict

from tabulate import tabulate

from slimbench.harness.report.stats import mean, params_given_json, short_params
from slimbench.harness.run.records import RunRecord

LOW_BIT = ("int4", "int2", "int3")
FP32 = "dense fp32"


def packed_bits_per_weight(rec: RunRecord) -> tuple[str, int, float] | None:
    """(encoding, weights, stored bits per weight) of the record's low-bit part; None where it has none or other
    encodings besides fp32 make the split ambiguous."""
    if rec.compression is None:
        return None
    storage = rec.compression.evidence.storage
    low = [e for e in storage.encodings if e in LOW_BIT]
    if len(low) != 1 or set(storage.encodings) - {low[0], FP32}:
        return None
    n_low = storage.encodings[low[0]]
    bits = storage.bits_per_weight * storage.weights - 32 * storage.encodings.get(FP32, 0)
    return low[0], n_low, bits / n_low


def rows(records: list[RunRecord], task: str) -> list[list[str]]:
    groups: dict[tuple[str, str, str], list[tuple[RunRecord, tuple[str, int, float]]]] = defaultdict(list)
    for rec in records:
        if rec.status == "ok" and rec.task == task and (part := packed_bits_per_weight(rec)) is not None:
            groups[(rec.model, rec.method, params_given_json(rec))].append((rec, part))
    out = []
    for (model, method, params), found in sorted(groups.items()):
        found.sort(key=lambda p: p[0].seed)
        rec, (encoding, n_low, _) = found[0]
        bits = [p[2] for _, p in found]
        weights = rec.compression.evidence.storage.weights if rec.compression is not None else n_low
        out.append([model, method, short_params(params), " ".join(str(r.seed) for r, _ in found), encoding,
                    f"{n_low:,}", f"{n_low / weights:.1%}", f"{mean(bits):.3f}",
                    f"{32 / max(bits):.2f}×" if min(bits) == max(bits) else
                    f"{32 / mean(bits):.2f}× ({32 / max(bits):.2f}–{32 / min(bits):.2f})"])
    return out


def markdown(records: list[RunRecord], task: str) -> list[str]:
    table = rows(records, task)
    if not table:
        return []
    return ["### Packed low-bit layers", "",
            "The layers stored as packed low-bit codes, measured on their own: their stored bits (codes, scales and "
            "zero points) per weight, and how much smaller they are than the same weights in fp32. The rest of the "
            "model stays fp32 and is in the whole-model compression above.", "",
            tabulate(table, headers=["model", "method", "params", "seeds", "encoding", "weights", "of all weights",
                                     "bits / weight", "× smaller than fp32"], tablefmt="github"), ""]
