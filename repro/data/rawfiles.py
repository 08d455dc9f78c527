"""Plumbing shared by the readers of raw public data files (``datasets/criteo.py``, ``avazu.py``, ...).

A reader of a raw file (Kaggle's Criteo ``train.txt``, Avazu's ``train``, a FuxiCTR CSV) needs the
same few things besides its own parsing; they live here so that a new reader is its parser, its
config and its card. The choices, once for all of them:

- **Fingerprint** (``RawFileSource.fingerprint``): the code of the reader's module and of this
  module (both decide the rows; each by its normalised digest, ``repro.data.prepare.code_digest``,
  so a comment or docstring edit keeps every cache), the config less the keys the reader names in
  ``fingerprint_ignores``, and per input file ``file_identity``: resolved path, size, modification
  time and a SHA-256 of ``IDENTITY_SAMPLES`` blocks of ``IDENTITY_BLOCK`` bytes (the first, the last
  and evenly spaced between). It reads at most 512 KiB per file, never the whole file, so an edit
  that keeps size and modification time and misses every sampled block goes unnoticed: delete the
  cache after such surgery.
- **Blocks** (``line_blocks``): the file is read in blocks of about ``block_size`` bytes cut at
  line ends, each with its first 1-based line number and its number of lines, so that every row
  and every rejection carries its line number. A line end is LF (a CR before it belongs to it), or
  also a lone CR with ``cr_ends_lines`` (pyarrow's CSV parser cuts lines there); a CRLF is never
  cut in two. A line longer than ``max_line`` is skipped without being buffered and reported by
  number, for the reader to reject or to fail on.
- **Split** (``ratio_split``): a line goes to a split by a seeded hash of its 1-based line number
  alone: ``u = splitmix64(line + seed * 0x9E3779B97F4A7C15) / 2**64`` (SplitMix64's output for
  that state, its top 53 bits), split ``k`` if ``u`` falls in the ``k``-th cumulative ratio. It is
  streaming (no line count, no permutation in memory), does not depend on the block size, and a
  rejected line keeps its place (it is rejected in the split its number falls in). The shares are
  binomial, not exact.
- **Rejections** (``Rejections``, ``strict_failure``): a rejected line is counted by kind; the
  first ``KEPT_LINE_NUMBERS`` (1,000) line numbers of a split are kept (``source.rejected[split]``,
  whose ``len`` is the full count that ``repro.data.prepare`` adds to the split's rejected rows), and
  one line per kind is printed to stderr with its count and first line numbers. In strict mode a
  reader raises ``strict_failure`` (file, line, reason) at the first rejected line of the file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import pyarrow as pa

from repro.data.prepare import code_digest
from repro.errors import DataError

IDENTITY_SAMPLES = 8  # blocks hashed per file for its fingerprint
IDENTITY_BLOCK = 1 << 16  # bytes per sampled block
KEPT_LINE_NUMBERS = 1_000  # rejected line numbers kept per split (issue 10); the count is always whole
EXAMPLES = 5  # line numbers printed per kind


# -- fingerprints ------------------------------------------------------------------------------


def file_identity(path: Path) -> str:
    """A digest of ``path``'s resolved path, size, modification time and sampled blocks.

    ``IDENTITY_SAMPLES`` blocks of ``IDENTITY_BLOCK`` bytes, evenly spaced from the first byte to
    the last block, are hashed: at most 512 KiB read, whatever the file's size."""
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        last = max(st.st_size - IDENTITY_BLOCK, 0)
        for offset in sorted({int(o) for o in np.linspace(0, last, IDENTITY_SAMPLES)}):
            f.seek(offset)
            h.update(f.read(IDENTITY_BLOCK))
    return h.hexdigest()


