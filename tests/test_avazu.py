"""The Avazu reader (datasets/avazu.py) on generated files in the real layout and on hand-written bytes."""

import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import ConfigError, DataError
from repro.registry import ROOT, SOURCES, load_plugins
from tests.conftest import fuzz_examples, fuzz_settings

load_plugins()
avazu = sys.modules["adrepro_datasets.avazu"]
SPLITS = ("train", "valid", "test")
HEADER = avazu.HEADER.encode()
ROW = ("10000169349117863715,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,"
       "a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79")


def source(data_dir, **kw):
    return SOURCES.get("avazu").factory(SOURCES.config("avazu", {"data_dir": str(data_dir), **kw}))


def row(**fields) -> str:
    values = dict(zip(avazu.COLUMNS, ROW.split(",")))
    values.update({k: str(v) for k, v in fields.items()})
    return ",".join(values[c] for c in avazu.COLUMNS)


def build(src, root, min_count=1) -> PreparedDataset:
    return PreparedDataset(prepare(src, PrepareConfig(min_count=min_count, cache_root=str(root)), verbose=False))


def lines_of(src, split):
    return np.concatenate([c.column("line").to_numpy() for c in src.chunks(split)])


def read_all(src):
    return {s: pa.concat_tables(list(src.chunks(s))) for s in SPLITS}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("avazu")
    avazu.write_avazu_sample(d / "train", 20_000, seed=1)
    return d


def test_generated_sample_has_the_real_layout(sample):
    text = (sample / "train").read_text()
    assert text.endswith("\n") and "\r" not in text and '"' not in text
    lines = text.splitlines()
    assert lines[0] == avazu.HEADER and len(lines) == 20_001
    rows = [ln.split(",") for ln in lines[1:]]
    assert {len(r) for r in rows} == {24}
    ids = [int(r[0]) for r in rows]
    assert max(ids) > 2**63 - 1 and len(lines[1].split(",")[0]) == 20  # beyond int64
    hours = [r[2] for r in rows]
    assert hours == sorted(hours) and hours[0] >= "14102100" and hours[-1] <= "14103023"
    assert len({h[:6] for h in hours}) == 10
    assert 0.15 < np.mean([r[1] == "1" for r in rows]) < 0.19  # Avazu's ~17%
    for c in ("site_id", "app_id", "device_id", "device_ip", "device_model"):
        assert all(re.fullmatch(r"[0-9a-f]{8}", r[avazu.COLUMNS.index(c)]) for r in rows[:500])
    ips = Counter(r[avazu.COLUMNS.index("device_ip")] for r in rows)
    assert ips.most_common(1)[0][1] > 50 and sum(1 for v in ips.values() if v == 1) > 1000  # Zipf-like
    assert np.mean([r[avazu.COLUMNS.index("device_id")] == "a99f214a" for r in rows]) > 0.8


def test_x4_prepared_cache_has_every_row_once(sample, tmp_path):
    src = source(sample, block_size_mb=0.5)  # ~7 blocks
    data = build(src, tmp_path / "c", min_count=2)
    rows = data.provenance["rows"]
    assert sum(rows.values()) == 20_000 and data.provenance["rejected_rows"] == {s: 0 for s in SPLITS}
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(rows[split] / 20_000 - share) < 0.012  # 5 standard deviations at n = 20,000
    lines = {s: set(lines_of(src, s).tolist()) for s in SPLITS}
    assert set.union(*lines.values()) == set(range(2, 20_002)) and sum(map(len, lines.values())) == 20_000
    fm = data.feature_map
    assert [f.name for f in fm.fields] == list(avazu.FEATURES) and "id" not in {f.name for f in fm.fields}
    assert fm.by_role("scene").name == "banner_pos" and fm.by_role("user").name == "device_ip"
    assert fm.by_role("position") is None and fm.by_role("ad") is None
    assert 0.15 < data.column("train", "label").mean() < 0.19
    # Deterministic: another build (another cache, another block size) assigns the same rows.
    assert rows == build(source(sample, block_size_mb=64), tmp_path / "d", min_count=2).provenance["rows"]
    assert lines_of(source(sample, block_size_mb=64), "valid").tolist() == sorted(lines["valid"])
    # Another split seed assigns other rows.
    assert set(lines_of(source(sample, split_seed=7), "test").tolist()) != lines["test"]


