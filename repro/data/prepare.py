"""Raw chunks -> the columnar cache (the data contract).

Two streaming passes, so no split is ever held in memory whole:
1. over the raw input, once: every split is read (a source whose splits come from one file, as
   Criteo's x4 split, offers ``split_chunks()`` so that one read of the file serves all of them),
   rows with a bad label are dropped, each chunk's categorical columns are dictionary-encoded, the
   training split's values are counted from those dictionaries, and the chunk is spooled to disk
   as an Arrow IPC file (4 bytes per categorical value plus each chunk's distinct values: 186 bytes
   a row on generated Criteo rows, so some 8.5 GB of disk for the full 45.8M rows, deleted as
   pass 2 consumes it);
2. over the spool: encode through the training vocabulary and write parquet row groups.

Speed (issue 10): pass 2 reads the spool at memory speed instead of parsing the raw text again;
the next chunk is read in a background thread while this one is counted or encoded, and parquet
is written in another (pyarrow releases the GIL, so both cores work); categorical fields are
encoded two at a time; each field's vocabulary lookup is built once, as a hash index of the
vocabulary's raw-value hashes, with every hit confirmed value by value (so a hash collision can
never mis-encode a value), instead of a hash table rebuilt for every chunk (``pc.index_in``: 0.23 s
per call against a 1M-value vocabulary, whatever the chunk's size); value counts are merged as
they grow, so pass 1 holds about one table of each field's distinct values, not one per chunk.
Measured with ``python benchmarks/prepare_criteo.py --rows 10000000``: see its docstring.

Raw-value identity: beside each categorical column ``<field>`` the cache holds ``<field>__raw``, a
stable 63-bit hash of the raw value (0 for missing), so a method that hashes values (the hashing
trick, BH) gives distinct values distinct ids even when the vocabulary maps them all to OOV, as a
production system without a vocabulary would. Integers go through the SplitMix64 finaliser (a
bijection on 64 bits, so distinct integers collide only through the dropped top bit); anything
else is hashed as its UTF-8 text: up to 32 bytes (every categorical value of the public sets) by
chaining the finaliser over the length and four little-endian 8-byte words of the zero-padded
text, vectorised in numpy; longer texts by BLAKE2b-64, value by value. All of it is independent of
the machine and of Python's hash seed. The loader reads these columns only for a model that asks (``PreparedDataset.raw_ids``).

Encoding follows FuxiCTR's tokenizer semantics: index 0 = padding/missing, values seen at least
``min_count`` times in *train* get 1..n ordered by descending training frequency (so an index is
also an in-field frequency rank, which AMTL-style methods use), everything else maps to the
per-field OOV index n+1. Frequencies are counted on the training split only.

Every split the source declares (``splits``, default train/valid/test) is encoded; vocabularies
and frequencies still come from train alone.

Cache layout (``<cache_root>/<source>-<key>/``): ``<split>.parquet`` per split,
``truth/<split>.parquet`` (ground truth, never read by the loader), ``feature_map.json``,
``frequencies.npz``, ``provenance.json``, ``rejects.json`` when rows were rejected (per split: the
counts and the first 1,000 malformed line numbers) and a ``DONE`` marker written last. The folder is built
under a temporary name and renamed, so a killed preparation leaves nothing that looks finished.

Cache key (``cache_key``, the folder's ``<key>``): the source's fingerprint, ``min_count``,
``PREPARE_VERSION`` and the preparation code's normalised digest (``prepare_code_digest``: the
files of ``PREPARE_CODE`` and the source's own file, each by ``code_digest``, which drops comments,
docstrings and formatting), so a comment or docstring edit of the preparation reuses every cache,
and any other edit builds new ones. A run's identity is not the key but the content of the cache
the key builds (``repro.data.ledger``): a refactor that builds byte-identical caches stales no run.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import json
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repro.data.featuremap import FeatureMap, FieldSpec
from repro.data.source import RawField, Source, source_splits, truth_columns, unlabelled_splits
from repro.errors import DataError
from repro.identity import normalised_file_digest
from repro.io import atomic_write_json, file_digest, stable_hash
from repro.progress import progress
from repro.registry import ROOT

T = TypeVar("T")

PREPARE_VERSION = 4  # bump when the encoding or layout below changes: invalidates every cache
# 2: every split the source declares (the world's test_random); provenance["splits"] lists them.
# 3: a raw-value hash column per categorical field (``raw_column``), for methods that hash values.
# 4: text values up to 32 bytes hashed by the vectorised word chain, not BLAKE2b (integers, hence
#    the world's every column, hash as before).
RESERVED_COLUMNS = ("label", "weight")
PREFETCH_CHUNKS = 2  # raw chunks parsed ahead of the one being encoded (each a few hundred MB at most)
MERGE_COUNTS_AT = 1 << 21  # pass 1 merges a field's per-chunk value counts past this many entries
REJECTS_FILE = "rejects.json"  # per split: rejected counts and the first REJECTS_KEPT malformed line numbers
REJECTS_KEPT = 1_000
FIELD_THREADS = 2  # fields counted or encoded at once (pyarrow and numpy release the GIL): ~1.8x on 2 cores
# The preparation's code, besides the source's own file: what decides a cache's bytes.
PREPARE_CODE = ("repro/data/prepare.py", "repro/data/rawfiles.py", "repro/data/source.py", "repro/data/featuremap.py")


@dataclass(frozen=True)
class PrepareConfig:
    min_count: int = 1
    cache_root: str = "cache"


def cache_key(source: Source, cfg: PrepareConfig) -> str:
    """The key of the cache ``prepare(source, cfg)`` builds (see the module docstring)."""
    return stable_hash({"source": source.fingerprint(), "min_count": cfg.min_count, "v": PREPARE_VERSION,
                        "code": prepare_code_digest(source)})


def prepare_code_digest(source: Source) -> str:
    """The normalised digest of the preparation code: ``PREPARE_CODE`` and the file that defines
    ``source``'s class (``datasets/<name>.py``, or a plug-in's module), each named by its path in
    the project (its file name outside it), so the digest is the same in every clone."""
    try:
        own = inspect.getsourcefile(type(source))
    except TypeError:  # a class without a source file (built in, or made at run time): nothing to digest
        own = None
    named = {}
    for path in [ROOT / rel for rel in PREPARE_CODE] + ([Path(own)] if own else []):
        path = path.resolve()
        named[path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name] = code_digest(path)
    return stable_hash(named, 16)


def code_digest(path: str | Path) -> str:
    """The normalised digest of a Python file (``normalised_digest`` of its bytes)."""
    return normalised_digest(Path(path).read_bytes(), str(path))


@lru_cache(maxsize=256)
def normalised_digest(code: bytes, name: str = "<code>") -> str:
    """The normalised digest of Python source ``code``: its token stream with comments, docstrings
    and formatting dropped (``repro.identity.normalised_file_digest``, the code identity's own
    rule), so an edit that changes only those digests the same; ``name`` only names the code in an
    error.

    Cached by the bytes themselves: the plan asks for every run's key, and an edited file is
    never served an old digest."""
    return normalised_file_digest(name, code)


def prepare(source: Source, cfg: PrepareConfig, verbose: bool = True) -> Path:
    """Build (or find) the prepared cache of ``source``; returns its folder."""
    key = cache_key(source, cfg)
    root = Path(cfg.cache_root) / f"{source.name}-{key}"
    if (root / "DONE").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary folder: two processes preparing the same data never share one.
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=root.parent))
    (tmp / "truth").mkdir()
    try:
        _build(source, cfg, tmp, verbose, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (root / "DONE").exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _build(source: Source, cfg: PrepareConfig, tmp: Path, verbose: bool, key: str) -> None:
    started = time.time()

    fields = source.fields()
    _check_column_names(source, fields)
    cats = [f for f in fields if f.kind == "categorical"]
    splits = source_splits(source)
    counted, missing, dropped, spooled = _read_and_count(source, splits, cats, tmp / "spool", verbose)
    vocabs, train_counts = _fit_vocabularies(counted, missing, cfg.min_count)
    del counted
    lookups = {f.name: VocabLookup(vocabs[f.name]) for f in cats}
    rows, rejected = _encode_splits(source, splits, fields, lookups, spooled, dropped, tmp, verbose)
    shutil.rmtree(tmp / "spool")
    if rows["train"] == 0:
        raise DataError(f"{source.name}: the training split is empty after rejecting bad rows")

    fmap = FeatureMap(
        dataset=source.name,
        fields=[_field_spec(f, vocabs) for f in fields],
        label="label",
        weight="weight" if source.weight else None,
        extra={"raw_ids": True},
    )
    (tmp / "feature_map.json").write_text(json.dumps(fmap.to_dict(), indent=2) + "\n")
    np.savez(tmp / "frequencies.npz", **_frequencies(cats, vocabs, train_counts))
    digests = {p.name: file_digest(p) for p in sorted(tmp.glob("*.parquet"))}
    provenance = {
        "source": source.name,
        "source_fingerprint": source.fingerprint(),
        "source_config": source.describe(),
        "prepare": {"min_count": cfg.min_count, "version": PREPARE_VERSION},
        # The code's identity, for the record: repro.data.ledger's content digest leaves it out.
        "cache_key": key,
        "prepare_code": prepare_code_digest(source),
        "split_protocol": source.split_protocol,
        "splits": list(splits),  # in the source's order (the JSON file sorts the keys of "rows")
        "unlabelled_splits": list(unlabelled_splits(source)),
        "rows": rows,
        "rejected_rows": rejected,
        "file_sha256": digests,
        "fingerprint": stable_hash(digests, 16),
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_json(tmp / "provenance.json", provenance)
    (tmp / "DONE").write_text("ok\n")


def _check_column_names(source: Source, fields: list[RawField]) -> None:
    """Every cache column name once: a field called ``label`` or ``x__raw`` would overwrite another."""
    seen: dict[str, str] = {}
    for f in fields:
        names = _columns(f) + ([raw_column(f.name)] if f.kind == "categorical" else [])
        for name in names:
            if name in RESERVED_COLUMNS:
                raise DataError(f"{source.name}: field {f.name!r} would write the cache column {name!r}, which "
                                f"holds the label or weight; rename the field")
            if name in seen:
                raise DataError(f"{source.name}: fields {seen[name]!r} and {f.name!r} both write the cache "
                                f"column {name!r}; rename one")
            seen[name] = f.name


def prefetched(chunks: Iterator[T], depth: int = PREFETCH_CHUNKS) -> Iterator[T]:
    """``chunks``, produced by a background thread up to ``depth`` items ahead of the consumer.

    The order is kept; an exception in the producer is raised in the consumer at the point it
    happened; a consumer that stops early (an error, Ctrl-C) stops the producer after its current
    item, and the producer's generator is closed in its own thread (its ``finally`` blocks run)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                items.put((done, None))
                return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            items.put((done, e))
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prepare-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