class RawFileSource:
    """The ``repro.data.source.Source`` plumbing of a reader of raw files.

    A reader subclasses it, sets ``name``, ``label`` and ``split_protocol``, keeps its config
    dataclass in ``self.cfg`` and implements ``fields``, ``chunks`` and ``input_paths``; it names in
    ``fingerprint_ignores`` the config keys that change speed or strictness but not a single row."""

    name: str
    label: str
    split_protocol: str
    weight: str | None = None
    truth_columns: tuple[str, ...] = ()
    fingerprint_ignores: tuple[str, ...] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.rejected: dict[str, RejectedLines] = {}  # per split, from its last pass

    def input_paths(self) -> list[Path]:
        """The files the rows come from (checked to exist)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        files = dict.fromkeys(inspect.getfile(c) for c in type(self).__mro__[:-1])  # the reader's, this one
        for file in files:
            h.update(code_digest(file).encode())
        config = {k: v for k, v in self.describe().items() if k not in self.fingerprint_ignores}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for path in self.input_paths():
            h.update(file_identity(path).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return asdict(self.cfg)

    def expected_rows(self, split: str) -> None:
        return None


def require_file(source: str, path: Path, what: str, hint: str = "place it there or set data.data_dir") -> Path:
    """``path`` if it is a file, else a ``DataError`` naming ``what`` and ``hint``."""
    if not path.is_file():
        raise DataError(f"{source}: {what} not found: {path} ({hint})")
    return path


# -- blocks of whole lines ---------------------------------------------------------------------


class LineBlock(NamedTuple):
    first_line: int  # 1-based number of the first line in ``data``
    data: bytes  # whole lines; only the file's last block may end without a line end
    lines: int  # lines in ``data``
    long_lines: list[int]  # numbers of lines longer than ``max_line``, skipped before ``data``'s end


def count_lines(data: bytes, cr_ends_lines: bool = False) -> int:
    """Lines in ``data``: its line ends, plus one for an unterminated last line."""
    n = data.count(b"\n")
    if cr_ends_lines and data.find(b"\r") >= 0:
        n += data.count(b"\r") - data.count(b"\r\n")
    terminated = data.endswith(b"\n") or (cr_ends_lines and data.endswith(b"\r"))
    return n + (0 if terminated or not data else 1)


def split_lines(data: bytes) -> pa.LargeStringArray:
    """The lines of ``data`` (valid UTF-8) without their line ends (LF, or CRLF; a lone CR stays),
    the unterminated last one included: one numpy pass and a pyarrow array on the copied bytes."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    n = len(nl) + (1 if len(buf) and buf[-1] != 10 else 0)
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = nl[: n - 1] + 1
    stops = np.append(nl, len(buf))[:n].astype(np.int64)
    crlf = (np.arange(n) < len(nl)) & (stops > starts)
    crlf[crlf] = buf[stops[crlf] - 1] == 13
    stops -= crlf
    keep = np.ones(len(buf), dtype=bool)
    keep[nl] = False
    keep[stops[crlf]] = False
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(stops - starts, out=offsets[1:])
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf[keep].tobytes()))


def line_blocks(
    path: Path,
    block_size: int,
    *,
    start: int = 0,
    first_line: int = 1,
    first_block_size: int | None = None,
    max_line: int | None = None,
    cr_ends_lines: bool = False,
) -> Iterator[LineBlock]:
    """``path`` from byte ``start`` (line ``first_line``) in blocks of whole lines, in order.

    A block is about ``block_size`` bytes (the first ``first_block_size``, so that a file of
    another kind fails after little reading), cut after the last line end read; the text after
    the file's last line end comes as a last block of its own. A line longer than ``max_line``
    bytes is dropped as it is read and its number reported in the next block's ``long_lines``
    (a last block with no data may come just for it)."""
    ends = (b"\n", b"\r") if cr_ends_lines else (b"\n",)
    line = first_line
    carry = b""  # the start of an unfinished line
    skipping = False  # inside a line longer than max_line
    long_lines: list[int] = []
    size = min(block_size, first_block_size or block_size)
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(size):
            size = block_size
            if cr_ends_lines and chunk.endswith(b"\r") and f.peek(1)[:1] == b"\n":
                chunk += f.read(1)  # never cut a CRLF in two: a CR that ends a chunk is a line end
            if skipping:
                end = _first_end(chunk, ends)
                if end < 0:
                    continue
                chunk, skipping = chunk[end:], False
                line += 1
            cut = max(chunk.rfind(e) for e in ends) + 1
            if cut == 0:  # no line end in the whole chunk: inside a long line
                carry += chunk
                if max_line is not None and len(carry) > max_line:
                    long_lines.append(line)
                    carry, skipping = b"", True
                continue
            piece = b"".join((carry, memoryview(chunk)[:cut]))  # the one copy of the block
            carry = chunk[cut:]
            n = count_lines(piece, cr_ends_lines)
            if max_line is not None and len(carry) > max_line:
                long_lines.append(line + n)
                carry, skipping = b"", True
            yield LineBlock(line, piece, n, long_lines)
            long_lines = []
            line += n
        if skipping:
            line += 1  # the over-long last line ended at the end of the file
        if carry or long_lines:
            yield LineBlock(line, carry, count_lines(carry, cr_ends_lines), long_lines)


