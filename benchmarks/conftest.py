"""Benchmark fixtures and the closing table (ratios measured in the same run, never asserted)."""

from __future__ import annotations

import os

import pytest

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.registry import ROOT, SOURCES

RESULTS: dict[str, dict[str, float]] = {}
SCALE = os.environ.get("ADREPRO_BENCH_SCALE", "default")


@pytest.fixture(scope="session")
def bench_data() -> PreparedDataset:
    source = SOURCES.get("world").factory(SOURCES.config("world", {"scale": SCALE}))
    return PreparedDataset(prepare(source, PrepareConfig(min_count=2, cache_root=str(ROOT / "cache"))))


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    w = terminalreporter
    loader = RESULTS.get("loader", {}).get("batches_per_s")
    w.section(f"adrepro throughput (world scale {SCALE}, batch 4096, {os.cpu_count()} cores)")
    w.line(f"{'what':<14}{'samples/s':>14}{'batches/s':>12}{'loader / step':>16}")
    for name, r in sorted(RESULTS.items(), key=lambda kv: -kv[1]["batches_per_s"]):
        ratio = "" if name == "loader" or not loader else f"{loader / r['batches_per_s']:.1f}x"
        w.line(f"{name:<14}{r['samples_per_s']:>14,.0f}{r['batches_per_s']:>12,.1f}{ratio:>16}")
