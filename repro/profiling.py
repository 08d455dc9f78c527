"""The profiling layer: what a run costs, measured while it runs (issue 9).

- ``PeakMemory``: peak resident memory sampled while the run works, and the CUDA peaks.
  ``ru_maxrss`` is a process-wide high-water mark, so in a sweep that runs every job in one
  process each run would report the heaviest earlier run's peak; a sampling thread measures this
  run only.
- ``PhaseClock``: the training steps' wall time split into forward (model, loss and penalty),
  backward and optimizer (clipping, step); the trainer times the data phase itself. On the CPU
  each phase is read with ``perf_counter`` (the CPU runs the ops synchronously); on a GPU each
  phase boundary records a CUDA event and the events are read only at ``resolve()`` (the trainer
  calls it at evaluations, where it synchronises anyway), so timing adds no host sync per step.
- ``count_flops``: the matrix-product FLOPs of one training step (forward and backward), counted by
  ``torch.utils.flop_counter`` on the step itself, not estimated; element-wise work is not
  counted, so the achieved rate is the useful matrix-product rate.
- ``matmul_peak_flops``: this process's matrix-product rate (n x n products, best of ``rounds``),
  the yardstick for the achieved rate, measured in the same process and thread count.
- ``GpuMonitor``: on a GPU, NVML readings (memory, utilisation, power, SM clock) sampled in a
  background thread through nvidia-ml-py; without a GPU or without NVML it says why instead.
- ``cpu_capabilities``: what the CPU offers (AVX2, AVX-512, native bf16 through AVX512_BF16 or AMX),
  which decides whether bf16 autocast can pay off on it.
"""

from __future__ import annotations

import math
import platform
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import psutil
import torch

PHASES = ("forward", "backward", "optimizer")


class PeakMemory:
    """Context manager: ``.peak_rss_mb`` after exit (sampled every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        self.peak_rss_mb = max(self.peak_rss_mb, self._process.memory_info().rss / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class PhaseClock:
    """Accumulated seconds per training phase; ``start()`` then ``mark(phase)`` for each of
    ``PHASES`` in order, every step."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._t = 0.0
        self._pending: list[tuple[str, object, object]] = []  # CUDA: (phase, start event, end event)
        self._last: object = None

    def start(self) -> None:
        if self.cuda:
            self._last = torch.cuda.Event(enable_timing=True)
            self._last.record()
        else:
            self._t = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((phase, self._last, end))
            self._last = end
        else:
            now = time.perf_counter()
            self.seconds[phase] += now - self._t
            self._t = now

    def resolve(self) -> dict[str, float]:
        """Every phase's seconds so far (on a GPU: waits for the recorded events)."""
        if self._pending:
            self._pending[-1][2].synchronize()
            for phase, start, end in self._pending:
                self.seconds[phase] += start.elapsed_time(end) / 1000.0
            self._pending.clear()
        return dict(self.seconds)


@contextmanager
def count_flops(enabled: bool = True) -> Iterator[dict]:
    """``with count_flops() as counted: <one step>`` leaves ``counted["flops"]`` after the block
    (None when ``enabled`` is false)."""
    counted: dict = {"flops": None}
    if not enabled:
        yield counted
        return
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with mode:
        yield counted
    counted["flops"] = int(mode.get_total_flops())


@lru_cache(maxsize=8)
def matmul_peak_flops(threads: int, dtype: torch.dtype = torch.float32, n: int = 1024, rounds: int = 20) -> float:
    """This process's matrix-product rate (FLOP/s) in ``dtype`` on ``threads`` threads: the best
    of ``rounds`` n x n products after one warm-up. Cached per process (a run's yardstick, not a
    benchmark): the caller's thread setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=generator).to(dtype)
        b = torch.randn(n, n, generator=generator).to(dtype)
        a @ b
        best = math.inf
        for _ in range(rounds):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 / best
    finally:
        torch.set_num_threads(before)


def optimizer_state_bytes(optimizers: list[torch.optim.Optimizer]) -> int:
    """Bytes of every tensor the optimizers keep (Adam's moments, step counters)."""
    total = 0
    for opt in optimizers:
        for state in opt.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    total += v.numel() * v.element_size()
    return total


@lru_cache(maxsize=1)
def cpu_capabilities() -> dict:
    """The CPU's vector and matrix extensions as Linux reports them, and torch's dispatch level."""
    flags: set[str] = set()
    model = platform.processor() or ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name" and not model.strip(" x86_64"):
                model = value.strip()
    native_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    return {
        "model": model,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "flags_known": bool(flags),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "native_bf16": native_bf16,
    }


class GpuMonitor:
    """Context manager sampling NVML every ``interval`` seconds on the current CUDA device;
    ``summary()`` after exit. Without a GPU, or without NVML, ``summary()`` says which."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[dict] = []
        self.reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._handle = None

    def __enter__(self) -> "GpuMonitor":
        if not torch.cuda.is_available():
            self.reason = "no CUDA device visible to torch"
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception as e:  # noqa: BLE001 - no library or no driver: say so, carry on
            self.reason = f"NVML unavailable ({type(e).__name__}: {e})"
            self._nvml = None
            return self
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        nv, h = self._nvml, self._handle
        try:
            self.samples.append({
                "memory_used_mb": nv.nvmlDeviceGetMemoryInfo(h).used / 2**20,
                "utilisation_pct": float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
                "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            })
        except Exception as e:  # noqa: BLE001 - a reading the device does not support
            self.reason = self.reason or f"an NVML reading failed ({type(e).__name__}: {e})"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass

    def summary(self) -> dict:
        if not self.samples:
            return {"available": False, "reason": self.reason or "no NVML sample taken"}
        out: dict = {"available": True, "samples": len(self.samples), "interval_s": self.interval}
        for key in self.samples[0]:
            values = [s[key] for s in self.samples if key in s]
            out[f"{key}_max"] = max(values)
            out[f"{key}_mean"] = sum(values) / len(values)
        if self.reason:
            out["note"] = self.reason
        return out