_field_pool: ThreadPoolExecutor | None = None


def per_field(fn: Callable[[RawField], T], fields: list[RawField]) -> list[T]:
    """``[fn(f) for f in fields]``, ``FIELD_THREADS`` fields at a time (each result its field's own)."""
    global _field_pool
    if len(fields) < 2 or FIELD_THREADS < 2:
        return [fn(f) for f in fields]
    if _field_pool is None:
        _field_pool = ThreadPoolExecutor(max_workers=FIELD_THREADS, thread_name_prefix="prepare-field")
    return list(_field_pool.map(fn, fields))


def _fit_vocabularies(counted: dict[str, list[pa.Table]], missing: dict[str, int], min_count: int):
    """The training vocabulary of every field from its merged value counts."""
    vocabs, counts = {}, {}
    for name, partial in counted.items():
        table = _merge_counts(partial)
        values = table.column("value").combine_chunks()
        n = table.column("count").to_numpy()
        # Descending frequency, ties broken by value, so the encoding is deterministic.
        order = np.lexsort((np.asarray(pc.rank(values, sort_keys="ascending")), -n))
        values, n = values.take(pa.array(order)), n[order]
        keep = n >= min_count
        vocabs[name] = values.filter(pa.array(keep))
        counts[name] = (n[keep], int(n[~keep].sum()), missing[name])
    return vocabs, counts


