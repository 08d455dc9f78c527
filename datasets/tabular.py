"""The user's own CTR data in CSV, TSV or parquet files, described by a schema in the config.

No Python to write: the config (``conf/data/tabular.yaml``, card ``datasets/tabular.md``) names the
files, the label column, the categorical and dense fields, their roles and transforms, an optional
weight column and the split. Every choice below is made once here, for every such data set.

Schema. The config is flat lists and maps, not a list of per-field records: ``categorical`` and
``dense`` list column names, ``roles`` maps a field to its roles (``repro.data.featuremap.ROLES``:
user, ad, scene, position, ...), ``transforms`` maps a dense field to ``none`` (default),
``log1p`` or ``bucket``. (The registry would validate a list of field records too -- OmegaConf
checks the keys of nested dataclasses -- but then every field needs a record even without a role,
and flat lists are what a command-line override can change: ``data.dense=[price]``.) Fields come
in that order: the categoricals, then the dense fields, each in config order (a bucketed dense
field is categorical but keeps its place among the dense ones). A field may not be the label, the
weight, ``label``/``weight`` (the cache's own column names) or ``<other field>__raw``; it may be
the time column. Columns the schema does not name are not read.

Values. Only the label, the weight, the time column and the fields are parsed; every value is read
as text first (a CSV's columns as UTF-8 strings, a parquet column cast to text or number below).
- Missing: a value listed in ``missing_values`` (default: only the empty string) or a parquet null.
  A missing categorical is padding (index 0), a missing dense value 0.0 (``repro.data.prepare``).
- Categorical values are the text as written (no trimming, no case folding); a parquet column of
  numbers, booleans or dates is cast to text by pyarrow, so an integer column gives exactly the
  CSV's text, a float column ``1`` for ``1.0``.
- Numbers (label, weight, dense, a numeric time): surrounding whitespace trimmed, then decimal
  digits with an optional sign, point and exponent (``1``, ``-2.5e3``, ``+1``, ``.5``, ``5.``:
  what pyarrow's float parser takes, less ``nan`` and ``inf``, which are not numbers here),
  matched by a regular expression before the cast, so a column of bad values costs no more than a
  good one. A parquet numeric or boolean column is used as is (true = 1; a NaN is not finite).
- Label: a number equal to 0 or 1 (``1.0`` is fine); missing or anything else rejects the row.
- Weight (optional): a finite number >= 0; missing or anything else rejects the row.
- Dense transforms: ``none``; ``log1p`` = ``log(1 + max(x, 0))`` (negatives clipped, as the Taobao
  and Criteo readers do); ``bucket`` = FuxiCTR's ``convert_to_bucket``, imported from
  ``datasets/criteo.py`` (``bucketize``: ``floor(ln(x)^2)`` for ``x > 2``, else ``int(x)``), which
  makes the field categorical; a missing value stays missing (padding), as ``criteo``'s default.
  The fingerprint then covers ``bucketize``'s source too.

Files and format. The format comes from each file's extension -- ``.csv`` (comma), ``.tsv`` (tab),
``.parquet``/``.pq`` -- unless ``format`` names it; ``delimiter`` overrides the separator (one
character). CSV: ``header: true`` reads the column names from the first line, ``header: false``
takes them from ``columns``. Quoting (``"``, doubled to escape) is on unless ``quoting: false``;
with it a quoted value may span lines. Text is UTF-8 (a BOM is skipped); the file is read through a
stream that replaces each invalid byte sequence by U+FFFD (pyarrow's parser otherwise fails a whole
block on a malformed line that is not UTF-8), and a value holding U+FFFD in a column the schema
reads rejects its row (``utf8``) -- so a U+FFFD already in the file rejects its row too. Reading is
pyarrow's streaming CSV reader (``open_csv``, blocks of ``block_size_mb``, one parsing thread, which
pyarrow needs to number skipped rows) and ``ParquetFile.iter_batches`` (``batch_rows`` rows); all
checks are vectorised, with no loop over rows in Python except over rejected ones.

Line numbers. A CSV row's number is pyarrow's record number, the header being record 1: the line
number, unless an earlier quoted value spans lines. A parquet row's number is its 1-based position
(messages still say "line"). An empty CSV line is a record (all its values missing: ``empty``).

Splits (``split``):
- ``files``: ``train_file``, ``valid_file`` and ``test_file``, one per split.
- ``ratio``: one ``file``; a row goes to train/valid/test by ``repro.data.rawfiles.ratio_split``
  (a seeded SplitMix64 hash, ``seed``) of its **data row number**: 1 for the first data row, the
  header not counted, so a CSV and the same rows as parquet split alike. Shares are binomial, not
  exact; a rejected row is rejected in the split its number falls in.
- ``time``: one ``file`` split by ``time_column`` at ``time_cuts: [valid_from, test_from]``: train
  before ``valid_from``, valid up to ``test_from`` (excluded), test from it. Cut points that are
  both numbers compare the column as numbers; otherwise both must be date-times
  ``YYYY-MM-DD[( |T)HH[:MM[:SS[.fraction]]]]`` (``2017-05-06 00:00:01``, ``2017-05-06``; no zone
  offset) and the column is parsed the same way (a parquet timestamp or date column is used as is,
  one with a zone compared in UTC). A missing or unparsable time rejects the row;
  such a row and a row with the wrong field count (whose time is unknown) count in train.
Any other mode is a ``ConfigError``.

Bad input. A missing file, an empty (0-byte) file, a file whose header lacks a schema column (the
error names the column and lists the file's columns), a column that appears twice, a parquet
column of an unusable type, a file that is not parquet, or a CSV pyarrow cannot go on parsing is a
``DataError`` naming the file. A bad config value is a ``ConfigError``. A bad row is rejected and
counted by kind (``KINDS``, in that order of precedence after ``fields``), as the other readers
do (``repro.data.rawfiles.Rejections``: ``source.rejected[split]``, one summary line per kind on
stderr); ``strict: true`` raises ``DataError`` naming the file, line and reason at the first.

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's,
the config less ``strict``, ``block_size_mb`` and ``batch_rows`` (they change no row), and per
file its path, size, modification time and sampled blocks -- see that module for what it misses.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import inspect
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from repro.data.featuremap import ROLES
from repro.data.prepare import normalised_digest, raw_column
from repro.data.rawfiles import RawFileSource, Rejections, ratio_split, require_file, strict_failure
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import ROOT, register_source

NAME = "tabular"
SPLIT_NAMES = ("train", "valid", "test")
SPLIT_MODES = ("files", "ratio", "time")
FORMATS = ("auto", "csv", "tsv", "parquet")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
TRANSFORMS = ("none", "log1p", "bucket")

KINDS = {  # in order of precedence: a row with several faults is counted under the first
    "fields": "a field count other than the header's (or columns')",
    "empty": "an empty line (every column the schema reads is missing)",
    "label": "a label that is missing or not 0/1",
    "weight": "a weight that is missing, not a number or negative",
    "time": "a time that is missing or does not parse",
    "dense": "a dense value that is not a finite number",
    "utf8": "text that is not UTF-8 (or holds U+FFFD)",
}

PROBE_BYTES = 1 << 20  # the block read to find a CSV's header
CARE_VALUES = 32  # a failed cast of at most this many values is retried value by value
SPLIT_WAYS = 16  # a larger failed cast is cut into this many pieces, each cast again
REPLACEMENT = "\ufffd"
# What a number or a date-time may look like (after trimming), checked vectorised before pyarrow's
# cast: a value that fails here is rejected without a cast; one that passes but that pyarrow still
# refuses (a 74th second) is found by cutting the cast (``_cast_checked``). NUMBER is exactly what
# pyarrow's float parser takes (probed on 200,000 random strings), less nan and inf.
NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?)?$"


# A batch as read: rows (the schema's columns), their line numbers, wrong-field-count rejects
# (line, kind, detail), and whether a value may hold U+FFFD (which rejects its row).
_RawBatch = tuple[pa.Table, np.ndarray, list[tuple[int, str, str]], bool]


@dataclass
class TabularConfig:
    data_dir: str = "data/tabular"
    split: str = "files"  # files (one per split) | ratio (one file, hashed row number) | time (one file, cut points)
    train_file: str = "train.csv"  # files
    valid_file: str = "valid.csv"
    test_file: str = "test.csv"
    file: str = "data.csv"  # ratio, time: the one file
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # ratio: train, valid, test
    seed: int = 0  # ratio: the hash's seed
    time_column: str = ""  # time: the column to cut
    time_cuts: list[str] = field(default_factory=list)  # time: [valid_from, test_from]
    format: str = "auto"  # auto (from the extension) | csv | tsv | parquet
    delimiter: str = ""  # CSV separator; "" = from the format: "," (csv), tab (tsv)
    header: bool = True  # CSV: the first line names the columns
    columns: list[str] = field(default_factory=list)  # CSV with header: false: the column names, in order
    quoting: bool = True  # CSV: '"' quotes a value (which may then hold the separator or a line end)
    missing_values: list[str] = field(default_factory=lambda: [""])  # texts that mean "missing"
    label: str = "label"  # the 0/1 column
    weight: Optional[str] = None  # an optional per-row weight column
    categorical: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)  # field -> roles (user, ad, scene, position, ...)
    transforms: dict[str, str] = field(default_factory=dict)  # dense field -> none | log1p | bucket
    strict: bool = False  # raise at the first rejected row instead of skipping and counting it
    block_size_mb: int = 64  # CSV bytes parsed at once: bounds memory per chunk
    batch_rows: int = 1_000_000  # parquet rows read at once


@register_source(NAME, config=TabularConfig)
class TabularSource(RawFileSource):
    name = NAME
    fingerprint_ignores = ("strict", "block_size_mb", "batch_rows")  # they do not change a single row

    def __init__(self, cfg: TabularConfig) -> None:
        self._time_cuts = _check_config(cfg)  # numbers (float) or timestamps (int64 microseconds)
        super().__init__(cfg)
        self.label = cfg.label
        self.weight = cfg.weight or None
        if cfg.split == "files":
            self.split_protocol = "as given by the user's train/valid/test files"
        elif cfg.split == "ratio":
            shares = ":".join(f"{r:g}" for r in cfg.ratios)
            self.split_protocol = f"random {shares} by a seeded hash of the data row number (seed {cfg.seed})"
        else:
            a, b = cfg.time_cuts
            self.split_protocol = f"by {cfg.time_column}: train before {a}, valid from {a}, test from {b}"
        self._needed = list(dict.fromkeys(
            [cfg.label, *([self.weight] if self.weight else []), *([cfg.time_column] if cfg.split == "time" else []),
             *cfg.categorical, *cfg.dense]
        ))

    # -- the Source protocol --------------------------------------------------------------------

    def fields(self) -> list[RawField]:
        cfg = self.cfg
        cats = [RawField(c, "categorical", tuple(cfg.roles.get(c, ()))) for c in cfg.categorical]
        dense = [
            RawField(c, "categorical" if cfg.transforms.get(c) == "bucket" else "dense", tuple(cfg.roles.get(c, ())))
            for c in cfg.dense
        ]
        return cats + dense

    def chunks(self, split: str) -> Iterator[pa.Table]:
        if split not in SPLIT_NAMES:
            raise DataError(f"{NAME}: unknown split {split!r}; known: {list(SPLIT_NAMES)}")
        paths = self._paths()
        path = paths[split] if self.cfg.split == "files" else paths["file"]
        want = None if self.cfg.split == "files" else SPLIT_NAMES.index(split)
        ledger = Rejections(NAME, path, split, KINDS)
        yielded = False
        for table, part, rejects in self._read(path):
            if want is not None:
                mine = part == want
                table = table if mine.all() else table.filter(pa.array(mine))
                rejects = [r for r in rejects if r[3] == want]
            ledger.extend((line, kind) for line, kind, _, _ in rejects)
            if table.num_rows:
                yield table
                yielded = True
        if not yielded:  # a split with no row is empty, not missing
            yield self._out_schema().empty_table()
        self.rejected[split] = ledger.lines()
        ledger.report()

    def fingerprint(self) -> str:
        base = super().fingerprint()
        if "bucket" not in self.cfg.transforms.values():
            return base
        bucketize = normalised_digest(inspect.getsource(_bucketize()).encode(), "bucketize")  # comments do not count
        return hashlib.sha256((base + bucketize).encode()).hexdigest()[:16]

    # -- files ----------------------------------------------------------------------------------

    def input_paths(self) -> list[Path]:
        return list(self._paths().values())

    def _paths(self) -> dict[str, Path]:
        root = Path(self.cfg.data_dir)
        if self.cfg.split == "files":
            names = {s: getattr(self.cfg, f"{s}_file") for s in SPLIT_NAMES}
            what = {s: f"the {s} file" for s in SPLIT_NAMES}
            hint = "place it there or set data.data_dir and data.<split>_file"
        else:
            names, what = {"file": self.cfg.file}, {"file": "the data file"}
            hint = "place it there or set data.data_dir and data.file"
        return {key: require_file(NAME, root / name, what[key], hint) for key, name in names.items()}

    def _format(self, path: Path) -> tuple[str, str]:
        """('csv', delimiter) or ('parquet', '')."""
        fmt = self.cfg.format if self.cfg.format != "auto" else EXTENSIONS[path.suffix.lower()]
        if fmt == "parquet":
            return "parquet", ""
        return "csv", self.cfg.delimiter or ("\t" if fmt == "tsv" else ",")

    def _out_schema(self) -> pa.Schema:
        cfg = self.cfg
        cols = [(cfg.label, pa.float64())] + [(c, pa.string()) for c in cfg.categorical]
        cols += [(c, pa.int64() if cfg.transforms.get(c) == "bucket" else pa.float64()) for c in cfg.dense]
        if self.weight:
            cols.append((self.weight, pa.float64()))
        return pa.schema(cols)

    # -- reading --------------------------------------------------------------------------------

    def _read(self, path: Path) -> Iterator[tuple[pa.Table, np.ndarray, list[tuple[int, str, str, int]]]]:
        """(clean rows, their split index, rejects (line, kind, detail, split index)) per batch."""
        fmt, delimiter = self._format(path)
        if path.stat().st_size == 0:
            expected = "a header line naming the columns" if fmt == "csv" and self.cfg.header else "rows"
            raise DataError(f"{NAME}: {path} is empty (expected {expected})")
        offset = 1 if fmt == "csv" and self.cfg.header else 0  # line number - data row number
        batches = self._csv_batches(path, delimiter) if fmt == "csv" else self._parquet_batches(path)
        for raw, lines, field_rejects, check_utf8 in batches:
            table, part, rejects = self._clean(raw, lines, offset, check_utf8)
            if field_rejects:
                lines_bad = np.array([r[0] for r in field_rejects], dtype=np.int64)
                parts = (ratio_split(lines_bad - offset, self.cfg.seed, self.cfg.ratios) if self.cfg.split == "ratio"
                         else np.zeros(len(lines_bad), dtype=np.int8))  # time: unknown, counted in train
                rejects = sorted(rejects + [(n, k, d, int(p)) for (n, k, d), p in zip(field_rejects, parts)])
            if rejects and self.cfg.strict:
                line, kind, detail, _ = rejects[0]
                raise strict_failure(NAME, path, line, f"{KINDS[kind]} ({detail})")
            yield table, part, rejects

    def _check_columns(self, path: Path, names: list[str]) -> None:
        missing = [c for c in self._needed if c not in names]
        if missing:
            shown = names if len(names) <= 60 else [*names[:60], f"... {len(names) - 60} more"]
            raise DataError(f"{NAME}: {path}: column(s) {missing} of the schema not in the file; its columns: {shown}")
        twice = sorted({c for c in self._needed if names.count(c) > 1})
        if twice:
            raise DataError(f"{NAME}: {path}: column(s) {twice} appear more than once in the file")

    def _csv_batches(self, path: Path, delimiter: str) -> Iterator[_RawBatch]:
        """(rows as text, their line numbers, wrong-field-count rejects, whether U+FFFD may occur)."""
        cfg = self.cfg

        def parse_options(handler: Callable) -> pacsv.ParseOptions:
            return pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if cfg.quoting else False,
                                      newlines_in_values=cfg.quoting, ignore_empty_lines=False,
                                      invalid_row_handler=handler)

        if cfg.header:
            names = self._csv_header(path, parse_options(lambda row: "skip"), delimiter)
        else:
            names = list(cfg.columns)
        self._check_columns(path, names)
        skipped: list[tuple[int, int]] = []  # (line, fields) of wrong-field-count rows, as pyarrow reports them

        def skip(row) -> str:
            if row.number is None:  # only parsing with threads loses it, and this reader uses one
                return "error"  # pyarrow then raises ArrowInvalid, made a DataError below
            skipped.append((row.number, row.actual_columns))
            return "skip"

        stream = _Utf8Repair(path)
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=cfg.block_size_mb << 20, use_threads=False,
                                               column_names=None if cfg.header else names),
                parse_options=parse_options(skip),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in self._needed}, include_columns=self._needed,
                    null_values=list(cfg.missing_values), strings_can_be_null=True, quoted_strings_can_be_null=True),
            )
            cursor = 2 if cfg.header else 1  # the line number of the next row
            pending: list[tuple[int, int]] = []
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as e:
                    raise DataError(f"{NAME}: {path}: cannot parse the CSV after line {cursor - 1}: {e}") from e
                pending += skipped  # pyarrow may parse (and skip rows of) the next block before this one is handed out
                skipped.clear()
                n = batch.num_rows
                if n == 0:
                    continue
                # This batch's rows are the next n line numbers that pyarrow did not skip.
                candidates = np.arange(cursor, cursor + n + len(pending), dtype=np.int64)
                if pending:
                    candidates = candidates[~np.isin(candidates, [p[0] for p in pending])]
                lines = candidates[:n]
                last = int(lines[-1])
                done, pending = [p for p in pending if p[0] < last], [p for p in pending if p[0] > last]
                cursor = last + 1
                yield pa.Table.from_batches([batch]), lines, _field_rejects(done, len(names)), stream.replaced
            pending += skipped
            if pending:
                yield pa.table({}), np.zeros(0, dtype=np.int64), _field_rejects(pending, len(names)), False
        except pa.ArrowInvalid as e:
            raise DataError(f"{NAME}: {path}: cannot read it as {_csv_what(delimiter)}: {e}") from e
        finally:
            stream.close()

    def _csv_header(self, path: Path, options: pacsv.ParseOptions, delimiter: str) -> list[str]:
        """The column names on the first line (pyarrow reads, and guesses types for, one block)."""
        stream = _Utf8Repair(path)
        try:
            reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=PROBE_BYTES, use_threads=False),
                                    parse_options=options)
            return list(reader.schema.names)
        except pa.ArrowInvalid as e:
            raise DataError(f"{NAME}: {path}: cannot read a header line from it as {_csv_what(delimiter)}: {e}") from e
        finally:
            stream.close()

    def _parquet_batches(self, path: Path) -> Iterator[_RawBatch]:
        """(rows, their 1-based row numbers, no rejects, True: a text value may hold U+FFFD)."""
        try:
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{NAME}: {path}: not a readable parquet file: {e}") from e
        self._check_columns(path, schema.names)
        for name in self._needed:
            _check_parquet_type(path, name, schema.field(name).type, self._role(name))
        if self.cfg.split == "time":  # a date-time column with numeric cuts, or numbers with date-time cuts
            t = schema.field(self.cfg.time_column).type
            t = t.value_type if pa.types.is_dictionary(t) else t
            temporal = pa.types.is_timestamp(t) or pa.types.is_date(t)
            numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            dates = not isinstance(self._time_cuts[0], float)
            if (temporal and not dates) or (numeric and dates):
                raise DataError(f"{NAME}: {path}: time_column {self.cfg.time_column!r} has type {t}, but time_cuts "
                                f"{list(self.cfg.time_cuts)} are {'date-times' if dates else 'numbers'}")
        row = 0
        batches = pf.iter_batches(batch_size=self.cfg.batch_rows, columns=self._needed)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{NAME}: {path}: cannot read the parquet rows after row {row}: {e}") from e
            n = batch.num_rows
            table = pa.table({c: self._missing(_plain_column(batch.column(c))) for c in self._needed})
            yield table, np.arange(row + 1, row + n + 1, dtype=np.int64), [], True
            row += n

    def _role(self, name: str) -> str:
        cfg = self.cfg
        if name == cfg.label:
            return "label"
        if name == self.weight:
            return "weight"
        if cfg.split == "time" and name == cfg.time_column and name not in (*cfg.categorical, *cfg.dense):
            return "time"
        return "categorical" if name in cfg.categorical else "dense"

    def _missing(self, arr: pa.Array) -> pa.Array:
        """A parquet text column with ``missing_values`` made null (a CSV's are, by pyarrow)."""
        if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)) or not self.cfg.missing_values:
            return arr
        hit = pc.fill_null(pc.is_in(arr, value_set=pa.array(self.cfg.missing_values, type=arr.type)), False)
        return pc.if_else(hit, pa.scalar(None, arr.type), arr) if pc.any(hit).as_py() else arr

    # -- checks and transforms --------------------------------------------------------------------

    def _clean(self, table: pa.Table, lines: np.ndarray, offset: int,
               check_utf8: bool) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str, int]]]:
        """Check and transform one batch: (kept rows, their split index, rejects (line, kind, detail, split))."""
        cfg = self.cfg
        n = table.num_rows
        if n == 0:
            return self._out_schema().empty_table(), np.zeros(0, dtype=np.int8), []
        cols = {c: table.column(c).combine_chunks() for c in self._needed}
        checks: list[tuple[str, str, np.ndarray]] = []  # (kind, column, bad rows), in order of precedence
        empty = np.logical_and.reduce([np.asarray(a.is_null(), dtype=bool) for a in cols.values()])
        checks.append(("empty", "", empty))

        y, y_np, bad = _numbers(cols[cfg.label])
        checks.append(("label", cfg.label, bad | ~((y_np == 0) | (y_np == 1))))
        out: dict[str, pa.Array] = {cfg.label: y}
        if self.weight:
            w, w_np, bad = _numbers(cols[self.weight])
            checks.append(("weight", self.weight, bad | ~(np.isfinite(w_np) & (w_np >= 0))))
            out[self.weight] = w
        if cfg.split == "time":
            t_np, ok = self._times(cols[cfg.time_column])
            checks.append(("time", cfg.time_column, ~ok))
            c1, c2 = self._time_cuts
            part = np.where(ok, (t_np >= c1).astype(np.int8) + (t_np >= c2).astype(np.int8), 0).astype(np.int8)
        elif cfg.split == "ratio":
            part = ratio_split(lines - offset, cfg.seed, cfg.ratios)
        else:
            part = np.zeros(n, dtype=np.int8)
        for name in cfg.dense:
            x, x_np, bad = _numbers(cols[name])
            checks.append(("dense", name, bad | (~np.isfinite(x_np) & np.asarray(x.is_valid(), dtype=bool))))
            out[name] = _transform(x, cfg.transforms.get(name, "none"))
        for name in cfg.categorical:
            text, bad = _text(cols[name])
            if check_utf8 and text.null_count < len(text):
                bad = bad | np.asarray(pc.fill_null(pc.match_substring(text, REPLACEMENT), False), dtype=bool)
            checks.append(("utf8", name, bad))
            out[name] = text

        rejected = np.logical_or.reduce([mask for _, _, mask in checks])
        table = pa.table({c: out[c] for c in self._out_schema().names}, schema=self._out_schema())
        if not rejected.any():
            return table, part, []
        kind_of = np.full(n, -1, dtype=np.int16)
        for k in range(len(checks) - 1, -1, -1):  # the first check that fails names the row's kind
            kind_of[checks[k][2]] = k
        bad_rows = np.flatnonzero(rejected)
        first = int(bad_rows[0])
        kind, column, _ = checks[kind_of[first]]
        detail = "every value missing" if kind == "empty" else f"{column} = {_shown(cols[column], first)}"
        rejects = [(int(lines[i]), checks[kind_of[i]][0], "", int(part[i])) for i in bad_rows]
        rejects[0] = (rejects[0][0], kind, detail, rejects[0][3])
        keep = ~rejected
        return table.filter(pa.array(keep)), part[keep], rejects

    def _times(self, arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Each row's time as float (numeric cuts) or int64 microseconds (date-time cuts), and
        whether it is present and parses."""
        if isinstance(self._time_cuts[0], float):
            _, t, bad = _numbers(arr)
            return t, ~bad & np.isfinite(t)
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            ts, bad = arr.cast(pa.timestamp("us")), np.zeros(len(arr), dtype=bool)
        else:
            text, bad = _text(arr)
            ts, more = _parse(text, pa.timestamp("us"), DATETIME)
            bad |= more
        ok = ~bad & np.asarray(ts.is_valid(), dtype=bool)
        return np.asarray(pc.fill_null(ts.cast(pa.int64()), 0), dtype=np.int64), ok


# -- values ------------------------------------------------------------------------------------


def _numbers(arr: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(float64 array, the same as numpy with NaN for missing, rows whose text is not a number).

    ``nan`` and ``inf`` parse here; the callers reject what is not finite."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t) \
            or pa.types.is_null(t):
        x, bad = pc.cast(arr, pa.float64(), safe=False), np.zeros(len(arr), dtype=bool)
    else:
        text, bad = _text(arr)
        x, more = _parse(text, pa.float64(), NUMBER)
        bad |= more
    return x, np.asarray(x.to_numpy(zero_copy_only=False), dtype=np.float64), bad


def _text(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(string array, rows whose bytes are not UTF-8, now missing)."""
    if pa.types.is_string(arr.type):
        return arr, np.zeros(len(arr), dtype=bool)
    if pa.types.is_binary(arr.type):
        return _cast_checked(arr, pa.string())
    return arr.cast(pa.string()), np.zeros(len(arr), dtype=bool)


def _parse(text: pa.Array, to: pa.DataType, pattern: str) -> tuple[pa.Array, np.ndarray]:
    """Trimmed ``text`` cast to ``to``; the values that do not match ``pattern`` or do not cast are
    made null and marked (a missing value is neither)."""
    text = pc.utf8_trim_whitespace(text)
    ok = pc.fill_null(pc.match_substring_regex(text, pattern), True)
    if not pc.all(ok).as_py():
        text = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    x, bad = _cast_checked(text, to)
    return x, bad | ~np.asarray(ok, dtype=bool)


def _cast_checked(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """``arr`` cast to ``to``, with the values that do not cast made null and marked.

    One cast when every value casts; otherwise the array is cut into ``SPLIT_WAYS`` pieces, each
    cast again, down to ``CARE_VALUES`` values cast one by one (a few casts per bad value)."""
    try:
        return arr.cast(to), np.zeros(len(arr), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    n = len(arr)
    if n <= CARE_VALUES:
        parts, bad = [], np.zeros(n, dtype=bool)
        for i in range(n):
            try:
                parts.append(arr.slice(i, 1).cast(to))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                parts.append(pa.nulls(1, to))
                bad[i] = True
        return pa.concat_arrays(parts), bad
    bounds = np.linspace(0, n, SPLIT_WAYS + 1).astype(np.int64)
    pieces = [_cast_checked(arr.slice(a, b - a), to) for a, b in zip(bounds, bounds[1:]) if b > a]
    return pa.concat_arrays([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])


def _transform(x: pa.Array, how: str) -> pa.Array:
    if how == "log1p":
        return pc.log1p(pc.max_element_wise(x, 0.0, skip_nulls=False))
    if how == "bucket":
        return _bucketize()(x)
    return x


def _bucketize() -> Callable:
    """``bucketize`` of ``datasets/criteo.py`` (FuxiCTR's ``convert_to_bucket``), not a copy of it.

    ``datasets/`` is loaded by path (``repro.registry.load_plugins``, in name order, so criteo is
    there before this module); loaded the same way, under the same name, if it is not."""
    name = "adrepro_datasets.criteo"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, ROOT / "datasets" / "criteo.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module.bucketize


def _plain_column(arr: pa.Array) -> pa.Array:
    """A parquet column with dictionaries decoded and large or view types made plain."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return arr.cast(pa.string())
    if pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or getattr(pa.types, "is_binary_view", lambda _: False)(t):
        return arr.cast(pa.binary())
    return arr


def _check_parquet_type(path: Path, name: str, t: pa.DataType, role: str) -> None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
        or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
        or getattr(pa.types, "is_string_view", lambda _: False)(t) \
        or getattr(pa.types, "is_binary_view", lambda _: False)(t)
    number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
    temporal = pa.types.is_timestamp(t) or pa.types.is_date(t)
    ok = text or number or pa.types.is_null(t) or (temporal and role in ("time", "categorical"))
    if not ok:
        wanted = {"categorical": "text, numbers or dates", "time": "numbers, text or dates"}
        wanted = wanted.get(role, "numbers or text")
        raise DataError(f"{NAME}: {path}: column {name!r} ({role}) has type {t}; expected {wanted}")


def _shown(arr: pa.Array, i: int) -> str:
    value = arr[i].as_py()
    if value is None:
        return "missing"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _field_rejects(skipped: list[tuple[int, int]], expected: int) -> list[tuple[int, str, str]]:
    return [(line, "fields", f"{count} field(s), expected {expected}") for line, count in skipped]


def _csv_what(delimiter: str) -> str:
    return f"text separated by {delimiter!r}"


class _Utf8Repair(io.RawIOBase):
    """A file read as bytes with each invalid UTF-8 sequence replaced by U+FFFD (``replaced``
    says whether any U+FFFD came out). ASCII blocks pass through without decoding."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = open(path, "rb")
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = b""
        self._eof = False
        self._pos = 0
        self.replaced = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n is None or n < 0 or len(self._buf) < n):
            data = self._f.read(n if n and n > 0 else 1 << 20)
            if not data:
                self._eof = True
                self._take(self._decoder.decode(b"", final=True))
            elif data.isascii() and not self._decoder.getstate()[0]:
                self._buf += data
            else:
                self._take(self._decoder.decode(data))
        if n is None or n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        self._pos += len(out)
        return out

    def _take(self, text: str) -> None:
        self.replaced = self.replaced or REPLACEMENT in text
        self._buf += text.encode("utf-8")

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._f.close()
        super().close()


# -- config ------------------------------------------------------------------------------------


def _check_config(cfg: TabularConfig) -> tuple:
    """Every config value checked before a file is opened; returns the time cut points."""
    def fail(message: str) -> ConfigError:
        return ConfigError(f"data source {NAME!r}: {message}")

    choices = {"split": SPLIT_MODES, "format": FORMATS}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise fail(f"{key}={getattr(cfg, key)!r}; choose one of {list(allowed)}")
    files = [cfg.train_file, cfg.valid_file, cfg.test_file] if cfg.split == "files" else [cfg.file]
    for name in files:
        if not name:
            raise fail("a file name is empty")
        if cfg.format == "auto" and Path(name).suffix.lower() not in EXTENSIONS:
            raise fail(f"cannot tell the format of {name!r} from its extension (known: {sorted(EXTENSIONS)}); "
                       f"set data.format to one of {list(FORMATS[1:])}")
    if cfg.delimiter and (len(cfg.delimiter) != 1 or cfg.delimiter in "\r\n" or (cfg.quoting and cfg.delimiter == '"')):
        raise fail(f"delimiter={cfg.delimiter!r}; must be one character, not a line end (nor '\"' with quoting)")
    if cfg.block_size_mb < 1 or cfg.batch_rows < 1:
        raise fail("block_size_mb and batch_rows must be at least 1")

    if not cfg.label:
        raise fail("label is empty: name the 0/1 column")
    fields = [*cfg.categorical, *cfg.dense]
    if not fields:
        raise fail("no field: list the feature columns in categorical and/or dense")
    twice = sorted({c for c in fields if fields.count(c) > 1})
    if twice:
        raise fail(f"field(s) {twice} listed more than once (categorical and dense together)")
    if not all(fields):
        raise fail("a field name is empty")
    if cfg.label in fields:
        raise fail(f"the label {cfg.label!r} is also listed as a field")
    if cfg.weight is not None:
        if cfg.weight in fields or cfg.weight == cfg.label or not cfg.weight:
            raise fail(f"weight={cfg.weight!r} must be a column of its own (not the label, not a field)")
    reserved = {"label", "weight"} | {raw_column(c) for c in fields}
    clash = sorted(set(fields) & reserved)
    if clash:
        raise fail(f"field name(s) {clash} clash with the prepared cache's columns "
                   f"('label', 'weight', '<field>__raw'); rename the column(s)")
    for name, roles in cfg.roles.items():
        if name not in fields:
            raise fail(f"roles names {name!r}, which is not a field (fields: {fields})")
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise fail(f"roles of {name!r}: unknown {unknown}; choose among {list(ROLES)}")
    for name, how in cfg.transforms.items():
        if name not in cfg.dense:
            raise fail(f"transforms names {name!r}, which is not a dense field (dense: {list(cfg.dense)})")
        if how not in TRANSFORMS:
            raise fail(f"transforms[{name!r}]={how!r}; choose one of {list(TRANSFORMS)}")
    if not cfg.header:
        if not cfg.columns:
            raise fail("header: false needs columns: the file's column names, in order")
        if len(set(cfg.columns)) != len(cfg.columns):
            raise fail(f"columns {list(cfg.columns)} name a column more than once")
    elif cfg.columns:
        raise fail("columns is for header: false (with a header the file names its columns)")

    if cfg.split == "ratio":
        r = list(cfg.ratios)
        if len(r) != 3 or min(r) < 0 or abs(sum(r) - 1) > 1e-6:
            raise fail(f"ratios={r}; give three shares (train, valid, test), each >= 0, summing to 1")
    if cfg.split != "time":
        return ()
    if not cfg.time_column:
        raise fail("split: time needs time_column")
    if cfg.time_column in (cfg.label, cfg.weight):
        raise fail(f"time_column {cfg.time_column!r} is the label or the weight")
    if len(cfg.time_cuts) != 2:
        raise fail(f"time_cuts={list(cfg.time_cuts)}; give two cut points: [valid_from, test_from]")
    cuts = [_number_cut(c) for c in cfg.time_cuts]
    if any(c is None for c in cuts):
        cuts = [_time_cut(c) for c in cfg.time_cuts]
        if any(c is None for c in cuts):
            raise fail(f"time_cuts={list(cfg.time_cuts)}: both must be numbers, or both ISO-8601 date-times "
                       "such as '2017-05-06 00:00:00' (no zone offset)")
    if not cuts[0] < cuts[1]:
        raise fail(f"time_cuts={list(cfg.time_cuts)}: valid_from must come before test_from")
    return tuple(cuts)


def _number_cut(text: str) -> float | None:
    x, bad = _parse(pa.array([str(text)]), pa.float64(), NUMBER)
    return None if bad[0] else x[0].as_py()


def _time_cut(text: str) -> int | None:
    t, bad = _parse(pa.array([str(text)]), pa.timestamp("us"), DATETIME)
    return None if bad[0] else t.cast(pa.int64())[0].as_py()
