"""Raw chunks -> the columnar cache (the data contract).

Two streaming passes, so no split is ever held in memory whole:
1. over the training split: count every categorical value (and reject bad rows);
2. over every split: encode through the training vocabulary and write parquet row groups.

Raw-value identity: beside each categorical column ``<field>`` the cache holds ``<field>__raw``, a
stable 63-bit hash of the raw value (0 for missing), so a method that hashes values (the hashing
trick, BH) gives distinct values distinct ids even when the vocabulary maps them all to OOV, as a
production system without a vocabulary would. Integers go through the SplitMix64 finaliser (a
bijection on 64 bits, so distinct integers collide only through the dropped top bit), anything
else through BLAKE2b-64 of its UTF-8 text; both are independent of the machine and of Python's
hash seed. The loader reads these columns only for a model that asks (``PreparedDataset.raw_ids``).

Encoding follows FuxiCTR's tokenizer semantics: index 0 = padding/missing, values seen at least
``min_count`` times in *train* get 1..n ordered by descending training frequency (so an index is
also an in-field frequency rank, which AMTL-style methods use), everything else maps to the
per-field OOV index n+1. Frequencies are counted on the training split only.

Every split the source declares (``splits``, default train/valid/test) is encoded; vocabularies
and frequencies still come from train alone.

Cache layout (``<cache_root>/<source>-<key>/``): ``<split>.parquet`` per split,
``truth/<split>.parquet`` (ground truth, never read by the loader), ``feature_map.json``,
``frequencies.npz``, ``provenance.json`` and a ``DONE`` marker written last. The folder is built
under a temporary name and renamed, so a killed preparation leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repro.data.featuremap import FeatureMap, FieldSpec
from repro.data.source import RawField, Source, source_splits
from repro.errors import DataError
from repro.io import atomic_write_json, file_digest, stable_hash
from repro.progress import progress

PREPARE_VERSION = 3  # bump when the encoding or layout below changes: invalidates every cache
# 2: every split the source declares (the world's test_random); provenance["splits"] lists them.
# 3: a raw-value hash column per categorical field (``raw_column``), for methods that hash values.


@dataclass(frozen=True)
class PrepareConfig:
    min_count: int = 1
    cache_root: str = "cache"


def cache_key(source: Source, cfg: PrepareConfig) -> str:
    return stable_hash({"source": source.fingerprint(), "min_count": cfg.min_count, "v": PREPARE_VERSION})


def prepare(source: Source, cfg: PrepareConfig, verbose: bool = True) -> Path:
    """Build (or find) the prepared cache of ``source``; returns its folder."""
    root = Path(cfg.cache_root) / f"{source.name}-{cache_key(source, cfg)}"
    if (root / "DONE").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary folder: two processes preparing the same data never share one.
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=root.parent))
    (tmp / "truth").mkdir()
    try:
        _build(source, cfg, tmp, verbose)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (root / "DONE").exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _build(source: Source, cfg: PrepareConfig, tmp: Path, verbose: bool) -> None:
    started = time.time()

    fields = source.fields()
    cats = [f for f in fields if f.kind == "categorical"]
    vocabs, train_counts = _fit_vocabularies(source, cats, cfg.min_count, verbose)

    splits = source_splits(source)
    rows, rejected = {}, {}
    for split in splits:
        rows[split], rejected[split] = _encode_split(source, split, fields, vocabs, tmp, verbose)
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
        "split_protocol": source.split_protocol,
        "splits": list(splits),  # in the source's order (the JSON file sorts the keys of "rows")
        "rows": rows,
        "rejected_rows": rejected,
        "file_sha256": digests,
        "fingerprint": stable_hash(digests, 16),
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_json(tmp / "provenance.json", provenance)
    (tmp / "DONE").write_text("ok\n")


def _fit_vocabularies(source: Source, cats: list[RawField], min_count: int, verbose: bool):
    """Pass 1: value counts of every categorical field on the training split."""
    partial: dict[str, list[pa.Table]] = {f.name: [] for f in cats}
    missing = {f.name: 0 for f in cats}
    with progress(source.expected_rows("train"), f"{source.name}: counting train values", verbose) as bar:
        for chunk in source.chunks("train"):
            chunk = _valid_rows(chunk, source.label, "train")[0]
            for f in cats:
                missing[f.name] += chunk.column(f.name).null_count
                vc = pc.value_counts(chunk.column(f.name).drop_null())
                partial[f.name].append(pa.table({"value": vc.field("values"), "count": vc.field("counts")}))
            bar.update(chunk.num_rows)
    vocabs, counts = {}, {}
    for f in cats:
        table = pa.concat_tables(partial[f.name]).group_by("value").aggregate([("count", "sum")])
        values = table.column("value").combine_chunks()
        n = table.column("count_sum").to_numpy()
        # Descending frequency, ties broken by value, so the encoding is deterministic.
        order = np.lexsort((np.asarray(pc.rank(values, sort_keys="ascending")), -n))
        values, n = values.take(pa.array(order)), n[order]
        keep = n >= min_count
        vocabs[f.name] = values.filter(pa.array(keep))
        counts[f.name] = (n[keep], int(n[~keep].sum()), missing[f.name])
    return vocabs, counts


def _valid_rows(chunk: pa.Table, label: str, split: str) -> tuple[pa.Table, int]:
    """Drop rows whose label is missing or not 0/1; return (kept, number dropped).

    Aggregated counts (KDD Cup 2012's clicks/impressions) must be expanded or weighted by their
    source into 0/1 rows first: every metric here is defined on binary labels."""
    if label not in chunk.column_names:
        raise DataError(f"{split}: raw chunk has no label column {label!r} (columns: {chunk.column_names})")
    y = chunk.column(label).cast(pa.float64())
    ok = pc.and_(pc.is_valid(y), pc.or_(pc.equal(y, 0.0), pc.equal(y, 1.0)))
    ok = pc.fill_null(ok, False)
    dropped = chunk.num_rows - pc.sum(ok.cast(pa.int64())).as_py() if chunk.num_rows else 0
    return (chunk.filter(ok) if dropped else chunk), dropped


def _encode_split(source, split, fields, vocabs, out: Path, verbose: bool) -> tuple[int, int]:
    """Pass 2 for one split: encode and append one parquet row group per chunk."""
    writer = truth_writer = None
    total = dropped_total = 0
    with progress(source.expected_rows(split), f"{source.name}: encoding {split}", verbose) as bar:
        for chunk in source.chunks(split):
            chunk, dropped = _valid_rows(chunk, source.label, split)
            dropped_total += dropped
            table = _encode_chunk(chunk, fields, vocabs, source)
            writer = writer or pq.ParquetWriter(out / f"{split}.parquet", table.schema)
            writer.write_table(table)
            if source.truth_columns:
                truth = chunk.select(list(source.truth_columns))
                truth_writer = truth_writer or pq.ParquetWriter(out / "truth" / f"{split}.parquet", truth.schema)
                truth_writer.write_table(truth)
            total += chunk.num_rows
            bar.update(chunk.num_rows)
    # Rows the source itself could not parse (a CSV line with the wrong column count...).
    dropped_total += len(getattr(source, "rejected", {}).get(split, ()))
    if writer is None:
        raise DataError(f"{source.name}: split {split!r} yielded no chunks")
    writer.close()
    if truth_writer:
        truth_writer.close()
    if dropped_total and verbose:
        print(f"{source.name}: {split}: rejected {dropped_total} rows (malformed, or a missing or invalid label)")
    return total, dropped_total


def _encode_chunk(chunk: pa.Table, fields: list[RawField], vocabs: dict, source: Source) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    for f in fields:
        if f.kind == "categorical":
            raw = chunk.column(f.name)
            idx = pc.index_in(raw, value_set=vocabs[f.name])
            oov = len(vocabs[f.name]) + 1
            enc = pc.if_else(pc.is_null(raw), 0, pc.fill_null(pc.add(idx, 1), oov))
            cols[f.name] = enc.cast(pa.int32())
            cols[raw_column(f.name)] = pa.array(raw_hash(raw), type=pa.int64())
        elif f.kind == "key":
            cols[f.name] = chunk.column(f.name).cast(pa.int64())
        else:
            for c in _columns(f):
                cols[c] = pc.fill_null(chunk.column(c).cast(pa.float32()), 0.0)
    cols["label"] = chunk.column(source.label).cast(pa.float32())
    if source.weight:
        cols["weight"] = chunk.column(source.weight).cast(pa.float32())
    return pa.table(cols)


def raw_column(name: str) -> str:
    """The cache column holding field ``name``'s raw-value hash."""
    return f"{name}__raw"


_MASK63 = np.uint64(2**63 - 1)


def raw_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 63-bit hash of every raw value (int64 >= 1; 0 for a missing value)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    missing = np.asarray(pc.is_null(values), dtype=bool)
    if pa.types.is_integer(values.type):
        x = np.asarray(pc.fill_null(values, 0).cast(pa.int64())).astype(np.uint64)
        with np.errstate(over="ignore"):  # SplitMix64's finaliser: wrapping uint64 arithmetic
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
    else:
        encoded = pc.dictionary_encode(values.cast(pa.string()))
        digests = np.array([int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
                            for v in encoded.dictionary.to_pylist()] or [0], dtype=np.uint64)
        x = digests[np.asarray(pc.fill_null(encoded.indices, 0))]
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
