"""A stored form must decode to the model: checked before a byte is counted, a clear error otherwise.

A method may hand the harness its own `Outcome.packed`; the harness decodes it and compares it with the model's
weights (to the format's precision, deploy/packing.py lists each) before it counts its bytes. A malformed or
inconsistent form — an encoding missing a part, an index past its codebook, wrong byte lengths, an unknown format,
tensors missing or extra, other values — fails the cell with a StoredFormError naming the tensor, the format and what
is wrong, recorded as the failed cell's error; never a KeyError or IndexError from inside a decoder.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from slimbench.baselines import build_model
from slimbench.core.errors import SlimbenchError, StoredFormError
from slimbench.deploy.onnx_export import OnnxModel
from slimbench.deploy.packing import FORMATS, Packed, pack_state_dict, unpack_state_dict
from slimbench.deploy.runtimes import check_packed, stored_form
from slimbench.harness.run.records import load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import parse_suite
from slimbench.methods import METHODS, Method, MethodContext, Outcome, build_method, register_method
from slimbench.tasks import build_task
from tests.conftest import SMOKE, method_context, train_tiny

CLUSTERED = "3.weight"     # tiny-cnn's second convolution, set to 4 values by the method below: a 2-bit codebook
DENSE = "8.weight"         # the classifier: trained floats, stored dense


def _drop_codebook_entry(p: Packed) -> None:
    p.tensors[f"{CLUSTERED}/codebook"] = p.tensors[f"{CLUSTERED}/codebook"][:3]


def _shift_values(p: Packed) -> None:
    p.tensors[f"{DENSE}/data"] = p.tensors[f"{DENSE}/data"] + 0.5


def _drop_tensor(p: Packed) -> None:
    del p.meta["8.bias"], p.tensors["8.bias/data"]


def _add_tensor(p: Packed) -> None:
    p.meta["ghost"] = {"shape": [4], "dtype": "float32", "format": "dense"}
    p.tensors["ghost/data"] = torch.zeros(4)


def _transpose_shape(p: Packed) -> None:
    p.meta[DENSE]["shape"] = p.meta[DENSE]["shape"][::-1]


# corruption -> what the cell's recorded error must say (tensor, format, what differs)
CORRUPTIONS: dict[str, tuple[Callable[[Packed], None], str]] = {
    "missing_bits": (lambda p: p.tensors.pop(f"{CLUSTERED}/bits"),
                     r"^the stored form of '3\.weight' \(format 'codebook'\): .*\(missing \['bits'\]\)"),
    "index_out_of_range": (_drop_codebook_entry,
                           r"^the stored form of '3\.weight' \(format 'codebook'\): codebook index 3 .*out of range "
                           r"of the 3-value codebook"),
    "other_values": (_shift_values,
                     r"^the stored form of '8\.weight' \(format 'dense'\): \d+ of \d+ values differ from the model's "
                     r"weights \(first at index \(0, 0\)"),
    "missing_tensor": (_drop_tensor, r"^the stored form of '8\.bias': it does not hold exactly the model's \d+ "
                                     r"tensors: missing 1 \('8\.bias'\)$"),
    "extra_tensor": (_add_tensor, r"^the stored form of 'ghost': .*extra 1 \('ghost'\)$"),
    "extra_part": (lambda p: p.tensors.__setitem__(f"{DENSE}/spare", torch.zeros(100, dtype=torch.uint8)),
                   r"^the stored form of '8\.weight' \(format 'dense'\): .*\(extra \['spare'\]\)"),
    "unknown_format": (lambda p: p.meta[CLUSTERED].__setitem__("format", "zstd"),
                       r"^the stored form of '3\.weight' \(format 'zstd'\): unknown format 'zstd'; "
                       r"known formats: dense"),
    "short_indices": (lambda p: p.tensors.__setitem__(f"{CLUSTERED}/indices", p.tensors[f"{CLUSTERED}/indices"][:-1]),
                      r"^the stored form of '3\.weight' \(format 'codebook'\): part 'indices' holds \d+ elements .*"
                      r"the format needs \d+"),
    "wrong_shape": (_transpose_shape, r"^the stored form of '8\.weight' \(format 'dense'\): stored shape \[\d+, \d+\], "
                                      r"but the model's tensor has shape"),
}


@register_method("test.own_packed_form")
@dataclass
class OwnPackedForm(Method):
    """Clusters one layer to 4 values and hands the harness its own packed form, corrupted as `corruption` says."""

    family: ClassVar[str] = "weight_sharing"
    uses_finetune: ClassVar[bool] = False
    corruption: str = "none"

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        conv = model.get_submodule(CLUSTERED.rpartition(".")[0])
        with torch.no_grad():
            levels = torch.tensor([-0.2, -0.05, 0.05, 0.2])
            conv.weight.copy_(levels[torch.arange(conv.weight.numel()) % 4].reshape(conv.weight.shape))
        packed = pack_state_dict(model.state_dict())
        assert packed.meta[CLUSTERED]["format"] == "codebook" and packed.meta[DENSE]["format"] == "dense"
        if self.corruption != "none":
            CORRUPTIONS[self.corruption][0](packed)
        return Outcome(model, compute="dense", packed=packed)


@pytest.fixture(scope="module", autouse=True)
def _unregister_method():
    yield
    METHODS.unregister("test.own_packed_form")


@pytest.fixture(scope="module")
def own_form_records(tmp_path_factory):
    """One suite through the harness's real path (SuiteRunner.run → run_cell → measure → check_packed; a raising
    cell recorded by executors.run_one → record_failure): a correct own packed form, then each corruption."""
    config = copy.deepcopy(SMOKE)
    config.update(suite="own-packed-form", methods=[
        {"name": "test.own_packed_form", "params": {"corruption": c}} for c in ("none", *CORRUPTIONS)])
    config["train"] = {**config["train"], "max_train_batches": 6}
    config["measure"] = {**config["measure"], "peak_memory": False, "robustness": False}
    runner = SuiteRunner(parse_suite(config), tmp_path_factory.mktemp("results"), wandb_mode="disabled",
                         progress=False)
    outcome = runner.run()
    records = {r.details["params_given"]["corruption"]: r for r in load_records(runner.paths.runs)}
    return outcome, records


def test_a_correct_own_packed_form_is_measured(own_form_records):
    _, records = own_form_records
    rec = records["none"]
    assert rec.status == "ok", rec.details.get("error")
    assert rec.compression.storage_formats["codebook"] >= 1


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_bogus_own_packed_form_fails_the_cell_with_a_clear_recorded_error(own_form_records, corruption):
    outcome, records = own_form_records
    rec = records[corruption]
    error = rec.details.get("error", "")
    assert rec.status == "failed", (
        f"{corruption}: the cell was measured ({rec.compression and rec.compression.storage_formats})")
    assert not re.match(r"^\w*(Error|Exception): ", error), f"a crash from inside, not a clear error: {error}"
    assert re.search(CORRUPTIONS[corruption][1], error), error
    assert rec.metrics is None and rec.artifact is None   # nothing was counted or saved
    assert any(v == error for v in outcome.failed.values())


# -- the check itself, on every format --------------------------------------------------------------------------------
def _pruned(t: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    t = t.clone()
    t[torch.rand(t.shape, generator=torch.Generator().manual_seed(seed)) < share] = 0
    return t


class Holder(nn.Module):
    """A module whose state dict is the given tensors (buffers), one tensor tied under two names."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)


