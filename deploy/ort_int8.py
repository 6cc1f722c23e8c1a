"""Exact int8 arithmetic in ONNX Runtime on every CPU: the session config every slimbench session runs with.

ONNX Runtime's CPU int8 matrix kernels multiply uint8 activations by int8 weights (U8S8). On x86-64 CPUs with AVX2
(or AVX-512) but no VNNI that kernel uses `vpmaddubsw`, which adds two u8 x s8 products into a saturating int16
(255 * 127 + 255 * 127 = 64,770 > 32,767). The same int8 graph then computes other numbers there than on a CPU
with VNNI or AMX, or on ARM, where the products accumulate exactly in int32, and the same model scores differently
on two CPUs.

ONNX Runtime's own remedy is the session config entry `session.x64quantprecision` = "1"
(`kOrtSessionOptionsAvx2PrecisionMode` in onnxruntime/core/session/onnxruntime_session_options_config_keys.h): it
re-encodes each int8 weight as uint8 with zero point 128 (the same values) and runs exact U8U8 kernels. It keeps
the model and its accuracy, unlike quantizing with `reduce_range=True` (7-bit weights). But in ONNX Runtime 1.32
it applies wherever the CPU's U8U8 and U8S8 kernel tables differ (`MlasPlatformU8S8Overflow`), VNNI and AMX CPUs
included, where U8S8 is exact already and U8U8 is slower for identical outputs. So slimbench sets it where it
is needed: once per process a probe multiplies 255 by +127 and -128 in ONNX Runtime's U8S8 kernel, and only if the
result is not the exact integer one does every session get the entry. Every CPU then computes the exact integer
results of the graph (tests/test_int8_reference.py checks them against an integer reference, natively and under an
emulated AVX2 CPU), and latency is that of the machine's fastest exact kernel. `SLIMBENCH_ORT_X64QUANTPRECISION=1`
sets the entry everywhere (same outputs, U8U8 kernels on every x86-64 CPU).

Imports nothing heavy (no torch), so the probe also runs quickly under an emulator.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

X64_QUANT_PRECISION = "session.x64quantprecision"   # kOrtSessionOptionsAvx2PrecisionMode
EXACT_U8U8: dict[str, str] = {X64_QUANT_PRECISION: "1"}
MODE_VARIABLE = "SLIMBENCH_ORT_X64QUANTPRECISION"   # "auto" (default): where U8S8 is not exact; "1": always
MODES = ("auto", "1")
_PROBE_ROWS, _PROBE_DEPTH = 4, 64


def _probe_model() -> tuple[bytes, np.ndarray, np.ndarray]:
    """MatMulInteger of uint8 255s by int8 weights +127 (half the columns) and -128 (the other half): every pair of
    products leaves int16 (+64,770 and -65,280), so a saturating kernel cannot return the exact result."""
    a = np.full((_PROBE_ROWS, _PROBE_DEPTH), 255, np.uint8)
    b = np.concatenate([np.full((_PROBE_DEPTH, 4), 127, np.int8), np.full((_PROBE_DEPTH, 4), -128, np.int8)], axis=1)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "u8s8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, _PROBE_DEPTH])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, b.shape[1]])],
        initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString(), a, a.astype(np.int64) @ b.astype(np.int64)


def probe_exact(config: dict[str, str]) -> bool:
    """Whether ONNX Runtime's u8 x s8 matrix product is exact on this CPU with session `config`."""
    data, a, exact = _probe_model()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in config.items():
        so.add_session_config_entry(key, value)
    got = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    return bool(np.array_equal(got.astype(np.int64), exact))


@functools.cache
def u8s8_exact() -> bool:
    """Whether this CPU's default int8 kernels (U8S8) are exact; measured once per process."""
    return probe_exact({})


def mode() -> str:
    value = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_VARIABLE}={value!r}: use one of {MODES}")
    return value


def session_config() -> dict[str, str]:
    """The session config entries every slimbench ONNX Runtime session gets (a fresh dict)."""
    return dict(EXACT_U8U8) if mode() == "1" or not u8s8_exact() else {}


@functools.cache
def _described(items: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    config = dict(items)
    # ORT reads the entry on x86-64 only (elsewhere its U8S8 kernels do not saturate)
    u8u8 = config.get(X64_QUANT_PRECISION) == "1" and platform.machine().lower() in ("x86_64", "amd64")
    return {
        "session_config": config,
        "u8s8_exact_on_this_cpu": u8s8_exact(),
        "kernels": "U8U8 (session.x64quantprecision=1)" if u8u8 else
                   "U8S8 (exact on this CPU)" if u8s8_exact() else "U8S8 (saturating int16 pair sums)",
        "exact": probe_exact(config),
    }


def int8_arithmetic(config: dict[str, str]) -> dict[str, Any]:
    """What a record says about the int8 arithmetic of a session run with `config`: the entries, which kernels
    that means on this CPU, and whether the probe's products came out exact with them."""
    return dict(_described(tuple(sorted(config.items()))))


def is_runtime_u8_weight(name: str) -> bool:
    """An initializer ONNX Runtime re-encoded from int8 to uint8 (zero point 128) for its U8U8 kernels."""
    return name.endswith("_s8_2_u8")


__all__ = ["EXACT_U8U8", "MODE_VARIABLE", "X64_QUANT_PRECISION", "int8_arithmetic", "is_runtime_u8_weight",
           "probe_exact", "session_config", "u8s8_exact"]
