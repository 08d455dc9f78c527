"""Where the preparation's time goes: ``repro.data.prepare.prepare()`` timed by phase, with the
process's CPU time, and the cost of ordering each field's vocabulary.

    .venv/bin/python benchmarks/prepare_phases.py --criteo-rows 1000000 [--repeats 3]
    .venv/bin/python benchmarks/prepare_phases.py --peers-export .peers/data/world-highcard

The input is a generated Criteo-format file (``datasets/criteo.py``'s sample writer, the ``criteo``
source at min_count 10, as ``benchmarks/prepare_criteo.py``) or a folder that ``make peers``
exported (read as ``peers/run_adrepro.py`` reads it: the preprocessing that results/peers*.md
times). Each repeat prepares into a fresh cache in this one process, so the first repeat carries
the process's warm-up (memory-pool growth, the first calls into pyarrow) as a ``make peers`` run
does, and the later ones do not.

Phases (the preparation's own private functions, wrapped by timers; the script stops with an
error naming the function if one has been renamed): pass 1 (read the raw input, dictionary-encode
and count the training values, spool), the vocabulary fit (merge the counts, order by descending
count then value), the lookups (hash index per field), pass 2 (encode the spool, write parquet)
and the rest (digests, feature map). *CPU / wall* is the process's user + system time over the
wall time: 2.0 would be both cores busy throughout.

``--vocabulary`` also times, per field with at least ``--min-distinct`` (10,000) distinct training values, the
merge of its counts and two ways to order them that give the same order: the preparation's
``pc.rank`` of the values + ``np.lexsort`` with the negated counts, and one ``pc.sort_indices``
over (count descending, value ascending).

Measured 2026-12-07 on this 2-core AMD EPYC, ``--peers-export .peers/data/<name> --vocabulary``
(three repeats, two on highcard; the range over repeats, seconds):

| export | rows | total | pass 1 | fit | lookups | pass 2 | CPU / wall | rows/s |
|---|---|---|---|---|---|---|---|---|
| world-default | 1.5M | 1.93-2.34 | 1.16-1.47 | 0.05-0.07 | 0.01-0.02 | 0.65-0.95 | 1.21-1.28 | 640-778k |
| criteo-rows1000000 | 1.0M | 3.22-3.95 | 1.53-2.13 | 0.29-0.35 | 0.02-0.04 | 1.28-1.35 | 1.46-1.49 | 253-311k |
| world-highcard | 3.5M | 23.2-25.3 | 5.4-6.6 | 8.8-11.0 | 3.1-3.8 | 4.4-4.8 | 1.28 | 139-151k |

On the highcard export the fit is the biggest phase: its seven fields of 0.5-2.7M distinct
string values take 3.4 s to merge and 6.2 s to order by ``pc.rank`` + ``np.lexsort``; one
``pc.sort_indices`` gives the same order in 10.1 s (slower on every large field). Against
FuxiCTR's rates in results/peers*.md (43k, 20k and 19k rows/s), 20x would need 1.7 s, 2.5 s and
9.0 s: the highcard preparation's pass 1 and pass 2 alone take 10-11 s.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # peers/ and repro/ from a checkout, however the script is started

PHASES = {  # private function of repro.data.prepare -> the phase it is
    "_read_and_count": "pass 1",
    "_fit_vocabularies": "fit",
    "_encode_splits": "pass 2",
}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(clock: collections.Counter, phase: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[phase] += time.perf_counter() - started
    return wrapper


def instrument(prepare_module: Any, clock: collections.Counter) -> None:
    """Wrap the preparation's phases with timers adding into ``clock``."""
    for name, phase in PHASES.items():
        if not hasattr(prepare_module, name):
            raise SystemExit(f"repro.data.prepare has no {name}() any more: update PHASES in {__file__}")
        setattr(prepare_module, name, _timed(clock, phase, getattr(prepare_module, name)))
    lookup = prepare_module.VocabLookup
    lookup.__init__ = _timed(clock, "lookups", lookup.__init__)