def every_format_module() -> Holder:
    g = torch.Generator().manual_seed(0)
    values = torch.linspace(-1, 1, 16)
    p = 0.5 ** np.arange(16)
    skewed = values[torch.from_numpy(np.random.default_rng(0).choice(16, size=40_000, p=p / p.sum()))].reshape(200, 200)
    uniform = values[torch.randint(0, 16, (128, 64), generator=g)]
    shared = torch.randn(32, 32, generator=g)
    tensors = {
        "dense": torch.randn(100, 10, generator=g), "small": torch.randn(5, generator=g), "count": torch.tensor(7),
        "fp16": torch.randn(64, 64, generator=g).half(),
        "sparse": _pruned(torch.randn(64, 32, 3, 3, generator=g), 0.5, 1),
        "relative": _pruned(torch.randn(64, 32, 3, 3, generator=g), 0.9, 2),
        "codebook": uniform, "huffman": skewed,
        "sparse_codebook": _pruned(uniform, 0.5, 3), "relative_codebook": _pruned(uniform, 0.9, 4),
        "sparse_huffman": _pruned(skewed, 0.5, 5), "relative_huffman": _pruned(skewed, 0.9, 6),
        "q_tensor": torch.quantize_per_tensor(torch.randn(16, 8, generator=g), 0.05, 3, torch.quint8),
        "q_channel": torch.quantize_per_channel(torch.randn(32, 16, generator=g),
                                                torch.rand(32, generator=g) / 10 + 0.01,
                                                torch.zeros(32, dtype=torch.long), 0, torch.qint8),
        "tied_a": shared, "tied_b": shared,
    }
    return Holder(tensors)


