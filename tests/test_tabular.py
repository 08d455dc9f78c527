"""The generic schema source (datasets/tabular.py) on FuxiCTR's tiny_csv rows (Taobao schema), the
same rows as parquet, hand-written bad rows, and fuzzed bytes and schemas.

Every file is small and written into tmp_path; nothing is downloaded."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.data.rawfiles import ratio_split
from repro.errors import ConfigError, DataError
from repro.registry import ROOT, SOURCES, load_plugins
from tests.conftest import fuzz_examples, fuzz_settings

load_plugins()
tabular = sys.modules["adrepro_datasets.tabular"]  # datasets/ is loaded by path, never imported

SAMPLES = ROOT.parent / "shared" / "ctr_samples" / "fuxictr_tiny_csv"
SPLITS = ("train", "valid", "test")
CATS = ["userid", "adgroup_id", "pid", "cate_id", "campaign_id", "customer", "brand", "cms_segid", "cms_group_id",
        "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation", "new_user_class_level"]
SCHEMA = {
    "label": "clk", "categorical": CATS, "dense": ["price"],
    "roles": {"userid": ["user"], "adgroup_id": ["ad"], "pid": ["scene"]}, "transforms": {"price": "log1p"},
}


def source(data_dir, **kw):
    return SOURCES.build("tabular", {"data_dir": str(data_dir), **SCHEMA, **kw})


def build(src, root: Path) -> PreparedDataset:
    return PreparedDataset(prepare(src, PrepareConfig(cache_root=str(root)), verbose=False))


def read_all(src) -> tuple[dict[str, pa.Table], dict[str, list[int]]]:
    """Every split's chunks, concatenated, and its rejected line numbers."""
    tables = {s: pa.concat_tables(list(src.chunks(s))) for s in SPLITS}
    return tables, {s: list(v) for s, v in src.rejected.items()}


def cache_tables(data: PreparedDataset) -> dict[str, pa.Table]:
    return {s: pq.read_table(data.root / f"{s}.parquet") for s in SPLITS}


@pytest.fixture
def sample_dir(tmp_path) -> Path:
    if not SAMPLES.exists():
        pytest.skip(f"shared sample files not found at {SAMPLES} (../shared must sit beside the checkout)")
    folder = tmp_path / "data"
    folder.mkdir()
    for split in SPLITS:
        shutil.copy(SAMPLES / f"{split}_sample.csv", folder / f"{split}.csv")
    return folder


# -- the real rows ------------------------------------------------------------------------------


def test_tiny_csv_prepares_with_its_schema(sample_dir, tmp_path):
    data = build(source(sample_dir), tmp_path / "c")
    assert data.provenance["rows"] == {"train": 100, "valid": 100, "test": 100}
    assert data.provenance["rejected_rows"] == {"train": 0, "valid": 0, "test": 0}
    for split in SPLITS:
        assert data.column(split, "label").sum() == 4  # 4 clicks per file (the shared README)
    fm = data.feature_map
    assert [f.name for f in fm.categorical] == CATS and [f.name for f in fm.dense] == ["price"]
    assert (fm.by_role("user").name, fm.by_role("ad").name, fm.by_role("scene").name) == ("userid", "adgroup_id", "pid")
    assert fm.by_role("position") is None and fm.weight is None
    b = next(data.batches("train", 100))
    assert b["cat"].shape == (100, 15) and b["dense"].shape == (100, 1)
    col = data.column("train", "pvalue_level")  # empty in some rows: padding 0, never a real value
    assert (col == 0).any() and (col > 0).any()
    price = pacsv.read_csv(sample_dir / "train.csv").column("price").to_numpy()
    np.testing.assert_allclose(data.column("train", "price"), np.log1p(np.maximum(price, 0)), rtol=1e-6)


def test_the_taobao_schema_gives_the_hand_written_readers_rows(sample_dir, tmp_path):
    ours = cache_tables(build(source(sample_dir), tmp_path / "c"))
    theirs = cache_tables(build(SOURCES.build("taobao_ad", {"data_dir": str(sample_dir)}), tmp_path / "c"))
    for split in SPLITS:
        assert ours[split].equals(theirs[split]), split


