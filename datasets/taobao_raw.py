"""Alimama's raw Taobao display-ad data set (Tianchi dataId 56) exactly as distributed.

Input. Three CSV files the user places in ``data_dir`` (nothing is downloaded):
- ``raw_sample.csv``: header ``user,time_stamp,adgroup_id,pid,nonclk,clk``; one ad impression a
  line (about 26M lines, 2017-05-06 .. 2017-05-13); ``time_stamp`` is unix seconds; ``clk`` is
  the label and ``nonclk`` its complement.
- ``ad_feature.csv``: header ``adgroup_id,cate_id,campaign_id,customer,brand,price``; ``brand``
  may be ``NULL`` (read as missing).
- ``user_profile.csv``: header ``userid,cms_segid,cms_group_id,final_gender_code,age_level,
  pvalue_level,shopping_level,occupation,new_user_class_level `` (the real file's last name ends
  in a space; header names are compared stripped); a missing value is an empty field.
``behavior_log.csv`` (the users' browse/cart/fav/buy log) is out of scope: it is not read.

Each impression is joined with its ad's and its user's row (a sorted index on the side table's
key, ``numpy.searchsorted``, vectorised per chunk; each side table is read whole once and kept for
the later passes while its size and modification time stay the same).
Field names and roles are ``datasets/taobao_ad.py``'s (FuxiCTR's TaobaoAd_x1): ``userid`` (role
``user``), ``adgroup_id`` (``ad``), ``pid`` (``scene``), the ad and profile columns categorical,
``price`` dense as ``log1p(max(price, 0))``; so a model runs on either reader. ``time_stamp`` is
not a feature.

Split (the data set's protocol: the first 7 days train, the last day test). A row's day is its
calendar date in **Beijing time (UTC+8)**: ``(time_stamp + 8 * 3600) // 86400``. Defaults:
``train_days`` 2017-05-06 .. 2017-05-11, ``valid_days`` 2017-05-12 (carved from the 7 training
days: their last day), ``test_days`` 2017-05-13; each list is configurable and they must not
overlap. A row on a day in no list belongs to no split: it is counted and printed, not rejected.

Bad input. A line of ``raw_sample.csv`` is a row or a rejection, never both. It is rejected when
it: is empty (``empty``); has a field count other than 6 (``fields``); has a ``user``,
``time_stamp`` or ``adgroup_id`` that is not a decimal integer (``id``; no sign, no spaces, at
most 18 digits); has a ``pid`` that is empty or holds other than ``[0-9A-Za-z_]`` (``pid``); has
``clk`` or ``nonclk`` outside {0, 1} or ``clk + nonclk != 1`` (``label``). A rejected line counts
once: in the split its time stamp's day names, or in train when the time stamp is unreadable or
its day is in no split (the field count is wrong, say). Default: skip, count (``rejected[split]``,
the first 1,000 line numbers kept) and print one line per kind with example line numbers;
``strict: true`` raises ``DataError`` with the file, line and reason at the first one. A side
file's line with a byte outside printable ASCII, a wrong field count or a key that is not an
integer is skipped and counted the same way (strict: fails); a duplicate key keeps its first row;
``NULL`` and an empty field are missing; a ``price`` that is not a finite number is missing (0.0
after the log). An impression whose ``adgroup_id`` is not in ``ad_feature.csv`` or
whose ``user`` is not in ``user_profile.csv`` is **kept** with the missing side fields missing
(padding index 0; the real profile table lacks some users) and counted in a printed summary per
split. An empty file, a file whose header is not the expected one and a missing file fail at once
with a ``DataError`` naming the file.

Reading. ``raw_sample.csv`` is cut into blocks of ``block_size_mb`` at line ends
(``repro.data.rawfiles.line_blocks``; LF ends a line, a CRLF's CR is dropped) and each block's
lines are split and checked with vectorised pyarrow compute (no quoting: a ``"`` is an ordinary,
and here invalid, character), so every row and rejection has its line number. The side files are
read whole (about 30 MB each) and checked the same way. The issue asked for ``pyarrow.csv.open_csv``
(as ``taobao_ad.py``); it is not used: its streaming reader stops at the first value it cannot
convert, quotes can join lines, and the numbers of good rows are not known, so a later check
(``clk + nonclk``) could not name its line.

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's,
the config less ``strict`` and ``block_size_mb``, and per file its path, size, modification time
and 8 sampled 64 KiB blocks (delete ``cache/taobao_raw-*`` after an edit that keeps all three).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repro.data.rawfiles import RawFileSource, Rejections, line_blocks, require_file, split_lines, strict_failure
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import register_source

NAME = "taobao_raw"
SAMPLE_COLUMNS = ("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk")
AD_COLUMNS = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price")
USER_COLUMNS = ("userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
                "shopping_level", "occupation", "new_user_class_level")
CATEGORICAL = {  # datasets/taobao_ad.py's names and roles
    "userid": ("user",), "adgroup_id": ("ad",), "pid": ("scene",), "cate_id": (), "campaign_id": (),
    "customer": (), "brand": (), "cms_segid": (), "cms_group_id": (), "final_gender_code": (),
    "age_level": (), "pvalue_level": (), "shopping_level": (), "occupation": (), "new_user_class_level": (),
}
SPLIT_NAMES = ("train", "valid", "test")
BEIJING = 8 * 3600  # UTC+8, seconds
KINDS = {
    "empty": "an empty line",
    "fields": "a field count other than 6",
    "id": "a user, time_stamp or adgroup_id that is not an integer",
    "pid": "a pid that is empty or not [0-9A-Za-z_]",
    "label": "clk or nonclk outside {0, 1}, or clk + nonclk != 1",
}
SIDE_KINDS = {
    "text": "a byte outside printable ASCII",
    "fields": "a wrong field count",
    "key": "a key that is not an integer",
}
_INT = "^[0-9]{1,18}$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


@dataclass
class TaobaoRawConfig:
    data_dir: str = "data/taobao_raw"
    sample_file: str = "raw_sample.csv"
    ad_file: str = "ad_feature.csv"
    user_file: str = "user_profile.csv"
    # calendar days in Beijing time (UTC+8), YYYY-MM-DD
    train_days: list = field(default_factory=lambda: [f"2017-05-{d:02d}" for d in range(6, 12)])
    valid_days: list = field(default_factory=lambda: ["2017-05-12"])
    test_days: list = field(default_factory=lambda: ["2017-05-13"])
    strict: bool = False  # raise at the first malformed line instead of skipping and counting it
    block_size_mb: int = 64  # bytes parsed at once: bounds memory per chunk


def _day_number(text: str, key: str) -> int:
    try:
        return dt.date.fromisoformat(str(text)).toordinal() - dt.date(1970, 1, 1).toordinal()
    except ValueError as e:
        raise ConfigError(f"{NAME}: {key}: {text!r} is not a YYYY-MM-DD date") from e


@register_source(NAME, config=TaobaoRawConfig)
class TaobaoRawSource(RawFileSource):
    name = NAME
    label = "clk"
    fingerprint_ignores = ("strict", "block_size_mb")  # they do not change a single row

    def __init__(self, cfg: TaobaoRawConfig) -> None:
        super().__init__(cfg)
        self.day_split: dict[int, int] = {}
        self.outside_days = 0
        self._sides: dict[tuple[str, ...], tuple[tuple, tuple[np.ndarray, pa.Table]]] = {}
        for k, split in enumerate(SPLIT_NAMES):
            days = getattr(cfg, f"{split}_days")
            if isinstance(days, str) or not list(days):
                raise ConfigError(f"{NAME}: {split}_days must be a non-empty list of YYYY-MM-DD dates")
            for text in days:
                day = _day_number(text, f"{split}_days")
                if day in self.day_split:
                    raise ConfigError(f"{NAME}: day {text} is in two splits")
                self.day_split[day] = k
        if cfg.block_size_mb < 1:
            raise ConfigError(f"{NAME}: block_size_mb must be at least 1")
        self.split_protocol = (
            f"by day in Beijing time (UTC+8): train {list(cfg.train_days)}, valid {list(cfg.valid_days)}, "
            f"test {list(cfg.test_days)}"
        )

    # -- the Source protocol --------------------------------------------------------------------

    def fields(self) -> list[RawField]:
        return [RawField(name, "categorical", roles) for name, roles in CATEGORICAL.items()] + [
            RawField("price", "dense")
        ]

    def input_paths(self) -> list[Path]:
        return list(self._paths().values())

    def _paths(self) -> dict[str, Path]:
        root = Path(self.cfg.data_dir)
        return {
            key: require_file(NAME, root / getattr(self.cfg, f"{key}_file"), what,
                              "place the Tianchi file there or set data.data_dir")
            for key, what in (("sample", "the impression log"), ("ad", "the ad table"), ("user", "the user table"))
        }

    def chunks(self, split: str) -> Iterator[pa.Table]:
        if split not in SPLIT_NAMES:
            raise DataError(f"{NAME}: unknown split {split!r}; known: {list(SPLIT_NAMES)}")
        want = SPLIT_NAMES.index(split)
        paths = self._paths()
        ads = self._cached_side(paths["ad"], AD_COLUMNS)
        users = self._cached_side(paths["user"], USER_COLUMNS)
        ledger = Rejections(NAME, paths["sample"], split, KINDS)
        missing_ad = missing_user = other_days = 0
        yielded = False
        for rows, rejects in self._parse(paths["sample"]):
            for line, kind, day in rejects:
                if self.day_split.get(day, 0) == want:
                    ledger.add(line, kind)
            split_of = self._split_of(np.asarray(rows.column("day")))
            if want == 0:
                other_days += int((split_of == -1).sum())
            rows = rows.filter(pa.array(split_of == want))
            if not rows.num_rows:
                continue
            table, no_ad, no_user = self._join(rows, ads, users)
            missing_ad += no_ad
            missing_user += no_user
            yielded = True
            yield table
        if not yielded:
            yield self._join(_empty_rows(), ads, users)[0]
        self.rejected[split] = ledger.lines()
        ledger.report()
        where = f"{NAME}: {paths['sample']}: {split}"
        if missing_ad:
            print(f"{where}: kept {missing_ad} row(s) whose adgroup_id is not in {paths['ad'].name} "
                  "(ad fields missing)", file=sys.stderr)
        if missing_user:
            print(f"{where}: kept {missing_user} row(s) whose user is not in {paths['user'].name} "
                  "(profile fields missing)", file=sys.stderr)
        if want == 0:
            self.outside_days = other_days  # rows of the last train pass on a day in no split
        if other_days:
            print(f"{where}: {other_days} row(s) on a day (UTC+8) in no split, left out", file=sys.stderr)

    def _split_of(self, day: np.ndarray) -> np.ndarray:
        """0 train, 1 valid, 2 test, -1 none for each day number (days since 1970-01-01, UTC+8)."""
        days = np.array(sorted(self.day_split), dtype=np.int64)
        splits = np.array([self.day_split[d] for d in days], dtype=np.int64)
        at = np.minimum(np.searchsorted(days, day), len(days) - 1)
        return np.where(days[at] == day, splits[at], -1)

    # -- raw_sample.csv -------------------------------------------------------------------------

    def _parse(self, path: Path) -> Iterator[tuple[pa.Table, list[tuple[int, str, int]]]]:
        """(good rows with their day, rejected (line, kind, day or -1)) per block, in file order."""
        first = True
        for block in line_blocks(path, self.cfg.block_size_mb << 20, first_block_size=1 << 20, max_line=1 << 16):
            lines = split_lines(block.data).view(pa.large_binary()) if block.data else pa.array([], pa.large_binary())
            numbers = block.first_line + np.arange(len(lines), dtype=np.int64)
            rejects: list[tuple[int, str, int]] = [(n, "fields", -1) for n in block.long_lines]
            if first:
                first = False
                if not len(lines):
                    raise DataError(f"{NAME}: {path} is empty (expected the header {','.join(SAMPLE_COLUMNS)})")
                header = bytes(lines[0].as_py()).decode("utf-8", errors="replace").strip()
                if tuple(n.strip() for n in header.split(",")) != SAMPLE_COLUMNS:
                    shown = header if len(header) <= 120 else header[:117] + "..."
                    raise DataError(f"{NAME}: {path}: line 1 is not raw_sample.csv's header: {shown!r} "
                                    f"(expected {','.join(SAMPLE_COLUMNS)})")
                lines, numbers = lines[1:], numbers[1:]
            rows, more = _check_lines(lines, numbers)
            rejects = sorted(rejects + more)
            if rejects and self.cfg.strict:
                line, kind, _ = rejects[0]
                raise strict_failure(NAME, path, line, KINDS[kind])
            yield rows, rejects
        if first:  # no block at all: a file of 0 bytes
            raise DataError(f"{NAME}: {path} is empty (expected the header {','.join(SAMPLE_COLUMNS)})")

    # -- side tables ----------------------------------------------------------------------------

    def _cached_side(self, path: Path, columns: tuple[str, ...]) -> tuple[np.ndarray, pa.Table]:
        """``_side``, read once per file state (path, size, modification time) for all passes."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if self._sides.get(columns, (None,))[0] != key:
            self._sides[columns] = (key, self._side(path, columns))
        return self._sides[columns][1]

    def _side(self, path: Path, columns: tuple[str, ...]) -> tuple[np.ndarray, pa.Table]:
        """The side table's sorted int64 keys and its other columns in that order (first row per key)."""
        data = path.read_bytes()  # small: about 30 MB each in the real data set
        lines = split_lines(data).view(pa.large_binary()) if data else pa.array([], pa.large_binary())
        if not len(lines):
            raise DataError(f"{NAME}: {path} is empty (expected the header {','.join(columns)})")
        head = bytes(lines[0].as_py()).decode("utf-8", errors="replace").strip()
        names = tuple(n.strip() for n in head.split(","))
        if names != columns:
            raise DataError(f"{NAME}: {path}: line 1 is not the expected header {','.join(columns)} "
                            f"(read {head[:120]!r})")
        lines = lines[1:]
        numbers = np.arange(2, len(lines) + 2)
        width = len(columns)
        ok_text = np.asarray(pc.match_substring_regex(lines, "^[ -~]*$"), dtype=bool)
        ok_fields = ok_text & np.asarray(pc.equal(pc.count_substring(lines, ","), width - 1), dtype=bool)
        idx = np.flatnonzero(ok_fields)
        flat = pc.list_flatten(pc.split_pattern(lines.take(pa.array(idx, pa.int64())), ","))
        cols = {c: flat.take(pa.array(np.arange(j, width * len(idx), width, dtype=np.int64)))
                for j, c in enumerate(columns)}
        ok_key = np.asarray(pc.match_substring_regex(cols[columns[0]], _INT), dtype=bool)
        kind = np.full(len(lines), "", dtype=object)
        kind[~ok_text] = "text"
        kind[ok_text & ~ok_fields] = "fields"
        kind[idx[~ok_key]] = "key"
        bad = np.flatnonzero(kind != "")
        if len(bad) and self.cfg.strict:
            raise strict_failure(NAME, path, int(numbers[bad[0]]), SIDE_KINDS[kind[bad[0]]])
        ledger = Rejections(NAME, path, "side table", SIDE_KINDS)
        for i in bad:
            ledger.add(int(numbers[i]), str(kind[i]))
        ledger.report()
        keep = pa.array(ok_key)
        keys = np.asarray(pc.cast(pc.cast(cols[columns[0]].filter(keep), pa.large_string()), pa.int64()))
        keys, first_row = np.unique(keys, return_index=True)  # sorted; the first row of a duplicate key
        order = pa.array(first_row, pa.int64())
        table = {}
        for c in columns[1:]:
            text = pc.cast(cols[c].filter(keep).take(order), pa.large_string())
            table[c] = pc.if_else(pc.is_in(text, pa.array(["", "NULL"], pa.large_string())),
                                  pa.scalar(None, pa.large_string()), text)
        if "price" in table:
            price = table["price"]
            numeric = pc.fill_null(pc.match_substring_regex(price, _NUMBER), False)
            price = pc.cast(pc.if_else(numeric, price, pa.scalar(None, pa.large_string())), pa.float64())
            table["price"] = pc.if_else(pc.is_finite(price), price, pa.scalar(None, pa.float64()))
        return keys, pa.table(table, schema=pa.schema([(c, table[c].type) for c in columns[1:]]))

    def _join(self, rows: pa.Table, ads, users) -> tuple[pa.Table, int, int]:
        out = {"clk": pc.cast(rows.column("clk"), pa.float64()), "userid": rows.column("user"),
               "adgroup_id": rows.column("adgroup_id"), "pid": rows.column("pid")}
        missing = []
        for key, (keys, side) in (("adgroup_id", ads), ("user", users)):
            want = np.asarray(pc.cast(rows.column(key), pa.int64()))
            at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
            found = (keys[at] == want) if len(keys) else np.zeros(len(want), dtype=bool)
            index = pa.array(at, mask=~found)
            for name in side.column_names:
                kind = side.schema.field(name).type
                out[name] = side.column(name).take(index) if len(keys) else pa.nulls(len(want), kind)
            missing.append(int((~found).sum()))
        price = pc.log1p(pc.max_element_wise(out.pop("price"), 0.0))
        table = pa.table({**{c: out[c] for c in ("clk", *CATEGORICAL)}, "price": price})
        return table, missing[0], missing[1]