def _formats(packed: Packed) -> dict[str, str]:
    return {name: meta["format"] for name, meta in packed.meta.items()}


def test_every_format_round_trips_through_the_check():
    model = every_format_module()
    packed = stored_form(model)
    fmts = _formats(packed)
    for name in ("dense", "sparse", "relative", "codebook", "huffman", "sparse_codebook", "relative_codebook",
                 "sparse_huffman", "relative_huffman"):
        assert fmts[name] == name
    assert fmts["q_tensor"] == "quantized_per_tensor" and fmts["q_channel"] == "quantized_per_channel"
    assert fmts["tied_b"] == "alias"
    assert set(fmts.values()) == set(FORMATS)
    check_packed(packed, model)
    check_packed(Packed.from_payload(packed.to_payload()), model)


def _set(name: str, part: str, value: Callable[[torch.Tensor], object]) -> Callable[[Packed], None]:
    def corrupt(p: Packed) -> None:
        p.tensors[f"{name}/{part}"] = value(p.tensors[f"{name}/{part}"])
    return corrupt


def _meta(name: str, **changes: object) -> Callable[[Packed], None]:
    def corrupt(p: Packed) -> None:
        p.meta[name] = {**p.meta[name], **changes}
    return corrupt


def _drop(name: str, key: str) -> Callable[[Packed], None]:
    def corrupt(p: Packed) -> None:
        if "/" in key:
            del p.tensors[f"{name}/{key.strip('/')}"]
        else:
            p.meta[name] = {k: v for k, v in p.meta[name].items() if k != key}
    return corrupt


def _bump_index(p: Packed) -> None:
    """A 4-bit index past the 16-value codebook cannot be written; a 9-value codebook leaves 9..15 out of range."""
    p.tensors["codebook/codebook"] = p.tensors["codebook/codebook"][:9]


def _bump_mask(p: Packed) -> None:
    mask = p.tensors["sparse/mask"].clone()
    mask[0] ^= 0x80                       # one more (or one fewer) non-zero than there are values
    p.tensors["sparse/mask"] = mask


