"""MovieLens 1M (GroupLens, ``ml-1m.zip``): ``ratings.dat``, ``users.dat`` and ``movies.dat`` as distributed.

Input. The user unpacks GroupLens's ``ml-1m.zip`` into ``data_dir``; nothing is downloaded. Three
files, ``::``-separated, no header, ``\\n`` line ends (see ``datasets/movielens.md``):
- ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (1,000,209 lines; whole stars 1-5;
  Unix seconds), ASCII;
- ``users.dat``: ``UserID::Gender::Age::Occupation::Zip-code`` (6,040 lines; gender ``M``/``F``;
  the README's age codes 1, 18, 25, 35, 45, 50, 56 and occupation codes 0-20), ASCII;
- ``movies.dat``: ``MovieID::Title::Genres`` (3,883 lines; the title ends in the release year in
  parentheses; ``|``-separated genres from the README's 18), ISO-8859-1 (latin-1), not UTF-8.

Rows. One row per rating, joined with its user's and its movie's line (a hash join in pyarrow:
``pc.index_in`` on the two small tables, read once per source object).

Label (``positive_threshold``, ``drop_ratings``): 1 if the rating is at least
``positive_threshold`` (default 4, so 4 and 5 are positive and 1-3 negative), else 0. Ratings listed
in ``drop_ratings`` are removed before labelling (default none; AutoInt's MovieLens-1M protocol drops
the neutral 3s: ``drop_ratings: [3]``). A dropped rating is a choice, not a malformed line: it is not
counted as rejected; one note per pass says how many were dropped.

Features (all categorical unless said; values as in the files):
- ``user_id`` (role ``user``), ``movie_id`` (role ``ad``: the item shown, standing in for an ad);
- ``gender``, ``age`` (the README's code), ``occupation`` (code 0-20), ``zip`` (the whole text) and
  ``zip_prefix`` (its first ``zip_prefix`` characters, default 3: a US ZIP code's sectional
  centre; ``zip_prefix: 0`` drops the field);
- ``genre``: the **first** listed genre. The feature map has no multi-valued (sequence) kind, so a
  movie's genre list cannot be one categorical field. Note that movies.dat lists a movie's genres
  in alphabetical order, so the first one is the alphabetically first, not the main genre;
- ``genres``: a ``vector`` field of 18 columns ``genres_0`` .. ``genres_17``, 1.0 for each listed
  genre in the README's order (``GENRES``), 0.0 otherwise: the whole list as a multi-hot, given to
  models as dense input. ``genres: first | multi_hot | both`` (default ``both``) picks the fields;
- ``year``: the release year, the four digits in parentheses at the end of the title (missing when
  a title has none; the title itself is not a feature).
Each chunk also carries ``rating``, ``timestamp`` and ``line`` (the row's 1-based line number in
ratings.dat); the preparation step does not store them.

Splits (``split``); the AMTL and APG papers do not say how they split MovieLens (``shared/
papers.md`` lists the data sets only), so this is the reader's choice:
- ``random`` (default): AutoInt's MovieLens-1M protocol, random 8:1:1 (``ratios``), each ratings.dat
  line assigned by a seeded hash of its 1-based line number (``repro.data.rawfiles.ratio_split``,
  as the Criteo and Avazu readers do): streaming, the same on every machine and block size,
  binomial rather than exact shares;
- ``time``: global timestamp order: the kept ratings sorted by (timestamp, line number); the last
  ``round(n * ratios[2])`` are test, the ``round(n * ratios[1])`` before them valid, the rest train
  (ties in timestamp are broken by line number, so the shares are exact). It needs one extra pass
  over ratings.dat to find the two cut points (kept once per source object).
A split that gets no row is an error (``DataError``), not an empty table.

Bad input. Every line of each file is a row or a rejection, never both and never silently dropped.
A line is rejected, in this order, when it: is empty (``empty``); holds a carriage return other
than its CRLF end (``cr``); has, in ratings.dat or users.dat, a byte outside ASCII (``ascii``), or,
in movies.dat, a control character, i.e. is not ISO-8859-1 text (``control``; with
``encoding: utf-8``, for a re-encoded copy: bytes that are not UTF-8, ``utf8``); has a field count
other than the layout's (``fields``; ``truncated`` when it is the file's unterminated last line);
has an ID or timestamp that is not a whole number (``integer``); a rating other than 1-5
(``rating``); a gender other than M/F (``gender``), an age or occupation outside the README's codes
(``age``, ``occupation``), an empty or over-long zip code (``zip``); a genre outside the README's 18
or none (``genre``); repeats a UserID or MovieID of an earlier line (``duplicate``); is longer than
1 MiB (``long``). A rating whose user or movie has no valid line is rejected too (``user``,
``movie``), so a rejected users.dat or movies.dat line also rejects its ratings. ratings.dat's
rejected lines are counted in ``rejected[split]`` (its length, the whole count, is what the
preparation step adds to the split's rejected rows; it keeps the first 1,000 line numbers), each in
the split its line would have gone to (``random``: by its number; ``time``: by its timestamp when
that field is readable, else train). users.dat's and movies.dat's are counted in
``side_rejected["users"]`` and ``["movies"]``. One summary line per kind and file is printed to
stderr. CRLF line ends are read as LF. An unterminated last line with valid fields is kept, with a
note (it may have lost the end of its last field). ``strict: true`` raises ``DataError`` naming
the file, line and reason at the first rejected line (users.dat, then movies.dat, then ratings.dat).
An empty file, or one none of whose first block's lines (1 MiB) is a valid row (a file of another
data set: ml-100k's tab-separated ``u.data``, a CSV of ml-latest, IJCAI-18's file...), fails at
once with a ``DataError`` naming the layout that was expected.

Reading. Each file is read in blocks of ``block_size_mb`` cut at line ends (``repro.data.rawfiles.
line_blocks``); a block is decoded in C (``bytes.decode``; latin-1 maps every byte to one
character, so nothing is lost and line ends stay put) only when it is not pure ASCII, cut into
lines by numpy (one pass finding the line ends, a pyarrow ``large_string`` array built on the
buffer) and split on ``::`` by ``pyarrow.compute.split_pattern``; every check is a vectorised
pyarrow or numpy expression. No Python loop visits the rows; Python touches only rejected lines
(to count them) and the first one in strict mode (to quote it).

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's, the
config less ``strict`` and ``block_size_mb`` (they change no row), and per file its resolved path,
size, modification time and a SHA-256 of eight sampled 64 KiB blocks: all of users.dat and
movies.dat (each under 512 KiB), but only 512 KiB of ratings.dat's 24 MB, so an edit there that keeps
size and mtime and misses every sample goes unnoticed (delete ``cache/movielens-*`` after such surgery).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

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
    split_lines,
    strict_failure,
)
from repro.data.source import RawField
from repro.errors import ConfigError, DataError
from repro.registry import register_source

NAME = "movielens"
SPLITS = ("train", "valid", "test")
SEP = "::"
GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
AGES = (1, 18, 25, 35, 45, 50, 56)
OCCUPATIONS = 21  # codes 0 .. 20
LAYOUT = {  # file key -> (its fields, what the error says was expected)
    "ratings": (4, "ratings.dat: UserID::MovieID::Rating::Timestamp per line (whole numbers, rating 1-5)"),
    "users": (5, "users.dat: UserID::Gender::Age::Occupation::Zip-code per line (gender M/F, the README's codes)"),
    "movies": (3, "movies.dat: MovieID::Title::Genres per line (genres |-separated, from the README's 18)"),
}
HINT = "unpack GroupLens's ml-1m.zip there, or set data.data_dir"
KINDS = {
    "empty": "an empty line",
    "cr": "a carriage return inside the line",
    "ascii": "a byte outside ASCII (ratings.dat and users.dat are ASCII)",
    "control": "a control character (not ISO-8859-1 text)",
    "utf8": "bytes that are not UTF-8 (data.encoding is utf-8)",
    "fields": "a field count other than the layout's",
    "truncated": "a truncated last line (no line end, a wrong field count)",
    "long": "a line longer than 1 MiB",
    "integer": "an ID or timestamp that is not a whole number",
    "rating": "a rating other than 1-5 (whole stars)",
    "gender": "a gender other than M or F",
    "age": "an age code outside the README's (1, 18, 25, 35, 45, 50, 56)",
    "occupation": "an occupation code outside 0-20",
    "zip": "an empty zip code, or one over 32 characters",
    "genre": "a genre outside the README's 18, or none",
    "duplicate": "an ID already given on an earlier line",
    "user": "a UserID with no valid line in users.dat",
    "movie": "a MovieID with no valid line in movies.dat",
}
CODES = ("", *KINDS)  # kind code 0 = a valid row
MAX_LINE = 1 << 20
PROBE_BYTES = 1 << 20  # the first block: a file of another kind fails after reading this much
_ID = r"^[0-9]{1,18}$"  # a whole number that fits int64
_CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"  # C0 (less tab, LF, CR) and C1 controls, as code points
_YEAR = r"\((?P<year>[0-9]{4})\)\s*$"


@dataclass
class MovieLensConfig:
    data_dir: str = "data/ml-1m"
    ratings_file: str = "ratings.dat"
    users_file: str = "users.dat"
    movies_file: str = "movies.dat"
    encoding: str = "latin-1"  # movies.dat's: latin-1 (as distributed) | utf-8 (a re-encoded copy)
    positive_threshold: int = 4  # label 1 iff rating >= this
    drop_ratings: list[int] = field(default_factory=list)  # ratings removed before labelling, e.g. [3] (AutoInt)
    split: str = "random"  # random (seeded hash of the line number) | time (global timestamp order)
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, valid, test shares
    seed: int = 0  # random: the hash's seed
    genres: str = "both"  # first (categorical genre) | multi_hot (18-column vector genres) | both
    zip_prefix: int = 3  # characters of the zip code kept as zip_prefix; 0: no zip_prefix field
    strict: bool = False  # raise at the first malformed line instead of skipping and counting it
    block_size_mb: int = 16  # bytes parsed at once: bounds memory per chunk; changes no row


class _Parsed(NamedTuple):
    table: pa.Table  # the valid rows, typed, with their "line"
    bad: np.ndarray  # line numbers of the rejected lines, in file order
    kinds: np.ndarray  # their kind codes (index into CODES)
    bad_ts: np.ndarray  # ratings.dat: each rejected line's timestamp when readable, else -1
    texts: pa.Array  # the rejected lines' text (for strict mode's message)


@register_source(NAME, config=MovieLensConfig)
class MovieLensSource(RawFileSource):
    name = NAME
    label = "label"
    splits = SPLITS
    fingerprint_ignores = ("strict", "block_size_mb")

    def __init__(self, cfg: MovieLensConfig) -> None:
        _check_config(cfg)
        super().__init__(cfg)
        self.side_rejected: dict[str, RejectedLines] = {}  # users / movies: their rejected lines
        self._side: tuple[pa.Table, pa.Table] | None = None
        self._cuts: tuple[tuple[int, int], tuple[int, int]] | None = None
        a, b, c = cfg.ratios
        label = f"label = rating >= {cfg.positive_threshold}" + (
            f", ratings {sorted(cfg.drop_ratings)} dropped" if cfg.drop_ratings else "")
        if cfg.split == "random":
            self.split_protocol = (f"random {a:g}:{b:g}:{c:g} by a seeded hash of the ratings.dat line number "
                                   f"(seed {cfg.seed}); {label}")
        else:
            self.split_protocol = (f"global time order: the last {c:g} of ratings (by timestamp, then line) test, "
                                   f"the {b:g} before valid, the rest train; {label}")

    # -- the Source protocol --------------------------------------------------------------------
    def fields(self) -> list[RawField]:
        out = [RawField("user_id", "categorical", ("user",)), RawField("movie_id", "categorical", ("ad",))]
        out += [RawField(n, "categorical") for n in ("gender", "age", "occupation", "zip")]
        if self.cfg.zip_prefix:
            out.append(RawField("zip_prefix", "categorical"))
        if self.cfg.genres in ("first", "both"):
            out.append(RawField("genre", "categorical"))
        if self.cfg.genres in ("multi_hot", "both"):
            out.append(RawField("genres", "vector", dim=len(GENRES)))
        out.append(RawField("year", "categorical"))
        return out

    def chunks(self, split: str) -> Iterator[pa.Table]:
        if split not in SPLITS:
            raise DataError(f"{NAME}: unknown split {split!r}; expected one of {SPLITS}")
        users, movies = self._side_tables()
        cuts = self._time_cuts() if self.cfg.split == "time" else None
        path = self._path("ratings")
        ledger = Rejections(NAME, path, split, KINDS)
        rows = dropped = 0
        want = SPLITS.index(split)
        for parsed in self._parse_file(path, "ratings", users, movies):
            table = parsed.table
            lines = table.column("line").to_numpy()
            mine = self._split_of(lines, table.column("timestamp").to_numpy(), cuts) == want
            if len(parsed.bad):
                owner = self._split_of(parsed.bad, parsed.bad_ts, cuts)
                ledger.extend(zip(parsed.bad[owner == want].tolist(),
                                  (CODES[k] for k in parsed.kinds[owner == want])))
            keep = mine & self._kept(table)
            dropped += int((mine & ~keep).sum())
            if keep.any():
                table = table.filter(pa.array(keep)) if not keep.all() else table
                rows += table.num_rows
                yield self._features(table, users, movies)
        self.rejected[split] = ledger.lines()
        ledger.report()
        if dropped:
            print(f"{NAME}: {path}: {split}: dropped {dropped} rating(s) in drop_ratings "
                  f"{sorted(self.cfg.drop_ratings)} (by config, not malformed)", file=sys.stderr)
        if rows == 0:
            raise DataError(f"{NAME}: {path}: split {split!r} is empty (no valid rating falls in it: the file is "
                            f"too small for the {self.cfg.split} split's shares {list(self.cfg.ratios)})")

    # -- files ----------------------------------------------------------------------------------
    def input_paths(self) -> list[Path]:
        return [self._path(key) for key in ("ratings", "users", "movies")]

    def _path(self, key: str) -> Path:
        name = getattr(self.cfg, f"{key}_file")
        return require_file(NAME, Path(self.cfg.data_dir) / name, f"{key} file ({name})", HINT)

    # -- splits ---------------------------------------------------------------------------------
    def _kept(self, table: pa.Table) -> np.ndarray:
        if not self.cfg.drop_ratings:
            return np.ones(table.num_rows, dtype=bool)
        dropped = pc.is_in(table.column("rating"), value_set=pa.array(self.cfg.drop_ratings, pa.int8()))
        return ~np.asarray(dropped, dtype=bool)

    def _split_of(self, lines: np.ndarray, ts: np.ndarray, cuts) -> np.ndarray:
        """0 train, 1 valid, 2 test for each line (with its timestamp, -1 when unreadable)."""
        if cuts is None:
            return ratio_split(lines, self.cfg.seed, self.cfg.ratios)
        out = np.zeros(len(lines), dtype=np.int8)
        for (t, n) in cuts:  # valid's cut, then test's: a row at or after a cut moves up one split
            out += ((ts > t) | ((ts == t) & (lines >= n))).astype(np.int8)
        return out

    def _time_cuts(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The (timestamp, line) of the first valid row and of the first test row, in time order."""
        if self._cuts is None:
            users, movies = self._side_tables()
            ts, lines = [], []
            for parsed in self._parse_file(self._path("ratings"), "ratings", users, movies, notes=False):
                keep = self._kept(parsed.table)
                ts.append(parsed.table.column("timestamp").to_numpy()[keep])
                lines.append(parsed.table.column("line").to_numpy()[keep])
            ts_all, lines_all = np.concatenate(ts), np.concatenate(lines)
            order = np.lexsort((lines_all, ts_all))
            n = len(order)
            n_test = int(round(n * self.cfg.ratios[2]))
            n_valid = int(round(n * self.cfg.ratios[1]))
            never = (np.iinfo(np.int64).max, 0)  # a cut no row reaches: the split stays empty

            def cut(rank: int) -> tuple[int, int]:
                rank = max(rank, 0)
                return (int(ts_all[order[rank]]), int(lines_all[order[rank]])) if rank < n else never

            self._cuts = (cut(n - n_test - n_valid), cut(n - n_test))
        return self._cuts

    # -- users.dat and movies.dat -----------------------------------------------------------------
    def _side_tables(self) -> tuple[pa.Table, pa.Table]:
        if self._side is None:
            tables = []
            for key in ("users", "movies"):
                path = self._path(key)
                ledger = Rejections(NAME, path, key, KINDS)
                parts = []
                for parsed in self._parse_file(path, key):
                    ledger.extend(zip(parsed.bad.tolist(), (CODES[k] for k in parsed.kinds)))
                    parts.append(parsed.table)
                table = pa.concat_tables(parts)
                table, dup = _first_of_each(table, f"{key[:-1]}_id")
                if len(dup):
                    if self.cfg.strict:
                        raise strict_failure(NAME, path, int(dup[0]), KINDS["duplicate"])
                    ledger.extend((int(n), "duplicate") for n in dup)
                self.side_rejected[key] = ledger.lines()
                ledger.report()
                tables.append(table)
            self._side = (tables[0], tables[1])
        return self._side

    # -- parsing --------------------------------------------------------------------------------
    def _parse_file(self, path: Path, key: str, users: pa.Table | None = None, movies: pa.Table | None = None,
                    notes: bool = True) -> Iterator[_Parsed]:
        """``path`` (file ``key``) block by block, checked; ratings joined with ``users`` and ``movies``.
        Raises on an empty file, in strict mode at the first rejection, and when the first block
        holds no valid row."""
        n_fields, expected = LAYOUT[key]
        if path.stat().st_size == 0:
            raise DataError(f"{NAME}: {path} is empty (expected {expected})")
        encoding = self.cfg.encoding if key == "movies" else "ascii"
        blocks = line_blocks(path, self.cfg.block_size_mb << 20, first_block_size=PROBE_BYTES, max_line=MAX_LINE)
        first = True
        for first_line, data, n_lines, long_lines in blocks:
            last = bool(data) and not data.endswith(b"\n")  # only the file's last block ends so
            parsed = _parse_block(key, data, first_line, n_fields, encoding, last)
            if key == "ratings" and parsed.table.num_rows:
                parsed = _join(parsed, users, movies)
            if long_lines:
                parsed = _add_rejects(parsed, np.array(long_lines, dtype=np.int64), CODES.index("long"))
            if len(parsed.bad) and self.cfg.strict:
                line, kind = int(parsed.bad[0]), CODES[parsed.kinds[0]]
                text = parsed.texts[0].as_py() if parsed.texts is not None and len(parsed.texts) else None
                shown = "" if text is None else f": {text[:80]!r}"
                raise strict_failure(NAME, path, line, f"{KINDS[kind]}{shown}")
            if first and parsed.table.num_rows == 0 and len(parsed.bad):
                line, kind = int(parsed.bad[0]), CODES[parsed.kinds[0]]
                raise DataError(f"{NAME}: {path}: none of the first {len(parsed.bad)} line(s) is a valid row "
                                f"(line {line}: {KINDS[kind]}); expected {expected}")
            first = False
            end = first_line + n_lines - 1
            if last and notes and parsed.table.num_rows and parsed.table.column("line")[-1].as_py() == end:
                print(f"{NAME}: {path}: the last line ({end}) has no line end; kept (its fields are valid), but it "
                      "may have lost the end of its last field", file=sys.stderr)
            yield parsed

    def _features(self, table: pa.Table, users: pa.Table, movies: pa.Table) -> pa.Table:
        """A joined ratings chunk -> label, the feature columns, rating, timestamp, line."""
        u = users.take(pc.index_in(table.column("user_id"), value_set=users.column("user_id")))
        m = movies.take(pc.index_in(table.column("movie_id"), value_set=movies.column("movie_id")))
        rating = table.column("rating")
        cols: dict[str, pa.Array] = {
            "label": pc.greater_equal(rating, self.cfg.positive_threshold).cast(pa.int8()),
            "user_id": table.column("user_id"),
            "movie_id": table.column("movie_id"),
            "gender": u.column("gender"),
            "age": u.column("age"),
            "occupation": u.column("occupation"),
            "zip": u.column("zip"),
        }
        if self.cfg.zip_prefix:
            cols["zip_prefix"] = pc.utf8_slice_codeunits(u.column("zip"), 0, self.cfg.zip_prefix)
        if self.cfg.genres in ("first", "both"):
            cols["genre"] = m.column("genre")
        if self.cfg.genres in ("multi_hot", "both"):
            mask = m.column("genre_mask").to_numpy()
            bits = (mask[:, None] >> np.arange(len(GENRES), dtype=np.uint32)) & 1
            for i in range(len(GENRES)):
                cols[f"genres_{i}"] = pa.array(bits[:, i].astype(np.float32))
        cols["year"] = m.column("year")
        cols.update(rating=rating, timestamp=table.column("timestamp"), line=table.column("line"))
        return pa.table(cols)