def write_parquet(csv: Path, out: Path) -> None:
    """The CSV's rows as parquet, with pyarrow's inferred types (ids become int64, price double,
    empty cells null) and one column dictionary-encoded."""
    table = pacsv.read_csv(csv)
    pid = table.schema.get_field_index("pid")
    table = table.set_column(pid, "pid", pc.dictionary_encode(table.column("pid")))
    assert pa.types.is_integer(table.schema.field("userid").type)
    pq.write_table(table, out, row_group_size=37)  # several row groups


@pytest.mark.parametrize("writer", ["pyarrow", "pandas"])
def test_the_same_rows_as_parquet_prepare_the_same(sample_dir, tmp_path, writer):
    """pandas writes the ids with empty cells as float64 (NaN -> null) and text as large_string:
    a float categorical's text is pyarrow's ("3" for 3.0), which here is the CSV's."""
    import pandas as pd

    for split in SPLITS:
        if writer == "pyarrow":
            write_parquet(sample_dir / f"{split}.csv", sample_dir / f"{split}.parquet")
        else:
            frame = pd.read_csv(sample_dir / f"{split}.csv")
            assert frame["pvalue_level"].dtype == np.float64
            frame.to_parquet(sample_dir / f"{split}.parquet")
    csv = build(source(sample_dir), tmp_path / "c")
    parquet = build(source(sample_dir, train_file="train.parquet", valid_file="valid.parquet",
                           test_file="test.parquet", batch_rows=30), tmp_path / "c")
    assert parquet.root != csv.root  # another file, another fingerprint
    a, b = cache_tables(csv), cache_tables(parquet)
    for split in SPLITS:
        assert a[split].equals(b[split]), split


def test_a_ratio_split_hashes_the_data_row_number(sample_dir, tmp_path):
    kw = {"split": "ratio", "file": "train.csv", "ratios": [0.6, 0.2, 0.2], "seed": 3}
    tables, rejected = read_all(source(sample_dir, **kw))
    again, _ = read_all(source(sample_dir, **kw))
    counts = [tables[s].num_rows for s in SPLITS]
    assert sum(counts) == 100 and rejected == {s: [] for s in SPLITS}
    expected = ratio_split(np.arange(1, 101), 3, [0.6, 0.2, 0.2])  # row 1 is the first data line (line 2)
    assert counts == np.bincount(expected, minlength=3).tolist()
    as_text = pacsv.ConvertOptions(column_types={"userid": pa.string()})
    users = pacsv.read_csv(sample_dir / "train.csv", convert_options=as_text).column("userid")
    for k, split in enumerate(SPLITS):
        assert tables[split].equals(again[split])
        assert tables[split].column("userid").to_pylist() == users.filter(pa.array(expected == k)).to_pylist()
    write_parquet(sample_dir / "train.csv", sample_dir / "train.parquet")
    as_parquet, _ = read_all(source(sample_dir, **{**kw, "file": "train.parquet"}))
    for split in SPLITS:
        assert as_parquet[split].equals(tables[split]), split
    other, _ = read_all(source(sample_dir, **{**kw, "seed": 4}))
    assert other["valid"].column("userid").to_pylist() != tables["valid"].column("userid").to_pylist()


