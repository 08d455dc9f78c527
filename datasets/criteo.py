"""Criteo Display Advertising Challenge (Kaggle) click logs: ``train.txt`` exactly as distributed.

Input. ``train.txt`` (45,840,617 lines, about 11 GB): tab-separated, no header, ``\\n`` line ends,
40 fields per line: the label (0/1), ``I1``-``I13`` (integers, mostly counts, some negative) and
``C1``-``C26`` (32-bit hashes written as 8 hex digits); a missing value is an empty field. Nothing
is downloaded: the user places the file in ``data_dir`` (see ``datasets/criteo.md``).

Splits (``split``):
- ``x4`` (default): Criteo_x4's protocol, random 8:1:1 train/valid/test (BARS, AutoInt). The row
  assignment of the published Criteo_x4 files cannot be re-derived without those files, so each
  line is assigned by a **seeded hash of its 1-based line number** (``repro.data.rawfiles.
  ratio_split``): ``u = splitmix64(line + seed * 0x9E3779B97F4A7C15) / 2**64``; train if
  ``u < 0.8``, valid if ``u < 0.9``, else test. The assignment is streaming (no pass to count
  lines, no permutation in memory), does not depend on the block size, and a bad line keeps its
  place (it is rejected in the split its number falls in, so the rejected lines of the three
  splits add up to the file's). The proportions are binomial, not exact: on the full file each
  split is within a few thousand rows of 8:1:1.
- ``x1``: the same with 7:2:1 (Criteo_x1's proportions; the same caveat).
- ``files``: the user's ``train_file``, ``valid_file`` and ``test_file``, e.g. the Criteo_x4 or
  Criteo_x1 CSVs of reczoo (Hugging Face ``reczoo/Criteo_x4``, ``reczoo/Criteo_x1``).

Layouts (``layout``): ``raw`` is the Kaggle layout above. ``csv`` is reczoo's: comma-separated
with a header row naming the 40 columns (``Label`` in Criteo_x4, ``label`` in Criteo_x1; FuxiCTR
reads both with a header, ``config/dataset_config/Criteo.yaml``), in any order; the integer columns
are read as floats (FuxiCTR declares them ``float``, and pandas writes an integer column with
missing values as floats) and the categorical columns as text of any length (Criteo_x1's are not
hex). ``auto`` (default) decides per file from its first line: ``csv`` if it is that header,
``raw`` otherwise (so a file of another data set fails as a raw file, naming both layouts).
Neither layout has quoting: a ``"`` is an ordinary character.

Integer features (``integers``):
- ``bucket`` (default, Criteo_x4): FuxiCTR's ``convert_to_bucket``, ``floor(ln(x)**2)`` if
  ``x > 2`` else ``int(x)`` (truncation toward zero), then a categorical field. Small values
  collide on purpose, as in FuxiCTR: 3 and 4 map to 1, the bucket of ``x = 1``. The reczoo
  README's ``floor(log2 x)`` is not what FuxiCTR's code does (``shared/protocols.md`` 1.1).
- ``numeric``: a dense field ``log1p(max(x, 0))`` (facebookresearch/dlrm's Kaggle transform:
  negatives clipped to 0, then ``log(x + 1)``); Criteo_x1 keeps integers numeric.
Missing integers stay missing (``missing_integers: missing``): padding index 0 in ``bucket`` mode,
0.0 in ``numeric`` mode (the preparation step fills a missing dense value with 0, the same value
as ``x = 0``). FuxiCTR instead fills them with 0 before bucketing (``na_value: 0``), so its
missing and its ``x = 0`` share a bucket: ``missing_integers: zero`` does exactly that.

Categorical values are kept as the file's text (vocabularies, ``min_count`` and OOV are the
preparation step's: ``data.min_count`` 10 for Criteo_x4_001, 2 for x4_002, 1 for x1). Criteo has
no known user or ad column, so no field carries a role.

Bad input. Each line is either a row or a rejection, never both and never silently dropped. A
line is rejected when it: has a field count other than 40 (``fields``); is empty or has 40
empty fields (``empty``); holds a carriage return other than its CRLF end (``cr``); is not UTF-8 (``utf8``);
has a label that is missing or not 0/1 (``label``); has an integer field that does not parse as a
64-bit integer (leading/trailing spaces allowed, as pyarrow allows them; in the csv layout: a
finite decimal number) (``integer``); has, in the raw layout, a categorical value that is not 8
bytes long (``category``, which catches a truncated last line); or is longer than 1 MiB
(``long``); a line pyarrow still refuses after these checks passed is ``parser`` (none is known).
CRLF line ends parse as LF. By default each rejected line is skipped and counted in
``rejected[split]`` (its length, which the preparation step adds to the split's rejected count, is
the whole count; it keeps the first 1,000 line numbers), and one summary line per kind is printed;
``strict: true`` raises ``DataError`` naming the file, line and reason at the first one. An empty
file, a CSV whose header is not Criteo's, or a file whose first block (1 MiB) holds no valid row
fails at once with a ``DataError`` that says what was expected.

Reading. The file is cut into blocks of ``block_size_mb`` at line ends (``repro.data.rawfiles.
line_blocks``: LF ends a line, a CR does not) and each block is parsed by
``pyarrow.csv.read_csv`` with explicit column names and types (label and integers ``int64``,
categoricals ``string``, only the empty field is null) -- not ``open_csv``: its streaming reader
cannot go on after a conversion error in one block, and the line numbers of rejected rows need
each block's first line. Wrong field counts are skipped inside pyarrow
(``ParseOptions.invalid_row_handler``); labels and categorical lengths are checked vectorised.
Only a block pyarrow rejects (a conversion error, or a bare ``\\r`` that makes its rows differ from
its lines), or one with a byte outside ASCII, takes the careful path: it is cut into 16 pieces of
as many lines, each parsed again (and cut again if pyarrow rejects it), and pieces of at most 256
lines are checked line by line in Python, then their good lines parsed by pyarrow again. A block
with one bad line costs about one extra parse of it; the checks are the same on both paths (a
property test compares them).

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's,
the config (less ``strict``, ``block_size_mb`` and ``use_threads``, which do not change a single
row), and per input file its resolved path, size, modification time and the SHA-256 of eight
sampled 64 KiB blocks. It reads at most 512 KiB per file, so a same-size edit outside those samples
that also restores the modification time goes unnoticed; delete the cache (``cache/criteo-*``)
after such surgery.

``write_criteo_sample`` writes a synthetic file in exactly the raw layout (any size, vectorised)
for tests and benchmarks; ``python datasets/criteo.py sample OUT --rows N`` from the shell, and
``python datasets/criteo.py bench FILE`` measures the reader.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import math
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from repro.data.rawfiles import (
    RawFileSource,
    Rejections,
    count_lines,
    line_blocks,
    ratio_split,
    require_file,
    splitmix64,
    strict_failure,
)
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import register_source

LABEL = "label"
INTS = tuple(f"I{i}" for i in range(1, 14))
CATS = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *INTS, *CATS)
N_FIELDS = len(COLUMNS)

SPLIT_RATIOS = {"x4": (0.8, 0.1, 0.1), "x1": (0.7, 0.2, 0.1)}
SPLIT_NAMES = ("train", "valid", "test")

KINDS = {
    "fields": "a field count other than 40",
    "empty": "an empty line (or every field empty)",
    "cr": "a carriage return inside the line",
    "utf8": "bytes that are not UTF-8",
    "label": "a label that is missing or not 0/1",
    "integer": "an integer field that does not parse",
    "category": "a categorical value that is not 8 characters",
    "long": "a line longer than 1 MiB",
    "parser": "a line the CSV parser rejects",
}

RAW_EXPECTED = (
    "Criteo train.txt: 40 tab-separated fields per line (label 0/1, I1-I13 integers, "
    "C1-C26 8-hex-digit hashes), no header"
)
CSV_EXPECTED = "a reczoo Criteo CSV: a header naming label (or Label), I1..I13, C1..C26, comma-separated"

CARE_LINES = 256  # pieces of a rejected block this small are checked line by line
SPLIT_WAYS = 16  # a larger rejected piece is cut into this many, each parsed again
MAX_LINE = 1 << 20  # a longer "line" is rejected (a real Criteo line is under 1 KB)
PROBE_BYTES = 1 << 20  # the first block: a file of another kind fails after reading this much

# pyarrow's grammars (probed on pyarrow 26): spaces and tabs around a number are trimmed; an
# int64 takes no '+', a float64 takes no hex, no '1e' and no words (nan, inf are rejected below).
_INT_RE = re.compile(r"[ \t]*-?[0-9]+[ \t]*")
_FLOAT_RE = re.compile(r"[ \t]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t]*")


@dataclass
class CriteoConfig:
    data_dir: str = "data/criteo"
    split: str = "x4"  # x4 (random 8:1:1) | x1 (random 7:2:1) | files (the user's three files)
    file: str = "train.txt"  # x4 and x1: the Kaggle file
    train_file: str = "train.csv"  # files: one file per split
    valid_file: str = "valid.csv"
    test_file: str = "test.csv"
    layout: str = "auto"  # auto | raw (Kaggle train.txt) | csv (reczoo: header, commas)
    integers: str = "bucket"  # bucket (FuxiCTR's floor(ln(x)^2), categorical) | numeric (log1p, dense)
    missing_integers: str = "missing"  # missing (padding index) | zero (FuxiCTR's na_value: 0)
    seed: int = 0  # x4/x1: the split hash's seed
    strict: bool = False  # raise at the first malformed line instead of skipping and counting it
    block_size_mb: int = 64  # bytes parsed at once: bounds memory per chunk
    use_threads: bool = True  # pyarrow's parser threads (the rows do not depend on it)


@dataclass(frozen=True)
class _Layout:
    name: str  # raw | csv
    delimiter: str
    names: tuple[str, ...]  # the file's column order
    header_bytes: int  # bytes of the header line (csv), skipped


@register_source("criteo", config=CriteoConfig)
class CriteoSource(RawFileSource):
    name = "criteo"
    label = LABEL
    fingerprint_ignores = ("strict", "block_size_mb", "use_threads")  # they do not change a single row

    def __init__(self, cfg: CriteoConfig) -> None:
        _check_config(cfg)
        super().__init__(cfg)
        if cfg.split == "files":
            self.split_protocol = "as given by the user's train/valid/test files"
        else:
            a, b, c = (round(r * 10) for r in SPLIT_RATIOS[cfg.split])
            self.split_protocol = (
                f"criteo_{cfg.split}-like random {a}:{b}:{c} by a seeded hash of the line number "
                f"(seed {cfg.seed}); not the published files' row assignment"
            )

    # -- the Source protocol --------------------------------------------------------------------

    def fields(self) -> list[RawField]:
        kind = "categorical" if self.cfg.integers == "bucket" else "dense"
        return [RawField(c, kind) for c in INTS] + [RawField(c, "categorical") for c in CATS]

    def chunks(self, split: str) -> Iterator[pa.Table]:
        for _, table in self.split_chunks((split,)):
            yield table

    def split_chunks(self, splits: Sequence[str]) -> Iterator[tuple[str, pa.Table]]:
        """(split, rows) for every split in ``splits``: one read of the file serves them all."""
        unknown = [s for s in splits if s not in SPLIT_NAMES]
        if unknown:
            raise DataError(f"criteo: unknown split {unknown[0]!r}; known: {list(SPLIT_NAMES)}")
        paths = self._paths()
        if self.cfg.split == "files":  # one file per split
            for split in splits:
                yield from self._file_chunks(paths[split], {split: None})
        else:
            yield from self._file_chunks(paths["file"], {split: SPLIT_NAMES.index(split) for split in splits})

    def _file_chunks(self, path: Path, wanted: dict[str, int | None]) -> Iterator[tuple[str, pa.Table]]:
        """The rows of ``path`` for each wanted split (None: every row is that split's)."""
        ledgers = {split: Rejections("criteo", path, split, KINDS) for split in wanted}
        yielded = dict.fromkeys(wanted, False)
        for table, lines, rejects in self._parse_file(path):
            of_line = self._split_of(lines) if None not in wanted.values() else None
            of_reject = (self._split_of(np.array([r[0] for r in rejects], dtype=np.int64))
                         if rejects and of_line is not None else None)
            for split, want in wanted.items():
                mine, kept = table, rejects
                if want is not None:
                    keep = of_line == want
                    mine = table.filter(pa.array(keep)) if not keep.all() else table
                    if rejects:
                        kept = [r for r, m in zip(rejects, of_reject == want) if m]
                ledgers[split].extend((line, kind) for line, kind, _ in kept)
                if mine.num_rows:
                    yield split, self._transform(mine)
                    yielded[split] = True
        for split in wanted:
            if not yielded[split]:  # a split that got no row (a tiny file) is empty, not missing
                yield split, self._transform(_empty_input(pa.int64()))
            self.rejected[split] = ledgers[split].lines()
            ledgers[split].report()

    # -- files ----------------------------------------------------------------------------------

    def input_paths(self) -> list[Path]:
        return list(self._paths().values())

    def _paths(self) -> dict[str, Path]:
        root = Path(self.cfg.data_dir)
        if self.cfg.split == "files":
            names = {s: getattr(self.cfg, f"{s}_file") for s in SPLIT_NAMES}
        else:
            names = {"file": self.cfg.file}
        return {
            key: require_file("criteo", root / name, "the Kaggle train.txt" if key == "file" else f"the {key} file")
            for key, name in names.items()
        }

    def _split_of(self, lines: np.ndarray) -> np.ndarray:
        """0 train, 1 valid, 2 test for each 1-based line number (x4, x1)."""
        return ratio_split(lines, self.cfg.seed, SPLIT_RATIOS[self.cfg.split])

    def _layout(self, path: Path) -> _Layout:
        with open(path, "rb") as f:
            head = f.read(PROBE_BYTES)
        if not head:
            expected = CSV_EXPECTED if self.cfg.layout == "csv" else RAW_EXPECTED
            raise DataError(f"criteo: {path} is empty (expected {expected})")
        end = head.find(b"\n")
        text = (head if end < 0 else head[:end]).rstrip(b"\r").decode("utf-8", errors="replace")
        canonical = {c.lower(): c for c in COLUMNS}
        names = tuple(canonical.get(n.strip().lower(), n.strip()) for n in text.split(","))
        is_header = sorted(names) == sorted(COLUMNS)
        if self.cfg.layout == "raw" or (self.cfg.layout == "auto" and not is_header):
            return _Layout("raw", "\t", COLUMNS, 0)
        if not is_header:
            shown = text if len(text) <= 120 else text[:117] + "..."
            raise DataError(f"criteo: {path}: line 1 is not a Criteo CSV header: {shown!r} (expected {CSV_EXPECTED})")
        return _Layout("csv", ",", names, (end + 1) if end >= 0 else len(head))

    # -- parsing --------------------------------------------------------------------------------

    def _parse_file(self, path: Path) -> Iterator[tuple[pa.Table, np.ndarray, list[tuple[int, str, str]]]]:
        """(rows, their 1-based line numbers, rejected (line, kind, detail)) per block, in order."""
        layout = self._layout(path)
        parser = _BlockParser(layout, self.cfg.use_threads)
        first_block = True
        blocks = line_blocks(
            path,
            self.cfg.block_size_mb << 20,
            start=layout.header_bytes,
            first_line=2 if layout.header_bytes else 1,
            first_block_size=PROBE_BYTES,
            max_line=MAX_LINE,
        )
        for first_line, data, n_lines, long_lines in blocks:
            rejects = [(n, "long", "longer than 1 MiB") for n in long_lines]
            if data:
                table, lines, bad = parser.parse(data, first_line, n_lines)
                rejects = sorted(rejects + bad)
            else:
                table, lines = parser.empty(), np.zeros(0, dtype=np.int64)
            if rejects and self.cfg.strict:
                line, kind, detail = rejects[0]
                raise strict_failure("criteo", path, line, f"{KINDS[kind]} ({detail})")
            if first_block and table.num_rows == 0 and rejects:
                line, kind, detail = rejects[0]
                expected = CSV_EXPECTED if layout.name == "csv" else RAW_EXPECTED
                if self.cfg.layout == "auto":
                    expected += f", or {CSV_EXPECTED}"
                raise DataError(
                    f"criteo: {path}: none of the first {len(rejects)} line(s) is a valid row "
                    f"(line {line}: {KINDS[kind]}: {detail}); expected {expected}"
                )
            first_block = False
            yield table, lines, rejects

    def _transform(self, table: pa.Table) -> pa.Table:
        """The label as int64, the integer fields bucketed or log-scaled, the categoricals as text."""
        cols = {LABEL: table.column(LABEL).cast(pa.int64())}
        for name in INTS:
            x = table.column(name)
            if self.cfg.missing_integers == "zero":
                x = pc.fill_null(x, 0)
            if self.cfg.integers == "bucket":
                cols[name] = bucketize(x)
            else:
                x = pc.cast(x, pa.float64(), safe=False)  # |x| > 2**53 rounds
                cols[name] = pc.log1p(pc.max_element_wise(x, 0.0))
        for name in CATS:
            cols[name] = table.column(name)
        return pa.table(cols)


def bucketize(x: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """FuxiCTR's ``convert_to_bucket``: ``floor(ln(x)^2)`` if ``x > 2`` else ``int(x)``; null stays null."""
    if pa.types.is_integer(x.type):  # the raw layout: fewer passes, the same numbers
        big = pc.greater(x, 2)
        ln = pc.ln(pc.cast(pc.max_element_wise(x, 3), pa.float64(), safe=False))
        return pc.if_else(big, pc.floor(pc.multiply(ln, ln)).cast(pa.int64()), x.cast(pa.int64()))
    x = pc.cast(x, pa.float64(), safe=False)
    big = pc.greater(x, 2.0)
    safe = pc.if_else(big, x, 3.0)  # ln of the small values is never used; keep it finite
    ln = pc.ln(safe)
    logsq = pc.floor(pc.multiply(ln, ln))  # ln**2 exactly: the square is correctly rounded either way
    small = pc.trunc(pc.max_element_wise(x, -(2.0**62)))  # a float below int64's range stays castable
    return pc.if_else(big, logsq, small).cast(pa.int64())


# -- the two parsing paths -------------------------------------------------------------------


class _Mismatch(Exception):
    """pyarrow's rows are not the block's lines (a bare carriage return splits a line)."""


class _BlockParser:
    def __init__(self, layout: _Layout, threads: bool) -> None:
        self.layout = layout
        self.threads = threads
        number = pa.int64() if layout.name == "raw" else pa.float64()
        self.types = {LABEL: number, **{c: number for c in INTS}, **{c: pa.string() for c in CATS}}
        self.read = pacsv.ReadOptions(column_names=list(layout.names), use_threads=threads)
        self.read1 = pacsv.ReadOptions(column_names=list(layout.names), use_threads=False)
        self.convert = pacsv.ConvertOptions(
            column_types=self.types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True
        )
        self.delim = layout.delimiter.encode()
        self.number_re = _INT_RE if layout.name == "raw" else _FLOAT_RE
        self.label_at = layout.names.index(LABEL)
        self.ints_at = [(c, layout.names.index(c)) for c in INTS]
        self.cats_at = [(c, layout.names.index(c)) for c in CATS]

    def empty(self) -> pa.Table:
        return _empty_input(self.types[LABEL])

    def parse(self, data: bytes, first: int, n: int | None = None):
        """(rows, their line numbers, rejected (line, kind, detail)) of ``data``, whose first line is
        line ``first`` and which has ``n`` lines (counted when not given)."""
        table, lines, bad = self._rows(data, first, n)
        table, lines, more = self._check(table, lines)
        return table, lines, sorted(bad + more)

    def _rows(self, data: bytes, first: int, n: int | None = None):
        # Only ASCII goes to pyarrow first: its invalid_row_handler cannot be given a row whose
        # text is not UTF-8 (pyarrow 26 reports the decoding error as "Exception ignored" on
        # stderr, then fails the block). Criteo's files are ASCII, so this costs one fast scan.
        if data.isascii():
            try:
                return self._fast(data, first, n=n)
            except (pa.ArrowInvalid, _Mismatch):
                pass
        return self._careful(data, first, n)

    # The fast path: pyarrow parses the whole block; wrong field counts are skipped by it.
    def _fast(self, data: bytes, first: int, threads: bool | None = None, n: int | None = None):
        threads = self.threads if threads is None else threads
        bad: list[tuple[int | None, int]] = []

        def skip(row) -> str:
            bad.append((row.number, row.actual_columns))
            return "skip"

        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=self.read if threads else self.read1,
            parse_options=pacsv.ParseOptions(
                delimiter=self.layout.delimiter, quote_char=False, ignore_empty_lines=False, invalid_row_handler=skip
            ),
            convert_options=self.convert,
        )
        if bad and any(number is None for number, _ in bad):  # parsed in parallel: no row numbers
            return self._fast(data, first, threads=False, n=n)
        n = count_lines(data) if n is None else n
        if table.num_rows + len(bad) != n:
            raise _Mismatch()
        lines = np.arange(first, first + n, dtype=np.int64)
        if bad:
            lines = np.delete(lines, [number - 1 for number, _ in bad])
        rejects = [(first + number - 1, "fields", f"{count} field(s), expected 40") for number, count in bad]
        return table.select(list(COLUMNS)), lines, rejects

    # The careful path: split into 16 pieces of as many lines, each parsed again (fast if it can),
    # until pieces are small enough to check line by line.
    def _careful(self, data: bytes, first: int, n: int | None = None):
        n = count_lines(data) if n is None else n
        if n > CARE_LINES:
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1  # the byte after each \n
            bounds = [n * j // SPLIT_WAYS for j in range(SPLIT_WAYS + 1)]  # line indices: 0 .. n
            cuts = [0, *(int(ends[b - 1]) for b in bounds[1:-1]), len(data)]
            parts = [
                self._rows(data[lo:hi], first + b0, b1 - b0)
                for lo, hi, b0, b1 in zip(cuts, cuts[1:], bounds, bounds[1:])
            ]
            return (
                pa.concat_tables([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                [r for p in parts for r in p[2]],
            )
        raw = data.split(b"\n")
        if data.endswith(b"\n"):
            raw.pop()
        good, good_lines, rejects = [], [], []
        for i, line in enumerate(raw):
            if line.endswith(b"\r"):
                line = line[:-1]
            verdict = self._diagnose(line)
            if verdict:
                rejects.append((first + i, *verdict))
            else:
                good.append(line)
                good_lines.append(first + i)
        if not good:
            return self.empty(), np.zeros(0, dtype=np.int64), rejects
        try:
            table, _, bad = self._fast(b"\n".join(good) + b"\n", 0, threads=False)
            if bad:
                raise _Mismatch()
            return table, np.array(good_lines, dtype=np.int64), rejects
        except (pa.ArrowInvalid, _Mismatch):  # this check and pyarrow disagree: pyarrow decides
            tables, kept = [], []
            for line, number in zip(good, good_lines):
                try:
                    table, _, bad = self._fast(line + b"\n", 0, threads=False)
                    if bad or table.num_rows != 1:
                        raise _Mismatch()
                    tables.append(table)
                    kept.append(number)
                except (pa.ArrowInvalid, _Mismatch):
                    rejects.append((number, "parser", "rejected by pyarrow.csv"))
            table = pa.concat_tables(tables) if tables else self.empty()
            return table, np.array(kept, dtype=np.int64), rejects

    def _diagnose(self, line: bytes) -> tuple[str, str] | None:
        """Why ``line`` (without its line end) is not a row, in the fast path's order; None if it is."""
        fields = line.split(self.delim)
        if not line or (len(fields) == N_FIELDS and not any(fields)):
            return "empty", "no fields"
        if len(fields) != N_FIELDS:
            if b"\r" in line:
                return "cr", "a bare \\r"
            return "fields", f"{len(fields)} field(s), expected 40"
        if b"\r" in line:
            return "cr", "a bare \\r"
        try:
            text = line.decode("utf-8").split(self.layout.delimiter)  # the same 40 fields
        except UnicodeDecodeError as e:
            return "utf8", str(e)
        label = text[self.label_at]
        if not self.number_re.fullmatch(label) or float(label) not in (0.0, 1.0):
            return "label", f"label {label[:20]!r}"
        for name, at in self.ints_at:
            value = text[at]
            if value and not self._number_ok(value):
                return "integer", f"{name} = {value[:20]!r}"
        if self.layout.name == "raw":
            for name, at in self.cats_at:
                size = len(fields[at])  # bytes, as pyarrow's binary_length counts them
                if size not in (0, 8):
                    return "category", f"{name} has {size} byte(s)"
        return None

    def _number_ok(self, value: str) -> bool:
        if not self.number_re.fullmatch(value):
            return False
        if self.layout.name == "raw":
            return -(2**63) <= int(value) < 2**63
        return math.isfinite(float(value))

    # Checks pyarrow cannot do: label values, categorical lengths (raw), finite numbers (csv).
    def _check(self, table: pa.Table, lines: np.ndarray):
        if table.num_rows == 0:
            return table, lines, []
        y = table.column(LABEL)
        ok = pc.fill_null(pc.or_(pc.equal(y, 0), pc.equal(y, 1)), False)
        reasons: dict[int, tuple[str, str]] = {}
        bad_label = np.flatnonzero(~np.asarray(ok))
        if len(bad_label):
            rows = table.take(pa.array(bad_label)).to_pylist()
            for i, row in zip(bad_label, rows):
                empty = all(v is None for v in row.values())
                reasons[i] = ("empty", "no fields") if empty else ("label", f"label {row[LABEL]!r}")
        if self.layout.name == "raw":
            for name in CATS:
                size = pc.binary_length(table.column(name))
                wrong = pc.fill_null(pc.not_equal(size, 8), False)
                if pc.any(wrong).as_py():
                    sizes = np.asarray(size.to_numpy(zero_copy_only=False))
                    for i in np.flatnonzero(np.asarray(wrong)):
                        reasons.setdefault(i, ("category", f"{name} has {int(sizes[i])} byte(s)"))
        else:
            for name in INTS:
                x = table.column(name)
                wrong = pc.fill_null(pc.invert(pc.is_finite(x)), False)
                if pc.any(wrong).as_py():
                    for i in np.flatnonzero(np.asarray(wrong)):
                        reasons.setdefault(i, ("integer", f"{name} is not finite"))
        if not reasons:
            return table, lines, []
        drop = np.zeros(table.num_rows, dtype=bool)
        drop[list(reasons)] = True
        rejects = [(int(lines[i]), kind, detail) for i, (kind, detail) in reasons.items()]
        return table.filter(pa.array(~drop)), lines[~drop], rejects


def _empty_input(number: pa.DataType) -> pa.Table:
    """No rows, with the parser's column types (``number`` for the label and integers)."""
    return pa.schema([(c, pa.string() if c in CATS else number) for c in COLUMNS]).empty_table()


# -- config ------------------------------------------------------------------------------------


def _check_config(cfg: CriteoConfig) -> None:
    choices = {
        "split": ("x4", "x1", "files"),
        "layout": ("auto", "raw", "csv"),
        "integers": ("bucket", "numeric"),
        "missing_integers": ("missing", "zero"),
    }
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"data source 'criteo': {key}={getattr(cfg, key)!r}; choose one of {list(allowed)}")
    if cfg.block_size_mb < 1:
        raise ConfigError(f"data source 'criteo': block_size_mb={cfg.block_size_mb}; must be at least 1")


# -- a synthetic file in the exact raw layout ---------------------------------------------------

# Distinct values per categorical field in the Kaggle train.txt, as listed by facebookresearch/dlrm
# for its Kaggle preprocessing [recalled, not re-measured]; the sample caps them at its row count.
CARDINALITY = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
               5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
# Missing-value rates: chosen to look like the Kaggle file's (some fields mostly missing, some
# never), not measured on it.
INT_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.23, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22)
CAT_MISSING = (0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.03, 0.0, 0.03, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0,
               0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44)
INT_SCALE = (1.0, 3.0, 2.5, 1.5, 7.5, 4.0, 1.5, 2.5, 3.5, 0.5, 1.0, 0.5, 1.5)  # log-scale of each count
FAULTS = ("wrong_fields", "bad_integer", "bad_utf8", "bad_label", "short_category", "empty_line", "bare_cr")
_HEX4 = np.frombuffer("".join(f"{i:04x}" for i in range(1 << 16)).encode(), dtype="<u4")  # 4 hex digits
_SAMPLE_CHUNK = 250_000


def write_criteo_sample(
    path: str | Path,
    rows: int,
    seed: int = 0,
    positive_rate: float = 0.256,
    crlf: bool = False,
    header: bool = False,
    truncate_last: bool = False,
    workers: int | None = None,
    **faults: int,
) -> dict[str, list[int]]:
    """Write ``rows`` lines of synthetic Criteo data in the Kaggle ``train.txt`` layout.

    Byte for byte the real layout: 40 tab-separated fields, no header, ``\\n`` line ends, an empty
    field for a missing value, label 0/1 (about ``positive_rate`` positives, depending on a few
    fields, so a model can learn something), counts with occasional negatives (I2, as in the real
    file), 8-lowercase-hex-digit categorical hashes drawn Zipf-like (a few values dominate, most
    are rare, so ``min_count`` matters). Vectorised numpy and pyarrow: about 4 s of one core per
    million rows (232 MiB); chunks of 250,000 rows are made by ``workers`` threads (default: up
    to 4 cores), and the bytes do not depend on ``workers``.

    Faults, for tests: ``crlf`` (CRLF line ends), ``header`` (a tab-separated header line first),
    ``truncate_last`` (the last line cut in its C25 field, without a line end), and counts of
    damaged rows, each replacing a row: ``wrong_fields`` (39 or 41 fields), ``bad_integer`` (I3
    not an integer), ``bad_utf8`` (C5 not UTF-8), ``bad_label`` (label 2), ``short_category`` (C1
    of 7 digits), ``empty_line``, ``bare_cr`` (a carriage return inside C10). Returns the 1-based
    line numbers of each fault (``truncated`` for the cut line, ``header`` for the header).
    """
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise TypeError(f"write_criteo_sample: unknown fault(s) {unknown}; known: {list(FAULTS)}")
    offset = 1 if header else 0
    candidates = rows - (1 if truncate_last else 0)  # the cut last line is never also damaged
    if rows < 0 or min(faults.values(), default=0) < 0 or sum(faults.values()) > candidates:
        raise ValueError(f"write_criteo_sample: {sum(faults.values())} faulty rows do not fit in {rows} rows")
    pick = np.random.default_rng([seed, 7]).permutation(candidates)[: sum(faults.values())] + 1 + offset
    placed: dict[str, list[int]] = {}
    damaged: dict[int, str] = {}
    start = 0
    for kind in FAULTS:
        chosen = sorted(int(n) for n in pick[start : start + faults.get(kind, 0)])
        start += faults.get(kind, 0)
        if chosen:
            placed[kind] = chosen
            damaged.update({n: kind for n in chosen})
    end = b"\r\n" if crlf else b"\n"

    def chunk(lo: int) -> bytes:
        n = min(_SAMPLE_CHUNK, rows - lo)
        table = _sample_table(n, np.random.default_rng([seed, lo // _SAMPLE_CHUNK]), seed, positive_rate)
        first = lo + 1 + offset
        return _chunk_bytes(table, [(k - first, damaged[k]) for k in sorted(damaged) if first <= k < first + n], end)

    workers = workers or min(4, os.cpu_count() or 1)
    with open(path, "wb") as out, ThreadPoolExecutor(workers) as pool:
        if header:
            out.write("\t".join(COLUMNS).encode() + end)
            placed["header"] = [1]
        pending: deque = deque()
        for lo in range(0, rows, _SAMPLE_CHUNK):  # at most 2 chunks per worker in memory
            pending.append(pool.submit(chunk, lo))
            if len(pending) >= 2 * workers:
                out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())
    if truncate_last and rows:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - 4096)
            f.seek(start)
            body = f.read()[: -len(end)]
            line_start = body.rfind(b"\n") + 1
            fields = body[line_start:].split(b"\t")
            c25 = len(b"\t".join(fields[:38])) + 1  # where C25 starts
            f.truncate(start + line_start + c25 + min(3, len(fields[38])))  # 3 bytes into C25, no line end
        placed["truncated"] = [rows + offset]
    return placed


def _sample_table(n: int, rng: np.random.Generator, seed: int, positive_rate: float) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    logit = np.zeros(n)
    for j, scale in enumerate(INT_SCALE):
        v = np.floor(np.expm1(np.minimum(rng.exponential(scale, n), 17.0))).astype(np.int64)  # < 2.5e7
        if j == 1:  # I2 is the field with negative values in the real file
            neg = rng.random(n) < 0.04
            v[neg] = -rng.integers(1, 4, int(neg.sum()))
        missing = rng.random(n) < INT_MISSING[j]
        cols[INTS[j]] = pa.array(v, mask=missing)
        if j in (0, 5, 10):
            logit += 0.35 * np.where(missing, -0.5, np.log1p(np.maximum(v, 0)) - scale / 2)
    offsets = pa.py_buffer(np.arange(0, 8 * n + 1, 8, dtype=np.int32))
    for j, (card, miss) in enumerate(zip(CARDINALITY, CAT_MISSING)):
        # Zipf-like: P(k >= m) = (m + 1) ** -exponent (value frequencies fall as rank ** -(1 +
        # exponent)), folded onto the field's cardinality; the bigger the field, the longer its tail.
        exponent = 0.2 if card >= 10**6 else 0.35 if card >= 10**4 else 0.6 if card >= 100 else 1.0
        k = np.minimum(np.exp(rng.standard_exponential(n) / exponent) - 1, 2.0**62).astype(np.uint64)
        salt = (np.uint64(j + 1) << np.uint64(40)) ^ np.uint64(seed * 1_000_003 % 2**32)  # per field and seed
        h = splitmix64((k % np.uint64(card)) ^ salt)
        if j in (1, 4, 13, 16, 19, 22):  # a few fields carry signal: a per-value effect
            logit += ((h & np.uint64(0xFFFF)).astype(np.float64) / 65535.0 - 0.5) * 1.6
        top = h >> np.uint64(32)  # the 32-bit hash, written as 8 hex digits, 4 per table look-up
        digits = _HEX4[np.stack([top >> np.uint64(16), top & np.uint64(0xFFFF)], axis=1)]
        valid = None
        if miss:
            valid = pa.py_buffer(np.packbits(rng.random(n) >= miss, bitorder="little"))
        cols[CATS[j]] = pa.StringArray.from_buffers(n, offsets, pa.py_buffer(digits), valid)
    spread = math.sqrt(1 + math.pi * logit.var() / 8)  # probit approximation of E[sigmoid]
    bias = math.log(positive_rate / (1 - positive_rate)) * spread - logit.mean()
    label = (rng.random(n) < 1 / (1 + np.exp(-(logit + bias)))).astype(np.int64)
    return pa.table({LABEL: label, **cols})


def _chunk_bytes(table: pa.Table, damaged: list[tuple[int, str]], end: bytes) -> bytes | pa.Buffer:
    """``table`` as lines of the raw layout, rows at the (0-based) ``damaged`` indices damaged."""
    sink = pa.BufferOutputStream()
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none", eol=end.decode())
    pacsv.write_csv(table, sink, options)
    data = sink.getvalue()
    if not damaged:
        return data
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1  # the byte after each line
    starts = np.concatenate([[0], ends[:-1]])
    view, parts, at = memoryview(data), [], 0
    for i, kind in damaged:
        parts += [view[at : starts[i]], _damage(bytes(view[starts[i] : ends[i]]), kind, end)]
        at = ends[i]
    return b"".join([*parts, view[at:]])


def _damage(line: bytes, kind: str, end: bytes) -> bytes:
    fields = line[: -len(end)].split(b"\t")
    if kind == "wrong_fields":  # 39 fields on a negative row, 41 on a positive one
        fields = fields + [b"00000000"] if fields[0] == b"1" else fields[:-1]
    elif kind == "bad_integer":
        fields[3] = b"12abc"
    elif kind == "bad_utf8":
        fields[14 + 4] = b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"
    elif kind == "bad_label":
        fields[0] = b"2"
    elif kind == "short_category":
        fields[14] = b"abcdef0"
    elif kind == "empty_line":
        return end
    elif kind == "bare_cr":
        fields[14 + 9] = b"ab\rcdef0"
    return b"\t".join(fields) + end


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python datasets/criteo.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="write a synthetic file in the Kaggle train.txt layout")
    sample.add_argument("out")
    sample.add_argument("--rows", type=int, default=1_000_000)
    sample.add_argument("--seed", type=int, default=0)
    bench = sub.add_parser("bench", help="parse FILE once (one x4 pass) and print rows/s")
    bench.add_argument("file")
    bench.add_argument("--threads", action="store_true", help="let pyarrow use its thread pool")
    bench.add_argument("--integers", default="bucket")
    args = parser.parse_args(argv)
    if args.command == "sample":
        started = time.perf_counter()
        write_criteo_sample(args.out, args.rows, seed=args.seed)
        seconds = time.perf_counter() - started
        print(f"wrote {args.rows:,} rows ({os.path.getsize(args.out) / 2**20:.0f} MiB) in {seconds:.1f} s")
    else:
        path = Path(args.file)
        source = CriteoSource(CriteoConfig(data_dir=str(path.parent), file=path.name, use_threads=args.threads,
                                           integers=args.integers))
        started = time.perf_counter()
        lines = 0
        for table, numbers, rejects in source._parse_file(path):
            source._transform(table)
            lines += table.num_rows + len(rejects)
        seconds = time.perf_counter() - started
        print(f"{lines:,} lines in {seconds:.2f} s: {lines / seconds:,.0f} rows/s "
              f"({path.stat().st_size / 2**20 / seconds:.0f} MiB/s), pyarrow threads {'on' if args.threads else 'off'}")


if __name__ == "__main__":
    _main()
