"""Avazu CTR data (Kaggle "Click-Through Rate Prediction", 2014): the ``train`` file as distributed.

The user places the decompressed Kaggle file (``train.gz`` -> ``train``, 40,428,967 rows, CSV with a
header) in ``data_dir``; nothing is downloaded. Columns: ``id``, ``click`` (label), ``hour``
(``YYMMDDHH``, UTC), ``C1``, ``banner_pos``, ``site_id``, ``site_domain``, ``site_category``,
``app_id``, ``app_domain``, ``app_category``, ``device_id``, ``device_ip``, ``device_model``,
``device_type``, ``device_conn_type``, ``C14`` .. ``C21``. See ``datasets/avazu.md``.

Features, as FuxiCTR prepares Avazu_x4 (BARS's ``avazu_x4_001``/``_002`` configs, in their order):
``hour`` (hour of day 0-23), the 21 columns ``C1`` .. ``C21`` above, ``weekday`` (``%w``: Sunday 0 ..
Saturday 6) and ``weekend`` (1 on Saturday and Sunday) -- 24 categorical fields. ``id`` is never
converted (it exceeds int64 and is a per-row id; its values are not checked) and is not a field.
The header must name the 24 columns, in any order. Every other column is read as a string, the
integer-looking ones too (``C1``, ``banner_pos``, ``device_type``, ``C14`` .. ``C21``): they are
codes, and a string keeps each value exactly as written. ``click`` must be ``0`` or ``1``;
the three time fields are small integers derived from ``hour``.

Splits (``split``):
- ``x4``: random 8:1:1, as BARS/FuxiCTR Avazu_x4 (AutoInt's setting). The published files come from a
  stratified 10-fold split (scikit-learn 0.19.1, seed 2018) that a streaming reader cannot re-derive;
  here every row goes by its 1-based line number ``n`` alone (``repro.data.rawfiles.ratio_split``, as
  Criteo's reader): ``u = splitmix64(n + split_seed * 0x9E3779B97F4A7C15) / 2**64``, train if
  ``u < 0.8``, valid if ``u < 0.9``, else test. The shares are therefore 8:1:1 in expectation (on
  the full file valid and test differ from the published counts by binomial noise, sd about 1,900
  rows), the split is not stratified by label, and it is the same on every machine and block size.
- ``time``: by day of ``hour``: rows of ``valid_days`` are valid, of ``test_days`` test, all others
  train (default: the last day, 141030, test; the day before, 141029, valid). A day given but absent
  from the file leaves its split empty, which is an error.
- ``files``: the user's ``train_file``/``valid_file``/``test_file``, as reczoo publishes Avazu_x4 on
  Hugging Face (``reczoo/Avazu_x4``: ``train.csv``, ``valid.csv``, ``test.csv``, each with the
  original 24-column header, ``id`` included). Avazu_x1 (AFN's pre-indexed layout) is not this
  layout and is rejected by the header check.

Roles, where the reference is silent:
- ``banner_pos`` plays ``scene``: it is the ad slot's place on the page (0 and 1 carry >99% of
  rows), a condition of the impression like Taobao's ``pid``, not a rank in a list of ads (an
  impression shows one ad; there is no list, no position 1..k, nothing to debias);
- ``device_ip`` plays ``user``: Avazu has no user id, and ``device_id`` is the placeholder
  ``a99f214a`` on about 83% of rows, so the IP is the closest per-person key (GAUC groups by it);
- no field plays ``ad``: ``C14`` .. ``C21`` are anonymised, and calling ``C14`` an ad id would be a
  guess.

Reading. The file is read in newline-aligned blocks of ``block_size_mb`` (``repro.data.rawfiles.
line_blocks``, a lone CR ending a line as it does for pyarrow), each parsed by pyarrow's
CSV parser (quoting off, explicit string types, no per-row Python). Own blocks rather than one
``open_csv`` stream, because pyarrow's streaming reader cannot go on after an error, and its
invalid-row handler itself fails on a malformed row that is not UTF-8 (pyarrow 26 decodes the row
text strictly). A block that is not valid UTF-8 takes the careful path: it is split into lines in
Python, the non-UTF-8 lines are rejected, and the rest goes through the same parser. A line is what
pyarrow calls one: ended by LF, CRLF or a lone CR. Each yielded chunk also carries ``line``, the
row's 1-based line number in its file (the header is line 1); the preparation step does not store it.

Bad input. Skipped and counted by kind in ``rejected[split]`` (its length, the whole count, is
added to prepare's rejected count; it keeps the first 1,000 line numbers): ``wrong field count``,
``empty line``, ``bad click`` (not 0 or 1), ``bad hour`` (not a ``YYMMDDHH`` date), ``bad UTF-8``,
``truncated last line`` (an unterminated last line with a wrong field count). A rejected row
belongs to the split its line would have gone to: ``x4`` by its line number, ``time`` by the day in
its ``hour`` text when readable (else train), ``files`` by its file. One summary line per kind is
printed per pass. CRLF line ends are read as LF (a note says how many); an unterminated last line
with 24 valid fields is kept, with a note (it may have lost the end of its last field).
``strict: true`` raises ``DataError`` at the first bad row (file, line, reason). A file that is
empty, whose first line is not Avazu's header (Criteo's tab-separated layout, Kaggle's unlabelled
``test``, a header-less file...), that has no data row, or none of whose first 1,000 data lines
parses, fails at once with a ``DataError`` naming what was expected.

Fingerprint (``repro.data.rawfiles.RawFileSource``): per file its resolved path, size, mtime and a
SHA-256 of 8 sampled 64 KiB blocks (head, tail and evenly spaced), never the whole file; plus the
config (``block_size_mb`` included: a block is a parquet row group, which the loader shuffles by),
this file's code and the shared module's. So touching or copying a file rebuilds the cache; an edit
that keeps size and mtime and misses every sampled block goes unnoticed.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from repro.data.rawfiles import RawFileSource, Rejections, line_blocks, ratio_split, require_file, strict_failure
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import register_source

COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
    "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
    "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
STRING_FIELDS = COLUMNS[3:]  # read and kept as strings
FEATURES = ("hour", *STRING_FIELDS, "weekday", "weekend")  # FuxiCTR's Avazu_x4 order
ROLES = {"banner_pos": ("scene",), "device_ip": ("user",)}
HEADER = ",".join(COLUMNS)
SPLITS = ("train", "valid", "test")
X4_RATIOS = (0.8, 0.1, 0.1)  # train, valid, test
FAIL_FAST_LINES = 1000  # a file none of whose first this many data lines parses is not Avazu
MAX_LINE = 1 << 24  # a line without a break within this many bytes (or a block, if larger): not Avazu
_LINE_END = re.compile(rb"\r\n|\r|\n")
_DAY = re.compile(r"^[0-9]{6}$")


@dataclass
class AvazuConfig:
    data_dir: str = "data/avazu"
    split: str = "x4"  # x4 | time | files
    file: str = "train"  # x4 and time: Kaggle's train file, decompressed
    split_seed: int = 2018  # x4: the line-number hash's seed
    valid_days: list[str] = field(default_factory=lambda: ["141029"])  # time: YYMMDD
    test_days: list[str] = field(default_factory=lambda: ["141030"])  # time: YYMMDD
    train_file: str = "train.csv"  # files: reczoo's Avazu_x4 layout
    valid_file: str = "valid.csv"
    test_file: str = "test.csv"
    strict: bool = False  # raise at the first malformed row instead of skipping it
    block_size_mb: float = 64.0  # bytes parsed at once: bounds memory; one parquet row group each


class Bad(NamedTuple):
    line: int
    kind: str
    reason: str
    day: str | None  # YYMMDD from the row's hour text, when readable


class Block(NamedTuple):
    table: pa.Table  # click, the 24 features and ``line``, good rows only
    day: pa.Array  # YYMMDD of each good row
    bad: list[Bad]


@register_source("avazu", config=AvazuConfig)
class AvazuCSV(RawFileSource):
    name = "avazu"
    label = "click"
    splits = SPLITS

    def __init__(self, cfg: AvazuConfig) -> None:
        if cfg.split not in ("x4", "time", "files"):
            raise ConfigError(f"avazu: split must be x4, time or files, got {cfg.split!r}")
        if not cfg.block_size_mb > 0:
            raise ConfigError(f"avazu: block_size_mb must be positive, got {cfg.block_size_mb}")
        if cfg.split == "time":
            for key in ("valid_days", "test_days"):
                days = getattr(cfg, key)
                if not days or any(not _DAY.match(str(d)) for d in days):
                    raise ConfigError(f"avazu: {key} must be a non-empty list of YYMMDD days, got {days}")
            both = sorted(set(cfg.valid_days) & set(cfg.test_days))
            if both:
                raise ConfigError(f"avazu: day(s) {both} are in both valid_days and test_days")
        super().__init__(cfg)
        self.split_protocol = {
            "x4": f"random 8:1:1 by a seeded hash of each row's line number (split_seed {cfg.split_seed}); "
                  "BARS Avazu_x4's shares, not its exact rows",
            "time": f"by day: valid {list(cfg.valid_days)}, test {list(cfg.test_days)}, every other day train",
            "files": "as given by the user's train/valid/test files (reczoo Avazu_x4 layout)",
        }[cfg.split]

    # -- the Source protocol -----------------------------------------------------------------
    def fields(self) -> list[RawField]:
        return [RawField(name, "categorical", ROLES.get(name, ())) for name in FEATURES]

    def chunks(self, split: str) -> Iterator[pa.Table]:
        for _, table in self.split_chunks((split,)):
            yield table

    def split_chunks(self, splits: Sequence[str]) -> Iterator[tuple[str, pa.Table]]:
        """(split, rows) for every split in ``splits``: one read of Kaggle's file serves them all."""
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise DataError(f"avazu: unknown split {unknown[0]!r}; expected one of {SPLITS}")
        if self.cfg.split == "files":
            for split in splits:
                yield from self._file_chunks(self._path(split), (split,))
        else:
            yield from self._file_chunks(self._path("file"), tuple(splits))

    def _file_chunks(self, path: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, pa.Table]]:
        rows = dict.fromkeys(splits, 0)
        ledgers = {split: Rejections("avazu", path, split) for split in splits}
        for block in self._read(path, notes="train" in splits or self.cfg.split == "files"):
            for split in splits:
                mine = self._mine(split, block.table.column("line").to_numpy(), block.day)
                ledgers[split].extend((b.line, b.kind) for b in block.bad if self._owner(b) == split)
                table = block.table if mine is None else block.table.filter(pa.array(mine))
                if table.num_rows:
                    rows[split] += table.num_rows
                    yield split, table
        for split in splits:
            self.rejected[split] = ledgers[split].lines()
            ledgers[split].report()
            if rows[split] == 0:
                where = {"x4": "the file is too small for an 8:1:1 split",
                         "time": f"no row has a day in {self._days(split)}",
                         "files": "the file has no valid row"}[self.cfg.split]
                raise DataError(f"avazu: {path}: split {split!r} is empty ({where})")

    # -- splits ------------------------------------------------------------------------------
    def input_paths(self) -> list[Path]:
        if self.cfg.split == "files":
            return [self._path(s) for s in SPLITS]
        return [self._path("file")]

    def _path(self, key: str) -> Path:
        name = self.cfg.file if key == "file" else getattr(self.cfg, f"{key}_file")
        if key == "file":
            what, hint = "Kaggle's train file", "decompress train.gz there, or set data.data_dir and data.file"
        else:
            what, hint = f"{key} file", f"place reczoo Avazu_x4's {key}.csv there, or set data.data_dir"
        return require_file("avazu", Path(self.cfg.data_dir) / name, what, hint)

    def _days(self, split: str) -> list[str]:
        return list(self.cfg.valid_days if split == "valid" else self.cfg.test_days)

    def _mine(self, split: str, lines: np.ndarray, day: pa.Array) -> np.ndarray | None:
        """Mask of the rows of ``split`` (None: all of them)."""
        if self.cfg.split == "files":
            return None
        if self.cfg.split == "x4":
            return ratio_split(lines, self.cfg.split_seed, X4_RATIOS) == SPLITS.index(split)
        valid = np.asarray(pc.is_in(day, value_set=pa.array(self.cfg.valid_days, pa.string())), dtype=bool)
        test = np.asarray(pc.is_in(day, value_set=pa.array(self.cfg.test_days, pa.string())), dtype=bool)
        return {"valid": valid, "test": test, "train": ~(valid | test)}[split]

    def _owner(self, bad: Bad) -> str:
        """The split a rejected row would have gone to."""
        if self.cfg.split == "x4":
            return SPLITS[int(ratio_split(np.array([bad.line]), self.cfg.split_seed, X4_RATIOS)[0])]
        if self.cfg.split == "time":
            return "valid" if bad.day in self.cfg.valid_days else "test" if bad.day in self.cfg.test_days else "train"
        return "train"  # unused: files mode owns every row of a file

    # -- reading -----------------------------------------------------------------------------
    def _read(self, path: Path, notes: bool = True) -> Iterator[Block]:
        """Every block of ``path`` in order, checked; raises on a file that is not Avazu's."""
        block_size = max(int(self.cfg.block_size_mb * 2**20), 1)
        good = bad_total = crlf = 0
        first_bad: Bad | None = None
        unterminated_kept = None
        with open(path, "rb") as f:
            names, start = _header(path, f)
        max_line = max(block_size, MAX_LINE)
        blocks = line_blocks(path, block_size, start=start, first_line=2, max_line=max_line, cr_ends_lines=True)
        for line, block, n_lines, long_lines in blocks:
            if long_lines:
                raise DataError(f"avazu: {path}: no line break within {max_line:,} bytes in line {long_lines[0]}; "
                                f"expected an Avazu CSV (one row per line, {HEADER})")
            if block.find(b"\r") >= 0:
                crlf += block.count(b"\r\n")
            parsed, parsed_lines = parse_block(block, names, line, careful=False if block.isascii() else None)
            if parsed_lines != n_lines:  # pyarrow and line_blocks disagree on what a line is
                raise DataError(f"avazu: {path}: lines {line}..{line + n_lines - 1}: the parser found {parsed_lines}")
            if block[-1:] not in (b"\n", b"\r"):  # the file's last line, unterminated
                last = line + n_lines - 1
                parsed = parsed._replace(bad=[
                    b._replace(kind="truncated last line", reason=f"truncated last line (no line break, {b.reason})")
                    if b.line == last and b.kind == "wrong field count" else b
                    for b in parsed.bad])
                if parsed.table.num_rows and parsed.table.column("line")[-1].as_py() == last:
                    unterminated_kept = last
            good += parsed.table.num_rows
            bad_total += len(parsed.bad)
            if parsed.bad:
                first = min(parsed.bad)
                first_bad = first_bad or first
                if self.cfg.strict:
                    raise strict_failure("avazu", path, first.line, first.reason)
            if good == 0 and bad_total >= FAIL_FAST_LINES:
                raise _nothing_parsed(path, bad_total, first_bad)
            yield parsed
        if good == 0:
            if bad_total:
                raise _nothing_parsed(path, bad_total, first_bad)
            raise DataError(f"avazu: {path}: no data row after the header; expected rows of {HEADER}")
        if notes and crlf:
            print(f"avazu: {path}: {crlf} line(s) end in CRLF; read as LF", file=sys.stderr)
        if notes and unterminated_kept:
            print(f"avazu: {path}: the last line ({unterminated_kept}) has no line break; kept (24 valid fields), "
                  "but it may have lost the end of its last field", file=sys.stderr)