def test_x4_is_deterministic_across_builds(sample, tmp_path):
    a, b = (build(source(sample), tmp_path / d, min_count=2) for d in "ab")
    assert a.root.name == b.root.name and a.provenance["file_sha256"] == b.provenance["file_sha256"]


def test_time_split_puts_each_day_where_configured(sample):
    hours = {i + 1: ln.split(",")[2] for i, ln in enumerate((sample / "train").read_text().splitlines()) if i}
    src = source(sample, split="time")  # defaults: valid 141029, test 141030
    got = {s: {hours[n][:6] for n in lines_of(src, s).tolist()} for s in SPLITS}
    assert got == {"train": {f"1410{d}" for d in range(21, 29)}, "valid": {"141029"}, "test": {"141030"}}
    src = source(sample, split="time", valid_days=["141025", "141026"], test_days=[141027])
    got = {s: {hours[n][:6] for n in lines_of(src, s).tolist()} for s in SPLITS}
    assert got["valid"] == {"141025", "141026"} and got["test"] == {"141027"} and len(got["train"]) == 7
    assert sum(len(lines_of(src, s)) for s in SPLITS) == 20_000
    with pytest.raises(DataError, match="split 'test' is empty.*141101"):
        list(source(sample, split="time", test_days=["141101"]).chunks("test"))


def test_hour_expansion_matches_a_hand_computation(tmp_path):
    # 2014-10-21 is a Tuesday (%w 2); 10-25 a Saturday (6); 10-26 a Sunday (0); 10-30 a Thursday (4).
    cases = {"14102100": (0, 2, 0), "14102523": (23, 6, 1), "14102612": (12, 0, 1), "14103007": (7, 4, 0)}
    body = "".join(row(hour=h) + "\n" for h in cases)
    for split in SPLITS:
        (tmp_path / f"{split}.csv").write_text(avazu.HEADER + "\n" + body)
    table = read_all(source(tmp_path, split="files"))["train"]
    assert list(zip(table["hour"].to_pylist(), table["weekday"].to_pylist(), table["weekend"].to_pylist())) == \
        list(cases.values())
    assert "id" not in table.column_names and table["C14"].to_pylist() == ["15706"] * 4  # codes stay strings


# -- malformed input ---------------------------------------------------------------------------
BAD_LINES = {  # kind -> (the bad line's bytes, the reason's words)
    "wrong field count": (row().rsplit(",", 3)[0].encode(), "expected 24 fields, got 21"),
    "too many fields": ((row() + ",1").encode(), "expected 24 fields, got 25"),
    "bad click": (row(click="x").encode(), "click is 'x'"),
    "bad hour": (row(hour="14023100").encode(), "hour is '14023100'"),
    "bad UTF-8": (row().replace("1fbe01fe", "1fbe\xff01").encode("latin-1"), "not valid UTF-8"),
    "empty line": (b"", "empty line"),
}


def write_files(d: Path, train: bytes) -> None:
    good = HEADER + b"\n" + b"".join(row(hour=f"141021{h:02d}").encode() + b"\n" for h in range(10))
    (d / "train.csv").write_bytes(train)
    (d / "valid.csv").write_bytes(good)
    (d / "test.csv").write_bytes(good)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_each_malformed_kind_is_skipped_counted_and_named(kind, tmp_path, capsys):
    bad, reason = BAD_LINES[kind]
    lines = [row(hour=f"141021{h:02d}").encode() for h in range(8)]
    lines.insert(2, bad)  # line 4 of the file
    write_files(tmp_path, HEADER + b"\n" + b"\n".join(lines) + b"\n")
    src = source(tmp_path, split="files")
    assert lines_of(src, "train").tolist() == [2, 3, 5, 6, 7, 8, 9, 10]
    assert src.rejected["train"] == [4]
    label = "wrong field count" if kind == "too many fields" else kind
    assert f"skipped 1 row(s) ({label}), e.g. line(s) [4]" in capsys.readouterr().err
    data = build(source(tmp_path, split="files"), tmp_path / "c")
    assert data.provenance["rows"]["train"] == 8 and data.provenance["rejected_rows"]["train"] == 1
    with pytest.raises(DataError, match=rf"train.csv: line 4: {re.escape(reason)}"):
        list(source(tmp_path, split="files", strict=True).chunks("train"))