# -- block parsing (vectorised) ------------------------------------------------------------------


def _decode(data: bytes, encoding: str) -> tuple[bytes, str | None]:
    """``data`` as UTF-8 bytes with the same lines, and the regex that marks a line wrongly encoded."""
    if data.isascii():
        return data, None
    if encoding == "utf-8":  # an invalid sequence becomes U+FFFD, never swallowing a line end
        return data.decode("utf-8", errors="replace").encode("utf-8"), "\ufffd"
    text = data.decode("latin-1").encode("utf-8")  # every byte is one character
    return text, ("[^\x00-\x7f]" if encoding == "ascii" else None)


def _parse_block(key: str, data: bytes, first_line: int, n_fields: int, encoding: str, last: bool) -> _Parsed:
    text, bad_chars = _decode(data, encoding)
    lines = split_lines(text)
    n = len(lines)
    kind = np.zeros(n, dtype=np.int8)

    def mark(mask, code: str, where: np.ndarray | None = None) -> None:
        """Give ``code`` to the still-valid lines in ``mask`` (of ``where``'s lines, or all)."""
        mask = np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(mask) if where is None else where[mask]
        idx = idx[kind[idx] == 0]
        kind[idx] = CODES.index(code)

    mark(np.asarray(pc.equal(pc.utf8_length(lines), 0)), "empty")
    mark(np.asarray(pc.match_substring(lines, "\r")), "cr")
    if encoding == "latin-1":
        mark(np.asarray(pc.match_substring_regex(lines, _CONTROL)), "control")
    elif bad_chars is not None:
        mark(np.asarray(pc.match_substring_regex(lines, bad_chars)), "utf8" if encoding == "utf-8" else "ascii")
    parts = pc.split_pattern(lines, SEP)
    count = np.asarray(pc.list_value_length(parts))
    wrong = count != n_fields
    if last and n and wrong[-1]:
        mark(np.arange(n) == n - 1, "truncated")
    mark(wrong, "fields")
    whole = np.flatnonzero(count == n_fields)
    cols = [pc.list_element(parts.take(pa.array(whole)), j) for j in range(n_fields)] if len(whole) else None
    ts = np.full(n, -1, dtype=np.int64)
    out: dict[str, pa.Array] = {}
    if cols is not None:
        is_id = [np.asarray(pc.match_substring_regex(c, _ID)) for c in cols]
        if key == "ratings":
            readable = is_id[3]
            ts[whole[readable]] = np.asarray(pc.cast(cols[3].filter(pa.array(readable)), pa.int64()))
            mark(~(is_id[0] & is_id[1] & is_id[3]), "integer", whole)
            mark(~np.asarray(pc.is_in(cols[2], value_set=pa.array(["1", "2", "3", "4", "5"]))), "rating", whole)
        elif key == "users":
            mark(~is_id[0], "integer", whole)
            mark(~np.asarray(pc.is_in(cols[1], value_set=pa.array(["M", "F"]))), "gender", whole)
            mark(~np.asarray(pc.is_in(cols[2], value_set=pa.array([str(a) for a in AGES]))), "age", whole)
            codes = pa.array([str(o) for o in range(OCCUPATIONS)])
            mark(~np.asarray(pc.is_in(cols[3], value_set=codes)), "occupation", whole)
            length = np.asarray(pc.utf8_length(cols[4]))
            mark((length == 0) | (length > 32), "zip", whole)
        else:
            mark(~is_id[0], "integer", whole)
            genre_lists = pc.split_pattern(cols[2], "|")
            index = pc.index_in(pc.list_flatten(genre_lists), value_set=pa.array(GENRES))
            unknown = np.asarray(pc.is_null(index))
            parent = np.asarray(pc.list_parent_indices(genre_lists))
            mark(np.bincount(parent[unknown], minlength=len(whole)) > 0, "genre", whole)
            bits = np.zeros(len(whole), dtype=np.uint32)
            bit = np.left_shift(np.uint32(1), np.asarray(index.drop_null()).astype(np.uint32))
            np.bitwise_or.at(bits, parent[~unknown], bit)  # a movie's genres as one bit mask
        good_of_whole = kind[whole] == 0
        take = pa.array(np.flatnonzero(good_of_whole))
        sub = [c.take(take) for c in cols]
        if key == "ratings":
            out = {"user_id": sub[0].cast(pa.int64()), "movie_id": sub[1].cast(pa.int64()),
                   "rating": sub[2].cast(pa.int8()), "timestamp": pa.array(ts[whole[good_of_whole]])}
        elif key == "users":
            out = {"user_id": sub[0].cast(pa.int64()), "gender": sub[1].cast(pa.string()),
                   "age": sub[2].cast(pa.int64()), "occupation": sub[3].cast(pa.int64()),
                   "zip": sub[4].cast(pa.string())}
        else:
            year = pc.struct_field(pc.extract_regex(sub[1], _YEAR), [0])
            out = {"movie_id": sub[0].cast(pa.int64()),
                   "genre": pc.list_element(genre_lists.take(take), 0).cast(pa.string()),
                   "genre_mask": pa.array(bits[good_of_whole]), "year": year.cast(pa.int64())}
    if not out:
        out = _empty_columns(key)
    good = kind == 0
    out["line"] = pa.array(first_line + np.flatnonzero(good), pa.int64())
    bad = np.flatnonzero(~good)
    return _Parsed(pa.table(out), first_line + bad, kind[bad], ts[bad], lines.take(pa.array(bad)))


