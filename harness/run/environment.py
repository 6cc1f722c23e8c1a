"""What a record must say about where it ran: versions, git commit, hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from slimbench.core import kernels

PACKAGES = ("slimbench", "torch", "torchvision", "lightning", "timm", "torchmetrics", "torch-pruning", "torchao",
            "onnx", "onnxruntime", "wandb", "numpy", "scikit-learn", "tabulate")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.rstrip() if out.returncode == 0 else ""   # not strip(): porcelain lines start with a space

    try:
        commit = git("rev-parse", "HEAD")
        # untracked files count too: a new method file that is not committed changes what runs
        changed = [line[3:] for line in git("status", "--porcelain", "--", ".", ":!results").splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "source": "no git"}
    if not commit:   # an installed package: its version names the code
        return {"commit": None, "dirty": None, "source": f"slimbench {versions().get('slimbench', '?')} (installed)"}
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:20]}


@functools.cache
def hardware() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = sorted(have & {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                                       "amx_tile", "amx_int8", "amx_bf16", "f16c", "sse4_2"})
                break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "instruction_sets": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # the kernels every figure but latency used (latency's own are in the record's metrics)
        "kernels": kernels.current().to_dict(),
        "system": platform.system(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_bytes": mem,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