def parse_block(block, names: list[str], first_line: int, careful: bool | None = None) -> tuple[Block, int]:
    """Parse one block (bytes-like) of whole lines whose first line is ``first_line``; returns
    (block, lines in it).

    The fast path hands the bytes to pyarrow; the careful path (for bytes that are not valid UTF-8,
    or when ``careful`` is forced) rejects the non-UTF-8 lines in Python first. ``careful=None``
    decides by checking the bytes."""
    if careful is None:
        careful = not _is_utf8(block)
    if not careful:
        table, bad_rel, n_lines = _pyarrow_block(block, names)
        line_of = first_line + np.arange(n_lines, dtype=np.int64)
        bad = [Bad(int(line_of[r - 1]), *info) for r, info in bad_rel]
    else:
        lines = _LINE_END.split(bytes(block))
        if lines and lines[-1] == b"":
            lines.pop()  # the text after the last line break is not a line
        n_lines, keep, bad = len(lines), [], []
        for i, text in enumerate(lines):
            try:
                text.decode("utf-8")
                keep.append(i)
            except UnicodeDecodeError:
                s = text.decode("utf-8", errors="replace")
                bad.append(Bad(first_line + i, "bad UTF-8", "not valid UTF-8", _day_of_text(s, names)))
        line_of = first_line + np.asarray(keep, dtype=np.int64)
        if keep:
            table, bad_rel, n = _pyarrow_block(b"\n".join(lines[i] for i in keep) + b"\n", names)
            if n != len(keep):  # pyarrow and the splitter above disagree on what a line is
                raise DataError(f"avazu: lines {first_line}..{first_line + n_lines - 1}: cannot split into lines")
            bad += [Bad(int(line_of[r - 1]), *info) for r, info in bad_rel]
        else:
            table = pa.table({n: pa.array([], pa.string()) for n in names if n != "id"})
    ok = np.ones(n_lines, dtype=bool)
    ok[[b.line - first_line for b in bad]] = False
    rows = first_line + np.flatnonzero(ok)
    if len(rows) != table.num_rows:
        raise DataError(f"avazu: lines {first_line}..{first_line + n_lines - 1}: {table.num_rows} rows parsed "
                        f"but {len(rows)} lines left after {len(bad)} rejections")
    checked, more_bad = _check(table, rows)
    return checked._replace(bad=sorted(bad + more_bad)), n_lines