def test_a_time_split_cuts_at_its_points(sample_dir, tmp_path):
    kw = {"split": "time", "file": "train.csv", "time_column": "time_stamp",
          "time_cuts": ["2017-05-06 00:00:01", "2017-05-06 00:00:02"]}
    data = build(source(sample_dir, **kw), tmp_path / "c")
    assert data.provenance["rows"] == {"train": 28, "valid": 33, "test": 39}  # the file's seconds 0, 1, 2
    assert "by time_stamp: train before 2017-05-06 00:00:01" in data.provenance["split_protocol"]
    table = pacsv.read_csv(sample_dir / "train.csv")  # time_stamp as a parquet timestamp column: the same cut
    assert pa.types.is_timestamp(table.schema.field("time_stamp").type)
    pq.write_table(table, sample_dir / "train.parquet")
    tables, _ = read_all(source(sample_dir, **{**kw, "file": "train.parquet"}))
    assert [tables[s].num_rows for s in SPLITS] == [28, 33, 39]
    with pytest.raises(DataError, match=r"time_column 'time_stamp' has type timestamp.*are numbers"):
        read_all(source(sample_dir, **{**kw, "file": "train.parquet", "time_cuts": [1, 2]}))


def test_a_numeric_time_column_and_its_bad_rows(tmp_path):
    rows = ["t,y,u", "5,0,a", "10,1,b", "", "x,0,c", "19.5,1,d", ",0,e", "20,0,f", "1e9,1,g", "1,2"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    src = SOURCES.build("tabular", {"data_dir": str(tmp_path), "split": "time", "file": "d.csv", "time_column": "t",
                                    "time_cuts": ["10", "20"], "label": "y", "categorical": ["u"]})
    tables, rejected = read_all(src)
    users = {s: tables[s].column("u").to_pylist() for s in SPLITS}
    assert users == {"train": ["a"], "valid": ["b", "d"], "test": ["f", "g"]}
    assert rejected == {"train": [4, 5, 7, 10], "valid": [], "test": []}  # unknown times count in train


@pytest.mark.parametrize("text, value", [
    ("1", 1.0), (" 1 ", 1.0), ("+1", 1.0), ("-2.5e3", -2500.0), (".5", 0.5), ("5.", 5.0), ("1E+02", 100.0),
    ("1e", "bad"), ("0x10", "bad"), ("1,5", "bad"), ("1_0", "bad"), ("nan", "bad"), ("inf", "bad"), ("one", "bad"),
    ("1e999", "not finite"), (None, "missing"),
])
def test_what_a_number_is(text, value):
    x, x_np, bad = tabular._numbers(pa.array([text, "7"], pa.string()))
    assert x[1].as_py() == 7.0 and not bad[1]
    if value == "bad":
        assert bad[0] and x[0].as_py() is None
    elif value == "missing":
        assert not bad[0] and x[0].as_py() is None
    elif value == "not finite":  # parses; the callers reject it as not finite
        assert not bad[0] and np.isinf(x_np[0])
    else:
        assert not bad[0] and x[0].as_py() == value


def test_what_a_date_time_is(tmp_path):
    rows = ["t,y,u", "2017-05-06,0,a", "2017-05-06T07,0,b", "2017-05-06 08:30,0,c", "2017-05-06 09:00:00.5,0,d",
            "2017-05-06 00:00:74,0,e", "2017-05-06Z,0,f", "06/05/2017,0,g", "2017-05-07 ,0,h"] + ["2017-05-06,1,i"] * 40
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    src = SOURCES.build("tabular", {"data_dir": str(tmp_path), "split": "time", "file": "d.csv", "time_column": "t",
                                    "time_cuts": ["2017-05-06 08", "2017-05-07"], "label": "y", "categorical": ["u"]})
    tables, rejected = read_all(src)
    assert [tables[s].column("u").to_pylist()[:3] for s in SPLITS] == [["a", "b", "i"], ["c", "d"], ["h"]]
    assert rejected["train"] == [6, 7, 8]  # a 74th second (found by cutting the cast), a zone, another layout


# -- bad rows -----------------------------------------------------------------------------------


def damage(path: Path, faults: dict[int, bytes]) -> None:
    """Insert each line at its 1-based line number (the header is line 1)."""
    lines = path.read_bytes().split(b"\n")
    for number in sorted(faults):
        lines.insert(number - 1, faults[number])
    path.write_bytes(b"\n".join(lines))


def row_with(path: Path, **values: str | bytes) -> bytes:
    """The file's second line with some fields replaced."""
    header, first = path.read_bytes().split(b"\n")[:2]
    names = header.decode().split(",")
    fields = first.split(b",")
    for name, value in values.items():
        fields[names.index(name)] = value if isinstance(value, bytes) else value.encode()
    return b",".join(fields)


FAULTS = {  # line -> (kind, the line's bytes or its fields replaced in a real row)
    3: ("fields", b"0,too,few,fields"),
    5: ("label", {"clk": "2"}),
    7: ("label", {"clk": "yes"}),
    9: ("empty", b""),
    11: ("dense", {"price": "abc"}),
    13: ("utf8", {"userid": b"\xff\xfe12"}),
    15: ("label", {"clk": ""}),
    17: ("dense", {"price": "inf"}),
    19: ("fields", b"1,\xff\xfe,not UTF-8"),  # pyarrow alone fails the whole block on this one
}


def faulty_lines(path: Path) -> dict[int, bytes]:
    out = {}
    for line, (_, values) in FAULTS.items():
        out[line] = values if isinstance(values, bytes) else row_with(path, **values)
    return out


def test_bad_rows_are_skipped_and_counted_with_their_line(sample_dir, tmp_path, capsys):
    path = sample_dir / "train.csv"
    damage(path, faulty_lines(path))
    src = source(sample_dir)
    data = build(src, tmp_path / "c")
    assert data.provenance["rows"]["train"] == 100
    assert data.provenance["rejected_rows"] == {"train": len(FAULTS), "valid": 0, "test": 0}
    assert list(src.rejected["train"]) == sorted(FAULTS)
    err = capsys.readouterr().err
    for kind in ("fields", "label", "empty", "dense", "utf8"):
        lines = sorted(n for n, (k, _) in FAULTS.items() if k == kind)
        assert f"train: skipped {len(lines)} row(s) ({tabular.KINDS[kind]}), e.g. line(s) {lines}" in err, kind
    assert "Traceback" not in err


@pytest.mark.parametrize("line", sorted(FAULTS))
def test_strict_mode_names_file_line_and_reason(sample_dir, line):
    path = sample_dir / "train.csv"
    damage(path, {line: faulty_lines(path)[line]})
    kind = FAULTS[line][0]
    with pytest.raises(DataError) as e:
        read_all(source(sample_dir, strict=True))
    assert f"tabular: {path}: line {line}: {tabular.KINDS[kind]}" in str(e.value)
    assert "strict: true" in str(e.value)


def test_weight_transforms_and_a_headerless_tsv(tmp_path):
    rows = [
        "1\t0\t2.0\t0\tu1", "0\t1\t0.5\t1\tu2", "1\t2\t1\t2\tu1", "0\t3\t1\t3\tNA", "1\t 10 \t1\t-4\tu3",
        "0\t100\t1\t\tu1", "1\t4\t-1\t5\tu2", "0\tnan\t1\t6\tu2", "1\t5\t\t7\tu1", "0\t6\tx\t8\tu1",
    ]
    for split in SPLITS:
        (tmp_path / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    kw = {"data_dir": str(tmp_path), "train_file": "train.tsv", "valid_file": "valid.tsv", "test_file": "test.tsv",
          "header": False, "columns": ["y", "n", "w", "v", "u"], "label": "y", "weight": "w",
          "categorical": ["u"], "dense": ["n", "v"], "transforms": {"n": "bucket", "v": "log1p"},
          "missing_values": ["", "NA"]}
    src = SOURCES.build("tabular", kw)
    assert [(f.name, f.kind) for f in src.fields()] == [("u", "categorical"), ("n", "categorical"), ("v", "dense")]
    tables, rejected = read_all(src)
    train = tables["train"]
    assert rejected["train"] == [7, 8, 9, 10]  # weight -1, dense nan, weight missing, weight x
    assert train.column("n").to_pylist() == [0, 1, 2, 1, 5, 21]  # bucket: int(x) to 2, then floor(ln(x)^2)
    assert train.column("u").to_pylist() == ["u1", "u2", "u1", None, "u3", "u1"]  # NA is missing
    v = train.column("v").to_pylist()
    assert v[:5] == pytest.approx(list(np.log1p([0, 1, 2, 3, 0]))) and v[5] is None  # -4 clips to 0
    assert train.column("w").to_pylist() == [2.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    data = build(src, tmp_path / "c")
    assert data.feature_map.weight == "weight" and data.column("train", "weight").tolist() == [2.0, 0.5, 1, 1, 1, 1]


# -- bad config and bad files ------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"split": "random"}, r"split='random'; choose one of \['files', 'ratio', 'time'\]"),
    ({"labels": "clk"}, r"unknown config key\(s\) \['labels'\]"),
    ({"categorical": ["clk", *CATS]}, "the label 'clk' is also listed as a field"),
    ({"dense": ["price", "userid"]}, r"field\(s\) \['userid'\] listed more than once"),
    ({"roles": {"userid": ["shopper"]}}, r"roles of 'userid': unknown \['shopper'\]"),
    ({"roles": {"nobody": ["user"]}}, "roles names 'nobody', which is not a field"),
    ({"transforms": {"userid": "log1p"}}, "transforms names 'userid', which is not a dense field"),
    ({"transforms": {"price": "sqrt"}}, r"transforms\['price'\]='sqrt'"),
    ({"split": "ratio", "ratios": [0.8, 0.3, 0.1]}, "summing to 1"),
    ({"split": "time", "time_column": "time_stamp", "time_cuts": ["2017-05-06", "tomorrow"]}, "both must be numbers"),
    ({"split": "time", "time_column": "time_stamp", "time_cuts": ["9", "3"]}, "valid_from must come before"),
    ({"split": "time", "time_cuts": ["1", "2"]}, "split: time needs time_column"),
    ({"train_file": "train.xlsx"}, r"cannot tell the format of 'train.xlsx'"),
    ({"categorical": ["label", *CATS]}, "clash with the prepared cache's columns"),
    ({"header": False}, "header: false needs columns"),
    ({"delimiter": ";;"}, "must be one character"),
    ({"ratios": "half"}, "data source 'tabular'"),  # a wrong type, caught by the registry
])
def test_a_bad_config_is_a_config_error(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        source(tmp_path, **overrides)


def test_bad_files_are_data_errors_naming_the_file(sample_dir, tmp_path):
    with pytest.raises(DataError, match=r"tabular: the valid file not found: .*nope\.csv"):
        read_all(source(sample_dir, valid_file="nope.csv"))
    (sample_dir / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv is empty \(expected a header line"):
        read_all(source(sample_dir, train_file="empty.csv"))
    with pytest.raises(DataError) as e:
        read_all(source(sample_dir, label="click", dense=["price", "bid"]))
    assert ("column(s) ['click', 'bid'] of the schema not in the file; "
            "its columns: ['clk', 'time_stamp',") in str(e.value)
    (sample_dir / "fake.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable parquet file"):
        read_all(source(sample_dir, train_file="fake.parquet"))
    pq.write_table(pa.table({"clk": [0, 1], "userid": [[1], [2]]}), sample_dir / "lists.parquet")
    with pytest.raises(DataError, match=r"column 'userid' \(categorical\) has type list<"):
        read_all(source(sample_dir, train_file="lists.parquet", categorical=["userid"], dense=[], roles={},
                        transforms={}))
    header_only = sample_dir / "header.csv"
    header_only.write_text((sample_dir / "train.csv").read_text().split("\n")[0] + "\n")
    with pytest.raises(DataError, match="the training split is empty"):
        build(source(sample_dir, train_file="header.csv"), tmp_path / "c")
    names = (sample_dir / "train.csv").read_text().split("\n")[0].split(",")  # one name short: every row rejected
    tables, rejected = read_all(source(sample_dir, header=False, columns=names[:-1]))
    assert tables["valid"].num_rows == 0 and rejected["valid"] == list(range(1, 102))


def test_fingerprint_follows_schema_and_files_not_speed(sample_dir):
    base = source(sample_dir).fingerprint()
    assert source(sample_dir, strict=True, block_size_mb=1, batch_rows=7).fingerprint() == base
    assert source(sample_dir, roles={"userid": ["user"]}).fingerprint() != base
    assert source(sample_dir, transforms={"price": "bucket"}).fingerprint() != base
    with open(sample_dir / "test.csv", "a") as f:
        f.write("0,2017-05-06 00:00:03,1,2,3,4,5,6,7,8.0,0,1,2,3,,3,0,,\n")
    assert source(sample_dir).fingerprint() != base


def test_the_conf_preset_reads_the_tiny_csv(tmp_path):
    if not SAMPLES.exists():
        pytest.skip(f"shared sample files not found at {SAMPLES}")
    from hydra import compose, initialize_config_dir

    from repro.run import resolve

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["data=tabular", f"data.data_dir={SAMPLES}"])
    data = dict(resolve(cfg).config["data"])
    assert (data.pop("name"), data.pop("min_count"), data.pop("drop_roles"), data.pop("teacher")) == ("tabular", 1, [], "")
    src = SOURCES.build("tabular", data)
    assert [f.name for f in src.fields()] == [*CATS, "price"]
    tables, rejected = read_all(src)
    assert [tables[s].num_rows for s in SPLITS] == [100, 100, 100] and sum(map(len, rejected.values())) == 0
    # The card's command line for other data: maps are deleted (~) and added anew (+), lists replaced.
    card = ["data=tabular", "data.label=click", "data.categorical=[user_id,item_id,slot]", "data.dense=[bid]",
            "~data.roles", "+data.roles={user_id:[user],item_id:[ad],slot:[position]}", "~data.transforms"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        data = dict(resolve(compose(config_name="config", overrides=card)).config["data"])
    data.pop("name"), data.pop("min_count"), data.pop("drop_roles"), data.pop("teacher")
    fields = [(f.name, f.kind, f.roles) for f in SOURCES.build("tabular", data).fields()]
    assert fields == [("user_id", "categorical", ("user",)), ("item_id", "categorical", ("ad",)),
                      ("slot", "categorical", ("position",)), ("bid", "dense", ())]


# -- fuzzing ------------------------------------------------------------------------------------

POOL = ["clk", "u", "a", "p", "t"]
_field = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(["0", "1", " 1 ", "1.0", "", "nan", "2"])


@st.composite
def _schema(draw) -> tuple[list[str], dict]:
    """The file's columns and a schema for them: valid, or with one fault (a column the file
    lacks, the label also a field, no field, a weight that is the label)."""
    names = list(draw(st.permutations(POOL)))
    label, weight, rest = names[0], names[1], names[2:]
    kinds = [draw(st.sampled_from(["categorical", "dense", "unused"])) for _ in rest]
    cfg = {
        "label": label,
        "categorical": [n for n, k in zip(rest, kinds) if k == "categorical"] or [rest[0]],
        "dense": [n for n, k in zip(rest, kinds) if k == "dense" and n != rest[0]],
        "weight": weight if draw(st.booleans()) else None,
    }
    cfg["transforms"] = {d: draw(st.sampled_from(tabular.TRANSFORMS)) for d in cfg["dense"]}
    fault = draw(st.sampled_from([None] * 4 + ["missing column", "label is a field", "no field", "weight is label"]))
    if fault == "missing column":
        names.remove(draw(st.sampled_from([label, *cfg["categorical"], *cfg["dense"]])))
    elif fault == "label is a field":
        cfg["categorical"].append(label)
    elif fault == "no field":
        cfg["categorical"], cfg["dense"], cfg["transforms"] = [], [], {}
    elif fault == "weight is label":
        cfg["weight"] = label
    return draw(st.permutations(names)), cfg


@st.composite
def _line(draw, width: int) -> bytes:
    kind = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))  # half of the lines are valid for any schema
    good = [draw(st.sampled_from(["0", "1"])) for _ in range(width)]
    if kind == 0:
        return ",".join(good).encode()
    if kind == 1:
        good[draw(st.integers(0, width - 1))] = draw(_field)
        if draw(st.booleans()):
            del good[draw(st.integers(0, width - 1))]
        return ",".join(good).encode("utf-8", errors="surrogatepass")
    if kind == 2:
        return ",".join(draw(st.lists(_field, max_size=7))).encode("utf-8", errors="surrogatepass")
    return draw(st.binary(max_size=40))


@pytest.mark.fuzz
def test_fuzzed_bytes_and_schemas_give_rows_and_rejections_or_a_clear_error(record_property, fuzz_ledger):
    """100 random examples in ``make test`` (not derandomised, as before), ``make fuzz``'s count there.
    ``outcomes`` also sums the rows and rejected lines of the one pass over each file."""
    ledger = fuzz_ledger("tabular")
    outcomes, errors = ledger.outcomes, ledger.errors

    @settings(fuzz_settings(100, suppress_health_check=list(HealthCheck), database=None))
    @given(schema=_schema(), data=st.data(), header=st.booleans(), quoting=st.booleans(), crlf=st.booleans(),
           final=st.booleans(), split=st.sampled_from(["files", "ratio"]))
    def check(schema, data, header, quoting, crlf, final, split):
        with ledger.example():
            _check(schema, data, header, quoting, crlf, final, split)

    def _check(schema, data, header, quoting, crlf, final, split):
        names, cfg = schema
        body = data.draw(st.lists(_line(len(names)), min_size=1, max_size=30))  # an empty file: tested above
        end = b"\r\n" if crlf else b"\n"
        text = end.join(body) + (end if final and body else b"")
        head = (",".join(names).encode() + end) if header else b""
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "d.csv").write_bytes(head + text)
            common = {"data_dir": tmp, "header": header, "columns": [] if header else names, "quoting": quoting, **cfg}
            try:
                files = SOURCES.build("tabular", {**common, **{f"{s}_file": "d.csv" for s in SPLITS}})
                hashed = SOURCES.build("tabular", {**common, "split": "ratio", "file": "d.csv"})
            except ConfigError as e:
                assert str(e).startswith("data source 'tabular': ")
                outcomes["config error"] += 1
                return
            try:
                tables, rejected = read_all(files if split == "files" else hashed)
                once, once_rejected = read_all(files) if split == "ratio" else (tables, rejected)
            except DataError as e:
                assert str(e).startswith("tabular: ")
                outcomes["data error"] += 1
                errors[str(e).split(": ", 2)[-1].split(";")[0][:50]] += 1
                return
        count = once["train"].num_rows + len(once_rejected["train"])  # records in the file
        if split == "files":
            for s in SPLITS:
                assert tables[s].equals(tables["train"]) and rejected[s] == rejected["train"]
        else:  # every record once: a row of one split or a rejection of one split
            assert sum(tables[s].num_rows + len(rejected[s]) for s in SPLITS) == count
        bad = sorted(n for v in rejected.values() for n in v) if split == "ratio" else once_rejected["train"]
        first = 2 if header else 1
        assert len(set(bad)) == len(bad) and all(first <= n < first + count for n in bad)
        if not quoting and b"\r" not in text:  # then a record is a line
            assert count == text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
        for table in tables.values():
            y = table.column(cfg["label"]).to_numpy()
            assert set(np.unique(y)) <= {0.0, 1.0}
        outcomes["rows and rejections"] += 1
        outcomes["rows"] += once["train"].num_rows
        outcomes["rejected lines"] += len(once_rejected["train"])

    check()
    record_property("hypothesis_examples", ledger.examples)
    assert ledger.examples >= fuzz_examples(100) // 2 and outcomes["rows and rejections"] > 0
    assert outcomes["rows"] > 0 and outcomes["rejected lines"] > 0 and outcomes["config error"] > 0