def _empty_columns(key: str) -> dict[str, pa.Array]:
    types = {
        "ratings": {"user_id": pa.int64(), "movie_id": pa.int64(), "rating": pa.int8(), "timestamp": pa.int64()},
        "users": {"user_id": pa.int64(), "gender": pa.string(), "age": pa.int64(), "occupation": pa.int64(),
                  "zip": pa.string()},
        "movies": {"movie_id": pa.int64(), "genre": pa.string(), "genre_mask": pa.uint32(), "year": pa.int64()},
    }[key]
    return {name: pa.array([], t) for name, t in types.items()}


def _join(parsed: _Parsed, users: pa.Table, movies: pa.Table) -> _Parsed:
    """Reject the ratings whose user or movie has no valid line (``user`` first, then ``movie``)."""
    table = parsed.table
    no_user = np.asarray(pc.is_null(pc.index_in(table.column("user_id"), value_set=users.column("user_id"))))
    no_movie = np.asarray(pc.is_null(pc.index_in(table.column("movie_id"), value_set=movies.column("movie_id"))))
    if not (no_user.any() or no_movie.any()):
        return parsed
    kinds = np.where(no_user, CODES.index("user"), CODES.index("movie")).astype(np.int8)
    drop = no_user | no_movie
    lines = table.column("line").to_numpy()
    bad = np.concatenate([parsed.bad, lines[drop]])
    order = np.argsort(bad, kind="stable")
    texts = pa.concat_arrays([parsed.texts, pa.nulls(int(drop.sum()), pa.large_string())])
    return _Parsed(table.filter(pa.array(~drop)), bad[order], np.concatenate([parsed.kinds, kinds[drop]])[order],
                   np.concatenate([parsed.bad_ts, table.column("timestamp").to_numpy()[drop]])[order],
                   texts.take(pa.array(order)))