def _first_end(chunk: bytes, ends: tuple[bytes, ...]) -> int:
    """The offset just after the first line end in ``chunk`` (a CRLF counts whole), or -1."""
    found = [i for i in (chunk.find(e) for e in ends) if i >= 0]
    if not found:
        return -1
    i = min(found)
    return i + 2 if chunk[i : i + 2] == b"\r\n" else i + 1


# -- splits by line number ---------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output for each state ``x`` (uint64, wrapping): increment, then finalise."""
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def ratio_split(lines: np.ndarray, seed: int, ratios: Sequence[float]) -> np.ndarray:
    """The split index (int8, 0 .. len(ratios) - 1) of each 1-based line number: a seeded hash.

    ``u = splitmix64(line + seed * 0x9E3779B97F4A7C15)`` scaled to [0, 1) from its top 53 bits;
    split ``k`` holds the ``u`` at or above the sum of the first ``k`` ratios."""
    with np.errstate(over="ignore"):
        key = np.asarray(lines, dtype=np.int64).astype(np.uint64) + np.uint64(seed % 2**64) * _GOLDEN
    u = (splitmix64(key) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    out = np.zeros(u.shape, dtype=np.int8)
    bound = 0.0
    for ratio in ratios[:-1]:
        bound += ratio
        out += (u >= bound).astype(np.int8)
    return out


# -- rejected lines ----------------------------------------------------------------------------


class RejectedLines(Sequence[int]):
    """A split's rejected lines: ``len`` is how many there were; the items are the first
    ``KEPT_LINE_NUMBERS`` line numbers, in file order (all of them when there were no more)."""

    def __init__(self, kept: Iterable[int] = (), total: int | None = None) -> None:
        self.kept = list(kept)
        self.total = len(self.kept) if total is None else total

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def __len__(self) -> int:  # what repro.data.prepare counts
        return self.total

    def __getitem__(self, i):  # type: ignore[override]
        return self.kept[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self.kept)

    def __reversed__(self) -> Iterator[int]:
        return reversed(self.kept)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RejectedLines):
            return (self.total, self.kept) == (other.total, other.kept)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self.total == len(other) and self.kept == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        more = f", +{self.total - len(self.kept)} more" if self.truncated else ""
        return f"RejectedLines({self.kept!r}{more})"


class Rejections:
    """The rejected lines of one pass over one file for one split: counts per kind, the first
    ``keep`` line numbers, the first few per kind; ``report`` prints one line per kind.

    Add lines in file order (a batch may be unsorted): "first" means first in the file."""

    def __init__(self, source: str, path: Path, split: str, kinds: Mapping[str, str] | None = None,
                 keep: int = KEPT_LINE_NUMBERS) -> None:
        self.source, self.path, self.split = source, path, split
        self.kinds = kinds or {}  # kind -> how the summary names it (default: the kind itself)
        self.keep = keep
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[int]] = {}
        self.first: list[int] = []

    def add(self, line: int, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < EXAMPLES:
            examples.append(line)
        if len(self.first) < self.keep:
            self.first.append(line)

    def extend(self, rejects: Iterable[tuple[int, str]]) -> None:
        for line, kind in sorted(rejects):
            self.add(line, kind)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> RejectedLines:
        return RejectedLines(self.first, self.total)

    def summary(self) -> list[str]:
        where = f"{self.source}: {self.path}: {self.split}"
        return [
            f"{where}: skipped {n} row(s) ({self.kinds.get(kind, kind)}), e.g. line(s) {self.examples[kind]}"
            for kind, n in self.counts.items()
        ]

    def report(self, file: IO[str] | None = None) -> None:
        for text in self.summary():
            print(text, file=file or sys.stderr)


def strict_failure(source: str, path: Path, line: int, reason: str) -> DataError:
    """The error of strict mode at the first rejected line: file, line and reason."""
    return DataError(f"{source}: {path}: line {line}: {reason} (strict: true; set data.strict=false to "
                     "skip and count such lines)")
