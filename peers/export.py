"""Write the simulated world's train/valid/test rows as CSV files with their RAW categorical values.

adrepro's cache (``repro.data.prepare``) stores each categorical field encoded through the training
vocabulary (plus a 63-bit hash of the raw value, ``<field>__raw``), never the raw value itself, and
the encoding is preprocessing, which each library must do on its own (and is timed doing). So the
rows come from the world source itself: ``source.chunks(split)`` yields exactly the raw chunks that
``prepare`` encodes, in the same order (the world is a pure function of its config and seed; it
has no malformed rows and no invalid labels to reject). ``tests/test_peers.py`` checks, on the
smoke world, that every exported row's label and every raw value (through its hash) equal the
prepared cache's, row for row.

What is exported: the label (``click``, 0/1) and every categorical field of the world (user,
query, context, ad, creative and position ids) as integers. Left out: the dense ``log_bid`` and the
8-dim ``content`` vector (each library scales and embeds dense inputs its own way, which would
confound the comparison; adrepro gets the same categorical-only subset through its ``tabular``
source), the request/user keys (grouping keys, not features) and the ``test_random`` split. The
test rows' true click probabilities go to ``test_p_click.npy`` beside the files, for the report's
Bayes-optimal reference row only; no runner reads it.

CSV, not parquet: the format FuxiCTR's pipeline starts from (``data_format: csv``), and plain text
puts every library's parsing inside its measured preprocessing.

    python -m peers.export --scale default --seed 0 --out .peers/data/world-default

``--criteo-rows N`` exports Criteo-format data instead (``export_criteo``): a generated Kaggle
``train.txt`` of N lines (``datasets.criteo.write_criteo_sample``: the real layout, learnable
labels, Zipf-like hashes, missing values), split 8:1:1 by adrepro's x4 line hash, each split
written in reczoo's Criteo_x4 layout (comma-separated, header ``Label,I1..I13,C1..C26``, a missing
value an empty field): the files FuxiCTR's own Criteo_x4 config reads, and adrepro's ``criteo``
source with ``split: files``. Each library then applies its own Criteo preprocessing (integers
bucketed by floor(ln(x)^2), missing integers filled with 0 as FuxiCTR's ``fill_na: 0``).

    python -m peers.export --criteo-rows 1000000 --out .peers/data/criteo-rows1000000

``--variant highcard`` exports a named variant of the world instead (``VARIANTS``): world keys over
a scale plus the ``min_count`` every library then uses (written into ``meta.json``; the runners
read it there). ``highcard`` is issue 9's high-cardinality comparison: more than 10 million
embedding rows, where FuxiCTR's dense Adam touches every row at every step.

    python -m peers.export --variant highcard --out .peers/data/world-highcard
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from peers.common import META, SPLITS, TRUTH, csv_path
from repro.registry import SOURCES, load_plugins

TRUTH_COLUMN = "p_click"  # the world's true click probability of each test row (never given to a model)


# Named variants of the world for the peers comparison: ``scale`` and world keys (validated by the
# world's own config, so a misspelt key is an error), and the vocabulary ``min_count`` the export
# asks of every library.
#
# ``highcard``: the fewest training rows that still give >= 10M embedding rows, so that FuxiCTR's
# one epoch of dense Adam (1.2 s a step at this size, measured) stays near a quarter of an hour.
# Every shown row should bring new ids: pools far larger than the draws (10M users, 5M queries, 10M
# ads with 8 creatives each, 10M campaigns, 5M shops, 2M brands), flat popularity (zipf 0.3) and
# min_count 1, so every training value gets its own row. 700k requests = 2.8M training rows and
# 10,619,697 embedding rows (counted on a probe before the first run; 8.0M with zipf 0.5 and
# smaller shop/brand pools at 2.4M rows). Flatter and smaller than
# ``conf/experiment/hpc_ladder_large.yaml``'s world (12M training rows, whose FuxiCTR epoch would
# take about 70 minutes); most of its ids are seen once, so models learn less of it (test AUC
# 0.768 against the world's Bayes-optimal 0.848). Generating its 10M-entity pools takes ~4.5 min
# and ~9 GB at peak (the query-category x brand and segment x shop cross tables are dense).
VARIANTS: dict[str, dict] = {
    "highcard": {
        "scale": "large",
        "min_count": 1,
        "world": {"requests": 700_000, "random_requests": 0, "users": 10_000_000, "queries": 5_000_000,
                  "ads": 10_000_000, "creatives_per_ad": 8, "campaigns": 10_000_000, "shops": 5_000_000,
                  "brands": 2_000_000, "zipf": 0.3},
    },
}


def variant_source(name: str, seed: int = 0):
    """The world of a named variant (``VARIANTS``); an unknown name is an error naming the known ones."""
    if name not in VARIANTS:
        raise SystemExit(f"export: unknown variant {name!r}; known: {', '.join(sorted(VARIANTS))}")
    v = VARIANTS[name]
    return world_source(v["scale"], seed, **v["world"])


def world_source(scale: str = "default", seed: int = 0, **overrides):
    """The simulated world exactly as adrepro's ``data=world`` builds it (conf/data/world.yaml)."""
    load_plugins()
    return SOURCES.get("world").factory(SOURCES.config("world", {"scale": scale, "seed": seed, **overrides}))