def vocabulary_costs(prepare_module: Any, counted: dict, min_distinct: int) -> list[str]:
    """Per field of at least ``min_distinct`` values: merge, and the two equivalent orderings, in
    seconds (markdown rows)."""
    import numpy as np
    import pyarrow.compute as pc

    rows = []
    for name, parts in counted.items():
        started = time.perf_counter()
        table = prepare_module._merge_counts(parts)
        merged = time.perf_counter()
        if table.num_rows < min_distinct:
            continue
        values, n = table.column("value").combine_chunks(), table.column("count").to_numpy()
        lexsorted = np.lexsort((np.asarray(pc.rank(values, sort_keys="ascending")), -n))
        ranked = time.perf_counter()
        sorted_ = pc.sort_indices(table, sort_keys=[("count", "descending"), ("value", "ascending")])
        done = time.perf_counter()
        same = bool(np.array_equal(lexsorted, np.asarray(sorted_)))
        rows.append(f"| {name} | {table.num_rows:,} | {values.type} | {merged - started:.2f} | {ranked - merged:.2f} | "
                    f"{done - ranked:.2f} | {'yes' if same else 'NO'} |")
    return rows


def open_input(args: argparse.Namespace, folder: Path) -> tuple[Callable[[], Any], int]:
    """(a function making the source anew, min_count)."""
    from repro.registry import SOURCES

    if args.peers_export:
        from peers.common import load_meta, run_settings
        from peers.run_adrepro import export_source

        meta = load_meta(args.peers_export)
        return (lambda: export_source(args.peers_export, meta)), run_settings(meta, 0)["min_count"]
    criteo = sys.modules["adrepro_datasets.criteo"]
    criteo.write_criteo_sample(folder / "train.txt", args.criteo_rows, seed=0)
    config = SOURCES.config("criteo", {"data_dir": str(folder)})
    return (lambda: SOURCES.get("criteo").factory(config)), 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--criteo-rows", type=int, help="generate a Criteo-format file of this many lines")
    what.add_argument("--peers-export", help="a folder make peers exported (.peers/data/<name>)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocabulary", action="store_true", help="also time ordering each large field's vocabulary")
    parser.add_argument("--min-distinct", type=int, default=10_000, help="with --vocabulary: the fields this large")
    args = parser.parse_args()

    import repro.data.prepare as prepare_module
    from repro.registry import load_plugins

    load_plugins()
    clock: collections.Counter = collections.Counter()
    instrument(prepare_module, clock)
    counted_of_last: dict = {}
    if args.vocabulary:  # keep the last repeat's counts (before the fit consumes them)
        fit = prepare_module._fit_vocabularies

        def keep_counts(counted: dict, *rest: Any) -> Any:
            counted_of_last.clear()
            counted_of_last.update(counted)
            return fit(counted, *rest)
        prepare_module._fit_vocabularies = keep_counts

    folder = Path(tempfile.mkdtemp(prefix="prepare_phases-"))
    try:
        make_source, min_count = open_input(args, folder)
        print("| repeat | rows | total s | pass 1 | fit | lookups | pass 2 | rest | CPU / wall | rows/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for repeat in range(1, args.repeats + 1):
            clock.clear()
            cache = folder / f"cache{repeat}"
            cpu, started = _cpu_seconds(), time.perf_counter()
            root = prepare_module.prepare(make_source(), prepare_module.PrepareConfig(
                min_count=min_count, cache_root=str(cache)), verbose=False)
            wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
            rows = sum(json.loads((root / "provenance.json").read_text())["rows"].values())
            phases = [clock[p] for p in ("pass 1", "fit", "lookups", "pass 2")]
            print(f"| {repeat} | {rows:,} | {wall:.2f} | " + " | ".join(f"{s:.2f}" for s in phases) +
                  f" | {wall - sum(phases):.2f} | {cpu / wall:.2f} | {rows / wall:,.0f} |", flush=True)
            shutil.rmtree(cache)
        if args.vocabulary:
            print("\n| field | distinct | type | merge s | rank + lexsort s | sort_indices s | same order |")
            print("|---|---|---|---|---|---|---|")
            print("\n".join(vocabulary_costs(prepare_module, counted_of_last, args.min_distinct))
                  or "| (no field that large) |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