def _merge_counts(partial: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(partial).group_by("value").aggregate([("count", "sum")])
    return table.rename_columns(["value", "count"])


def _read_and_count(source: Source, splits: tuple[str, ...], cats: list[RawField], spool: Path,
                    verbose: bool) -> tuple[dict, dict, dict[str, int], list[tuple[str, Path, int]]]:
    """Pass 1: read every split once; count the training split's values; spool every chunk.

    Each chunk's categorical columns are dictionary-encoded here (the work that counting needs
    anyway: counts are a bincount of the indices) and the chunk is written to ``spool`` as an Arrow
    IPC file, so pass 2 reads it back at memory speed instead of parsing the raw input again.
    Returns (per field: value-count tables and missing count), rows dropped for their label per
    split, and the spooled files in order (split, path, rows)."""
    counted: dict[str, list[pa.Table]] = {f.name: [] for f in cats}
    pending = {f.name: 0 for f in cats}
    missing = {f.name: 0 for f in cats}
    dropped = dict.fromkeys(splits, 0)
    spooled: list[tuple[str, Path, int]] = []
    expected = [source.expected_rows(s) for s in splits]
    total = sum(expected) if all(e is not None for e in expected) else None
    unlabelled = unlabelled_splits(source)
    spool.mkdir()
    with progress(total, f"{source.name}: reading {', '.join(splits)}", verbose) as bar:
        for split, chunk in prefetched(_split_chunks(source, splits)):
            if split not in dropped:
                raise DataError(f"{source.name}: yielded rows of split {split!r}, which it does not declare")
            chunk, d = _valid_rows(chunk, source.label, split, unlabelled=split in unlabelled)
            dropped[split] += d
            encoded = per_field(lambda f: _dictionary(chunk.column(f.name)), cats)
            for f, column in zip(cats, encoded):
                chunk = chunk.set_column(chunk.schema.get_field_index(f.name), f.name, column)
                if split != "train":
                    continue
                indices = column.indices
                missing[f.name] += indices.null_count
                n = np.bincount(np.asarray(indices.drop_null()), minlength=len(column.dictionary))
                counted[f.name].append(pa.table({"value": column.dictionary, "count": pa.array(n, pa.int64())}))
                pending[f.name] += len(n)
                # Merged as they grow: the list stays near one table of the field's distinct values.
                if pending[f.name] > max(MERGE_COUNTS_AT, counted[f.name][0].num_rows):
                    counted[f.name] = [_merge_counts(counted[f.name])]
                    pending[f.name] = 0
            path = spool / f"{len(spooled):06d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, chunk.schema) as writer:
                writer.write_table(chunk)
            spooled.append((split, path, chunk.num_rows))
            bar.update(chunk.num_rows)
    return counted, missing, dropped, spooled


def _dictionary(column: pa.ChunkedArray | pa.Array) -> pa.DictionaryArray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)


