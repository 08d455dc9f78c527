"""The Criteo train.txt reader (datasets/criteo.py) on generated files and hand-written bytes.

Every file here is small (at most 20,000 rows) and written into tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.data.prepare import PrepareConfig, prepare, raw_column, raw_hash
from repro.errors import ConfigError, DataError
from repro.registry import SOURCES, load_plugins
from tests.conftest import assert_fingerprint_follows_edits, fuzz_examples, fuzz_settings

load_plugins()
criteo = sys.modules["adrepro_datasets.criteo"]  # datasets/ is loaded by path, never imported
write_sample = criteo.write_criteo_sample
INTS, CATS = criteo.INTS, criteo.CATS


def source(data_dir, **kw):
    return SOURCES.build("criteo", {"data_dir": str(data_dir), **kw})


def build(src, root, min_count=1) -> Path:
    return prepare(src, PrepareConfig(min_count=min_count, cache_root=str(root)), verbose=False)


def read_all(src) -> tuple[dict[str, pa.Table], dict[str, list[int]]]:
    """Every split's raw chunks, concatenated, and its rejected line numbers."""
    tables = {s: pa.concat_tables(list(src.chunks(s))) for s in ("train", "valid", "test")}
    return tables, dict(src.rejected)


def row(label="0", ints=("",) * 13, cats=("",) * 26, sep="\t") -> str:
    return sep.join([label, *ints, *cats])


HEX = [f"{i:08x}" for i in range(0x1A2B3C00, 0x1A2B3C40)]


def good_row(i: int) -> str:
    ints = [str((i * 7 + k) % 50 - 3) if (i + k) % 4 else "" for k in range(13)]
    cats = [HEX[(i * 3 + k) % len(HEX)] if (i + k) % 5 else "" for k in range(26)]
    return row(str(i % 2), ints, cats)


# -- the generator ----------------------------------------------------------------------------


def test_sample_is_byte_for_byte_the_kaggle_layout(tmp_path):
    path = tmp_path / "train.txt"
    write_sample(path, 20_000, seed=3)
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    table = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    assert table.shape == (20_000, 40)  # no header: the first line is a row
    assert set(table[0]) == {"0", "1"}
    assert 0.22 < (table[0] == "1").mean() < 0.30  # the Kaggle file has 25.6% positives
    ints = table.iloc[:, 1:14]
    assert ints.apply(lambda c: c.str.fullmatch(r"-?[0-9]*")).all().all()
    assert (ints[2].str.startswith("-")).any()  # I2 has negative values, as in the real file
    assert (ints == "").any().any() and (table.iloc[:, 14:] == "").any().any()  # missing = empty field
    cats = table.iloc[:, 14:]
    assert cats.apply(lambda c: c.str.fullmatch(r"([0-9a-f]{8})?")).all().all()
    # Zipf-like: one value dominates a field, yet many are seen once (so min_count matters).
    counts = cats[16].value_counts()  # C3, a field of 10M values in the Kaggle file
    assert counts.iloc[0] > 0.05 * len(cats) and (counts == 1).sum() > 1000
    # Deterministic, and the bytes do not depend on the number of threads.
    write_sample(tmp_path / "again.txt", 20_000, seed=3, workers=1)
    assert (tmp_path / "again.txt").read_bytes() == data
    write_sample(tmp_path / "other.txt", 20_000, seed=4)
    assert (tmp_path / "other.txt").read_bytes() != data


# -- splits -----------------------------------------------------------------------------------


