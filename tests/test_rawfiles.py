"""The plumbing shared by the raw-file readers (repro/data/rawfiles.py), on hand-written bytes."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.data.prepare import PrepareConfig, prepare
from repro.data.rawfiles import (
    KEPT_LINE_NUMBERS,
    RejectedLines,
    Rejections,
    count_lines,
    line_blocks,
    ratio_split,
    split_lines,
    strict_failure,
)
from repro.registry import SOURCES, load_plugins
from tests.conftest import fuzz_examples, fuzz_settings

load_plugins()
criteo = sys.modules["adrepro_datasets.criteo"]


# -- blocks of whole lines ---------------------------------------------------------------------

_END_ANY = re.compile(rb"\r\n|\r|\n")


def _lines(data: bytes, cr: bool) -> list[bytes]:
    """The file's lines, each with its line end: LF only, or LF, CRLF and a lone CR."""
    pattern = _END_ANY if cr else re.compile(rb"\n")
    out, at = [], 0
    for m in pattern.finditer(data):
        out.append(data[at : m.end()])
        at = m.end()
    return out + ([data[at:]] if at < len(data) else [])


@pytest.mark.fuzz
def test_blocks_are_the_file_cut_at_line_ends(fuzz_ledger):
    """150 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("line_blocks")

    @settings(fuzz_settings(150, database=None, derandomize=True))
    @given(
        body=st.lists(st.tuples(st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                                st.sampled_from([b"\n", b"\r\n", b"\r", b"\r\r\n", b""])), max_size=40),
        block=st.integers(1, 40), first=st.sampled_from([None, 1, 3]), cr=st.booleans(),
        max_line=st.sampled_from([None, 6, 30]), start=st.integers(0, 3),
    )
    def check(body, block, first, cr, max_line, start):
        with ledger.example():
            long_lines = _blocks_are_the_file_cut_at_line_ends(body, block, first, cr, max_line, start)
            ledger.outcomes["a long line skipped" if long_lines else "every line whole"] += 1

    check()
    assert ledger.examples == fuzz_examples(150) and ledger.outcomes["a long line skipped"] > 0


def _blocks_are_the_file_cut_at_line_ends(body, block, first, cr, max_line, start) -> list[int]:
    """The property itself; returns the numbers of the lines reported as too long."""
    data = b"".join(text + end for text, end in body)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f"
        path.write_bytes(data)
        blocks = list(line_blocks(path, block, start=start, first_line=7, first_block_size=first,
                                  max_line=max_line, cr_ends_lines=cr))
    lines = _lines(data[start:], cr)
    short = [n for n, text in enumerate(lines, 7)
             if max_line is None or len(text.rstrip(b"\r\n" if cr else b"\n")) <= max_line]
    got, long_lines, expect_line = [], [], 7
    for b in blocks:
        assert b.first_line >= expect_line and b.lines == count_lines(b.data, cr)
        got += list(zip(range(b.first_line, b.first_line + b.lines), _lines(b.data, cr)))
        long_lines += b.long_lines
        expect_line = b.first_line + b.lines
        assert b.data or b.long_lines  # an empty block comes only to report a long line
        if b is not blocks[-1]:
            assert b.data == b"" or b.data.endswith((b"\n", b"\r") if cr else b"\n")
    # Every line is in a block, whole and at its number, or reported as too long (a line only
    # just over max_line may still come whole: it is dropped only when it outgrows a read).
    assert [n for n, _ in got] == sorted(set(range(7, 7 + len(lines))) - set(long_lines))
    assert all(lines[n - 7] == text for n, text in got)
    assert set(short) <= {n for n, _ in got}
    if cr:  # a CRLF is never cut in two: no block starts with the LF of the previous one's CR, where
        # the two are adjacent (a long line skipped between them is no cut: found at 10,000 examples)
        assert all(not (a.data.endswith(b"\r") and b.data.startswith(b"\n"))
                   for a, b in zip(blocks, blocks[1:]) if b.first_line == a.first_line + a.lines)
    return long_lines


def test_count_lines():
    assert count_lines(b"") == 0 and count_lines(b"a") == 1 and count_lines(b"a\n") == 1
    assert count_lines(b"a\r\nb\rc") == 2 and count_lines(b"a\r\nb\rc", cr_ends_lines=True) == 3
    assert count_lines(b"\r", cr_ends_lines=True) == 1 and count_lines(b"\r") == 1


# -- splits by line number ---------------------------------------------------------------------


def test_ratio_split_is_the_documented_hash():
    lines = np.arange(1, 200_001)
    got = ratio_split(lines, 0, (0.8, 0.1, 0.1))
    assert got.dtype == np.int8 and set(np.unique(got)) == {0, 1, 2}
    assert abs((got == 0).mean() - 0.8) < 0.005 and abs((got == 2).mean() - 0.1) < 0.005
    # u = splitmix64(line + seed * golden) / 2**64, by hand for a few lines (Python ints, mod 2**64).
    def u(line, seed):
        m = 2**64
        z = (line + seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % m
        return ((z ^ (z >> 31)) >> 11) / 2**53
    for seed in (0, 2018):
        expected = [(u(n, seed) >= 0.7) + (u(n, seed) >= 0.7 + 0.2) for n in range(1, 50)]
        assert ratio_split(np.arange(1, 50), seed, (0.7, 0.2, 0.1)).tolist() == expected
    assert not np.array_equal(ratio_split(lines, 1, (0.8, 0.1, 0.1)), got)  # the seed counts


# -- rejected lines ----------------------------------------------------------------------------


def test_the_ledger_counts_everything_and_keeps_the_first_line_numbers(capsys):
    ledger = Rejections("demo", Path("x.csv"), "train", {"f": "a wrong field count"}, keep=3)
    ledger.extend([(9, "f"), (4, "e")])
    for n in range(10, 20):
        ledger.add(n, "f")
    lines = ledger.lines()
    assert len(lines) == 12 and list(lines) == [4, 9, 10] and lines.truncated
    assert lines != [4, 9, 10] and RejectedLines([4, 9, 10]) == [4, 9, 10]
    ledger.report()
    err = capsys.readouterr().err.splitlines()
    assert err == ["demo: x.csv: train: skipped 1 row(s) (e), e.g. line(s) [4]",
                   "demo: x.csv: train: skipped 11 row(s) (a wrong field count), e.g. line(s) [9, 10, 11, 12, 13]"]
    assert str(strict_failure("demo", Path("x.csv"), 9, "why")).startswith("demo: x.csv: line 9: why (strict: true")


def test_prepare_counts_every_rejected_line_though_only_the_first_1000_are_kept(tmp_path):
    placed = criteo.write_criteo_sample(tmp_path / "train.txt", 4_000, seed=1, empty_line=1_500)
    src = SOURCES.build("criteo", {"data_dir": str(tmp_path), "split": "files", "train_file": "train.txt",
                                   "valid_file": "train.txt", "test_file": "train.txt"})
    root = prepare(src, PrepareConfig(min_count=1, cache_root=str(tmp_path / "c")), verbose=False)
    provenance = json.loads((root / "provenance.json").read_text())
    assert provenance["rejected_rows"] == {"train": 1_500, "valid": 1_500, "test": 1_500}
    assert provenance["rows"]["train"] == 2_500
    kept = src.rejected["train"]
    assert len(kept) == 1_500 and list(kept) == placed["empty_line"][:KEPT_LINE_NUMBERS]


def test_a_reader_fingerprint_covers_the_shared_module_s_code_not_its_comments(tmp_path, monkeypatch):
    (tmp_path / "train.txt").write_bytes(b"")
    src = SOURCES.build("criteo", {"data_dir": str(tmp_path)})
    before = src.fingerprint()
    import repro.data.rawfiles as rawfiles
    real = Path.read_bytes

    def rawfiles_ends_with(suffix: bytes) -> None:
        monkeypatch.setattr(Path, "read_bytes", lambda p: real(p) + (suffix if p.name == "rawfiles.py" else b""))

    rawfiles_ends_with(b"\n# a comment\n")
    assert src.fingerprint() == before
    rawfiles_ends_with(b"\nEDITED = 1\n")
    assert src.fingerprint() != before
    monkeypatch.undo()
    assert src.fingerprint() == before and rawfiles.__file__.endswith("rawfiles.py")


@pytest.mark.fuzz
def test_split_lines_cuts_at_lf_and_crlf_and_keeps_a_lone_cr(fuzz_ledger):
    """100 random examples in ``make test`` (as before), ``make fuzz``'s count there."""
    ledger = fuzz_ledger("split_lines")

    @settings(fuzz_settings(100))
    @given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                            max_size=8), max_size=6), st.lists(st.booleans(), max_size=6), st.booleans())
    def check(lines, crlf, terminated):
        with ledger.example():
            _split_lines_cuts_at_lf_and_crlf_and_keeps_a_lone_cr(lines, crlf, terminated)
            ledger.outcomes["lines" if lines else "no line"] += 1

    check()
    assert ledger.examples >= fuzz_examples(100) // 2  # a small space: hypothesis may exhaust it