def _spooled_chunks(spooled: list[tuple[str, Path, int]]) -> Iterator[tuple[str, pa.Table]]:
    """The spooled chunks in order, each file deleted once read (its pages stay mapped until used)."""
    for split, path, _ in spooled:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
        path.unlink()
        yield split, table


def _valid_rows(chunk: pa.Table, label: str, split: str, unlabelled: bool = False) -> tuple[pa.Table, int]:
    """Drop rows whose label is missing or not 0/1 (in an ``unlabelled`` split: whose label is
    present and not 0/1); return (kept, number dropped).

    Aggregated counts (KDD Cup 2012's clicks/impressions) must be expanded or weighted by their
    source into 0/1 rows first: every metric here is defined on binary labels."""
    if label not in chunk.column_names:
        raise DataError(f"{split}: raw chunk has no label column {label!r} (columns: {chunk.column_names})")
    y = chunk.column(label).cast(pa.float64())
    ok = pc.and_(pc.is_valid(y), pc.or_(pc.equal(y, 0.0), pc.equal(y, 1.0)))
    ok = pc.or_(pc.fill_null(ok, False), pc.is_null(y)) if unlabelled else pc.fill_null(ok, False)
    dropped = chunk.num_rows - pc.sum(ok.cast(pa.int64())).as_py() if chunk.num_rows else 0
    return (chunk.filter(ok) if dropped else chunk), dropped