def _check_lines(lines: pa.Array, numbers: np.ndarray) -> tuple[pa.Table, list[tuple[int, str, int]]]:
    """The good lines as columns (ids as text, day as int64) and the rejected (line, kind, day)."""
    n = len(lines)
    kind = np.full(n, "", dtype=object)
    empty = np.asarray(pc.equal(pc.binary_length(lines), 0)) if n else np.zeros(0, bool)
    six = np.asarray(pc.equal(pc.count_substring(lines, ","), 5)) if n else np.zeros(0, bool)
    kind[~six] = "fields"
    kind[empty] = "empty"
    day = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(six)
    m = len(idx)
    cols: dict[str, pa.Array] = {}
    if m:
        flat = pc.list_flatten(pc.split_pattern(lines.take(pa.array(idx)), ","))
        cols = {c: flat.take(pa.array(np.arange(j, 6 * m, 6))) for j, c in enumerate(SAMPLE_COLUMNS)}
        ok_ts = np.asarray(pc.match_substring_regex(cols["time_stamp"], _INT))
        ts = np.zeros(m, dtype=np.int64)
        if ok_ts.any():
            ts[ok_ts] = np.asarray(pc.cast(pc.cast(cols["time_stamp"].filter(pa.array(ok_ts)), pa.large_string()),
                                          pa.int64()))
        day[idx[ok_ts]] = (ts[ok_ts] + BEIJING) // 86400
        ok_ids = ok_ts & np.asarray(pc.match_substring_regex(cols["user"], _INT)) & np.asarray(
            pc.match_substring_regex(cols["adgroup_id"], _INT))
        ok_pid = np.asarray(pc.match_substring_regex(cols["pid"], "^[0-9A-Za-z_]+$"))
        clk, nonclk = (np.asarray(pc.match_substring_regex(cols[c], "^[01]$")) for c in ("clk", "nonclk"))
        ok_label = clk & nonclk & np.asarray(pc.not_equal(cols["clk"], cols["nonclk"]))
        sub = np.full(m, "", dtype=object)
        sub[~ok_label] = "label"
        sub[~ok_pid] = "pid"
        sub[~ok_ids] = "id"
        kind[idx] = sub
    good = kind == ""
    rejects = [(int(numbers[i]), str(kind[i]), int(day[i])) for i in np.flatnonzero(~good)]
    if not good.any():
        return _empty_rows(), rejects
    keep = pa.array(good[idx])
    text = {c: pc.cast(cols[c].filter(keep), pa.large_string()) for c in ("user", "adgroup_id", "pid", "clk")}
    rows = pa.table({**text, "day": pa.array(day[good])})
    return rows, rejects


def _empty_rows() -> pa.Table:
    return pa.table({"user": pa.array([], pa.large_string()), "adgroup_id": pa.array([], pa.large_string()),
                     "pid": pa.array([], pa.large_string()), "clk": pa.array([], pa.large_string()),
                     "day": pa.array([], pa.int64())})