def _split_lines_cuts_at_lf_and_crlf_and_keeps_a_lone_cr(lines, crlf, terminated):
    ends = ["\r\n" if i < len(crlf) and crlf[i] else "\n" for i in range(len(lines))]
    text = "".join(line + end for line, end in zip(lines, ends))
    if lines and not terminated:
        text = text[: -len(ends[-1])]
    got = split_lines(text.encode("utf-8")).to_pylist()
    # a line that itself ends in CR before its LF end loses that CR (it reads as CRLF)
    want = [line[:-1] if end == "\n" and line.endswith("\r") and (terminated or i < len(lines) - 1) else line
            for i, (line, end) in enumerate(zip(lines, ends))]
    if lines and not terminated and lines[-1] == "":  # an empty unterminated last line is no line
        want = want[:-1]
    assert got == want


def test_a_cr_before_a_skipped_long_line_is_no_cut_crlf(tmp_path):
    """Found by `make fuzz`: a block ending in CR followed by one starting with LF is no CRLF cut in
    two when a long line lay between them; the line numbers say so (8 -> 10, and 7 -> 9). The long
    line is reported by the later block here, by the earlier one in the second file (after its data,
    although ``LineBlock`` says "skipped before data's end")."""
    path = tmp_path / "f"
    path.write_bytes(b"\n" + b"\0" * 12 + b"\r" + b"\0" * 7 + b"\n" + b"\n")
    blocks = list(line_blocks(path, 7, first_line=7, max_line=6, cr_ends_lines=True))
    assert [(b.first_line, b.data, b.long_lines) for b in blocks] == [
        (7, b"\n", []), (8, b"\0" * 12 + b"\r", []), (10, b"\n", [9])]
    path.write_bytes(b"\n" + b"\0" * 6 + b"\r" + b"\0" * 7 + b"\n" + b"\n")
    blocks = list(line_blocks(path, 11, start=3, first_line=7, first_block_size=1, max_line=6, cr_ends_lines=True))
    assert [(b.first_line, b.data, b.long_lines) for b in blocks] == [(7, b"\0" * 4 + b"\r", [8]), (9, b"\n", [])]
