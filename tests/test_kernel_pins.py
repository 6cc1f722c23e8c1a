"""Pinned kernels: the same seed gives the same figures under the same pins, latency is timed natively."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimbench.core import kernels

pytestmark = pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="the pins need an x86-64 CPU with AVX2")

SLIMBENCH = [sys.executable, "-m", "slimbench"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in kernels.PINS and k != kernels.MODE_VARIABLE}
    return {**env, "WANDB_MODE": "disabled", "SLIMBENCH_PROGRESS": "0", **extra}


def _run(suite: Path, results: Path, *flags: str, env: dict[str, str] | None = None) -> list[dict]:
    cmd = [*SLIMBENCH, *flags, "run", str(suite), "--results", str(results), "--allow-dirty", "--wandb", "disabled",
           "--no-progress"]
    out = subprocess.run(cmd, env=env or _clean_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(p.read_text()) for p in sorted((results / "smoke" / "runs").glob("*.json"))]


def _compare(a: Path, b: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLIMBENCH, "compare", str(a / "smoke"), str(b / "smoke"), "--out", str(out)],
                          env=_clean_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[list[dict]]]:
    """The smoke suite run twice with the default pins and once with ATen's scalar kernels instead."""
    root = tmp_path_factory.mktemp("pins")
    suite = Path(__file__).parent.parent / "configs" / "smoke.yaml"
    a, b, c = root / "a", root / "b", root / "c"
    records = [_run(suite, a), _run(suite, b),
               _run(suite, c, "--native-kernels", env=_clean_env(ATEN_CPU_CAPABILITY="default"))]
    return a, b, c, records


@pytest.mark.slow
def test_the_command_pins_every_figure_but_latency(three_runs):
    _, _, _, (pinned, _, native) = three_runs
    for rec in pinned:
        assert rec["hardware"]["kernels"]["numerics"] == "pinned-avx2"
        assert rec["hardware"]["kernels"]["pins"] == kernels.PINS
        assert rec["hardware"]["torch_cpu_capability"] == "AVX2"
        latency = rec["metrics"]["latency_kernels"]
        assert latency["numerics"] == "native" and latency["process"] == "separate"
    for rec in native:
        assert rec["hardware"]["kernels"]["numerics"] == "native"
        assert rec["hardware"]["torch_cpu_capability"] == "DEFAULT"


@pytest.mark.slow
def test_same_pins_reproduce_bit_for_bit(three_runs, tmp_path: Path):
    a, b, _, (ra, rb, _) = three_runs
    assert [r["artifact"]["sha256"] for r in ra] == [r["artifact"]["sha256"] for r in rb]
    out = _compare(a, b, tmp_path / "same.md")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("reproduced: 2 cells bit for bit with pinned AVX2 kernels")


