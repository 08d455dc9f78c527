"""KDD Cup 2012 Track 2 (Tencent soso.com search ads): ``training.txt`` as distributed, and
optionally ``userid_profile.txt``.

Input. ``training.txt`` (149,639,105 lines, about 10 GB [as reported]): tab-separated, no header,
``\\n`` line ends, 12 non-negative integers per line: ``Click``, ``Impression``, ``DisplayURL``,
``AdID``, ``AdvertiserID``, ``Depth``, ``Position``, ``QueryID``, ``KeywordID``, ``TitleID``,
``DescriptionID``, ``UserID``. A line aggregates the search sessions that share (user, ad, query,
depth, position): ``Impression`` of them showed the ad, ``Click`` of those clicked it.
``userid_profile.txt`` (``profile_file``, optional): ``UserID``, ``Gender`` (0, 1, 2), ``Age``
(1 .. 6), tab-separated. Nothing is downloaded: the user places the files in ``data_dir`` (see
``datasets/kdd12.md``). The token-id side files (``queryid_tokensid.txt``,
``purchasedkeywordid_tokensid.txt``, ``titleid_tokensid.txt``, ``descriptionid_tokensid.txt``)
and the competition's ``test.txt`` are not read.

Rows and weights (where the reference is silent). A line is never expanded into ``Impression``
copies (memory: a line stands for one or more impressions). Each line gives up to two rows: a
positive one (``label`` 1, ``weight`` = Click) when Click > 0, then a negative one (``label`` 0,
``weight`` = Impression - Click) when that is > 0. The source declares ``weight = "weight"``, so
the cache stores it and the weighted AUC, logloss and PCOC of ``repro.metrics`` equal those of the
expanded rows (a weighted row counts as that many identical rows; ties are averaged either way).
The cache stores the weight as float32, exact up to 2**24 impressions on one line. Vocabularies
and ``min_count`` count these rows, not impressions.

Features. Categorical: ``AdID`` (role ``ad``), ``AdvertiserID``, ``DisplayURL``, ``QueryID``
(role ``query``), ``KeywordID``, ``TitleID``, ``DescriptionID``, ``UserID`` (role ``user``),
``Gender`` and ``Age`` (only with ``profile_file``), ``Depth``, ``Position`` (role ``position``).
Dense: ``RelativePosition`` = (Depth - Position) / Depth, the derived position feature of the
literature (0 for the last ad of the list, near 1 for the first of a long one). Key (never a model
input): ``user_key``, the raw UserID, so that GAUC by user groups by the id itself rather than by
its encoded index, which lumps all rare users into OOV. No field plays ``creative`` (TitleID and
DescriptionID are the ad's text, but which of them is "the creative" would be a guess) or
``scene`` (Depth conditions the list, but it is kept a plain feature).

Ids are read as unsigned 64-bit integers, exactly (DisplayURL is a 64-bit hash; hivemall reads it
as a string), and handed on as int64 with the same 64 bits: an id of 2**63 or more appears as a
negative number, which the preparation step's vocabulary and raw-value hash treat as the same
distinct value (its hash reinterprets int64 as uint64, so the hash is that of the unsigned id).
Counts, Depth and Position must also fit int64. ``UserID`` 0 is the competition's "user not
identified" [as reported]: the ``UserID`` feature is missing there (padding index 0), as in
AutoInt's KDD12 preprocessing, which zeroes its value; ``user_key`` keeps 0, so GAUC by user
counts all unidentified users as one group. A UserID absent from the profile has Gender and Age
missing; the profile's own Gender 0 (unknown [as reported]) is a value.

Splits. The competition's test labels are not in ``training.txt``, so train/valid/test are a
random 8:1:1 of its lines by a **seeded hash of the 1-based line number**
(``repro.data.rawfiles.ratio_split``, as the Criteo reader's x4 split): ``u = splitmix64(line +
seed * 0x9E3779B97F4A7C15) / 2**64``; train if ``u < 0.8``, valid if ``u < 0.9``, else test. Both
rows of a line are in its split; a rejected line is counted in the split its number falls in. The
shares are 8:1:1 in lines up to binomial noise, not exactly, and not in impressions.

Bad input. A line is a row (or two) or a rejection, never both and never silently dropped. Kinds
(``KINDS``), in the order they are tested: ``truncated`` (the file's last line has no line end: its
last field may have lost digits, so it is rejected, whatever it holds), ``empty``, ``cr`` (a
carriage return other than a CRLF line end, which is read as LF), ``fields`` (a field count other
than 12; a Criteo or Avazu line lands here), ``negative`` (a field like ``-3``), ``integer`` (a
field that is not 1 to 20 ASCII digits, or is beyond 2**64 - 1, or a count beyond 2**63 - 1),
``impressions`` (Impression 0), ``clicks`` (Click > Impression), ``position`` (Position outside
1 .. Depth, Depth 0 included), ``long`` (a line over 1 MiB, skipped without being buffered). The
first failing field decides between ``negative`` and ``integer``. By default each rejected line
is counted in ``rejected[split]`` (its length, the whole count, is added by the preparation step
to the split's rejected rows; it keeps the first 1,000 line numbers) and one summary line per kind
is printed; ``strict: true`` raises ``DataError`` naming the file, line and reason at the first
one. An empty file, or one whose first block (1 MiB) holds no valid row, fails at once with a
``DataError`` that says what was expected. The profile's lines are checked the same way (3
fields; ``gender`` not 0-2, ``age`` not 1-6, ``duplicate`` for a UserID listed on an earlier
line, whose first listing is kept); its rejections are counted in ``profile_rejected`` and
printed, not added to any split.

Reading. ``repro.data.rawfiles.line_blocks`` cuts the file into blocks of ``block_size_mb`` at LF;
each block is checked and converted by pyarrow compute kernels and numpy on whole arrays, with no
Python loop over lines: the block is split into lines and fields (``split_pattern``), fields are
matched against ``[0-9]{1,20}`` (RE2), cast to uint64, and the row checks run on the columns.
Python looks at single lines only to word the reason of a rejection (``diagnose``, the same checks
written line by line; a property test holds the two to the same verdicts). The profile is read
whole once per source (about 24M users [as reported], 8 bytes per user plus a 1-byte table
indexed by UserID when the ids are dense, else a sorted array searched per row).

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's,
the config less ``strict`` and ``block_size_mb`` (they change no row), and per input file (the
profile too) its resolved path, size, modification time and the SHA-256 of eight sampled 64 KiB
blocks, so a same-size edit outside those samples that restores the modification time goes
unnoticed: delete ``cache/kdd12-*`` after such surgery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repro.data.rawfiles import (
    RawFileSource,
    RejectedLines,
    Rejections,
    line_blocks,
    ratio_split,
    require_file,
    strict_failure,
)
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import register_source

LABEL = "label"
WEIGHT = "weight"
COLUMNS = (
    "Click", "Impression", "DisplayURL", "AdID", "AdvertiserID", "Depth", "Position", "QueryID",
    "KeywordID", "TitleID", "DescriptionID", "UserID",
)
COUNTS = ("Click", "Impression", "Depth", "Position")  # must fit int64
IDS = ("AdID", "AdvertiserID", "DisplayURL", "QueryID", "KeywordID", "TitleID", "DescriptionID", "UserID")
PROFILE_COLUMNS = ("UserID", "Gender", "Age")
GENDERS = (0, 1, 2)
AGES = (1, 2, 3, 4, 5, 6)
ROLES = {"AdID": ("ad",), "QueryID": ("query",), "UserID": ("user",), "Position": ("position",)}
RELATIVE_POSITION = "RelativePosition"
USER_KEY = "user_key"

SPLIT_NAMES = ("train", "valid", "test")
SPLIT_RATIOS = (0.8, 0.1, 0.1)

KINDS = {
    "truncated": "a last line without a line end (possibly truncated)",
    "empty": "an empty line",
    "cr": "a carriage return inside the line",
    "fields": "a field count other than 12",
    "negative": "a negative number",
    "integer": "a field that is not a non-negative integer in range",
    "impressions": "an Impression of 0",
    "clicks": "more clicks than impressions",
    "position": "a Position outside 1..Depth",
    "long": "a line longer than 1 MiB",
}
PROFILE_KINDS = {
    **{k: v for k, v in KINDS.items() if k not in ("impressions", "clicks", "position")},
    "fields": "a field count other than 3",
    "gender": "a Gender other than 0, 1, 2",
    "age": "an Age outside 1..6",
    "duplicate": "a UserID listed on an earlier line",
}
_CODES = tuple(dict.fromkeys([*KINDS, *PROFILE_KINDS]))  # kind code i + 1 <-> name; 0 means a good line
_CODE = {kind: i + 1 for i, kind in enumerate(_CODES)}

EXPECTED = (
    "KDD Cup 2012 Track 2 training.txt: 12 tab-separated non-negative integers per line (Click, "
    "Impression, DisplayURL, AdID, AdvertiserID, Depth, Position, QueryID, KeywordID, TitleID, "
    "DescriptionID, UserID), no header"
)
PROFILE_EXPECTED = (
    "KDD Cup 2012 Track 2 userid_profile.txt: 3 tab-separated non-negative integers per line "
    "(UserID, Gender 0-2, Age 1-6), no header"
)

MAX_LINE = 1 << 20  # a longer "line" is rejected unread (a real line is under 200 bytes)
PROBE_BYTES = 1 << 20  # the first block: a file of another kind fails after reading this much
MAX_BLOCK_MB = 1024  # blocks stay far below pyarrow's 2 GiB binary-array limit
UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
_DIGITS = "^[0-9]{1,20}$"  # RE2 (pyarrow): $ is the end of the text
_NEGATIVE = "^-[0-9]+$"
_DIGITS_RE = re.compile(rb"[0-9]{1,20}")
_NEGATIVE_RE = re.compile(rb"-[0-9]+")
_PLAIN_BYTES = b"0123456789\t\n"  # the only bytes of a well-formed file
_UINT64_MAX_TEXT = pa.scalar(str(UINT64_MAX).encode(), pa.binary())
_PROFILE_DENSE_MIN = 1 << 20  # ids below this always get the dense look-up table


@dataclass
class KDD12Config:
    data_dir: str = "data/kdd12"
    file: str = "training.txt"
    profile_file: str | None = None  # e.g. userid_profile.txt: adds Gender and Age
    seed: int = 0  # the split hash's seed
    strict: bool = False  # raise at the first malformed line instead of skipping and counting it
    block_size_mb: int = 64  # bytes checked at once: bounds memory per chunk; changes no row


# -- layouts: what a line of each file must hold ----------------------------------------------


class _Layout(NamedTuple):
    columns: tuple[str, ...]
    signed: tuple[int, ...]  # indices of the columns that must fit int64
    kinds: dict[str, str]  # kind -> its description
    expected: str
    check_rows: Callable[[np.ndarray], np.ndarray]  # uint64 (rows, fields) -> kind codes, 0 = good
    check_row: Callable[[list[int]], tuple[str, str] | None]  # the same for one row, with a detail


def _check_training_rows(values: np.ndarray) -> np.ndarray:
    click, impressions, depth, position = (values[:, COLUMNS.index(c)] for c in COUNTS)
    code = np.zeros(len(values), dtype=np.int8)  # the first failing check wins: assign in reverse
    code[(position < 1) | (position > depth)] = _CODE["position"]
    code[click > impressions] = _CODE["clicks"]
    code[impressions == 0] = _CODE["impressions"]
    return code


def _check_training_row(values: list[int]) -> tuple[str, str] | None:
    click, impressions, depth, position = (values[COLUMNS.index(c)] for c in COUNTS)
    if impressions == 0:
        return "impressions", "Impression = 0"
    if click > impressions:
        return "clicks", f"Click = {click} > Impression = {impressions}"
    if not 1 <= position <= depth:
        return "position", f"Position = {position}, Depth = {depth}"
    return None


def _check_profile_rows(values: np.ndarray) -> np.ndarray:
    code = np.zeros(len(values), dtype=np.int8)
    code[~np.isin(values[:, 2], np.array(AGES, dtype=np.uint64))] = _CODE["age"]
    code[~np.isin(values[:, 1], np.array(GENDERS, dtype=np.uint64))] = _CODE["gender"]
    return code


def _check_profile_row(values: list[int]) -> tuple[str, str] | None:
    if values[1] not in GENDERS:
        return "gender", f"Gender = {values[1]}"
    if values[2] not in AGES:
        return "age", f"Age = {values[2]}"
    return None


TRAINING = _Layout(COLUMNS, tuple(COLUMNS.index(c) for c in COUNTS), KINDS, EXPECTED,
                   _check_training_rows, _check_training_row)
PROFILE = _Layout(PROFILE_COLUMNS, (), PROFILE_KINDS, PROFILE_EXPECTED, _check_profile_rows,
                  _check_profile_row)


def diagnose(line: bytes, layout: _Layout = TRAINING, unterminated: bool = False) -> tuple[str, str] | None:
    """Why ``line`` (without its LF) is not a row of ``layout``, as (kind, detail); None if it is one.

    The line-by-line twin of ``parse_block``'s vectorised checks, in the same order; it words the
    reasons of rejected lines (``unterminated``: the file's last line, without a line end)."""
    if unterminated:
        return "truncated", "no line end after the file's last line"
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        return "empty", "no fields"
    if b"\r" in line:
        return "cr", "a bare \\r"
    fields = line.split(b"\t")
    if len(fields) != len(layout.columns):
        return "fields", f"{len(fields)} field(s), expected {len(layout.columns)}"
    values = []
    for name, text in zip(layout.columns, fields):
        if not _DIGITS_RE.fullmatch(text) or int(text) > UINT64_MAX:
            kind = "negative" if _NEGATIVE_RE.fullmatch(text) else "integer"
            return kind, f"{name} = {_shown(text)}"
        values.append(int(text))
    for i in layout.signed:
        if values[i] > INT64_MAX:
            return "integer", f"{layout.columns[i]} = {values[i]} is beyond 2**63 - 1"
    return layout.check_row(values)


def _shown(text: bytes) -> str:
    shown = repr(text[:24])[1:]  # b'..' -> '..'
    return shown + ("..." if len(text) > 24 else "")


# -- one block of whole lines -> good rows and rejected lines ----------------------------------


class ParsedBlock(NamedTuple):
    values: np.ndarray  # uint64 (good lines, fields): the good lines' fields
    lines: np.ndarray  # int64: their 1-based line numbers
    bad_lines: np.ndarray  # int64, ascending: the rejected lines
    bad_codes: np.ndarray  # int8: their kind codes (``kind_of``)
    text: pa.Array  # binary: the block's lines without their LF (to word a rejection)
    first_line: int
    unterminated: bool  # the block's last line is the file's last, without a line end

    def reason(self, i: int, layout: _Layout) -> tuple[str, str]:
        """(kind, detail) of the ``i``-th rejected line."""
        line, kind = int(self.bad_lines[i]), kind_of(self.bad_codes[i])
        if kind == "long":
            return kind, f"over {MAX_LINE:,} bytes"
        index = line - self.first_line
        last = self.unterminated and index == len(self.text) - 1
        verdict = diagnose(self.text[index].as_py(), layout, last)
        return verdict if verdict and verdict[0] == kind else (kind, layout.kinds[kind])


def kind_of(code: int) -> str:
    return _CODES[int(code) - 1]


def parse_block(data: bytes, first_line: int, layout: _Layout = TRAINING,
                long_lines: list[int] | tuple[int, ...] = ()) -> ParsedBlock:
    """Check and convert ``data`` (whole lines, LF-ended; only the file's last line may lack the LF),
    whose first line is line ``first_line``; ``long_lines`` are lines ``line_blocks`` skipped."""
    n_fields = len(layout.columns)
    unterminated = bool(data) and not data.endswith(b"\n")
    body = data[:-1] if data.endswith(b"\n") else data
    if data:
        offsets = pa.py_buffer(np.array([0, len(body)], dtype=np.int32))
        block = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(data)])
        text = pc.split_pattern(block, b"\n").flatten()
    else:
        text = pa.array([], pa.binary())
    n = len(text)
    code = np.zeros(n, dtype=np.int8)
    lines_only = text
    if data.find(b"\r") >= 0:  # a CRLF end is read as LF; any other CR rejects the line
        lines_only = pc.if_else(pc.ends_with(text, b"\r"), pc.binary_slice(text, 0, -1), text)
    parts = pc.split_pattern(lines_only, b"\t")
    n_parts = np.asarray(pc.list_value_length(parts), dtype=np.int64) if n else np.zeros(0, np.int64)
    code[n_parts != n_fields] = _CODE["fields"]  # assigned in reverse order: the first check wins
    if lines_only is not text:
        code[np.asarray(pc.match_substring(lines_only, b"\r"), dtype=bool)] = _CODE["cr"]
    if n:
        code[np.asarray(pc.equal(pc.binary_length(lines_only), 0), dtype=bool)] = _CODE["empty"]
    if unterminated:
        code[-1] = _CODE["truncated"]

    shaped = np.flatnonzero(code == 0)  # lines with the right field count: check each field
    if len(shaped) == n:
        fields = parts.flatten()  # zero-copy
    elif len(shaped):
        fields = parts.take(pa.array(shaped)).flatten()
    else:
        fields = pa.array([], pa.binary())
    size = np.asarray(pc.binary_length(fields), dtype=np.int64)
    if not data.translate(None, _PLAIN_BYTES):  # only digits, tabs and LFs: every field is digits
        ok = (size >= 1) & (size <= 20)
    else:
        ok = np.asarray(pc.match_substring_regex(fields, _DIGITS), dtype=bool)
    longest = np.flatnonzero(size == 20)
    if len(longest):  # 20 digits may exceed 2**64 - 1; digit strings of one length compare as numbers
        beyond = np.asarray(pc.greater(fields.take(pa.array(longest)), _UINT64_MAX_TEXT), dtype=bool)
        ok[longest[beyond]] = False
    grid_ok = ok.reshape(len(shaped), n_fields)
    row_code = np.zeros(len(shaped), dtype=np.int8)
    if not ok.all():
        bad_rows = np.flatnonzero(~grid_ok.all(axis=1))
        first_bad = bad_rows * n_fields + np.argmin(grid_ok[bad_rows], axis=1)  # the first failing field
        negative = np.asarray(pc.match_substring_regex(fields.take(pa.array(first_bad)), _NEGATIVE), dtype=bool)
        row_code[bad_rows] = np.where(negative, _CODE["negative"], _CODE["integer"])
        fields = pc.if_else(pa.array(ok), fields, pa.scalar(b"0", pa.binary()))
    # The fields are ASCII digits now: reading them as UTF-8 text needs no check.
    digits = pa.Array.from_buffers(pa.string(), len(fields), fields.buffers(), offset=fields.offset)
    values = np.asarray(pc.cast(digits, pa.uint64())).reshape(len(shaped), n_fields)
    if layout.signed:
        beyond = (values[:, list(layout.signed)] > np.uint64(INT64_MAX)).any(axis=1)
        row_code[beyond & (row_code == 0)] = _CODE["integer"]
    if row_code.any():
        checked = np.flatnonzero(row_code == 0)
        row_code[checked] = layout.check_rows(values[checked])
        values = values[row_code == 0]
    else:
        row_code = layout.check_rows(values)
        if row_code.any():
            values = values[row_code == 0]
    code[shaped] = row_code
    good = shaped[row_code == 0]
    bad = np.flatnonzero(code)
    bad_lines = first_line + bad.astype(np.int64)
    bad_codes = code[bad]
    if len(long_lines):
        bad_lines = np.concatenate([bad_lines, np.asarray(long_lines, dtype=np.int64)])
        bad_codes = np.concatenate([bad_codes, np.full(len(long_lines), _CODE["long"], dtype=np.int8)])
        order = np.argsort(bad_lines, kind="stable")
        bad_lines, bad_codes = bad_lines[order], bad_codes[order]
    return ParsedBlock(values, first_line + good.astype(np.int64), bad_lines, bad_codes, text, first_line,
                       unterminated)


