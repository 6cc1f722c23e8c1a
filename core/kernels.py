"""Which CPU kernels compute a figure: pinned for every figure that trains, calibrates or evaluates, native for
latency.

torch picks its CPU kernels by the CPU it finds, so the same seed trains to different weights on an AVX2 and an
AVX-512 CPU, or on an Intel and an AMD one. Three variables, read once when torch and its libraries load, fix them;
each was found necessary by training the same model with it left out or changed (the weights changed):
- ATen's vectorised operators and oneDNN's convolutions and matmuls to AVX2, which every x86-64 CPU of the last
  decade has;
- MKL's GEMM to its `COMPATIBLE` branch of conditional numerical reproducibility: its `AVX2` branch still computes
  differently on Intel and AMD CPUs (gradients of the same step differed between emulated Haswell and EPYC-Rome
  CPUs and agreed with `COMPATIBLE`; tests/test_kernel_pins.py repeats this under QEMU).
`MKL_ENABLE_INSTRUCTIONS` was not needed once `MKL_CBWR` is set.

This module imports nothing heavy on purpose: the pins must be in the environment before torch is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PIN_ISA = "avx2"
PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",   # ATen's vectorised CPU operators (elementwise, reductions, softmax, ...)
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN: convolutions, matmuls and their backward passes
    "MKL_CBWR": "COMPATIBLE",        # MKL's reproducibility mode, the one branch Intel and AMD CPUs compute alike
}
MODE_VARIABLE = "SLIMBENCH_KERNELS"   # "pinned" | "native": what this process (and its children) were asked for


@dataclass(frozen=True)
class KernelState:
    """What a record says about the kernels its figures used."""

    numerics: str                      # "pinned-avx2" or "native"
    reason: str                        # why (opted out, no AVX2 here, torch loaded first, ...)
    pins: dict[str, str] = field(default_factory=dict)   # the variables as they were set

    @property
    def pinned(self) -> bool:
        return self.numerics.startswith("pinned")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the pins can be honoured: an x86-64 CPU with AVX2 and FMA (torch's AVX2 kernels need both)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return {"avx2", "fma"} <= flags
    except OSError:
        return False
    return False


def pinned_in(environ: Mapping[str, str]) -> bool:
    return all(environ.get(k) == v for k, v in PINS.items())


def pin(environ: MutableMapping[str, str], native: bool = False) -> KernelState:
    """Set the pins in `environ` (before torch loads) unless `native` asks for the machine's own kernels or the
    CPU cannot honour them; children of this process inherit the choice."""
    if native:   # the variables are left as the user set them: native means "not pinned by slimbench"
        environ[MODE_VARIABLE] = "native"
        return state(environ)
    if not cpu_has_avx2():
        environ[MODE_VARIABLE] = "native"
        return KernelState("native", f"cannot pin: {platform.machine()} without AVX2; figures are compared with "
                                     f"measured tolerances, not exactly")
    environ.update(PINS)
    environ[MODE_VARIABLE] = "pinned"
    return state(environ)


def native_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the pins: for the process that measures latency with the machine's best kernels."""
    out = {k: v for k, v in environ.items() if k not in PINS}
    out[MODE_VARIABLE] = "native"
    return out


def current() -> KernelState:
    """The kernels this process computes with now, confirmed by torch's capability when torch is loaded (its
    import is the caller's: this module must stay importable before torch)."""
    torch = sys.modules.get("torch")
    return state(torch_capability=None if torch is None else str(torch.backends.cpu.get_cpu_capability()))


def state(environ: Mapping[str, str] | None = None, torch_capability: str | None = None) -> KernelState:
    """The kernels this process computes with. ATen reads its variable when torch loads, so its reported
    capability confirms the pins were set in time; without that check a late `os.environ` edit would be
    recorded as pinned."""
    env = os.environ if environ is None else environ
    if not pinned_in(env):
        why = "--native-kernels" if env.get(MODE_VARIABLE) == "native" else "no pins in the environment"
        own = {k: env[k] for k in PINS if k in env}
        return KernelState("native", why + (f", the user's own {own}" if own else ""), own)
    if torch_capability is not None and torch_capability.lower() != PIN_ISA:
        return KernelState("native", f"pins set after torch loaded (torch runs {torch_capability} kernels)")
    return KernelState(f"pinned-{PIN_ISA}", "every figure but latency computed with AVX2 kernels",
                       {k: env[k] for k in PINS})
