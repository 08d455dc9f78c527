"""Same-run ratio guards: speed claims the suite rests on, as ratios of two timings taken in one
process, interleaved round by round, and compared by their medians. Run by ``make bench-check``
(``benchmarks/check.py``), never by ``make test`` (these are timings) nor by ``make bench`` (which
runs benchmarks only).

Why ratios survive a noisy machine: both sides of a ratio see the same neighbours, because their
rounds alternate (A B, then B A, so a slow spell or a trend falls on both), and a median ignores
the rounds a burst hits. Where a threshold is ours, it sits well inside the measured ratios (the
figures are written beside it), so a failure means the claim has broken, not the machine; where the
issue states the bound (the sparse update's 4x, the compiled step's "no slower"), the bound is the
claim, and the comment says how close the measurements came.
Each setup is the existing benchmark's or the ladder's, imported, so a guard times what they time.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Callable

import pytest
import torch

from benchmarks.test_embedding_lookup import CASES, lookup_step, make_lookup_inputs
from benchmarks.test_throughput import table_update_step
from methods.system_efficiency.ladder import (BASE_BATCH, LadderConfig, RowDataset, Rung, build_model,
                                              cowclip_, embedding_l2, epoch_batches, make_optimizers)
from repro.embeddings import embedding_layers

# Thresholds, each with the figures measured here: 2026-12-08, this 2-core VM ("Intel(R) Xeon(R)
# Processor"), 2 threads, the smoke world, in two conditions: "quiet" (a spell when the two other
# agents on this machine left the cores mostly free; the full run of this file took 41 s) and
# "busy" (both cores taken by them, load 3-7). The lead's first `make bench-check` on a quiet
# machine prints every ratio: the figures to write here next.
#
# dense Adam / SparseAdam step time, 4M rows, batch 4096 x 17 fields: the bound. Measured
# 26.4 quiet (1419 / 54 ms); busy 3.5, 4.0 and 4.1: the dense step (memory-bound) hardly slows on a
# busy machine, the sparse one slows ~8x (to 442 ms; its many small ops, ~40% of it in the sort of
# coalesce() in the profiler), so on a busy machine this guard fails.
SPARSE_OVER_DENSE_MIN = 4.0
# per-row Dataset + default collate / columnar loader, 20 batches of 512: measured 161 quiet; busy
# 50, 54 and 60; the ladder's rung 0 and rung 1 data shares give ~41 (results/hpc_ladder.md,
# DeepFM). Half of the lowest figure, rounded down.
COLUMNAR_OVER_ROWS_MIN = 20.0
# compiled / eager DeepFM step time, batch 4096 (the ladder's rung 4), compile time excluded: the
# brief's tolerance, "no slower than eager" within 10%. Measured 0.93 and 0.94 quiet; busy 0.98,
# 1.09 and 1.55 (a busy machine can fail it); the ladder's own 2-epoch figure is 0.89 (1.13x
# faster, results/hpc_ladder.md).
COMPILED_OVER_EAGER_MAX = 1.1
# Each compressed scheme's forward+backward over the full table's (batch 4096, 24 fields, all
# interleaved in one measurement). Limit: about twice the quiet figure, and at least 1.3x the busy
# one, so a scheme that doubles its cost against the full table fails. The comment gives the
# measured figures as quiet (two runs) / busy (full table: 3.9 / 26.6 ms).
LOOKUP_OVER_FULL_MAX: dict[str, float] = {
    "hashing-16x": 6.5,  # 3.08, 3.23 / 4.64
    "qr-16x": 9.5,  # 4.71, 4.49 / 6.32
    "hash_embedding-16x": 18.0,  # 8.95, 9.62 / 11.74
    "double_hashing-16x": 11.5,  # 5.65, 5.69 / 7.41
    "mde-16x": 15.0,  # 7.33, 6.14 / 9.25
    "bh-16x": 7.0,  # 3.48, 3.40 / 4.51
    "hashing-1000x": 6.5,  # 3.04, 2.93 / 3.92
    "qr-1000x": 9.5,  # 4.56, 4.49 / 6.18
    "hash_embedding-1000x": 17.5,  # 8.62, 8.54 / 12.57
    "double_hashing-1000x": 14.5,  # 6.31, 6.09 / 10.86
    "mde-1000x": 18.0,  # 6.63, 6.15 / 13.53
    "bh-1000x": 26.0,  # 13.01, 11.58 / 9.93
    "amtl-1x": 22.0,  # 11.02, 10.79 / 13.56
}


def interleaved_medians(timed: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """The median seconds of each callable over ``rounds`` rounds, after ``warmup`` untimed calls of
    each. Rounds alternate the order (forward, then reversed), so drift lands on every side alike."""
    for fn in timed.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in timed}
    names = list(timed)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            timed[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _report(what: str, ratio: float, bound: str, medians: dict[str, float]) -> None:
    """Print the measured ratio beside its bound (``make bench-check`` shows it: the figure to
    compare with the one written beside the threshold)."""
    ms = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in medians.items())
    print(f"\nratio guard: {what} = {ratio:.2f} (must be {bound}; medians {ms})")


def test_sparse_update_beats_dense_at_4m_rows():
    """SparseAdam's step on a 4M-row table is at least ``SPARSE_OVER_DENSE_MIN`` times faster than
    dense Adam's (``test_throughput.table_update_step``: the benchmark's own step)."""
    torch.set_num_threads(2)
    med = interleaved_medians({"adam": table_update_step("adam"), "sparse_adam": table_update_step("sparse_adam")},
                              rounds=5)
    ratio = med["adam"] / med["sparse_adam"]
    _report("dense Adam / SparseAdam step time, 4M rows", ratio, f">= {SPARSE_OVER_DENSE_MIN}", med)
    assert ratio >= SPARSE_OVER_DENSE_MIN, med


def test_columnar_loader_beats_row_loader(bench_data):
    """The columnar loader (``PreparedDataset.batches``) yields a batch of 512 at least
    ``COLUMNAR_OVER_ROWS_MIN`` times faster than the per-row Dataset with the default collate (the
    ladder's rung 0 and rung 1 loaders, ``ladder.epoch_batches``, at the ladder's base batch)."""
    batches = 20
    rows = RowDataset(next(bench_data.batches("train", bench_data.num_rows("train"))))
    loaders = {"rows": Rung("rows", loader="rows"), "columnar": Rung("columnar", loader="columnar")}
    epochs = itertools.count()

    def drain(rung: Rung) -> Callable[[], None]:
        def run() -> None:  # a fresh epoch each round: its shuffle is part of the loader's cost
            for _ in itertools.islice(epoch_batches(bench_data, rung, rows, 0, next(epochs)), batches):
                pass

        return run

    med = interleaved_medians({name: drain(rung) for name, rung in loaders.items()}, rounds=7)
    ratio = med["rows"] / med["columnar"]
    _report(f"per-row / columnar loader time, {batches} batches of {BASE_BATCH}", ratio, f">= {COLUMNAR_OVER_ROWS_MIN}", med)
    assert ratio >= COLUMNAR_OVER_ROWS_MIN, med


COMPRESSED = [(name, extra) for name, extra in CASES if name != "full"]
COMPRESSED_IDS = [f"{n}-{e.get('compression', 1)}x" for n, e in COMPRESSED]


@pytest.fixture(scope="module")
def lookup_medians() -> dict[str, float]:
    """Median forward+backward seconds of the full table and of every compressed scheme
    (``test_embedding_lookup.lookup_step``), all interleaved in one measurement: every ratio
    shares the full table's median, taken over the same rounds as its own."""
    torch.set_num_threads(2)
    inputs = make_lookup_inputs()
    steps = {"full": lookup_step("full", {}, inputs)[0]}
    steps.update({key: lookup_step(name, extra, inputs)[0] for key, (name, extra) in zip(COMPRESSED_IDS, COMPRESSED)})
    return interleaved_medians(steps, rounds=15)


