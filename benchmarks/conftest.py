"""Benchmark fixtures and the closing table (ratios measured in the same run, never asserted)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from repro.data.dataset import PreparedDataset
from repro.data.featuremap import FeatureMap, FieldSpec
from repro.data.prepare import PrepareConfig, prepare
from repro.registry import ROOT, SOURCES

RESULTS: dict[str, dict[str, float]] = {}
APG_FIGURES: dict[str, dict[str, float]] = {}  # tower -> params, latency, peak memory (test_apg_efficiency)
LOOKUPS: dict[str, dict[str, float]] = {}  # embedding scheme -> lookup figures (test_embedding_lookup)
SCALE = os.environ.get("ADREPRO_BENCH_SCALE", "default")


@pytest.fixture(scope="session")
def bench_data() -> PreparedDataset:
    source = SOURCES.get("world").factory(SOURCES.config("world", {"scale": SCALE}))
    return PreparedDataset(prepare(source, PrepareConfig(min_count=2, cache_root=str(ROOT / "cache"))))


def synthetic_feature_map(vocab_sizes: list[int], seed: int = 0) -> FeatureMap:
    """A feature map of categorical fields with the given row counts and Zipf-like training
    frequencies (index order = frequency rank, as the data contract encodes it), for benchmarks
    that need more fields or rows than the world has."""
    rng = np.random.default_rng(seed)
    fields = [FieldSpec(f"f{i}", "categorical", vocab_size=n, oov_index=n - 1) for i, n in enumerate(vocab_sizes)]
    fm = FeatureMap("synthetic", fields)
    fm.frequencies = {}
    for f in fields:
        counts = np.zeros(f.vocab_size, dtype=np.int64)
        counts[1:-1] = np.maximum(1, (1e6 / np.arange(1, f.vocab_size - 1) ** 1.05)).astype(np.int64)
        counts[-1] = rng.integers(0, 1000)
        fm.frequencies[f.name] = counts
    fm.train_rows = int(sum(fm.frequencies[fields[0].name]))
    return fm


def apg_table(w) -> None:
    static = APG_FIGURES.get("static MLP", {})
    cols = ["params", "infer ms", "infer peak MB", "train ms", "train peak MB"]
    w.section(f"APG towers vs the static MLP of the same widths (batch 4096, {os.cpu_count()} cores; ratio to static)")
    w.line(f"{'tower':<28}" + "".join(f"{c:>22}" for c in cols))
    for name, r in APG_FIGURES.items():
        cells = []
        for c in cols:
            v, base = r.get(c), static.get(c)
            ratio = f" ({v / base:.2f}x)" if v is not None and base else ""
            cells.append(("-" if v is None else f"{v:,.1f}" if c != "params" else f"{v:,.0f}") + ratio)
        w.line(f"{name:<28}" + "".join(f"{c:>22}" for c in cells))


def pytest_terminal_summary(terminalreporter):
    w = terminalreporter
    if LOOKUPS:
        w.section(f"embedding lookup, forward+backward (batch 4096, {os.cpu_count()} cores)")
        w.line(f"{'scheme':<28}{'ms/step':>10}{'vs full':>10}{'stored MB':>12}{'vs full':>10}")
        full = LOOKUPS.get("full")
        for name, r in sorted(LOOKUPS.items(), key=lambda kv: kv[1]["ms"]):
            speed = f"{r['ms'] / full['ms']:.2f}x" if full else ""
            size = f"{full['mb'] / r['mb']:.1f}x" if full else ""
            w.line(f"{name:<28}{r['ms']:>10.2f}{speed:>10}{r['mb']:>12.2f}{size:>10}")
    if APG_FIGURES:
        apg_table(w)
    if not RESULTS:
        return
    loader = RESULTS.get("loader", {}).get("batches_per_s")
    w.section(f"adrepro throughput (world scale {SCALE}, batch 4096, {os.cpu_count()} cores)")
    w.line(f"{'what':<14}{'samples/s':>14}{'batches/s':>12}{'loader / step':>16}")
    for name, r in sorted(RESULTS.items(), key=lambda kv: -kv[1]["batches_per_s"]):
        ratio = "" if name == "loader" or not loader else f"{loader / r['batches_per_s']:.1f}x"
        w.line(f"{name:<14}{r['samples_per_s']:>14,.0f}{r['batches_per_s']:>12,.1f}{ratio:>16}")