def test_every_kind_in_one_file_with_crlf_and_a_truncated_last_line(tmp_path, capsys):
    lines = [row(hour="14102100").encode() + b"\n"]  # line 2
    for kind in BAD_LINES:  # lines 3..8
        lines += [BAD_LINES[kind][0] + b"\n"]
    lines += [row(hour="14102101").encode() + b"\r\n", row(hour="14102102").encode() + b"\n",  # lines 9, 10
              row(hour="14102103").encode()[:40]]  # line 11: a cut download
    write_files(tmp_path, HEADER + b"\n" + b"".join(lines))
    src = source(tmp_path, split="files", block_size_mb=0.0005)  # ~500-byte blocks: the careful path for one
    assert lines_of(src, "train").tolist() == [2, 9, 10]
    assert src.rejected["train"] == [3, 4, 5, 6, 7, 8, 11]
    err = capsys.readouterr().err
    for kind, n in [("wrong field count", 2), ("bad click", 1), ("bad hour", 1), ("bad UTF-8", 1),
                    ("empty line", 1), ("truncated last line", 1)]:
        assert f"skipped {n} row(s) ({kind})" in err
    assert "1 line(s) end in CRLF" in err
    with pytest.raises(DataError, match="line 3: expected 24 fields"):
        list(source(tmp_path, split="files", strict=True).chunks("train"))


def test_crlf_parses_the_same_as_lf(sample, tmp_path):
    (tmp_path / "lf").mkdir(), (tmp_path / "crlf").mkdir()
    text = (sample / "train").read_bytes()[: 3_000_000]
    text = text[: text.rfind(b"\n") + 1]
    (tmp_path / "lf" / "train").write_bytes(text)
    (tmp_path / "crlf" / "train").write_bytes(text.replace(b"\n", b"\r\n"))
    built = [build(source(tmp_path / d, block_size_mb=0.3), tmp_path / "c") for d in ("lf", "crlf")]
    assert built[0].root != built[1].root  # other bytes, other fingerprint...
    for split in SPLITS:  # ...the same rows (in other row groups: the CRLF file's blocks hold fewer rows)
        lf, crlf = (pq.read_table(b.root / f"{split}.parquet").combine_chunks() for b in built)
        assert lf.num_rows > 1000 and lf.equals(crlf)


def test_an_unterminated_but_complete_last_line_is_kept_with_a_note(tmp_path, capsys):
    write_files(tmp_path, HEADER + b"\n" + row().encode() + b"\n" + row(hour="14102101").encode())
    assert lines_of(source(tmp_path, split="files"), "train").tolist() == [2, 3]
    assert "the last line (3) has no line break; kept" in capsys.readouterr().err


CRITEO_LINE = "0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t" + "\t".join(["68fd1e64"] * 26)
CRITEO_CSV = "label," + ",".join(f"I{i}" for i in range(1, 14)) + "," + ",".join(f"C{i}" for i in range(1, 27))


@pytest.mark.parametrize("content,message", [
    (b"", "is empty \\(0 bytes\\)"),
    (HEADER + b"\n", "no data row after the header"),
    (HEADER + b"\r\n", "no data row after the header"),
    (b"id,click,hour\n1,0,14102100\n", "line 1 is not Avazu's header \\(got 'id,click,hour'\\)"),
    ((CRITEO_LINE + "\n") * 3, "tab-separated, as Criteo's files are"),
    ((CRITEO_CSV + "\n" + ",".join(["1"] * 40) + "\n"), "a Criteo header"),
    ((ROW + "\n") * 3, "looks like a data row: the file has no header"),
    ((avazu.HEADER.replace("click,", "") + "\n"), "no click column"),
    (bytes(b for b in range(256) if b not in b"\r\n") * 5000, "no line break in the first MiB"),
    (HEADER + b"\n" + b"a,b,c\n" * 3000, "none of the first .* data lines is an Avazu row.*line 2: expected 24"),
    (HEADER + b"\n" + (row(click="yes") + "\n").encode() * 5, "none of the first 5 data lines.*click is 'yes'"),
], ids=["empty", "header-only", "header-only-crlf", "short-header", "criteo-tsv", "criteo-csv", "header-less",
        "kaggle-test", "binary", "garbage-rows", "all-bad-clicks"])