def _split_chunks(source: Source, splits: tuple[str, ...]) -> Iterator[tuple[str, pa.Table]]:
    """(split, raw chunk) pairs: one read of the input when the source offers it, else split by split."""
    if hasattr(source, "split_chunks"):
        yield from source.split_chunks(splits)
        return
    for split in splits:
        for chunk in source.chunks(split):
            yield split, chunk


class _SplitWriter:
    """One split's parquet file (and its truth file), opened at its first chunk."""

    def __init__(self, out: Path, split: str) -> None:
        self.out, self.split = out, split
        self.data = self.truth = None
        self.rows = 0

    def write(self, table: pa.Table, truth: pa.Table | None) -> None:
        self.data = self.data or pq.ParquetWriter(self.out / f"{self.split}.parquet", table.schema)
        self.data.write_table(table)
        if truth is not None:
            self.truth = self.truth or pq.ParquetWriter(self.out / "truth" / f"{self.split}.parquet", truth.schema)
            self.truth.write_table(truth)
        self.rows += table.num_rows

    def close(self) -> None:
        for w in (self.data, self.truth):
            if w is not None:
                w.close()


def _encode_splits(source, splits, fields, lookups, spooled: list[tuple[str, Path, int]], dropped: dict[str, int],
                   out: Path, verbose: bool) -> tuple[dict, dict]:
    """Pass 2: encode every spooled chunk and append it to its split's parquet file as one row
    group; (rows, rejected) per split.

    Parquet writing runs in a thread of its own (at most ``PREFETCH_CHUNKS`` encoded chunks wait
    for it), so reading, encoding and writing overlap on the machine's cores."""
    writers = {split: _SplitWriter(out, split) for split in splits}
    pending: collections.deque[Future] = collections.deque()
    total = sum(rows for _, _, rows in spooled)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-write") as pool:
        try:
            with progress(total, f"{source.name}: encoding {', '.join(splits)}", verbose) as bar:
                for split, chunk in prefetched(_spooled_chunks(spooled)):
                    writer = writers[split]
                    columns = truth_columns(source, split)
                    truth = chunk.select(list(columns)) if columns else None
                    table = _encode_chunk(chunk, fields, lookups, source)
                    while len(pending) >= PREFETCH_CHUNKS:
                        pending.popleft().result()  # raises the writer's error here
                    pending.append(pool.submit(writer.write, table, truth))
                    bar.update(chunk.num_rows)
                while pending:
                    pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            wait(pending)
            for writer in writers.values():
                writer.close()
    rows, rejected, ledger = {}, {}, {}
    for split, writer in writers.items():
        if writer.data is None:
            raise DataError(f"{source.name}: split {split!r} yielded no chunks")
        # Rows the source itself could not parse (a CSV line with the wrong column count...).
        lines = getattr(source, "rejected", {}).get(split, ())
        rejected[split] = dropped[split] + len(lines)
        rows[split] = writer.rows
        if rejected[split]:
            ledger[split] = {"rejected": rejected[split], "missing_or_invalid_label": dropped[split],
                             "malformed_lines": len(lines), "first_malformed_line_numbers": list(lines)[:REJECTS_KEPT]}
            if verbose:
                print(f"{source.name}: {split}: rejected {rejected[split]} rows (malformed, or a missing or invalid "
                      f"label); the first line numbers are in {REJECTS_FILE} of the cache")
    if ledger:
        atomic_write_json(out / REJECTS_FILE, ledger)
    return rows, rejected