def test_x4_prepare_keeps_every_row_once_near_8_1_1(tmp_path):
    rows = 20_000
    write_sample(tmp_path / "train.txt", rows, seed=1)
    src = source(tmp_path)
    root = build(src, tmp_path / "c1", min_count=2)
    tables = {s: pq.read_table(root / f"{s}.parquet") for s in ("train", "valid", "test")}
    counts = {s: t.num_rows for s, t in tables.items()}
    assert sum(counts.values()) == rows
    for split, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        assert abs(counts[split] / rows - share) < 0.015, counts  # 5 binomial standard deviations
    # None lost, none duplicated: the multiset of (label, C1..C26) equals the file's.
    frame = pd.read_csv(tmp_path / "train.txt", sep="\t", header=None, dtype=str, keep_default_na=False)
    expected = Counter(zip(frame[0].astype(float), *(
        raw_hash(pa.array(frame[14 + k].replace("", None))) for k in range(26)
    )))
    got = Counter()
    for t in tables.values():
        got.update(zip(t.column("label").to_numpy(), *(t.column(raw_column(c)).to_numpy() for c in CATS)))
    assert got == expected
    # Deterministic: a second build elsewhere writes the same bytes; another block size (so other
    # row groups) the same rows, under the same cache key.
    again = build(source(tmp_path), tmp_path / "c2", min_count=2)
    blocks = build(source(tmp_path, block_size_mb=1), tmp_path / "c3", min_count=2)
    assert again.name == blocks.name == root.name  # the block size is not part of the fingerprint
    for split in counts:
        assert (again / f"{split}.parquet").read_bytes() == (root / f"{split}.parquet").read_bytes()
        assert pq.read_table(blocks / f"{split}.parquet").equals(tables[split])
    # Another seed assigns other rows.
    other = {s: sum(c.num_rows for c in source(tmp_path, seed=1).chunks(s)) for s in counts}
    assert other != counts and sum(other.values()) == rows


def test_min_count_shrinks_the_vocabulary(tmp_path):
    write_sample(tmp_path / "train.txt", 5_000, seed=2)
    src = source(tmp_path)
    sizes = {m: build(src, tmp_path / f"c{m}", min_count=m) for m in (1, 10)}
    maps = {m: json.loads((r / "feature_map.json").read_text()) for m, r in sizes.items()}
    vocab = {m: {f["name"]: f["vocab_size"] for f in fm["fields"]} for m, fm in maps.items()}
    assert vocab[10]["C3"] < vocab[1]["C3"] / 2  # the rare values of a big field fall into OOV


def test_x1_split_is_near_7_2_1(tmp_path):
    write_sample(tmp_path / "train.txt", 10_000, seed=5)
    tables, _ = read_all(source(tmp_path, split="x1"))
    n = {s: t.num_rows for s, t in tables.items()}
    assert sum(n.values()) == 10_000
    assert abs(n["train"] / 1e4 - 0.7) < 0.025 and abs(n["valid"] / 1e4 - 0.2) < 0.02


# -- integers ---------------------------------------------------------------------------------


def fuxictr_bucket(x: float) -> int:
    """FuxiCTR's convert_to_bucket, transcribed."""
    return int(math.floor(math.log(x) ** 2)) if x > 2 else int(x)