def test_files_that_are_not_avazu_fail_with_a_clear_error(content, message, tmp_path):
    (tmp_path / "train").write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(DataError, match=message):
        list(source(tmp_path, block_size_mb=0.01).chunks("train"))


def test_nothing_parses_fails_fast(tmp_path, monkeypatch):
    (tmp_path / "train").write_bytes(HEADER + b"\n" + b"x,y\n" * 2000 + (ROW + "\n").encode() * 200_000)
    src = source(tmp_path, block_size_mb=0.004)
    seen = []
    real = avazu.parse_block
    monkeypatch.setattr(avazu, "parse_block", lambda *a, **k: seen.append(1) or real(*a, **k))
    with pytest.raises(DataError, match="none of the first"):
        list(src.chunks("train"))
    assert len(seen) < 10  # a few blocks, not the 200,000 good rows behind them


def test_a_missing_file_and_bad_config_are_named(tmp_path):
    with pytest.raises(DataError, match="train file not found: .*decompress train.gz"):
        list(source(tmp_path).chunks("train"))
    (tmp_path / "train.csv").write_bytes(HEADER + b"\n")
    with pytest.raises(DataError, match="valid file not found"):
        source(tmp_path, split="files").fingerprint()
    with pytest.raises(ConfigError, match="split must be x4, time or files"):
        source(tmp_path, split="random")
    with pytest.raises(ConfigError, match="both valid_days and test_days"):
        source(tmp_path, split="time", valid_days=["141030"], test_days=["141030"])
    with pytest.raises(ConfigError, match="YYMMDD"):
        source(tmp_path, split="time", valid_days=["2014-10-29"])
    with pytest.raises(ConfigError, match="unknown config key"):
        source(tmp_path, min_categr_count=2)


def test_the_conf_file_builds_the_source(tmp_path):
    block = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "avazu.yaml"))
    assert block.pop("name") == "avazu" and block.pop("min_count") == 2 and block.pop("cache_root") == "cache"
    cfg = SOURCES.config("avazu", block)
    assert cfg.split == "x4" and cfg.split_seed == 2018 and cfg.file == "train"


# -- fingerprint -------------------------------------------------------------------------------
def test_fingerprint_follows_the_file_without_reading_it_whole(tmp_path, monkeypatch, bytes_read):
    path = avazu.write_avazu_sample(tmp_path / "train", 40_000, seed=3)
    size = path.stat().st_size
    assert size > 5_000_000
    src = source(tmp_path)
    before = src.fingerprint()
    monkeypatch.undo()
    assert 0 < sum(bytes_read) <= 8 * 65536 < size / 10

    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[100] = ord("9") if data[100] != ord("9") else ord("8")  # inside the first sampled block
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert src.fingerprint() != before
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, new mtime
    changed = src.fingerprint()
    assert changed != before
    with open(path, "ab") as f:
        f.write((ROW + "\n").encode())
    assert src.fingerprint() != changed
    assert source(tmp_path, split_seed=1).fingerprint() != source(tmp_path).fingerprint()  # config counts