def _pyarrow_block(block, names: list[str]) -> tuple[pa.Table, list[tuple[int, tuple]], int]:
    """(good rows as strings, [(1-based line within block, (kind, reason, day))], lines in block)."""
    bad: list[tuple[int, tuple]] = []

    def skip(row) -> str:
        kind = "empty line" if row.text == "" else "wrong field count"
        reason = "empty line" if row.text == "" else f"expected 24 fields, got {row.actual_columns}"
        bad.append((row.number, (kind, reason, _day_of_text(row.text, names))))
        return "skip"

    kept = [n for n in names if n != "id"]
    if not block:
        return pa.table({n: pa.array([], pa.string()) for n in kept}), bad, 0
    try:
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=len(block) + 1),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char=False, double_quote=False,
                                             escape_char=False, newlines_in_values=False,
                                             ignore_empty_lines=False, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in kept}, include_columns=kept,
                                                 strings_can_be_null=False, check_utf8=False),
        )
    except (pa.ArrowException, UnicodeDecodeError) as e:
        raise DataError(f"avazu: cannot parse a block: {e}") from e
    if any(r < 1 for r, _ in bad):
        raise DataError("avazu: pyarrow reported no line number for a malformed row")
    return table, bad, table.num_rows + len(bad)


def _check(table: pa.Table, lines: np.ndarray) -> tuple[Block, list[Bad]]:
    """Validate click and hour, derive the time fields; returns (good rows, rejected rows)."""
    table = table.combine_chunks() if table.num_rows else table
    click, hour = table.column("click"), table.column("hour")
    hod, wd, we, day, hour_ok = expand_hour(hour)
    click_ok = np.asarray(pc.is_in(click, value_set=pa.array(["0", "1"])), dtype=bool)
    ok = click_ok & hour_ok
    bad = []
    if not ok.all():
        lengths = sum(np.asarray(pc.binary_length(table.column(n)), dtype=np.int64) for n in table.column_names)
        clicks, hours, days = click.to_pylist(), hour.to_pylist(), day.to_pylist()
        for i in np.flatnonzero(~ok):
            if lengths[i] == 0:
                kind, reason = "empty line", "empty line (every field empty)"
            elif not click_ok[i]:
                kind, reason = "bad click", f"click is {clicks[i][:20]!r}, expected 0 or 1"
            else:
                kind, reason = "bad hour", f"hour is {hours[i][:20]!r}, expected a YYMMDDHH date"
            bad.append(Bad(int(lines[i]), kind, reason, days[i] if hour_ok[i] else _day_text(hours[i])))
    mask = pa.array(ok)
    cols = {"click": pc.equal(click, "1").cast(pa.int8()), "hour": hod}
    cols.update({n: table.column(n) for n in STRING_FIELDS})
    cols.update({"weekday": wd, "weekend": we, "line": pa.array(lines, pa.int64())})
    good = pa.table(cols)
    if not ok.all():
        good, day = good.filter(mask), day.filter(mask)
    return Block(good, day, []), bad