@pytest.mark.slow
def test_other_kernels_give_other_weights_and_an_exact_comparison_catches_them(three_runs, tmp_path: Path):
    a, _, c, (ra, _, rc) = three_runs
    assert [r["artifact"]["sha256"] for r in ra] != [r["artifact"]["sha256"] for r in rc]
    out = _compare(a, c, tmp_path / "other.md")
    assert out.stdout.strip().splitlines()[-1].startswith("inconclusive")   # never claimed exact
    assert "native DEFAULT" in (tmp_path / "other.md").read_text()
    # native records beside themselves, compared by a pinned command: bit for bit, and no pins claimed for them
    out = _compare(c, c, tmp_path / "itself.md")
    assert out.stdout.strip().splitlines()[-1] == "reproduced: 2 cells bit for bit."
    # the same records, claiming the reference's pins: the exact comparison must name the first difference
    forged = tmp_path / "forged" / "smoke" / "runs"
    forged.mkdir(parents=True)
    for path in sorted((c / "smoke" / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        rec["hardware"].update({k: ra[0]["hardware"][k] for k in ("kernels", "torch_threads", "torch_cpu_capability")})
        (forged / path.name).write_text(json.dumps(rec))
    out = _compare(a, tmp_path / "forged", tmp_path / "forged.md")
    assert out.returncode == 1
    assert "DIFFERS (exact figure)" in out.stderr and "stored model sha256" in out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("2 of 2 cells differ")


PROBE = """
import os, json
from slimbench.core import kernels
kernels.pin(os.environ)
import torch
from slimbench.deploy.latency import MeasureConfig, measure_latency, probe
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
model(torch.zeros(1, 1, 8, 8))
_, used = measure_latency(model.eval(), None, "eager", {"b1": torch.zeros(1, 1, 8, 8)},
                          MeasureConfig(rounds=1, min_run_time=0.01, warmup=1))
print(json.dumps({"here": torch.backends.cpu.get_cpu_capability(), "used": used.to_dict(), "child": probe()}))
"""


@pytest.mark.slow
def test_eager_latency_is_timed_without_the_pins():
    native = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                            env=_clean_env(), capture_output=True, text=True, timeout=60).stdout.strip()
    out = subprocess.run([sys.executable, "-c", PROBE], env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["here"] == "AVX2"                                   # this process computes pinned
    assert got["used"] == {"numerics": "native", "process": "separate", "torch_cpu_capability": native, "note": ""}
    assert got["child"]["payload"] == {"pins_in_environment": False}
    assert got["child"]["torch_cpu_capability"] == native


def test_pinning_records_what_really_ran():
    env = {**kernels.PINS}
    assert kernels.state(env, torch_capability="AVX2").pinned
    late = kernels.state(env, torch_capability="AVX512")   # variables set after torch had loaded
    assert not late.pinned and "after torch loaded" in late.reason
    assert not kernels.state({}, torch_capability="AVX2").pinned
    assert "ATEN_CPU_CAPABILITY" not in kernels.native_environment(env)


STEP = """
import hashlib, torch, torchvision
torch.manual_seed(0); torch.set_num_threads(1)
conv = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
text = torch.nn.Sequential(torch.nn.Embedding(1000, 64), torch.nn.Flatten(), torch.nn.Linear(64 * 16, 128),
                           torch.nn.GELU(), torch.nn.Linear(128, 10))
g = torch.Generator().manual_seed(1)
x, t, y = (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 1000, (8, 16), generator=g),
           torch.randint(0, 10, (8,), generator=g))
(torch.nn.functional.cross_entropy(conv(x), y) + torch.nn.functional.cross_entropy(text(t), y)).backward()
grads = b"".join(p.grad.numpy().tobytes() for m in (conv, text) for p in m.parameters() if p.grad is not None)
print(torch.backends.cpu.get_cpu_capability(), hashlib.sha256(grads).hexdigest())
"""
QEMU = "qemu-x86_64-static"


@pytest.mark.skipif(__import__("shutil").which(QEMU) is None,
                    reason=f"{QEMU} is absent: apt-get install qemu-user-static (./reproduce.sh test installs it)")
@pytest.mark.slow
def test_the_pins_give_the_same_gradients_on_intel_and_amd_cpus():
    """One training step's gradients (convolutions through oneDNN, linear layers through MKL) under the pins: this
    CPU, an emulated Intel Haswell and an emulated AMD EPYC-Rome agree bit for bit. With MKL's AVX2 branch instead
    of COMPATIBLE the two vendors differ (kept as the control, so the test shows what the pin does)."""
    def step(cpu: str | None, **change: str) -> str:
        env = _clean_env(**{**kernels.PINS, **change})
        cmd = ([QEMU, "-cpu", cpu] if cpu else []) + [sys.executable, "-c", STEP]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    here, intel, amd = step(None), step("Haswell-v4"), step("EPYC-Rome-v2")
    assert here.startswith("AVX2 ") and here == intel == amd
    assert step("Haswell-v4", MKL_CBWR="AVX2") != step("EPYC-Rome-v2", MKL_CBWR="AVX2")


def test_a_report_flags_a_suite_whose_records_mix_numerics():
    from slimbench.harness.run.numerics import mixed_numerics_note, numerics_line
    from slimbench.harness.run.records import load_records

    pinned = load_records(Path(__file__).parent.parent / "results" / "quick" / "runs")[:2]
    assert {r.hardware.kernels.numerics for r in pinned} == {"pinned-avx2"}
    assert mixed_numerics_note(pinned) is None and "pinned to AVX2" in numerics_line(pinned)
    native = json.loads(json.dumps(pinned[1].to_dict()))
    del native["hardware"]["kernels"]                     # a record from before pinning
    native["hardware"].update(cpu="AMD EPYC", torch_cpu_capability="AVX2")
    mixed = [pinned[0], type(pinned[0]).from_dict(native)]
    note = mixed_numerics_note(mixed)
    assert note is not None and "1 pinned-avx2" in note and "1 native AVX2 on AMD EPYC" in note
    assert numerics_line(mixed) == note
