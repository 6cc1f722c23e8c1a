"""Latency with the machine's best kernels while every other figure is computed with pinned ones.

The pins (core/kernels.py) are read when torch loads and cannot be lifted inside a process, so a pinned process
hands its timing to a long-lived child started without them: the models travel as a pickle over the child's
standard input, the timings come back the same way. An unpinned process times in place. A model that cannot
travel (a class the child cannot import, a closure) is timed in place and the record says so.

That child is `python -m slimbench.deploy.latency` (this package's `__main__`, which runs `serve_parent`).
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from typing import IO, Any

import torch
from torch import nn

from slimbench.core import kernels
from slimbench.core.errors import NotApplicableError, SlimbenchError
from slimbench.deploy.latency.by_runtime import latency_by_runtime
from slimbench.deploy.latency.timing import MeasureConfig

log = logging.getLogger("slimbench")

Latency = dict[str, dict[str, dict[str, Any]]]

# the package, run through its `__main__`: `-m` on this module would import it with the package and then run a
# second copy of it as `__main__`
CHILD_MODULE = "slimbench.deploy.latency"


@dataclass(frozen=True)
class LatencyKernels:
    """Which kernels timed a record's latency, and in which process."""

    numerics: str          # "native" or "pinned-avx2"
    process: str           # "separate" (the native child) or "same"
    torch_cpu_capability: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write(stream: IO[bytes], obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the latency process closed its pipe")
    data = stream.read(int.from_bytes(header, "little"))
    # our own child's or parent's pickle, never a file from outside: full unpickling is safe here
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


class NativeProcess:
    """The child that times with native kernels; started on first use, ended when this process exits."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", CHILD_MODULE],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          env=kernels.native_environment(os.environ))
            atexit.register(self.close)
        return self._proc

    def call(self, request: dict[str, Any]) -> Any:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                _write(proc.stdin, request)
                return _read(proc.stdout)
            except (BrokenPipeError, EOFError) as exc:
                self.close()
                raise SlimbenchError(f"the native-kernel latency process ended unexpectedly ({exc}); its stderr "
                                     f"is in this log") from None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


_PROCESS = NativeProcess()


def _capability() -> str:
    return str(torch.backends.cpu.get_cpu_capability())


def measure_latency(model: nn.Module, reference: nn.Module | None, deployed: str, examples: dict[str, torch.Tensor],
                    cfg: MeasureConfig) -> tuple[Latency, LatencyKernels]:
    """`latency_by_runtime`, timed with the machine's native kernels whatever this process computes with."""
    if not kernels.current().pinned:
        return (latency_by_runtime(model, reference, deployed, examples, cfg),
                LatencyKernels("native", "same", _capability()))
    request = {"model": model, "reference": reference, "deployed": deployed, "examples": examples, "cfg": cfg}
    try:
        status, payload, capability = _PROCESS.call(request)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:
        # the models would not pickle: time them here
        return _in_place(model, reference, deployed, examples, cfg, f"models could not be sent: {exc}")
    if status == "ok":
        return payload, LatencyKernels("native", "separate", capability)
    if status == "not-applicable":
        raise NotApplicableError(payload)
    return _in_place(model, reference, deployed, examples, cfg, f"the native process could not time them: {payload}")


def _in_place(model: nn.Module, reference: nn.Module | None, deployed: str, examples: dict[str, torch.Tensor],
              cfg: MeasureConfig, why: str) -> tuple[Latency, LatencyKernels]:
    log.warning("latency timed with the pinned kernels: %s", why)
    return (latency_by_runtime(model, reference, deployed, examples, cfg),
            LatencyKernels(kernels.current().numerics, "same", _capability(), why))


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: one request in, one answer out, until the parent closes the pipe."""
    while True:
        try:
            request = _read(stdin)
        except EOFError:
            return
        except Exception as exc:   # noqa: BLE001 - any unpickling failure is reported, the loop goes on
            _write(stdout, ("error", f"{type(exc).__name__}: {exc}", _capability()))
            continue
        if request.get("probe"):
            _write(stdout, ("ok", {"pins_in_environment": kernels.pinned_in(os.environ)}, _capability()))
            continue
        try:
            out = latency_by_runtime(request["model"], request["reference"], request["deployed"],
                                     request["examples"], request["cfg"])
            answer: tuple[str, Any, str] = ("ok", out, _capability())
        except NotApplicableError as exc:
            answer = ("not-applicable", str(exc), _capability())
        except Exception as exc:   # noqa: BLE001 - the parent decides what a failure means
            answer = ("error", f"{type(exc).__name__}: {exc}", _capability())
        _write(stdout, answer)


def probe() -> dict[str, Any]:
    """What the child runs with (for tests and `--help`-level checks): its kernels and whether pins reached it."""
    status, payload, capability = _PROCESS.call({"probe": True})
    return {"status": status, "payload": payload, "torch_cpu_capability": capability}


def serve_parent() -> None:
    """The child's entry point: serve the parent on the standard streams, with stray prints sent to stderr."""
    protocol = os.fdopen(os.dup(1), "wb")   # the pipe to the parent; anything printed goes to stderr instead
    os.dup2(2, 1)
    serve(sys.stdin.buffer, protocol)
