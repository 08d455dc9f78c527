"""IJCAI-18 Alimama search-ad conversion data (Tianchi, "IJCAI-18 阿里妈妈搜索广告转化预测"), as distributed.

The "IAAC" / "IJCAI-AAC" set of the APG and AMTL papers is most likely this one (``shared/papers.md``
§10 [R]). Input: the round-1 training file ``round1_ijcai_18_train_20180301.txt`` in ``data_dir``
(478,138 rows [V: third-party counts]); nothing is downloaded. Space-separated, one header line
naming the 27 columns, ``\\n`` line ends, ASCII; ``-1`` marks a missing value. The unlabelled test
files (``round1_ijcai_18_test_a_*``, ``_test_b_*``) lack ``is_trade``; the header check refuses
them with a message that says so.

Columns and what becomes of them (the competition's description is silent on most choices):
- label: ``is_trade`` (1 = the click led to a purchase), 0/1;
- categorical, kept as the file's text (``-1`` -> missing): ``item_id`` (role ``ad``),
  ``item_brand_id``, ``item_city_id``, ``item_price_level``, ``item_sales_level``,
  ``item_collected_level``, ``item_pv_level``, ``user_id`` (role ``user``), ``user_gender_id``,
  ``user_age_level``, ``user_occupation_id``, ``user_star_level``, ``context_page_id`` (role
  ``position``: the page of search results the ad was shown on, 4001-4020, a coarse rank),
  ``shop_id``, ``shop_review_num_level``, ``shop_star_level``;
- ``item_category_list`` (``;``-separated, root first) -> ``item_category``, its **second** level,
  as the common competition solutions do (the first level is a root shared by the rows [R]);
  missing when the list has one level;
- ``context_timestamp`` (Unix seconds) -> ``hour`` (categorical, 0-23) and the row's ``day``
  (``YYYY-MM-DD``, used by the split, not a feature: the test day's value would never be seen in
  training). Both in UTC+8 (``utc_offset_hours``), the competition's local time: the training days
  are 2018-09-18 .. 2018-09-24 there, as the solutions that read them with ``datetime.fromtimestamp``
  on machines in China report [R];
- dense, as floats (``-1`` -> missing, which the preparation step fills with 0.0):
  ``shop_review_positive_rate``, ``shop_score_service``, ``shop_score_delivery``,
  ``shop_score_description``;
- ``item_property_list`` (``;``-separated property ids) and ``predict_category_property`` (the
  query's predicted ``category:prop,prop;...``, ``-1`` for none) are too long to be fields; with
  ``query_features: true`` (default) they are reduced to four fields, else dropped:
  ``query_category`` (categorical, the first predicted category), ``category_predicted``
  (categorical ``"1"``/``"0"``: the item's second-level category is among the predicted ones),
  ``item_property_count`` (dense, ``log1p`` of the number of the item's properties) and
  ``property_hits`` (dense, ``log1p`` of the number of distinct item properties that the query
  predicts for that category);
- ``instance_id`` and ``context_id`` (per-row ids) are not features.
Each chunk also carries ``line`` (the row's 1-based line number; the header is line 1) and ``day``;
the preparation step does not store them. Duplicate rows are kept: 51 rows repeat an earlier
``instance_id``, 27 of them a whole earlier row [V: third-party counts]; dropping them would need a
pass over the whole file, and a repeated click is still a click.

Splits (``split``); AMTL and APG do not say how they split this set:
- ``day`` (default): by the row's day in UTC+8: ``test_days`` test (default the last day,
  2018-09-24, as the competition kept its last day for evaluation), ``valid_days`` valid (default
  2018-09-23), every other day train. A configured day that no row has leaves its split empty,
  which is an error;
- ``random``: ``ratios`` (default 8:1:1) by a seeded hash of the line number
  (``repro.data.rawfiles.ratio_split``, as the Criteo reader).

Bad input. Every data line is a row or a rejection. A line is rejected, in this order, when it: is
empty (``empty``); holds a carriage return other than its CRLF end (``cr``); has a byte outside
ASCII (``ascii``); has a field count other than 27 (``fields``; ``truncated`` when it is the file's
unterminated last line); has an ``is_trade`` other than 0/1 (``label``); an id or level that is not
a whole number (``integer``); a ``context_timestamp`` that is not a non-negative whole number
(``timestamp``); a shop rate or score that is not a finite decimal number (``number``); or a
malformed list (``list``: ``item_category_list`` must be ``;``-separated digits,
``item_property_list`` only digits, ``-`` and ``;``, ``predict_category_property`` only digits,
``-``, ``:``, ``,`` and ``;``); or is longer than 1 MiB (``long``). Rejected lines are counted in
``rejected[split]`` (the whole count; the first 1,000 line numbers kept), each in the split its
line would have gone to (``day``: by its timestamp when that field is readable, else train;
``random``: by its number); one summary line per kind is printed to stderr. CRLF line ends read as
LF. An unterminated last line with valid fields is kept, with a note. ``strict: true`` raises
``DataError`` naming the file, line, reason and column at the first rejected line. An empty file,
a first line that is not the 27-column header (a header-less file, the unlabelled test file, a
tab- or comma-separated file of another data set), or a first block (1 MiB) with no valid row
fails at once with a ``DataError`` that says what was expected.

Reading. Blocks of ``block_size_mb`` cut at line ends (``repro.data.rawfiles.line_blocks``),
decoded only when not pure ASCII (latin-1, so every byte stays one character and the line ends stay
put), cut into lines by numpy and split on spaces by ``pyarrow.compute.split_pattern``; the checks
and the derived fields are vectorised pyarrow/numpy (the list reductions flatten the lists with
their parent rows and count matches with ``np.intersect1d`` and ``np.bincount``). No Python loop
visits the rows.

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's, the
config less ``strict`` and ``block_size_mb``, and the file's path, size, modification time and eight
sampled 64 KiB blocks (not the whole file: an edit that keeps size and mtime and misses every
sample goes unnoticed; delete ``cache/ijcai18-*`` after such surgery).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repro.data.rawfiles import (
    RawFileSource,
    Rejections,
    line_blocks,
    ratio_split,
    require_file,
    split_lines,
    strict_failure,
)
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import register_source

NAME = "ijcai18"
SPLITS = ("train", "valid", "test")
COLUMNS = (
    "instance_id", "item_id", "item_category_list", "item_property_list", "item_brand_id", "item_city_id",
    "item_price_level", "item_sales_level", "item_collected_level", "item_pv_level", "user_id", "user_gender_id",
    "user_age_level", "user_occupation_id", "user_star_level", "context_id", "context_timestamp",
    "context_page_id", "predict_category_property", "shop_id", "shop_review_num_level",
    "shop_review_positive_rate", "shop_star_level", "shop_score_service", "shop_score_delivery",
    "shop_score_description", "is_trade",
)
HEADER = " ".join(COLUMNS)
LABEL = "is_trade"
IDS = (  # whole numbers (-1: missing), kept as text
    "instance_id", "item_id", "item_brand_id", "item_city_id", "item_price_level", "item_sales_level",
    "item_collected_level", "item_pv_level", "user_id", "user_gender_id", "user_age_level", "user_occupation_id",
    "user_star_level", "context_id", "context_page_id", "shop_id", "shop_review_num_level", "shop_star_level",
)
NUMBERS = ("shop_review_positive_rate", "shop_score_service", "shop_score_delivery", "shop_score_description")
LISTS = {  # column -> the pattern it must match
    "item_category_list": r"^[0-9]+(;[0-9]+)*$",
    "item_property_list": r"^[-0-9;]+$",
    "predict_category_property": r"^[-0-9:,;]+$",
}
CATEGORICAL = (  # features, in this order, with their roles
    ("item_id", ("ad",)), ("item_category", ()), ("item_brand_id", ()), ("item_city_id", ()),
    ("item_price_level", ()), ("item_sales_level", ()), ("item_collected_level", ()), ("item_pv_level", ()),
    ("user_id", ("user",)), ("user_gender_id", ()), ("user_age_level", ()), ("user_occupation_id", ()),
    ("user_star_level", ()), ("context_page_id", ("position",)), ("hour", ()), ("shop_id", ()),
    ("shop_review_num_level", ()), ("shop_star_level", ()),
)
QUERY_CATEGORICAL = ("query_category", "category_predicted")
QUERY_DENSE = ("item_property_count", "property_hits")
KINDS = {
    "empty": "an empty line",
    "cr": "a carriage return inside the line",
    "ascii": "a byte outside ASCII (the file is ASCII: ids, numbers and separators)",
    "fields": "a field count other than 27",
    "truncated": "a truncated last line (no line end, a wrong field count)",
    "long": "a line longer than 1 MiB",
    "label": "an is_trade other than 0 or 1",
    "integer": "an id or level that is not a whole number",
    "timestamp": "a context_timestamp that is not a non-negative whole number",
    "number": "a shop rate or score that is not a finite number",
    "list": "a malformed item_category_list, item_property_list or predict_category_property",
}
CODES = ("", *KINDS)
EXPECTED = (f"Tianchi's round1_ijcai_18_train file: a header line naming the 27 columns ({COLUMNS[0]} .. "
            f"{COLUMNS[-1]}), then 27 space-separated fields per line")
HINT = "place round1_ijcai_18_train_20180301.txt there, or set data.data_dir and data.file"
MAX_LINE = 1 << 20
PROBE_BYTES = 1 << 20
_INT = r"^-?[0-9]{1,20}$"
_TS = r"^[0-9]{1,12}$"
_FLOAT = r"^-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,3})?$"


@dataclass
class Ijcai18Config:
    data_dir: str = "data/ijcai18"
    file: str = "round1_ijcai_18_train_20180301.txt"
    split: str = "day"  # day (valid_days / test_days) | random (ratios, by a seeded hash of the line number)
    valid_days: list[str] = field(default_factory=lambda: ["2018-09-23"])  # day: YYYY-MM-DD in UTC+offset
    test_days: list[str] = field(default_factory=lambda: ["2018-09-24"])
    utc_offset_hours: int = 8  # the competition's local time (China): days and hours are read in it
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # random: train, valid, test
    seed: int = 0  # random: the hash's seed
    query_features: bool = True  # reduce item_property_list / predict_category_property to 4 fields
    strict: bool = False  # raise at the first malformed line instead of skipping and counting it
    block_size_mb: int = 16  # bytes parsed at once: bounds memory per chunk; changes no row


class _Parsed(NamedTuple):
    table: pa.Table  # valid rows: label, features, line, day
    bad: np.ndarray  # rejected line numbers, in file order
    kinds: np.ndarray  # their kind codes (index into CODES)
    bad_days: list[str | None]  # the day of each rejected line when its timestamp is readable
    first_detail: str  # why the first rejected line was rejected (for strict mode)


@register_source(NAME, config=Ijcai18Config)
class Ijcai18Source(RawFileSource):
    name = NAME
    label = "label"  # the chunks carry is_trade as 0/1 under this name
    splits = SPLITS
    fingerprint_ignores = ("strict", "block_size_mb")

    def __init__(self, cfg: Ijcai18Config) -> None:
        _check_config(cfg)
        super().__init__(cfg)
        if cfg.split == "day":
            self.split_protocol = (f"by day in UTC{cfg.utc_offset_hours:+d}: valid {list(cfg.valid_days)}, "
                                   f"test {list(cfg.test_days)}, every other day train")
        else:
            a, b, c = cfg.ratios
            self.split_protocol = f"random {a:g}:{b:g}:{c:g} by a seeded hash of the line number (seed {cfg.seed})"

    # -- the Source protocol --------------------------------------------------------------------
    def fields(self) -> list[RawField]:
        out = [RawField(name, "categorical", roles) for name, roles in CATEGORICAL]
        if self.cfg.query_features:
            out += [RawField(name, "categorical") for name in QUERY_CATEGORICAL]
        out += [RawField(name, "dense") for name in NUMBERS]
        if self.cfg.query_features:
            out += [RawField(name, "dense") for name in QUERY_DENSE]
        return out

    def chunks(self, split: str) -> Iterator[pa.Table]:
        if split not in SPLITS:
            raise DataError(f"{NAME}: unknown split {split!r}; expected one of {SPLITS}")
        path = self._path()
        ledger = Rejections(NAME, path, split, KINDS)
        want = SPLITS.index(split)
        rows = 0
        for parsed in self._parse_file(path):
            if len(parsed.bad):
                owner = self._split_of(parsed.bad, pa.array(parsed.bad_days, pa.string()))
                ledger.extend(zip(parsed.bad[owner == want].tolist(), (CODES[k] for k in parsed.kinds[owner == want])))
            table = parsed.table
            mine = self._split_of(table.column("line").to_numpy(), table.column("day")) == want
            if mine.any():
                table = table if mine.all() else table.filter(pa.array(mine))
                rows += table.num_rows
                yield table
        self.rejected[split] = ledger.lines()
        ledger.report()
        if rows == 0:
            if self.cfg.split == "random":
                where = f"the file is too small for the shares {list(self.cfg.ratios)}"
            elif split == "train":
                where = f"every valid row is on a valid or test day ({self.cfg.valid_days + self.cfg.test_days})"
            else:
                where = f"no valid row has a day in {self._days(split)}"
            raise DataError(f"{NAME}: {path}: split {split!r} is empty ({where})")

    # -- files and splits ----------------------------------------------------------------------
    def input_paths(self) -> list[Path]:
        return [self._path()]

    def _path(self) -> Path:
        return require_file(NAME, Path(self.cfg.data_dir) / self.cfg.file, "the training file", HINT)

    def _days(self, split: str) -> list[str]:
        return list(self.cfg.valid_days if split == "valid" else self.cfg.test_days)

    def _split_of(self, lines: np.ndarray, days: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """0 train, 1 valid, 2 test for each line (with its day; a missing day is train's)."""
        if self.cfg.split == "random":
            return ratio_split(lines, self.cfg.seed, self.cfg.ratios)
        valid = pc.fill_null(pc.is_in(days, value_set=pa.array(self.cfg.valid_days, pa.string())), False)
        test = pc.fill_null(pc.is_in(days, value_set=pa.array(self.cfg.test_days, pa.string())), False)
        return np.asarray(valid, dtype=np.int8) + 2 * np.asarray(test, dtype=np.int8)

    # -- parsing --------------------------------------------------------------------------------
    def _parse_file(self, path: Path) -> Iterator[_Parsed]:
        names, start = _header(path)
        blocks = line_blocks(path, self.cfg.block_size_mb << 20, start=start, first_line=2,
                             first_block_size=PROBE_BYTES, max_line=MAX_LINE)
        first = True
        seen = 0
        for first_line, data, n_lines, long_lines in blocks:
            last = bool(data) and not data.endswith(b"\n")
            parsed = self._parse_block(names, data, first_line, last)
            if long_lines:
                bad = np.concatenate([parsed.bad, np.array(long_lines, dtype=np.int64)])
                order = np.argsort(bad, kind="stable")
                kinds = np.concatenate([parsed.kinds, np.full(len(long_lines), CODES.index("long"), np.int8)])
                days = [*parsed.bad_days, *([None] * len(long_lines))]
                detail = parsed.first_detail if len(parsed.bad) and parsed.bad[0] < min(long_lines) else ""
                parsed = _Parsed(parsed.table, bad[order], kinds[order], [days[i] for i in order], detail)
            if len(parsed.bad) and self.cfg.strict:
                kind = CODES[parsed.kinds[0]]
                detail = f" ({parsed.first_detail})" if parsed.first_detail else ""
                raise strict_failure(NAME, path, int(parsed.bad[0]), KINDS[kind] + detail)
            seen += parsed.table.num_rows
            if first and seen == 0 and len(parsed.bad):
                kind = CODES[parsed.kinds[0]]
                detail = f": {parsed.first_detail}" if parsed.first_detail else ""
                raise DataError(f"{NAME}: {path}: none of the first {len(parsed.bad)} data line(s) is a valid row "
                                f"(line {int(parsed.bad[0])}: {KINDS[kind]}{detail}); expected {EXPECTED}")
            first = False
            if last and parsed.table.num_rows and parsed.table.column("line")[-1].as_py() == first_line + n_lines - 1:
                print(f"{NAME}: {path}: the last line ({first_line + n_lines - 1}) has no line end; kept (27 valid "
                      "fields), but it may have lost the end of its last field", file=sys.stderr)
            yield parsed
        if seen == 0:
            raise DataError(f"{NAME}: {path}: no data row after the header; expected {EXPECTED}")

    def _parse_block(self, names: list[str], data: bytes, first_line: int, last: bool) -> _Parsed:
        ascii_only = data.isascii()
        lines = split_lines(data if ascii_only else data.decode("latin-1").encode("utf-8"))
        n = len(lines)
        kind = np.zeros(n, dtype=np.int8)
        column = np.full(n, -1, dtype=np.int16)  # the first column that failed, for the strict message

        def mark(mask, code: str, where: np.ndarray | None = None, col: int = -1) -> None:
            mask = np.asarray(mask, dtype=bool)
            idx = np.flatnonzero(mask) if where is None else where[mask]
            idx = idx[kind[idx] == 0]
            kind[idx] = CODES.index(code)
            column[idx] = col

        mark(np.asarray(pc.equal(pc.utf8_length(lines), 0)), "empty")
        mark(np.asarray(pc.match_substring(lines, "\r")), "cr")
        if not ascii_only:
            mark(np.asarray(pc.match_substring_regex(lines, "[^\x00-\x7f]")), "ascii")
        parts = pc.split_pattern(lines, " ")
        count = np.asarray(pc.list_value_length(parts))
        wrong = count != len(COLUMNS)
        if last and n and wrong[-1]:
            mark(np.arange(n) == n - 1, "truncated")
        mark(wrong, "fields")
        # The day of every line whose timestamp field is readable (to place a rejected line).
        ts_at = names.index("context_timestamp")
        has_ts = np.flatnonzero(count > ts_at)
        ts_text = pc.list_element(parts.take(pa.array(has_ts)), ts_at) if len(has_ts) else pa.array([], pa.string())
        ts_ok = np.asarray(pc.match_substring_regex(ts_text, _TS), dtype=bool)
        ts = np.full(n, -1, dtype=np.int64)
        ts[has_ts[ts_ok]] = np.asarray(pc.cast(ts_text.filter(pa.array(ts_ok)), pa.int64()))
        day_all = self._days_of(ts)

        whole = np.flatnonzero(~wrong)
        sub = parts.take(pa.array(whole))
        cols = {name: pc.list_element(sub, j) for j, name in enumerate(names)} if len(whole) else {}
        if cols:
            mark(~np.asarray(pc.is_in(cols[LABEL], value_set=pa.array(["0", "1"], pa.large_string()))), "label",
                 whole, names.index(LABEL))
            for name in IDS:
                mark(~np.asarray(pc.match_substring_regex(cols[name], _INT)), "integer", whole, names.index(name))
            mark(~np.asarray(pc.match_substring_regex(cols["context_timestamp"], _TS)), "timestamp", whole, ts_at)
            for name in NUMBERS:
                ok = pc.match_substring_regex(cols[name], _FLOAT)
                finite = pc.is_finite(pc.cast(pc.if_else(ok, cols[name], "0"), pa.float64()))  # 1e400 is inf
                mark(~np.asarray(pc.and_(ok, finite)), "number", whole, names.index(name))
            for name, pattern in LISTS.items():
                mark(~np.asarray(pc.match_substring_regex(cols[name], pattern)), "list", whole, names.index(name))
        good = kind == 0
        bad = np.flatnonzero(~good)
        detail = ""
        if len(bad) and column[bad[0]] >= 0:  # Python for one line: the value that failed
            name = names[column[bad[0]]]
            value = lines[int(bad[0])].as_py().split(" ")[column[bad[0]]]
            detail = f"{name} = {value[:40]!r}"
        elif len(bad) and CODES[kind[bad[0]]] in ("fields", "truncated"):
            detail = f"{int(count[bad[0]])} field(s), expected 27"
        if cols:
            keep = pa.array(np.flatnonzero(good[whole]))
            table = self._features({k: v.take(keep) for k, v in cols.items()}, ts[good], day_all.filter(pa.array(good)))
        else:
            table = self._features({c: pa.array([], pa.large_string()) for c in COLUMNS}, ts[:0], day_all[:0])
        table = table.append_column("line", pa.array(first_line + np.flatnonzero(good), pa.int64()))
        bad_days = day_all.take(pa.array(bad)).to_pylist()
        return _Parsed(table, first_line + bad, kind[bad], bad_days, detail)

    def _days_of(self, ts: np.ndarray) -> pa.Array:
        """``YYYY-MM-DD`` in UTC+offset of each timestamp (null for -1): distinct days only are formatted."""
        local = ts + self.cfg.utc_offset_hours * 3600
        day_number = np.where(ts >= 0, local // 86400, 0)
        values, inverse = np.unique(day_number, return_inverse=True)
        text = pa.array(values.astype("datetime64[D]").astype(str).tolist(), pa.string())
        return pc.if_else(pa.array(ts >= 0), text.take(pa.array(inverse.ravel())), pa.scalar(None, pa.string()))

    def _features(self, cols: dict[str, pa.Array], ts: np.ndarray, day: pa.Array) -> pa.Table:
        """Valid rows' text columns -> label, the feature columns and ``day``."""
        out: dict[str, pa.Array] = {"label": pc.equal(cols[LABEL], "1").cast(pa.int8())}
        category = _missing(pc.struct_field(pc.extract_regex(cols["item_category_list"], r"^[^;]*;(?P<c>[^;]+)"), [0]))
        local = ts + self.cfg.utc_offset_hours * 3600
        derived = {"item_category": category, "hour": pa.array((local // 3600) % 24, pa.int64()).cast(pa.string())}
        for name, _ in CATEGORICAL:
            out[name] = derived[name] if name in derived else _missing(cols[name])
        if self.cfg.query_features:
            out.update(_query_features(cols["item_property_list"], cols["predict_category_property"], category))
        for name in NUMBERS:
            x = pc.cast(cols[name], pa.float64())
            out[name] = pc.if_else(pc.equal(x, -1.0), pa.scalar(None, pa.float64()), x)
        out["day"] = day
        return pa.table(out)


def _missing(text: pa.Array) -> pa.Array:
    """``text`` as ``string``, ``-1`` (and an empty match) missing."""
    text = text.cast(pa.string())
    return pc.if_else(pc.or_(pc.equal(text, "-1"), pc.equal(text, "")), pa.scalar(None, pa.string()), text)


def _query_features(properties: pa.Array, predicted: pa.Array, category: pa.Array) -> dict[str, pa.Array]:
    """The four reductions of the item's property list and the query's predicted categories/properties."""
    m = len(properties)
    query_category = _missing(pc.struct_field(pc.extract_regex(predicted, r"^(?P<c>[0-9]+)(?::|;|$)"), [0]))
    entries = pc.split_pattern(predicted, ";")
    parent = np.asarray(pc.list_parent_indices(entries), dtype=np.int64)
    flat = pc.list_flatten(entries)
    entry_category = pc.struct_field(pc.extract_regex(flat, r"^(?P<c>[^:]*)"), [0]).cast(pa.string())
    hit = np.asarray(pc.fill_null(pc.equal(entry_category, category.take(pa.array(parent))), False), dtype=bool)
    predicted_hit = np.bincount(parent[hit], minlength=m) > 0
    # Properties the query predicts for the item's category, as (row, property) pairs...
    hit_props = pc.struct_field(pc.extract_regex(flat.filter(pa.array(hit)), r"^[^:]*:(?P<p>.*)$"), [0])
    prop_lists = pc.split_pattern(pc.fill_null(hit_props, ""), ",")
    p_rows = parent[hit][np.asarray(pc.list_parent_indices(prop_lists), dtype=np.int64)]
    p_values = pc.list_flatten(prop_lists).cast(pa.large_string())
    # ...and the item's own properties.
    item_lists = pc.split_pattern(properties, ";")
    i_rows = np.asarray(pc.list_parent_indices(item_lists), dtype=np.int64)
    i_values = pc.list_flatten(item_lists).cast(pa.large_string())
    values = pa.concat_arrays([p_values, i_values])
    codes = pc.dictionary_encode(values)
    ids = np.asarray(codes.indices, dtype=np.int64)
    size = max(len(codes.dictionary), 1)
    real = ~np.asarray(pc.is_in(values, value_set=pa.array(["-1", ""], pa.large_string())))  # "-1": none
    n_p = len(p_values)
    p_key = (p_rows * size + ids[:n_p])[real[:n_p]]
    i_key = (i_rows * size + ids[n_p:])[real[n_p:]]
    common = np.intersect1d(p_key, i_key)  # distinct (row, property) pairs on both sides
    return {
        "query_category": query_category,
        "category_predicted": pa.array(np.where(predicted_hit, "1", "0"), pa.string()),
        "item_property_count": pa.array(np.log1p(np.bincount(i_rows[real[n_p:]], minlength=m).astype(np.float64))),
        "property_hits": pa.array(np.log1p(np.bincount(common // size, minlength=m).astype(np.float64))),
    }


def _header(path: Path) -> tuple[list[str], int]:
    """The column names of ``path``'s first line and the byte offset of its data; checked."""
    with open(path, "rb") as f:
        head = f.read(PROBE_BYTES)
    if not head:
        raise DataError(f"{NAME}: {path} is empty (0 bytes); expected {EXPECTED}")
    end = head.find(b"\n")
    if end < 0 and len(head) == PROBE_BYTES:
        raise DataError(f"{NAME}: {path}: no line end in the first MiB; expected {EXPECTED}")
    text = (head if end < 0 else head[:end]).rstrip(b"\r").decode("latin-1")
    names = text.split(" ")
    if sorted(names) == sorted(COLUMNS):
        return names, end + 1 if end >= 0 else len(head)
    if sorted(names) == sorted(set(COLUMNS) - {LABEL}):
        why = "it has no is_trade column: Tianchi's unlabelled test file cannot be trained on"
    elif "\t" in text:
        why = f"it is tab-separated ({text.count(chr(9)) + 1} fields), as Criteo's train.txt or ml-100k's u.data are"
    elif "::" in text:
        why = "it is ::-separated, as MovieLens's .dat files are"
    elif "," in text and " " not in text:
        why = "it is comma-separated (a CSV); the distributed file is space-separated"
    elif len(names) == len(COLUMNS) and names[0].lstrip("-").isdigit():
        why = "it looks like a data row: the file has no header"
    else:
        why = f"got {text[:120]!r}"
    raise DataError(f"{NAME}: {path}: line 1 is not the header ({why}); expected {EXPECTED}")


def _check_config(cfg: Ijcai18Config) -> None:
    if cfg.split not in ("day", "random"):
        raise ConfigError(f"data source {NAME!r}: split={cfg.split!r}; choose one of ['day', 'random']")
    ratios = list(cfg.ratios)
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-9 or ratios[0] <= 0:
        raise ConfigError(f"data source {NAME!r}: ratios={ratios}; expected three shares (train, valid, test) "
                          "that sum to 1, train's above 0")
    for key in ("valid_days", "test_days"):
        days = [str(d) for d in getattr(cfg, key)]
        for day in days:
            try:
                ok = dt.date.fromisoformat(day).isoformat() == day
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"data source {NAME!r}: {key} has {day!r}; expected YYYY-MM-DD days")
        if cfg.split == "day" and not days:
            raise ConfigError(f"data source {NAME!r}: {key} is empty; the day split needs at least one day")
    both = sorted(set(map(str, cfg.valid_days)) & set(map(str, cfg.test_days)))
    if both:
        raise ConfigError(f"data source {NAME!r}: day(s) {both} are in both valid_days and test_days")
    if not -12 <= cfg.utc_offset_hours <= 14:
        raise ConfigError(f"data source {NAME!r}: utc_offset_hours={cfg.utc_offset_hours}; expected -12 .. 14")
    if cfg.block_size_mb < 1:
        raise ConfigError(f"data source {NAME!r}: block_size_mb={cfg.block_size_mb}; must be at least 1")