# -- the profile: UserID -> (Gender, Age) ------------------------------------------------------


class UserProfile:
    """Gender and Age per UserID: a 1-byte table indexed by UserID when the ids are dense enough
    (the largest below ``max(2**20, 8 * users)``), else a sorted id array searched per row."""

    def __init__(self, users: np.ndarray, gender: np.ndarray, age: np.ndarray) -> None:
        self.users = len(users)
        code = (gender.astype(np.int8) * 8 + age.astype(np.int8)).astype(np.int8)  # 1 .. 22; -1: absent
        top = int(users.max()) if len(users) else 0
        self.dense = top < max(_PROFILE_DENSE_MIN, 8 * len(users))
        if self.dense:
            self.table = np.full(top + 1, -1, dtype=np.int8)
            self.table[users.astype(np.int64)] = code
        else:
            order = np.argsort(users, kind="stable")
            self.ids, self.codes = users[order], code[order]

    def lookup(self, user: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """Gender and Age (int8, null where the user is absent) of each UserID (uint64)."""
        if self.dense:
            inside = user < np.uint64(len(self.table))
            code = np.where(inside, self.table[np.where(inside, user, np.uint64(0)).astype(np.int64)], -1)
        elif self.users:
            at = np.minimum(np.searchsorted(self.ids, user), self.users - 1)
            code = np.where(self.ids[at] == user, self.codes[at], -1)
        else:
            code = np.full(len(user), -1, dtype=np.int8)
        absent = code < 0
        gender, age = (code // 8).astype(np.int8), (code % 8).astype(np.int8)
        return pa.array(gender, mask=absent), pa.array(age, mask=absent)


# -- the source --------------------------------------------------------------------------------


@register_source("kdd12", config=KDD12Config)
class KDD12Source(RawFileSource):
    name = "kdd12"
    label = LABEL
    weight = WEIGHT
    splits = SPLIT_NAMES
    fingerprint_ignores = ("strict", "block_size_mb")  # they do not change a single row

    def __init__(self, cfg: KDD12Config) -> None:
        _check_config(cfg)
        super().__init__(cfg)
        self.split_protocol = (
            f"random 8:1:1 of training.txt's lines by a seeded hash of the line number (seed {cfg.seed}); "
            "a line's positive and negative rows stay together; the competition's test set is not used"
        )
        self.profile_rejected = RejectedLines()
        self._profile: UserProfile | None = None

    # -- the Source protocol --------------------------------------------------------------------

    def fields(self) -> list[RawField]:
        names = [*IDS, *(("Gender", "Age") if self.cfg.profile_file else ()), "Depth", "Position"]
        return [
            *(RawField(n, "categorical", ROLES.get(n, ())) for n in names),
            RawField(RELATIVE_POSITION, "dense"),
            RawField(USER_KEY, "key", ("user",)),
        ]

    def chunks(self, split: str) -> Iterator[pa.Table]:
        if split not in SPLIT_NAMES:
            raise DataError(f"kdd12: unknown split {split!r}; known: {list(SPLIT_NAMES)}")
        path = self._path()
        profile = self._load_profile()
        want = SPLIT_NAMES.index(split)
        ledger = Rejections("kdd12", path, split, KINDS)
        yielded = False
        for block in self._parse_file(path, TRAINING):
            if len(block.bad_lines):
                mine = ratio_split(block.bad_lines, self.cfg.seed, SPLIT_RATIOS) == want
                ledger.extend(zip(block.bad_lines[mine].tolist(), map(kind_of, block.bad_codes[mine])))
            keep = ratio_split(block.lines, self.cfg.seed, SPLIT_RATIOS) == want
            if keep.any():
                yield self._rows(block.values[keep], block.lines[keep], profile)
                yielded = True
        if not yielded:  # a split that got no line (a tiny file) is empty, not missing
            yield self._rows(np.zeros((0, len(COLUMNS)), dtype=np.uint64), np.zeros(0, np.int64), profile)
        self.rejected[split] = ledger.lines()
        ledger.report()

    # -- files ----------------------------------------------------------------------------------

    def input_paths(self) -> list[Path]:
        return [self._path(), *([self._profile_path()] if self.cfg.profile_file else [])]

    def _path(self) -> Path:
        return require_file("kdd12", Path(self.cfg.data_dir) / self.cfg.file, "the KDD Cup 2012 Track 2 training.txt")

    def _profile_path(self) -> Path:
        return require_file("kdd12", Path(self.cfg.data_dir) / str(self.cfg.profile_file), "the user profile file",
                            "place userid_profile.txt there, set data.profile_file, or set it to null")

    # -- reading --------------------------------------------------------------------------------

    def _parse_file(self, path: Path, layout: _Layout, strict: bool | None = None) -> Iterator[ParsedBlock]:
        """Every block of ``path``, checked; raises on an empty file, on a first block without a
        valid row, and (``strict``, default the config's) at the first rejected line."""
        strict = self.cfg.strict if strict is None else strict
        if path.stat().st_size == 0:
            raise DataError(f"kdd12: {path} is empty (expected {layout.expected})")
        first_block = True
        blocks = line_blocks(path, self.cfg.block_size_mb << 20, first_block_size=PROBE_BYTES, max_line=MAX_LINE)
        for first_line, data, n_lines, long_lines in blocks:
            block = parse_block(data, first_line, layout, long_lines)
            if len(block.text) != n_lines:  # line_blocks and the splitter disagree on what a line is
                raise DataError(f"kdd12: {path}: lines {first_line}..{first_line + n_lines - 1}: "
                                f"{len(block.text)} lines found")
            if len(block.bad_lines) and strict:
                kind, detail = block.reason(0, layout)
                raise strict_failure("kdd12", path, int(block.bad_lines[0]), f"{layout.kinds[kind]} ({detail})")
            if first_block and len(block.lines) == 0 and len(block.bad_lines):
                kind, detail = block.reason(0, layout)
                raise DataError(
                    f"kdd12: {path}: none of the first {len(block.bad_lines)} line(s) is a valid row "
                    f"(line {int(block.bad_lines[0])}: {layout.kinds[kind]}: {detail}); expected {layout.expected}"
                )
            first_block = False
            yield block

    def _load_profile(self) -> UserProfile | None:
        """The profile, read once per source (None without ``profile_file``)."""
        if not self.cfg.profile_file:
            return None
        if self._profile is not None:
            return self._profile
        path = self._profile_path()
        users, genders, ages, lines, rejects = [], [], [], [], []
        first_reason: tuple[int, str] | None = None  # strict: the file's first rejected line, worded
        for block in self._parse_file(path, PROFILE, strict=False):  # a repeated UserID is found at the end
            users.append(block.values[:, 0])
            genders.append(block.values[:, 1].astype(np.int8))  # checked: 0 .. 2
            ages.append(block.values[:, 2].astype(np.int8))  # checked: 1 .. 6
            lines.append(block.lines)
            rejects += zip(block.bad_lines.tolist(), map(kind_of, block.bad_codes))
            if len(block.bad_lines) and first_reason is None:
                kind, detail = block.reason(0, PROFILE)
                first_reason = int(block.bad_lines[0]), f"{PROFILE_KINDS[kind]} ({detail})"
        user, gender, age = np.concatenate(users), np.concatenate(genders), np.concatenate(ages)
        lines_of = np.concatenate(lines)
        _, first = np.unique(user, return_index=True)
        if len(first) < len(user):  # a UserID listed again: its first listing is kept
            repeated = np.setdiff1d(np.arange(len(user)), first)
            rejects += ((int(line), "duplicate") for line in lines_of[repeated])
            line = int(lines_of[repeated[0]])
            if first_reason is None or line < first_reason[0]:
                first_reason = line, f"{PROFILE_KINDS['duplicate']} (UserID {int(user[repeated[0]])})"
            kept = np.sort(first)
            user, gender, age = user[kept], gender[kept], age[kept]
        if self.cfg.strict and first_reason is not None:
            raise strict_failure("kdd12", path, *first_reason)
        ledger = Rejections("kdd12", path, "profile", PROFILE_KINDS)
        ledger.extend(rejects)  # in file order
        self.profile_rejected = ledger.lines()
        ledger.report()
        self._profile = UserProfile(user, gender, age)
        return self._profile

    def _rows(self, values: np.ndarray, lines: np.ndarray, profile: UserProfile | None) -> pa.Table:
        """Up to two rows per line: (label 1, weight Click) if Click > 0, then (label 0, weight
        Impression - Click) if that is > 0; in line order."""
        column = {name: values[:, i] for i, name in enumerate(COLUMNS)}
        clicks = column["Click"].astype(np.int64)
        misses = column["Impression"].astype(np.int64) - clicks
        per_line = (clicks > 0).astype(np.int64) + (misses > 0)
        source = np.repeat(np.arange(len(values)), per_line)
        first = np.cumsum(per_line) - per_line  # each line's first row
        label = np.zeros(len(source), dtype=np.int8)
        label[first[clicks > 0]] = 1
        weight = np.where(label == 1, clicks[source], misses[source])
        cols: dict[str, pa.Array] = {LABEL: pa.array(label), WEIGHT: pa.array(weight)}
        for name in IDS:
            cols[name] = pa.array(column[name][source].view(np.int64))  # the same 64 bits
        user = column["UserID"][source]
        cols["UserID"] = pa.array(user.view(np.int64), mask=user == 0)  # 0: the user was not identified
        if profile is not None:
            cols["Gender"], cols["Age"] = profile.lookup(user)
        depth, position = column["Depth"][source].astype(np.int64), column["Position"][source].astype(np.int64)
        cols["Depth"], cols["Position"] = pa.array(depth), pa.array(position)
        cols[RELATIVE_POSITION] = pa.array((depth - position) / np.maximum(depth, 1))
        cols[USER_KEY] = pa.array(user.view(np.int64))
        cols["line"] = pa.array(lines[source])
        return pa.table(cols)


def _check_config(cfg: KDD12Config) -> None:
    if not 1 <= cfg.block_size_mb <= MAX_BLOCK_MB:
        raise ConfigError(f"data source 'kdd12': block_size_mb={cfg.block_size_mb}; must be 1 .. {MAX_BLOCK_MB}")
    if not cfg.file:
        raise ConfigError("data source 'kdd12': file is empty; name the training file (training.txt)")