def expand_hour(hour) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array, np.ndarray]:
    """``YYMMDDHH`` strings -> (hour of day, weekday with Sunday 0, weekend flag, YYMMDD, valid mask).

    As FuxiCTR's ``convert_hour``/``convert_weekday``/``convert_weekend`` (``int(x[6:8])``,
    ``strftime('%w')``, ``%w in {6, 0}``), computed once per distinct value."""
    hour = hour.combine_chunks() if isinstance(hour, pa.ChunkedArray) else hour
    enc = pc.dictionary_encode(hour)
    values, idx = enc.dictionary, enc.indices
    ts = pc.strptime(values, format="%y%m%d%H", unit="s", error_is_null=True)
    valid = pc.and_(pc.match_substring_regex(values, "^[0-9]{8}$"),
                    pc.equal(pc.strftime(ts, format="%y%m%d%H"), values))
    valid = pc.fill_null(valid, False)
    wd = pc.day_of_week(ts, count_from_zero=True, week_start=7).cast(pa.int8())
    we = pc.or_(pc.equal(wd, 0), pc.equal(wd, 6)).cast(pa.int8())
    hod = pc.hour(ts).cast(pa.int8())
    day = pc.utf8_slice_codeunits(values, 0, 6)
    take = lambda a: pc.take(a, idx)  # noqa: E731
    return take(hod), take(wd), take(we), take(day), np.asarray(take(valid), dtype=bool)