# (corruption, the error's tensor, its format, what the message says)
MALFORMED = {
    "bits missing": (_drop("codebook", "/bits"), "codebook", "codebook", r"\(missing \['bits'\]\)"),
    "bits out of 1..8": (_set("codebook", "bits", lambda t: torch.tensor([9], dtype=torch.uint8)), "codebook",
                         "codebook", r"'bits' must be 1\.\.8"),
    "bits as int64": (_set("codebook", "bits", lambda t: t.long()), "codebook", "codebook",
                      r"part 'bits' must be uint8, got int64"),
    "index past the codebook": (_bump_index, "codebook", "codebook",
                                r"codebook index (9|1[0-5]) .*out of range of the 9-value codebook"),
    "indices a byte short": (_set("codebook", "indices", lambda t: t[:-1]), "codebook", "codebook",
                             r"part 'indices' holds \d+ elements"),
    "huffman stream a byte short": (_set("huffman", "stream", lambda t: t[:-1]), "huffman", "huffman",
                                    r"Huffman stream .*ends"),
    "huffman stream a byte long": (_set("huffman", "stream", lambda t: torch.cat([t, t[:1]])), "huffman", "huffman",
                                   r"Huffman stream holds \d+ bytes; its \d+ symbols take \d+"),
    "huffman code not a prefix code": (_set("huffman", "code_lengths", lambda t: torch.ones_like(t)), "huffman",
                                       "huffman", r"not a prefix code"),
    "huffman lengths for another codebook": (_set("huffman", "code_lengths", lambda t: t[:-1]), "huffman", "huffman",
                                             r"part 'code_lengths' holds 15 code lengths, "
                                             r".* the codebook holds 16 values"),
    "huffman code lengths too long": (_set("huffman", "code_lengths", lambda t: torch.full_like(t, 60)), "huffman",
                                      "huffman", r"code lengths must lie in 0\.\.20"),
    "mask a byte short": (_set("sparse", "mask", lambda t: t[:-1]), "sparse", "sparse", r"part 'mask' holds"),
    "mask with another count": (_bump_mask, "sparse", "sparse", r"part 'values' holds \d+ elements .* needs \d+"),
    "shape of another tensor": (_meta("relative", shape=[10, 32, 3, 3]), "relative", "relative",
                                r"stored shape \[10, 32, 3, 3\], but the model's tensor has shape \[64, 32, 3, 3\]"),
    "gap count too high": (_set("relative", "gap_count", lambda t: t + 5), "relative", "relative",
                           r"Huffman stream .*ends"),
    "gap count negative": (_set("relative", "gap_count", lambda t: -t), "relative", "relative",
                           r"'gap_count' must be non-negative"),
    "relative values missing": (_drop("relative_huffman", "/codebook"), "relative_huffman", "relative_huffman",
                                r"\(missing \['codebook'\]\)"),
    "values of another dtype": (_set("sparse", "values", lambda t: t.double()), "sparse", "sparse",
                                r"part 'values' must be float32, got float64"),
    "dense data of another dtype": (_set("dense", "data", lambda t: t.half()), "dense", "dense",
                                    r"part 'data' must be float32, got float16"),
    "dense data too long": (_set("dense", "data", lambda t: torch.cat([t.reshape(-1), t.reshape(-1)[:1]])), "dense",
                            "dense", r"part 'data' holds 1001 elements .* needs 1000"),
    "part not a tensor": (_set("dense", "data", lambda t: t.tolist()), "dense", "dense", r"must be a tensor, got list"),
    "unknown format": (_meta("dense", format="zstd"), "dense", "zstd", r"unknown format 'zstd'; known formats"),
    "format missing": (_drop("dense", "format"), "dense", None, r"metadata lacks \['format'\]"),
    "shape missing": (_drop("dense", "shape"), "dense", "dense", r"metadata lacks \['shape'\]"),
    "shape not a list": (_meta("dense", shape="100x10"), "dense", "dense", r"shape must be a list"),
    "dtype not a torch dtype": (_meta("dense", dtype="nn"), "dense", "dense", r"dtype 'nn' is not a torch dtype"),
    "dtype of another tensor": (_meta("dense", dtype="float16"), "dense", "dense", r"part 'data' must be float16"),
    "quantized scales changed": (_set("q_channel", "scales", lambda t: t * 2), "q_channel", "quantized_per_channel",
                                 r"scales .* differ from the model's"),
    "quantized axis past the shape": (_meta("q_channel", axis=2), "q_channel", "quantized_per_channel",
                                      r"'axis' must be a dimension"),
    "quantized integers as float": (_set("q_tensor", "int_repr", lambda t: t.float()), "q_tensor",
                                    "quantized_per_tensor", r"part 'int_repr' must be uint8, got float32"),
    "quantized values changed": (_set("q_tensor", "int_repr", lambda t: t + 1), "q_tensor", "quantized_per_tensor",
                                 r"128 of 128 integer values differ"),
    "quantized zero scale": (_set("q_tensor", "scales", lambda t: t * 0), "q_tensor", "quantized_per_tensor",
                             r"scales must be finite and positive"),
    "alias to nothing": (_meta("tied_b", of="nowhere"), "tied_b", "alias", r"names 'nowhere', which is not a stored"),
    "alias of another shape": (_meta("tied_b", of="dense"), "tied_b", "alias", r"stored shape|decodes to \[100, 10\]"),
    "alias without a target": (_drop("tied_b", "of"), "tied_b", "alias", r"an alias must name the tensor"),
    "alias with parts": (lambda p: p.tensors.__setitem__("tied_b/data", torch.zeros(3)), "tied_b", "alias",
                         r"an alias stores no parts"),
    "other values": (_set("codebook", "codebook", lambda t: t + 1), "codebook", "codebook",
                     r"8192 of 8192 values differ .*largest difference 1"),
    "orphan stored tensor": (lambda p: p.tensors.__setitem__("ghost/data", torch.zeros(3)), "ghost", None,
                             r"belong to no tensor of the metadata"),
    "key without a part": (lambda p: p.tensors.__setitem__("ghost", torch.zeros(3)), None, None,
                           r"stored tensor key 'ghost' is not '<tensor name>/<part>'"),
    "missing tensor": (lambda p: p.meta.pop("small"), "small", None, r"missing 1 \('small'\)"),
    "extra tensor": (lambda p: p.meta.__setitem__("ghost", dict(p.meta["small"])), "ghost", None,
                     r"extra 1 \('ghost'\)"),
}