def exported_fields(source) -> list[str]:
    """The fields every library gets: the source's categorical fields, in its order."""
    return [f.name for f in source.fields() if f.kind == "categorical"]


@contextlib.contextmanager
def built_aside(out: Path) -> Iterator[Path]:
    """A temporary sibling folder of ``out`` to build an export in: renamed onto ``out`` when the
    block ends, removed when it raises (Ctrl-C included), so ``out`` is either whole or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def export(source, out: str | Path, max_train_rows: int | None = None, verbose: bool = True,
           min_count: int | None = None, variant: str | None = None) -> dict:
    """Write ``<out>/{train,valid,test}.csv``, ``<out>/test_p_click.npy`` and ``<out>/meta.json`` (last, so a folder with a
    meta.json is complete); returns the meta. Built in a temporary sibling and renamed. ``min_count``
    (None: the shared setting) is the vocabulary threshold the runners read from the meta."""
    out = Path(out)
    started = time.perf_counter()
    fields = exported_fields(source)
    label = source.label
    columns = [label, *fields]
    with built_aside(out) as tmp:
        rows, positives = {}, {}
        for split in SPLITS:
            cap = max_train_rows if split == "train" else None
            truth = tmp / TRUTH if split == "test" else None
            rows[split], positives[split] = _write_split(source, split, columns, csv_path(tmp, split), cap, truth)
            if verbose:
                print(f"export: {split}: {rows[split]:,} rows, {positives[split]:,} clicks", file=sys.stderr)
        meta = {
            "source": source.name,
            "source_config": source.describe(),
            "source_fingerprint": source.fingerprint(),
            "label": label,
            "fields": fields,
            "splits": list(SPLITS),
            "rows": rows,
            "positives": positives,
            "max_train_rows": max_train_rows,
            "variant": variant,
            "min_count": min_count,
            "format": "csv (comma, header, integers)",
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _write_split(source, split: str, columns: list[str], path: Path, cap: int | None,
                 truth_path: Path | None = None) -> tuple[int, int]:
    n = clicks = 0
    writer = None
    truth = []
    try:
        for chunk in source.chunks(split):
            if cap is not None and n + chunk.num_rows > cap:
                chunk = chunk.slice(0, cap - n)
            table = pa.table({c: chunk.column(c).cast(pa.int64()) for c in columns})
            writer = writer or pacsv.CSVWriter(path, table.schema,
                                               write_options=pacsv.WriteOptions(quoting_style="none"))
            writer.write_table(table)
            if truth_path is not None:
                truth.append(chunk.column(TRUTH_COLUMN).to_numpy())
            n += table.num_rows
            clicks += pc.sum(table.column(columns[0])).as_py() or 0
            if cap is not None and n >= cap:
                break
    finally:
        if writer is not None:
            writer.close()
    if truth_path is not None:
        np.save(truth_path, np.concatenate(truth).astype(np.float64))
    return n, clicks


CRITEO_LABEL = "Label"  # reczoo's Criteo_x4 header (adrepro's reader takes any case)


def export_criteo(rows: int, out: str | Path, seed: int = 0, verbose: bool = True) -> dict:
    """Generate a Criteo-format ``train.txt`` of ``rows`` lines in ``<out>`` and write its x4 split
    as reczoo-layout ``{train,valid,test}.csv`` beside it, then ``meta.json`` (last); built in a
    temporary sibling and renamed, like ``export``."""
    from repro.data.rawfiles import ratio_split

    load_plugins()
    criteo = sys.modules["adrepro_datasets.criteo"]  # datasets/ is loaded by path, never imported
    CATS, INTS, SPLIT_RATIOS, write_criteo_sample = (criteo.CATS, criteo.INTS, criteo.SPLIT_RATIOS,
                                                     criteo.write_criteo_sample)

    out = Path(out)
    started = time.perf_counter()
    names = [CRITEO_LABEL, *INTS, *CATS]
    with built_aside(out) as tmp:
        raw = tmp / "train.txt"
        write_criteo_sample(raw, rows, seed=seed)
        generated_s = time.perf_counter() - started
        types = {CRITEO_LABEL: pa.int64(), **{c: pa.int64() for c in INTS}, **{c: pa.string() for c in CATS}}
        reader = pacsv.open_csv(raw, read_options=pacsv.ReadOptions(column_names=names, block_size=64 << 20),
                                parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
        writers, counts, clicks, line = {}, dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0), 0
        with contextlib.ExitStack() as stack:
            for batch in reader:
                table = pa.Table.from_batches([batch])
                split_of = ratio_split(np.arange(line + 1, line + 1 + table.num_rows), seed, SPLIT_RATIOS["x4"])
                line += table.num_rows
                for k, split in enumerate(SPLITS):
                    part = table.filter(pa.array(split_of == k))
                    if split not in writers:  # reczoo's header is bare (pyarrow would quote it)
                        handle = stack.enter_context(open(csv_path(tmp, split), "wb"))
                        handle.write((",".join(names) + "\n").encode())
                        writers[split] = pacsv.CSVWriter(handle, part.schema, write_options=pacsv.WriteOptions(
                            include_header=False, quoting_style="none"))
                    writers[split].write_table(part)
                    counts[split] += part.num_rows
                    clicks[split] += pc.sum(part.column(CRITEO_LABEL)).as_py() or 0
            for w in writers.values():
                w.close()
        if verbose:
            print(f"export: criteo: {rows:,} generated lines -> " + ", ".join(f"{s} {counts[s]:,}" for s in SPLITS),
                  file=sys.stderr)
        meta = {
            "source": "criteo",
            "source_config": {"generator": "datasets.criteo.write_criteo_sample", "rows": rows, "seed": seed,
                              "split": "x4-like 8:1:1 by adrepro's seeded hash of the line number (seed "
                                       f"{seed})"},
            "source_fingerprint": f"criteo-sample-rows{rows}-seed{seed}",
            "label": CRITEO_LABEL,
            "fields": [*INTS, *CATS],
            "integer_fields": list(INTS),
            "splits": list(SPLITS),
            "rows": counts,
            "positives": clicks,
            "max_train_rows": None,
            "format": "csv (comma, header, reczoo's Criteo_x4 layout; empty = missing)",
            "raw_file": "train.txt",
            "generate_seconds": round(generated_s, 2),
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="default", help="the world's scale: smoke | default | large")
    ap.add_argument("--seed", type=int, default=0, help="the world's seed")
    ap.add_argument("--max-train-rows", type=int, default=0, help="keep only the first N training rows (0: all)")
    ap.add_argument("--variant", default="", help=f"a named variant of the world instead of --scale: "
                    f"{' | '.join(VARIANTS)}")
    ap.add_argument("--criteo-rows", type=int, default=0,
                    help="export a generated Criteo-format file of N lines instead of the world (0: the world)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.criteo_rows:
        meta = export_criteo(args.criteo_rows, args.out, args.seed)
        print(f"export: {meta['rows']} rows of {len(meta['fields'])} fields in {meta['seconds']} s -> {args.out}",
              file=sys.stderr)
        return
    if args.variant:
        source = variant_source(args.variant, args.seed)
        meta = export(source, args.out, args.max_train_rows or None, min_count=VARIANTS[args.variant]["min_count"],
                      variant=args.variant)
    else:
        meta = export(world_source(args.scale, args.seed), args.out, args.max_train_rows or None)
    print(f"export: {meta['rows']} rows of {len(meta['fields'])} fields in {meta['seconds']} s -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