# -- helpers -----------------------------------------------------------------------------------
def _header(path: Path, f) -> tuple[list[str], int]:
    """The column names of ``path``'s first line and the byte offset of its data; checked."""
    head = f.read(1 << 20)
    expected = f"expected an Avazu CSV whose first line is the header {HEADER}"
    if not head:
        raise DataError(f"avazu: {path} is empty (0 bytes); {expected}")
    m = _LINE_END.search(head)
    if m is None and len(head) == 1 << 20:
        raise DataError(f"avazu: {path}: no line break in the first MiB; {expected}")
    text = (head[: m.start()] if m else head).decode("utf-8", errors="replace").lstrip("\ufeff")
    names = text.split(",")
    if len(names) == len(COLUMNS) and set(names) == set(COLUMNS):
        return names, m.end() if m else len(head)
    if "\t" in text:
        why = ("it is tab-separated, as Criteo's files are (label, I1-I13, C1-C26, no header)"
               if text.count("\t") == 39 else "it is tab-separated")
    elif "click" not in names and set(names) == set(COLUMNS) - {"click"}:
        why = "it has no click column: Kaggle's unlabelled test file cannot be trained on"
    elif len(names) == len(COLUMNS) and names[0].isdigit():
        why = "it looks like a data row: the file has no header"
    elif {"I1", "C26"} <= {n.strip() for n in names}:
        why = "it is a Criteo header (label, I1-I13, C1-C26)"
    else:
        why = f"got {text[:120]!r}"
    raise DataError(f"avazu: {path}: line 1 is not Avazu's header ({why}); {expected}")