@pytest.fixture(scope="module")
def every_format() -> tuple[Holder, Packed]:
    model = every_format_module()
    return model, stored_form(model)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_or_inconsistent_form_is_a_clear_error(every_format, case):
    model, good = every_format
    corrupt, tensor, fmt, message = MALFORMED[case]
    packed = Packed(dict(good.tensors), copy.deepcopy(good.meta))
    corrupt(packed)
    with pytest.raises(StoredFormError, match=message) as info:
        check_packed(packed, model)
    assert isinstance(info.value, SlimbenchError)
    assert (info.value.tensor, info.value.format) == (tensor, fmt), str(info.value)
    where = "the stored form" + (f" of {tensor!r}" if tensor else "") + (f" (format {fmt!r})" if fmt else "")
    assert str(info.value).startswith(where + ": "), str(info.value)


def test_gaps_past_the_end_of_the_tensor_are_a_clear_error(every_format):
    """Decoding alone (an artifact read back has no model to compare shapes with) checks positions too."""
    _, good = every_format
    packed = Packed(good.tensors, {**good.meta, "relative": {**good.meta["relative"], "shape": [10, 32, 3, 3]}})
    with pytest.raises(StoredFormError, match=r"'relative' \(format 'relative'\): the gaps place a non-zero at "
                                              r"position \d+, past the tensor's 2880 elements"):
        unpack_state_dict(packed)


def _mutations(t: torch.Tensor) -> dict[str, object]:
    flat = t.reshape(-1)
    bumped = flat.clone()
    if t.is_floating_point():
        bumped[0] += 1
    else:
        bumped[0] = bumped[0] ^ 0xFF if t.dtype == torch.uint8 else bumped[0] + 1
    return {"one element changed": bumped.reshape(t.shape), "one element short": flat[:-1], "dropped": None}


def test_any_damaged_part_is_a_clear_error_never_a_crash(every_format):
    """Every stored part of every format, damaged three ways: each is a StoredFormError, never a raw exception."""
    model, good = every_format
    tried = 0
    for key, value in good.tensors.items():
        for _how, damaged in _mutations(value).items():
            tensors = dict(good.tensors)
            if damaged is None:
                del tensors[key]
            else:
                tensors[key] = damaged
            with pytest.raises(StoredFormError, match=re.escape(repr(key.rpartition("/")[0]))):
                check_packed(Packed(tensors, copy.deepcopy(good.meta)), model)
            tried += 1
    assert tried == 3 * len(good.tensors) > 90


def test_not_a_packed_form_is_a_clear_error():
    model = nn.Linear(2, 2)
    with pytest.raises(StoredFormError, match="must be a slimbench Packed .* got dict"):
        check_packed({"0.weight": torch.zeros(2, 2)}, model)   # type: ignore[arg-type]