def _add_rejects(parsed: _Parsed, lines: np.ndarray, code: int) -> _Parsed:
    """Lines skipped before parsing (too long) join the block's rejections, in file order."""
    bad = np.concatenate([parsed.bad, lines])
    order = np.argsort(bad, kind="stable")
    kinds = np.concatenate([parsed.kinds, np.full(len(lines), code, dtype=np.int8)])
    ts = np.concatenate([parsed.bad_ts, np.full(len(lines), -1, dtype=np.int64)])
    texts = pa.concat_arrays([parsed.texts, pa.nulls(len(lines), pa.large_string())])
    return _Parsed(parsed.table, bad[order], kinds[order], ts[order], texts.take(pa.array(order)))


def _first_of_each(table: pa.Table, key: str) -> tuple[pa.Table, np.ndarray]:
    """``table`` with only the first line of each ``key`` value, and the later lines' numbers."""
    ids = table.column(key).to_numpy()
    _, first = np.unique(ids, return_index=True)
    keep = np.zeros(len(ids), dtype=bool)
    keep[first] = True
    if keep.all():
        return table, np.zeros(0, dtype=np.int64)
    return table.filter(pa.array(keep)), table.column("line").to_numpy()[~keep]


# -- config ----------------------------------------------------------------------------------------


def _check_config(cfg: MovieLensConfig) -> None:
    choices = {"split": ("random", "time"), "genres": ("first", "multi_hot", "both"),
               "encoding": ("latin-1", "utf-8")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"data source {NAME!r}: {key}={getattr(cfg, key)!r}; choose one of {list(allowed)}")
    ratios = list(cfg.ratios)
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-9 or ratios[0] <= 0:
        raise ConfigError(f"data source {NAME!r}: ratios={ratios}; expected three shares (train, valid, test) "
                          "that sum to 1, train's above 0")
    if not 1 <= cfg.positive_threshold <= 5:
        raise ConfigError(f"data source {NAME!r}: positive_threshold={cfg.positive_threshold}; ratings are 1-5")
    if any(r not in (1, 2, 3, 4, 5) for r in cfg.drop_ratings):
        raise ConfigError(f"data source {NAME!r}: drop_ratings={list(cfg.drop_ratings)}; ratings are 1-5")
    if cfg.zip_prefix < 0:
        raise ConfigError(f"data source {NAME!r}: zip_prefix={cfg.zip_prefix}; must be 0 (no field) or more")
    if cfg.block_size_mb < 1:
        raise ConfigError(f"data source {NAME!r}: block_size_mb={cfg.block_size_mb}; must be at least 1")