class VocabLookup:
    """A field's training vocabulary as a lookup built once: raw value -> encoded index.

    Index 0 = missing, 1..n = the vocabulary in its order, n + 1 = out of vocabulary. The
    vocabulary's raw-value hashes go into a hash index once (``pandas.Index``, whose engine is
    built on first use and kept: 4.5x ``np.searchsorted`` on a sorted 1M-value array, measured
    here); a chunk's values are hashed (the cache's raw column needs the hashes anyway), looked up,
    and every hit is confirmed by comparing the value itself, so a value whose hash collides with a
    vocabulary value's is still OOV. Should two vocabulary values share a hash, the field falls
    back to ``pc.index_in`` (slower, exact)."""

    def __init__(self, values: pa.Array) -> None:
        self.values = values
        self.oov = len(values) + 1
        self.index = pd.Index(raw_hash(values))
        self.exact = bool(self.index.is_unique)

    def encode(self, raw: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(encoded int32 indices, raw-value hashes int64) of every row of ``raw``."""
        raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
        if pa.types.is_dictionary(raw.type) or (not pa.types.is_integer(raw.type) and len(raw)):
            # Hash and look up each distinct value once, then spread by the row indices.
            encoded = raw if pa.types.is_dictionary(raw.type) else pc.dictionary_encode(raw)
            codes, hashes = self._encode_values(encoded.dictionary)
            rows = np.asarray(pc.fill_null(encoded.indices, 0))
            missing = np.asarray(pc.is_null(encoded.indices), dtype=bool)
            if len(codes):
                codes, hashes = codes[rows], hashes[rows]
            else:  # every value missing
                codes, hashes = np.zeros(len(raw), np.int32), np.zeros(len(raw), np.int64)
            codes[missing], hashes[missing] = 0, 0
            return codes, hashes
        return self._encode_values(raw)

    def _encode_values(self, raw: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        hashes = raw_hash(raw)
        missing = hashes == 0
        if not self.exact:
            idx = pc.index_in(raw, value_set=self.values)
            codes = np.array(pc.fill_null(pc.add(idx, 1), self.oov), dtype=np.int64)
        else:
            candidate = self.index.get_indexer(hashes)  # -1: no vocabulary value has this hash
            hit = (candidate >= 0) & ~missing
            rows = np.flatnonzero(hit)
            if len(rows):
                same = pc.equal(raw.take(pa.array(rows)), self.values.take(pa.array(candidate[rows])))
                hit[rows[~np.asarray(pc.fill_null(same, False), dtype=bool)]] = False
            codes = np.where(hit, candidate + 1, self.oov)
        codes[missing] = 0
        return codes.astype(np.int32), hashes


def _encode_chunk(chunk: pa.Table, fields: list[RawField], lookups: dict[str, VocabLookup], source: Source) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    cats = [f for f in fields if f.kind == "categorical"]
    encoded = dict(zip([f.name for f in cats], per_field(lambda f: lookups[f.name].encode(chunk.column(f.name)), cats)))
    for f in fields:
        if f.kind == "categorical":
            codes, hashes = encoded[f.name]
            cols[f.name] = pa.array(codes, type=pa.int32())
            cols[raw_column(f.name)] = pa.array(hashes, type=pa.int64())
        elif f.kind == "key":
            cols[f.name] = chunk.column(f.name).cast(pa.int64())
        else:
            for c in _columns(f):
                cols[c] = pc.fill_null(chunk.column(c).cast(pa.float32()), 0.0)
    cols["label"] = pc.fill_null(chunk.column(source.label).cast(pa.float32()), float("nan"))  # unlabelled rows
    if source.weight:
        cols["weight"] = chunk.column(source.weight).cast(pa.float32())
    return pa.table(cols)


def raw_column(name: str) -> str:
    """The cache column holding field ``name``'s raw-value hash."""
    return f"{name}__raw"


_MASK63 = np.uint64(2**63 - 1)
_WORDS = 4  # text up to 8 * _WORDS bytes is hashed by the vectorised word chain
_TEXT_SEED = np.uint64(0x243F6A8885A308D3)  # keeps a text's hash apart from the integer path's


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (with its increment), wrapping uint64 arithmetic, elementwise."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _text_hash(values: pa.Array) -> np.ndarray:
    """64-bit hash of every value's bytes (no nulls): word chain up to 32 bytes, BLAKE2b beyond."""
    values = values.cast(pa.large_binary())
    n = len(values)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[values.offset:values.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    short = np.flatnonzero(lengths <= 8 * _WORDS)
    if len(short):
        length = lengths[short]
        # Scatter every short value's bytes into a zero-padded row of 32 bytes.
        row = np.repeat(np.arange(len(short)), length)
        col = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
        padded = np.zeros((len(short), 8 * _WORDS), dtype=np.uint8)
        padded[row, col] = data[np.repeat(offsets[:-1][short], length) + col]
        words = padded.view("<u8")  # explicit little-endian: the same on every machine
        h = _mix(length.astype(np.uint64) ^ _TEXT_SEED)
        for j in range(_WORDS):
            h = _mix(h ^ words[:, j])
        out[short] = h
    for i in np.flatnonzero(lengths > 8 * _WORDS):  # rare: long text values, one by one
        digest = hashlib.blake2b(data[offsets[i]:offsets[i + 1]].tobytes(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def raw_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 63-bit hash of every raw value (int64 >= 1; 0 for a missing value)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    missing = np.asarray(pc.is_null(values), dtype=bool)
    if pa.types.is_unsigned_integer(values.type):  # up to 2**64 - 1; below 2**63 as the same signed value
        x = _mix(np.asarray(pc.fill_null(values, 0).cast(pa.uint64())).astype(np.uint64))
    elif pa.types.is_integer(values.type):
        x = _mix(np.asarray(pc.fill_null(values, 0).cast(pa.int64())).astype(np.uint64))
    else:
        text = values.cast(pa.string()) if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
                                                or pa.types.is_binary(values.type)
                                                or pa.types.is_large_binary(values.type)) else values
        x = _text_hash(pc.fill_null(text, ""))
    out = (x & _MASK63).astype(np.int64)
    out[out == 0] = 1  # 0 means missing
    out[missing] = 0
    return out


def _columns(f: RawField) -> list[str]:
    return [f"{f.name}_{i}" for i in range(f.dim)] if f.kind == "vector" else [f.name]


def _field_spec(f: RawField, vocabs: dict) -> FieldSpec:
    if f.kind == "categorical":
        n = len(vocabs[f.name])
        return FieldSpec(f.name, "categorical", vocab_size=n + 2, oov_index=n + 1, roles=f.roles)
    return FieldSpec(f.name, f.kind, dim=f.dim, roles=f.roles)


def _frequencies(cats: list[RawField], vocabs: dict, counts: dict) -> dict[str, np.ndarray]:
    """Training-split count per encoded index: [missing, kept values..., OOV]."""
    out = {}
    for f in cats:
        kept, dropped, missing = counts[f.name]
        freq = np.zeros(len(vocabs[f.name]) + 2, dtype=np.int64)
        freq[0] = missing
        freq[1:-1] = kept
        freq[-1] = dropped
        out[f.name] = freq
    return out