# -- the format's precision ----------------------------------------------------------------------------------------
def test_narrower_storage_passes_only_where_it_holds_the_model_weights_exactly():
    """float16 storage of a float32 model: the model's weights cast to float16 and back must be the weights."""
    torch.manual_seed(0)
    model = nn.Linear(64, 16)
    with torch.no_grad():
        model.weight.copy_(model.weight.half().float())   # weights float16 holds: stored as float16, exact
    half = pack_state_dict({k: v.half() if k == "weight" else v for k, v in model.state_dict().items()})
    assert half.meta["weight"]["dtype"] == "float16"
    check_packed(half, model)
    with torch.no_grad():
        model.weight.add_(1e-4)                              # now float16 rounds them: not the measured weights
    with pytest.raises(StoredFormError, match=r"'weight' \(format 'dense'\): \d+ of 1024 values differ .*stored as "
                                              r"float16, which does not hold \d+ of the model's float32 weights"):
        check_packed(half, model)


def test_quantized_scales_are_compared_at_their_stored_float32():
    scale = 0.1 + 1e-12                                       # a double that float32 does not hold
    assert torch.tensor(scale, dtype=torch.float64) != torch.tensor(scale, dtype=torch.float32).double()
    model = Holder({"q": torch.quantize_per_tensor(torch.randn(16, 8), scale, 0, torch.qint8)})
    check_packed(stored_form(model), model)


def test_nan_weights_decode_to_nan_and_pass():
    model = Holder({"w": torch.full((64, 4), float("nan")), "v": torch.tensor([1.0, float("nan"), 0.0, -0.0] * 32)})
    check_packed(stored_form(model), model)


# -- every built-in format produced by real methods ------------------------------------------------------------------
def _kmeans(k: int) -> dict:
    return {"name": "share.kmeans", "params": {"clusters": k, "min_numel": 64, "finetune": False}}


def _prune(s: float) -> dict:
    return {"name": "prune.magnitude", "params": {"sparsity": s, "finetune": False}}


REAL = [("baseline", None), ("prune.magnitude", _prune(0.5)["params"]), ("prune.magnitude", _prune(0.93)["params"]),
        ("share.kmeans", _kmeans(16)["params"]), ("share.kmeans", _kmeans(4)["params"]),
        ("chain", {"stages": [_prune(0.5), _kmeans(16)]}), ("chain", {"stages": [_prune(0.9), _kmeans(8)]}),
        ("chain", {"stages": [_prune(0.93), _kmeans(16)]}),
        ("quant.bf16", None), ("quant.fp16", None), ("quant.dynamic_int8", None),
        ("quant.ptq_int8", {"calibration_samples": 64})]


def test_every_format_real_methods_store_round_trips_through_the_check():
    """Real methods on a trained tiny-cnn (and share.cross_layer on MobileNetV2 for tied tensors): each stored form,
    torch state dict or ONNX Runtime initializers (int8, float16), passes the check; with the synthetic tensors above,
    every format of deploy.packing is covered (no method leaves torch quantized tensors: those are synthetic only)."""
    task = build_task("digits")
    trained = train_tiny(task, build_model("tiny-cnn", task.spec, task.num_classes, {"width": 16}), epochs=1)
    ctx = method_context(task, trained, finetune=lambda m, module=None, cfg=None: m)
    seen: dict[str, set[str]] = {}
    onnx = 0
    for name, params in REAL:
        out = build_method(name, params).apply(copy.deepcopy(trained), ctx)
        packed = stored_form(out.model)
        check_packed(packed, out.model)
        onnx += isinstance(out.model, OnnxModel)
        for fmt in packed.formats():
            seen.setdefault(fmt, set()).add(name)
    mobilenet = build_model("mobilenetv2", task.spec, task.num_classes, {"width_mult": 0.25}).eval()
    out = build_method("share.cross_layer", {"finetune": False}).apply(
        copy.deepcopy(mobilenet), method_context(task, mobilenet, finetune=lambda m, module=None, cfg=None: m))
    packed = stored_form(out.model)
    check_packed(packed, out.model)
    for fmt in packed.formats():
        seen.setdefault(fmt, set()).add("share.cross_layer")
    assert onnx == 3
    assert {"dense", "sparse", "relative", "codebook", "huffman", "sparse_codebook", "sparse_huffman",
            "relative_codebook", "alias"} <= set(seen), seen
    assert set(seen) | set(_formats(stored_form(every_format_module())).values()) == set(FORMATS)