@pytest.mark.parametrize("key", COMPRESSED_IDS)
def test_compressed_lookup_within_factor_of_full(lookup_medians, key):
    """Each compressed scheme's lookup costs at most its ``LOOKUP_OVER_FULL_MAX`` times the full
    table's."""
    ratio = lookup_medians[key] / lookup_medians["full"]
    _report(f"{key} / full lookup time", ratio, f"<= {LOOKUP_OVER_FULL_MAX[key]}",
            {"full": lookup_medians["full"], key: lookup_medians[key]})
    assert ratio <= LOOKUP_OVER_FULL_MAX[key]


def compiled_forward(model: torch.nn.Module) -> Callable:
    """What ``ladder.run_rung`` compiles for a compiled rung: the model with its embedding lookups left
    eager (inductor cannot hold a sparse gradient's storage). Written here rather than shared with the
    ladder: editing ladder.py would stale its committed measurements (their identity holds the module
    whole); move it there in the next number-changing batch."""
    for layer in embedding_layers(model):
        layer.forward = torch.compiler.disable(layer.forward)
    return torch.compile(model)


def test_compiled_step_no_slower_than_eager(bench_data):
    """The ladder's compiled step (rung 4: batch 4096, CowClip, sparse rows; ``ladder.run_rung``)
    takes at most ``COMPILED_OVER_EAGER_MAX`` times the eager step's time, for DeepFM on the same
    batches (compile time excluded: the warm-up steps compile)."""
    torch.set_num_threads(2)
    cfg = LadderConfig()
    rung = Rung("compiled", batch_size=cfg.large_batch, scaling="cowclip", l2_scaled=False, compiled=True)
    batches = list(itertools.islice(epoch_batches(bench_data, rung, None, 0, 0), 4))
    l2 = embedding_l2(rung, cfg.embedding_l2)

    def steps(compiled: bool) -> Callable[[], None]:
        model = build_model(bench_data, cfg, "deepfm", rung)
        opts = make_optimizers(model, rung, cfg)
        layers = embedding_layers(model)
        forward = compiled_forward(model) if compiled else model
        model.train()

        def run() -> None:  # the ladder's step (run_rung), less its clocks
            for batch in batches:
                for layer in layers:
                    layer.forget()
                loss = model.loss(batch, forward(batch)) + l2 * model.embedding_penalty()
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for layer in layers:
                    layer.forget()
                cowclip_(model)
                for opt in opts:
                    opt.step()

        return run

    med = interleaved_medians({"eager": steps(False), "compiled": steps(True)}, rounds=15, warmup=2)
    ratio = med["compiled"] / med["eager"]
    _report(f"compiled / eager DeepFM step time, batch {cfg.large_batch}", ratio, f"<= {COMPILED_OVER_EAGER_MAX}", med)
    assert ratio <= COMPILED_OVER_EAGER_MAX, med