def test_bucketing_matches_a_hand_computation(tmp_path):
    values = ["-1", "0", "1", "2", "3", "4", "5", "10", "1000", ""]
    hand = [-1, 0, 1, 2, 1, 1, 2, 5, 47, None]  # floor(ln(x)^2) for x > 2, else int(x)
    lines = [row(str(i % 2), [v] * 13, [HEX[i]] * 26) for i, v in enumerate(values)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    tables, rejected = read_all(source(tmp_path))
    got = pa.concat_tables(tables.values()).to_pandas()
    got = got.set_index(got["C1"].map(HEX.index)).sort_index()
    for name in INTS:
        assert [None if pd.isna(v) else int(v) for v in got[name]] == hand
    assert rejected == {"train": [], "valid": [], "test": []}
    # The transform itself against the transcription, on values around every bucket boundary.
    xs = sorted({int(math.exp(math.sqrt(k))) + d for k in range(1, 400) for d in (-1, 0, 1)} | {2**40, 2**62})
    assert criteo.bucketize(pa.array(xs, pa.int64())).to_pylist() == [fuxictr_bucket(x) for x in xs]
    floats = [-2.5, -0.5, 0.5, 1.9, 2.0, 2.0001, 7.389, 7.3891, 1e12]
    assert criteo.bucketize(pa.array(floats)).to_pylist() == [fuxictr_bucket(x) for x in floats]


def test_missing_values_are_missing_in_the_cache(tmp_path):
    write_sample(tmp_path / "train.txt", 3_000, seed=6)
    frame = pd.read_csv(tmp_path / "train.txt", sep="\t", header=None, dtype=str, keep_default_na=False)
    src = source(tmp_path, split="x4")
    root = build(src, tmp_path / "c")
    tables, _ = read_all(src)
    for split in ("train", "valid", "test"):
        cache, raw = pq.read_table(root / f"{split}.parquet"), tables[split]
        for name in ("I1", "I12", "C19", "C22"):
            is_missing = raw.column(name).is_null().to_numpy(zero_copy_only=False)
            assert ((cache.column(name).to_numpy() == 0) == is_missing).all()
    assert (frame[12] == "").any()  # I12 is mostly missing in the sample
    # numeric: log1p(max(x, 0)), missing -> 0.0 (the preparation step's fill for a dense field)
    tables, _ = read_all(source(tmp_path, integers="numeric"))
    x = pa.concat_tables(tables.values()).column("I2").to_numpy(zero_copy_only=False)
    assert np.nanmin(x) == 0.0 and np.nanmax(x) > 5
    fields = {f.name: f.kind for f in source(tmp_path, integers="numeric").fields()}
    assert fields["I1"] == "dense" and fields["C1"] == "categorical"
    # FuxiCTR's na_value 0: missing joins the bucket of 0.
    tables, _ = read_all(source(tmp_path, missing_integers="zero"))
    assert pa.concat_tables(tables.values()).column("I12").null_count == 0


# -- bad input --------------------------------------------------------------------------------

FAULT_KIND = {
    "wrong_fields": "fields", "bad_integer": "integer", "bad_utf8": "utf8", "bad_label": "label",
    "short_category": "category", "empty_line": "empty", "bare_cr": "cr", "truncated": "fields",
}


def test_each_malformed_kind_is_skipped_and_counted_with_its_line(tmp_path, capsys):
    placed = write_sample(
        tmp_path / "train.txt", 20_000, seed=7, truncate_last=True,
        **{kind: 3 for kind in criteo.FAULTS},
    )
    bad = sorted(n for lines in placed.values() for n in lines)
    assert len(bad) == 22
    src = source(tmp_path)
    root = build(src, tmp_path / "c")
    provenance = pd.read_json(root / "provenance.json", typ="series")
    assert sum(provenance["rows"].values()) == 20_000 - 22
    assert sum(provenance["rejected_rows"].values()) == 22
    assert sorted(n for lines in src.rejected.values() for n in lines) == bad
    err = capsys.readouterr().err
    for kind in set(FAULT_KIND.values()):
        assert criteo.KINDS[kind] in err
    assert len([line for line in err.splitlines() if "skipped" in line]) >= 8  # one line per kind and split


@pytest.mark.parametrize("fault", sorted(FAULT_KIND))
def test_strict_mode_names_file_line_and_reason(tmp_path, fault):
    kw = {"truncate_last": True} if fault == "truncated" else {fault: 1}
    placed = write_sample(tmp_path / "train.txt", 2_000, seed=8, **kw)
    line = placed[fault][0]
    src = source(tmp_path, strict=True)
    with pytest.raises(DataError, match=rf"train\.txt: line {line}: {re.escape(criteo.KINDS[FAULT_KIND[fault]])}"):
        read_all(src)
    tables, rejected = read_all(source(tmp_path))  # the default skips and counts it
    assert sum(t.num_rows for t in tables.values()) == 1_999
    assert sorted(n for v in rejected.values() for n in v) == [line]


def test_crlf_parses_the_same_as_lf(tmp_path):
    for name, crlf in (("lf", False), ("crlf", True)):
        (tmp_path / name).mkdir()
        write_sample(tmp_path / name / "train.txt", 5_000, seed=9, crlf=crlf, bad_label=2)
    assert b"\r\n" in (tmp_path / "crlf" / "train.txt").read_bytes()[:1000]
    roots = {n: build(source(tmp_path / n), tmp_path / f"c-{n}") for n in ("lf", "crlf")}
    for split in ("train", "valid", "test"):
        lf, crlf = (pq.read_table(roots[n] / f"{split}.parquet") for n in ("lf", "crlf"))
        assert lf.num_rows > 0 and lf.equals(crlf)
    provenance = {n: json.loads((roots[n] / "provenance.json").read_text()) for n in roots}
    assert provenance["lf"]["rejected_rows"] == provenance["crlf"]["rejected_rows"]


def test_hand_written_bad_lines(tmp_path):
    lines = [
        good_row(0),
        "\t".join(good_row(1).split("\t")[:-1]),  # 39 fields
        good_row(2) + "\tdeadbeef",  # 41 fields
        good_row(3),
        "",  # an empty line
        row("1", ["12a"] + [""] * 12, [HEX[0]] * 26),  # a non-numeric integer
        row("1", ["99999999999999999999"] + [""] * 12, [HEX[0]] * 26),  # beyond int64
        row("1", [" 7 "] + [""] * 12, [HEX[0]] * 26),  # spaces around a number: pyarrow accepts it
        row("", cats=[HEX[1]] * 26),  # no label
        row("0.5", cats=[HEX[1]] * 26),
        row("1", cats=["abc"] + [HEX[1]] * 25),  # a short hash
        good_row(4),
    ]
    data = ("\n".join(lines) + "\n").encode().replace(b"12a", b"\xff2a")  # and one non-UTF-8 line
    (tmp_path / "train.txt").write_bytes(data)
    tables, rejected = read_all(source(tmp_path))
    bad = sorted(n for v in rejected.values() for n in v)
    assert bad == [2, 3, 5, 6, 7, 9, 10, 11]
    assert sum(t.num_rows for t in tables.values()) == 4  # lines 1, 4, 8, 12


def test_a_bad_block_takes_the_careful_path_without_losing_neighbours(tmp_path):
    """One bad line in a block of thousands: the block is halved, not read line by line."""
    lines = [good_row(i) for i in range(3_000)]
    lines[1_234] = lines[1_234].replace("\t", "\tx", 2)  # label ok, I1 = "x..."
    (tmp_path / "train.txt").write_text("\n".join(lines))  # and no final line end
    tables, rejected = read_all(source(tmp_path, split="files", train_file="train.txt", valid_file="train.txt",
                                       test_file="train.txt"))
    assert rejected == {"train": [1_235], "valid": [1_235], "test": [1_235]}
    assert tables["train"].num_rows == 2_999
    # Cut into pieces (16, then line by line), the block gives exactly the fast path's rows.
    data = (tmp_path / "train.txt").read_bytes()
    parser = criteo._BlockParser(criteo._Layout("raw", "\t", criteo.COLUMNS, 0), threads=False)
    fast = parser.parse(data.replace(b"\tx", b"\t"), 1)
    table, numbers, rejects = parser._careful(data.replace(b"\tx", b"\t"), 1)
    assert not rejects and fast[0].equals(table) and list(fast[1]) == list(numbers) == list(range(1, 3_001))


def test_an_empty_file_and_other_data_sets_fail_clearly(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_all(source(tmp_path))
    avazu = "id,click,hour,C1,banner_pos,site_id\n1000009418151094273,0,14102100,1005,0,1fbe01fe\n" * 50
    (tmp_path / "train.txt").write_text(avazu)
    with pytest.raises(DataError, match=r"none of the first 100 line\(s\) is a valid row.*expected Criteo train\.txt"):
        read_all(source(tmp_path))
    with pytest.raises(DataError, match="line 1 is not a Criteo CSV header"):
        read_all(source(tmp_path, layout="csv"))
    (tmp_path / "train.txt").write_text("\n".join("\t".join(["a"] * 24) for _ in range(10)) + "\n")
    with pytest.raises(DataError, match="24 field"):
        read_all(source(tmp_path))
    (tmp_path / "train.txt").write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DataError, match="none of the first"):
        read_all(source(tmp_path))
    with pytest.raises(DataError, match="not found"):
        build(source(tmp_path / "nowhere"), tmp_path / "c")
    with pytest.raises(ConfigError, match="split='x9'"):
        source(tmp_path, split="x9")
    with pytest.raises(ConfigError, match="unknown config key"):
        source(tmp_path, integer="bucket")


def test_an_overlong_line_is_rejected_not_buffered(tmp_path):
    lines = [good_row(0), "1\t" + "9" * (3 * criteo.MAX_LINE), good_row(1)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    tables, rejected = read_all(source(tmp_path, block_size_mb=1))
    assert sorted(n for v in rejected.values() for n in v) == [2]
    assert sum(t.num_rows for t in tables.values()) == 2


# -- the reczoo CSV layout (split: files) -----------------------------------------------------


def test_reczoo_csv_files_with_a_header(tmp_path):
    names = ["Label", *INTS, *CATS]
    order = names[::-1]  # any column order
    for split, n in (("train", 60), ("valid", 20), ("test", 20)):
        lines = [",".join(order)]
        for i in range(n):
            value = {"Label": str(i % 2)}
            value.update({c: "" if (i + k) % 3 == 0 else f"{(i + k) % 9}.0" for k, c in enumerate(INTS)})
            value.update({c: "" if (i + k) % 4 == 0 else str(1000 + (i * k) % 17) for k, c in enumerate(CATS)})
            lines.append(",".join(value[c] for c in order))
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    src = source(tmp_path, split="files")
    root = build(src, tmp_path / "c")
    provenance = pd.read_json(root / "provenance.json", typ="series")
    assert provenance["rows"] == {"train": 60, "valid": 20, "test": 20}
    tables, _ = read_all(src)
    i1 = tables["train"].column("I1").to_pylist()  # "", "1.0", "2.0", "", "4.0", "5.0", "", "7.0", ...
    assert i1[:9] == [None, 1, 2, None, 1, 2, None, 3, 4]  # 7 -> floor(3.79), 8 -> floor(4.32)
    # A Criteo_x1 header (lowercase label) is accepted too.
    text = (tmp_path / "train.csv").read_text().replace("Label", "label", 1)
    (tmp_path / "train.csv").write_text(text)
    assert sum(t.num_rows for t in source(tmp_path, split="files").chunks("train")) == 60


# -- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_follows_the_file_and_reads_only_samples(tmp_path, monkeypatch, bytes_read):
    path = tmp_path / "train.txt"
    with open(path, "wb") as f:
        f.truncate(50 << 20)  # 50 MiB (sparse): the fingerprint never parses it
    src = source(tmp_path)
    first = src.fingerprint()
    assert 0 < sum(bytes_read) <= 8 << 16  # eight 64 KiB samples of a 50 MiB file (repro.data.rawfiles)
    monkeypatch.undo()
    assert source(tmp_path).fingerprint() == first
    assert source(tmp_path, block_size_mb=8, strict=True, use_threads=False).fingerprint() == first
    assert source(tmp_path, integers="numeric").fingerprint() != first
    # same size, same mtime, a byte changed in the first block; then a line appended
    assert_fingerprint_follows_edits(path, lambda: source(tmp_path).fingerprint(), first)


# -- fuzzing ----------------------------------------------------------------------------------

_field = st.one_of(
    st.sampled_from(["", "0", "1", "-3", "42", " 7", "1e3", "x", "+1", "9" * 25, "deadbeef", "DEADBEEF", "abc"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
)


@st.composite
def _lines(draw):
    """A line: a valid row, a valid row with a damaged field, a random line, or random bytes."""
    kind = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))  # half of the lines are valid rows
    if kind == 0:
        return good_row(draw(st.integers(0, 1000))).encode()
    if kind == 1:
        fields = good_row(draw(st.integers(0, 1000))).split("\t")
        fields[draw(st.integers(0, 39))] = draw(_field)
        if draw(st.booleans()):
            del fields[draw(st.integers(0, 38))]
        return "\t".join(fields).encode("utf-8", errors="surrogatepass")
    if kind == 2:
        return "\t".join(draw(st.lists(_field, max_size=45))).encode("utf-8", errors="surrogatepass")
    return draw(st.binary(max_size=80))


@pytest.mark.fuzz
def test_fuzzed_input_gives_rows_and_rejections_or_a_clear_error(record_property, fuzz_ledger):
    """100 random examples in ``make test`` (not derandomised, as before), ``make fuzz``'s count there."""
    ledger = fuzz_ledger("criteo")
    outcomes = ledger.outcomes

    @settings(fuzz_settings(100, suppress_health_check=list(HealthCheck), database=None))
    @given(lines=st.lists(_lines(), max_size=40), crlf=st.booleans(), final=st.booleans(),
           split=st.sampled_from(["x4", "files"]))
    def check(lines, crlf, final, split):
        with ledger.example():
            _check(lines, crlf, final, split)

    def _check(lines, crlf, final, split):
        data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if final and lines else b"")
        if data:  # the careful path (line by line) decides exactly as the fast path (pyarrow) does
            parser = criteo._BlockParser(criteo._Layout("raw", "\t", criteo.COLUMNS, 0), threads=False)
            fast = parser.parse(data, 1)
            table, numbers, rejects = parser._careful(data, 1)
            table, numbers, more = parser._check(table, numbers)
            assert fast[0].equals(table) and list(fast[1]) == list(numbers)
            assert [r[0] for r in fast[2]] == sorted(r[0] for r in rejects + more)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "train.txt").write_bytes(data)
            src = source(tmp, split=split, train_file="train.txt", valid_file="train.txt", test_file="train.txt")
            try:
                tables, rejected = read_all(src)
            except (DataError, ConfigError) as e:
                assert str(e).startswith("criteo: ")
                outcomes["clear error"] += 1
                return
        n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        if split == "x4":  # every line once: a row of one split or a rejection of one split
            rows = sum(t.num_rows for t in tables.values())
            bad = sorted(n for v in rejected.values() for n in v)
            assert rows + len(bad) == n_lines
        else:  # the same file as each split
            rows, bad = tables["train"].num_rows, rejected["train"]
            assert rows + len(bad) == n_lines and tables["test"].num_rows == rows
        assert len(set(bad)) == len(bad) and all(1 <= n <= n_lines for n in bad)
        outcomes["rows and rejections"] += 1

    check()
    record_property("hypothesis_examples", ledger.examples)
    assert ledger.examples >= fuzz_examples(100) // 2 and outcomes["rows and rejections"] > 0
    assert ledger.lines["fields"] > 0  # a dropped field is the generator's commonest damage


@pytest.mark.parametrize("preset", ["criteo", "criteo_x4_002", "criteo_x1"])
def test_conf_presets_resolve(preset):
    from hydra import compose, initialize_config_dir

    from repro.registry import ROOT
    from repro.run import resolve

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        data = resolve(compose(config_name="config", overrides=[f"data={preset}"])).config["data"]
    expected = {"criteo": (10, "x4", "bucket"), "criteo_x4_002": (2, "x4", "bucket"), "criteo_x1": (1, "x1", "numeric")}
    assert (data["min_count"], data["split"], data["integers"]) == expected[preset]
    assert data["name"] == "criteo"