def _is_utf8(data) -> bool:
    try:
        str(data, "utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _day_text(hour: str | None) -> str | None:
    return hour[:6] if hour and len(hour) == 8 and hour.isdigit() else None


def _day_of_text(text: str, names: list[str]) -> str | None:
    """YYMMDD from a malformed row's hour field, when it reads as one."""
    parts = text.split(",")
    i = names.index("hour")
    return _day_text(parts[i]) if len(parts) > i else None


def _nothing_parsed(path: Path, n: int, first: Bad | None) -> DataError:
    detail = f"; first at line {first.line}: {first.reason}" if first else ""
    return DataError(f"avazu: {path}: none of the first {n:,} data lines is an Avazu row (24 comma-separated "
                     f"fields, click 0 or 1, hour YYMMDDHH){detail}")


# -- a generated file in the real layout ---------------------------------------------------------
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex8(values: np.ndarray) -> pa.Array:
    """uint32 values -> 8-character lowercase hex strings (vectorised)."""
    v = np.asarray(values, dtype=np.uint64)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    digits = _HEX[((v[:, None] >> shifts) & np.uint64(15)).astype(np.intp)]
    return pa.array(np.ascontiguousarray(digits).view("S8").ravel()).cast(pa.string())


def _zipf(rng: np.random.Generator, n: int, size: int, a: float) -> np.ndarray:
    """Indices 0..n-1 with P(k) proportional to 1 / (k+1)^a."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** a)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1]), n - 1)


def _pick(rng: np.random.Generator, values, probs, size: int) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    return np.asarray(values)[rng.choice(len(p), size=size, p=p / p.sum())]


def write_avazu_sample(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Write ``rows`` rows of synthetic data in Avazu's exact ``train`` layout to ``path``.

    Header line, comma-separated, LF line ends, no quoting; ``id`` a uniform unsigned 64-bit integer
    (about half exceed int64; the first row's always does); ``hour`` ``YYMMDDHH`` over 2014-10-21 ..
    2014-10-30 in ascending order with a daily traffic cycle; site/app/device ids 8-character hex,
    drawn Zipf-like; app traffic (~35%) carries Avazu's placeholder site (85f751fd) and site traffic
    its placeholder app (ecad2386); ``device_id`` is a99f214a on ~83% of rows; ``C1``,
    ``banner_pos``, ``device_type``, ``device_conn_type`` and ``C15`` .. ``C21`` follow Avazu's
    dominant values, ``C15`` .. ``C21`` as functions of ``C14`` (the creative); clicks are drawn from a
    logistic model of site, app, banner slot, creative and hour, with a mean near 17%."""
    rng = np.random.default_rng(seed)
    n = int(rows)
    path = Path(path)
    # Time: 240 hours, ascending, more traffic by day than by night.
    hours = np.arange(240)
    weight = 1.0 + 0.6 * np.sin((hours % 24 - 6) / 24 * 2 * np.pi)
    h = np.sort(rng.choice(240, size=n, p=weight / weight.sum()))
    hour = pa.array(np.char.add("1410", np.char.zfill((2100 + (h // 24) * 100 + h % 24).astype(str), 4)))
    ids = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    if n:
        ids[0] = np.uint64(10000169349117863715)
    # Publishers: a site or an app.
    is_app = rng.random(n) < 0.35
    n_site, n_app = max(20, n // 300), max(10, n // 600)
    site_hex = rng.integers(0, 2**32, n_site, dtype=np.uint64)
    app_hex = rng.integers(0, 2**32, n_app, dtype=np.uint64)
    site_dom = _hex8(rng.integers(0, 2**32, max(10, n_site * 2 // 3), dtype=np.uint64))
    app_dom = _hex8(rng.integers(0, 2**32, max(5, n_app // 3), dtype=np.uint64))
    cats = _hex8(rng.integers(0, 2**32, 26, dtype=np.uint64))
    site_of_dom = _zipf(rng, len(site_dom), n_site, 1.0)
    site_of_cat, app_of_cat = _zipf(rng, 26, n_site, 1.2), _zipf(rng, 26, n_app, 1.2)
    app_of_dom = _zipf(rng, len(app_dom), n_app, 1.0)
    s, a = _zipf(rng, n_site, n, 1.1), _zipf(rng, n_app, n, 1.1)
    site_str, app_str = _hex8(site_hex), _hex8(app_hex)

    site_id = pc.if_else(pa.array(is_app), "85f751fd", site_str.take(pa.array(s)))
    site_domain = pc.if_else(pa.array(is_app), "c4e18dd6", site_dom.take(pa.array(site_of_dom[s])))
    site_category = pc.if_else(pa.array(is_app), "50e219e0", cats.take(pa.array(site_of_cat[s])))
    app_id = pc.if_else(pa.array(is_app), app_str.take(pa.array(a)), "ecad2386")
    app_domain = pc.if_else(pa.array(is_app), app_dom.take(pa.array(app_of_dom[a])), "7801e8d9")
    app_category = pc.if_else(pa.array(is_app), cats.take(pa.array(app_of_cat[a])), "07d7df22")
    # Devices.
    n_dev, n_ip, n_model = max(10, n // 10), max(10, n // 2), max(20, min(8000, n // 100))
    dev = _hex8(rng.integers(0, 2**32, n_dev, dtype=np.uint64)).take(pa.array(_zipf(rng, n_dev, n, 0.8)))
    device_id = pc.if_else(pa.array(rng.random(n) < 0.83), "a99f214a", dev)
    device_ip = _hex8(rng.integers(0, 2**32, n_ip, dtype=np.uint64)).take(pa.array(_zipf(rng, n_ip, n, 0.9)))
    model_idx = _zipf(rng, n_model, n, 1.05)
    device_model = _hex8(rng.integers(0, 2**32, n_model, dtype=np.uint64)).take(pa.array(model_idx))
    device_type = _pick(rng, [1, 0, 4, 5, 2], [92.2, 5.5, 1.9, 0.3, 0.1], n)
    conn = _pick(rng, [0, 2, 3, 5], [86.3, 8.2, 5.4, 0.1], n)
    c1 = _pick(rng, [1005, 1002, 1010, 1012, 1007, 1001, 1008], [91.9, 5.5, 2.2, 0.28, 0.09, 0.02, 0.01], n)
    c1 = np.where(device_type == 0, 1002, c1)
    banner = _pick(rng, [0, 1, 7, 2, 4, 5, 3], [72, 27.8, 0.1, 0.03, 0.02, 0.01, 0.01], n)
    # Creatives (C14) and their attributes C15..C21.
    n_c14 = max(20, min(2600, n // 20))
    c14_values = rng.choice(np.arange(375, 24053), size=n_c14, replace=False)
    sizes = np.array([(320, 50), (300, 250), (216, 36), (728, 90), (120, 20), (1024, 768), (480, 320), (768, 1024)])
    size_of = _pick(rng, np.arange(len(sizes)), [93, 4.5, 1.5, 0.6, 0.2, 0.1, 0.05, 0.05], n_c14)
    c17_of = rng.integers(112, 2759, size=max(5, n_c14 // 6))[rng.integers(0, max(5, n_c14 // 6), n_c14)]
    c18_of = _pick(rng, [0, 3, 2, 1], [42, 34, 17, 7], n_c14)
    c19_of = _pick(rng, [35, 39, 167, 161, 47, 33, 1327, 687, 41, 1059], [30, 22, 10, 8, 7, 6, 5, 5, 4, 3], n_c14)
    c20_of = np.where(rng.random(n_c14) < 0.47, -1, 100000 + rng.integers(0, 249, n_c14))
    c21_of = _pick(rng, [23, 221, 79, 48, 71, 61, 157, 32, 33, 52], [22, 13, 11, 8, 7, 6, 5, 4, 4, 3], n_c14)
    c = _zipf(rng, n_c14, n, 1.0)
    # Clicks: a logistic model, its intercept set so the mean is about 17%.
    eff = lambda k, sd: rng.normal(0.0, sd, k)  # noqa: E731
    logit = (np.where(is_app, eff(n_app, 0.6)[a], eff(n_site, 0.6)[s]) + eff(n_c14, 0.5)[c]
             + np.where(banner == 1, 0.15, 0.0) + 0.15 * np.sin((h % 24) / 24 * 2 * np.pi)
             + eff(n_model, 0.3)[model_idx])
    bias = -1.6
    for _ in range(20):  # Newton on the mean click rate
        p = 1 / (1 + np.exp(-(logit + bias)))
        bias -= (p.mean() - 0.17) / max((p * (1 - p)).mean(), 1e-9) if n else 0.0
    click = (rng.random(n) < 1 / (1 + np.exp(-(logit + bias)))).astype(np.int8)
    ints = lambda v: pa.array(np.asarray(v, dtype=np.int64)).cast(pa.string())  # noqa: E731
    table = pa.table({
        "id": pa.array(ids.astype(str)), "click": ints(click), "hour": hour, "C1": ints(c1),
        "banner_pos": ints(banner), "site_id": site_id, "site_domain": site_domain, "site_category": site_category,
        "app_id": app_id, "app_domain": app_domain, "app_category": app_category, "device_id": device_id,
        "device_ip": device_ip, "device_model": device_model, "device_type": ints(device_type),
        "device_conn_type": ints(conn), "C14": ints(c14_values[c]), "C15": ints(sizes[size_of[c], 0]),
        "C16": ints(sizes[size_of[c], 1]), "C17": ints(c17_of[c]), "C18": ints(c18_of[c]),
        "C19": ints(c19_of[c]), "C20": ints(c20_of[c]), "C21": ints(c21_of[c]),
    })
    with open(path, "wb") as f:
        f.write(HEADER.encode() + b"\n")
        if n:
            pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return path
