"""The one place a model is timed: `timing` runs interleaved rounds of `torch.utils.benchmark` with fixed threads
and takes the median of round medians (`MeasureConfig` says how long); `by_runtime` times a model and its reference
in every runtime they run in and turns the per-round ratios into speedup bands; `native` hands that timing to a
child process with the machine's native kernels when this process computes with pinned ones (`python -m
slimbench.deploy.latency` is that child). Records keep the field names these produce.
"""

from slimbench.deploy.latency.by_runtime import latency_by_runtime, speedup_bands
from slimbench.deploy.latency.native import Latency, LatencyKernels, measure_latency, probe
from slimbench.deploy.latency.timing import MeasureConfig, latency_rounds_ms

__all__ = ["Latency", "LatencyKernels", "MeasureConfig", "latency_by_runtime",
           "latency_rounds_ms", "measure_latency", "probe", "speedup_bands"]
