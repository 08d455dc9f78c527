"""Per-run resource figures: peak resident memory sampled while the run works, and CUDA peaks.

``ru_maxrss`` is a process-wide high-water mark, so in a sweep that runs every job in one process
each run would report the heaviest earlier run's peak. A sampling thread measures this run only.
"""

from __future__ import annotations

import threading

import psutil
import torch


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