# -- fuzzing -----------------------------------------------------------------------------------
_GOOD = [row(hour=f"1410{21 + d}{h:02d}", click=(d + h) % 2).encode() for d in range(10) for h in (0, 13)]
_line = st.one_of(
    st.sampled_from(_GOOD),
    st.sampled_from(_GOOD),  # twice: mostly good rows
    st.sampled_from(_GOOD).map(lambda r: b",".join(r.split(b",")[:-2])),
    st.sampled_from(_GOOD).map(lambda r: r + b",x"),
    st.tuples(st.sampled_from(_GOOD), st.sampled_from([b"", b"2", b"x", b"1.0", b" 1"])).map(
        lambda t: t[0].replace(b",0,1410", b"," + t[1] + b",1410", 1).replace(b",1,1410", b"," + t[1] + b",1410", 1)),
    st.tuples(st.sampled_from(_GOOD), st.binary(max_size=4)).map(lambda t: t[0][:30] + t[1] + t[0][30:]),
    st.binary(max_size=40),
    st.text(alphabet=",01\t\"ab\u00e9", max_size=30).map(str.encode),
)
_header = st.tuples(st.integers(0, 9), st.binary(max_size=30)).map(  # mostly Avazu's header
    lambda t: HEADER if t[0] < 7 else [HEADER.replace(b",", b"\t"), HEADER.replace(b"click,", b""), t[1]][t[0] - 7])


def _records(content: bytes) -> int:
    parts = avazu._LINE_END.split(content)
    if parts and parts[-1] == b"":
        parts.pop()
    return len(parts)


@pytest.mark.fuzz
def test_fuzzed_files_give_rows_and_counted_rejections_or_a_clear_error(tmp_path, fuzz_ledger):
    """100 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("avazu")
    outcomes, errors = ledger.outcomes, ledger.errors

    @settings(fuzz_settings(100, database=None, derandomize=True))
    @given(header=_header, body=st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])),
                                         min_size=5, max_size=80),
           cut_end=st.booleans(), mode=st.sampled_from(["files", "x4"]),
           strict=st.integers(0, 3).map(lambda i: i == 3),
           block=st.sampled_from([0.0003, 0.002, 1.0]))
    def run(header, body, cut_end, mode, strict, block):
        with ledger.example():
            _run(header, body, cut_end, mode, strict, block)

    def _run(header, body, cut_end, mode, strict, block):
        d = Path(tempfile.mkdtemp(dir=tmp_path))
        content = header + b"\n" + b"".join(line + end for line, end in body)
        if cut_end and body:
            content = content[: -len(body[-1][1])]
        write_files(d, content)
        (d / "train").write_bytes(content)
        src = source(d, split=mode, strict=strict, block_size_mb=block)
        try:
            got = {s: lines_of(src, s) for s in (("train",) if mode == "files" else SPLITS)}
        except (DataError, ConfigError) as e:
            assert str(e).startswith("avazu: ")
            outcomes["error"] += 1
            errors[re.sub(r"/\S+", "", str(e))[:70]] += 1
            return
        rejected = [n for s in got for n in src.rejected[s]]
        kept = np.concatenate(list(got.values())).tolist()
        assert len(set(kept)) == len(kept) and not set(kept) & set(rejected) and len(set(rejected)) == len(rejected)
        assert sorted(kept + rejected) == list(range(2, _records(content) + 1))  # every line: a row or a rejection
        assert not (strict and rejected)
        outcomes["rows, some rejected" if rejected else "rows"] += 1

    run()
    assert sum(outcomes.values()) == ledger.examples >= fuzz_examples(100)
    assert outcomes["rows"] + outcomes["rows, some rejected"] >= 20  # the success path was exercised


@pytest.mark.fuzz
def test_careful_path_agrees_with_the_fast_path(fuzz_ledger):
    """60 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("avazu careful vs fast path")

    @settings(fuzz_settings(60, database=None, derandomize=True))
    @given(lines=st.lists(st.one_of(st.sampled_from(_GOOD),
                                    st.text(alphabet=",01\t\"ab\u00e9\r", max_size=30).map(str.encode)), max_size=30),
           ends=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=30, max_size=30))
    def check(lines, ends):
        with ledger.example():
            block = b"".join(line + end for line, end in zip(lines, ends))
            fast, n_fast = avazu.parse_block(block, list(avazu.COLUMNS), 2, careful=False)
            slow, n_slow = avazu.parse_block(block, list(avazu.COLUMNS), 2, careful=True)
            assert n_fast == n_slow and fast.bad == slow.bad and fast.table.equals(slow.table)
            for b in fast.bad:
                ledger.count(b.kind)
            ledger.outcomes["some lines rejected" if fast.bad else "no line rejected"] += 1

    check()
    assert ledger.examples == fuzz_examples(60)
