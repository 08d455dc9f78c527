"""The IJCAI-18 Alimama reader (datasets/ijcai18.py) on files written here in the exact round-1 layout.

Every file is small and written byte for byte into tmp_path (the 27-column header, space-separated
fields, LF line ends); nothing is downloaded.
"""

from __future__ import annotations

import math
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import ConfigError, DataError
from repro.registry import MODELS, ROOT, SOURCES, load_plugins
from tests.conftest import assert_fingerprint_follows_edits, fuzz_examples, fuzz_settings

load_plugins()
ij = sys.modules["adrepro_datasets.ijcai18"]
SPLITS = ("train", "valid", "test")
FILE = "round1_ijcai_18_train_20180301.txt"
HEADER = ij.HEADER.encode()
DAY0 = 1537200000  # 2018-09-18 00:00:00 in UTC+8 (2018-09-17 16:00 UTC)
BASE = {
    "instance_id": "108641074714126964", "item_id": "3412720377098676069",
    "item_category_list": "7908382889764677758;5799347067982556520",
    "item_property_list": "2072967855524022579;5131280576272319091;263639581288542929",
    "item_brand_id": "1975590437749032938", "item_city_id": "3948283326616421003", "item_price_level": "3",
    "item_sales_level": "3", "item_collected_level": "4", "item_pv_level": "14", "user_id": "24779788309075",
    "user_gender_id": "0", "user_age_level": "1003", "user_occupation_id": "2002", "user_star_level": "3006",
    "context_id": "282924576738839389", "context_timestamp": "1537236544", "context_page_id": "4006",
    "predict_category_property": "5799347067982556520:-1;509660095530134768:-1;5131280576272319091:2072967855524022579",
    "shop_id": "6765930309048922341", "shop_review_num_level": "15", "shop_review_positive_rate": "1.0",
    "shop_star_level": "5012", "shop_score_service": "0.98", "shop_score_delivery": "0.973",
    "shop_score_description": "1.0",
    "is_trade": "0",
}


def source(data_dir, **kw):
    return SOURCES.build("ijcai18", {"data_dir": str(data_dir), **kw})


def row(**fields) -> bytes:
    values = {**BASE, **{k: str(v) for k, v in fields.items()}}
    return " ".join(values[c] for c in ij.COLUMNS).encode()


def write(d: Path, body: bytes, header: bytes = HEADER + b"\n") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / FILE).write_bytes(header + body)
    return d


def at(day: int, hour: int = 10, second: int = 0) -> int:
    """The timestamp of 2018-09-(18 + day) hour:00 in UTC+8."""
    return DAY0 + day * 86400 + hour * 3600 + second


def read_all(src) -> dict[str, pa.Table]:
    return {s: pa.concat_tables(list(src.chunks(s))) for s in SPLITS}


def rejected(src) -> list[int]:
    return sorted(n for s in SPLITS for n in src.rejected[s])


def build(src, root) -> PreparedDataset:
    return PreparedDataset(prepare(src, PrepareConfig(min_count=1, cache_root=str(root)), verbose=False))


def sample(d: Path, n: int, seed: int = 0) -> Path:
    """``n`` rows over the 7 training days, in the exact round-1 layout (ids as long digit strings)."""
    rng = np.random.default_rng(seed)
    props = [str(x) for x in rng.integers(10**17, 9 * 10**18, 300)]
    cats = [str(x) for x in rng.integers(10**17, 9 * 10**18, 12)]
    ts = np.sort(rng.integers(DAY0, DAY0 + 7 * 86400, n))
    lines = []
    for i in range(n):
        item = int(rng.integers(0, 80))
        cat = cats[item % 12]
        own = [props[(item * 7 + k) % 300] for k in range(int(rng.integers(1, 12)))]
        guess = cat if rng.random() < 0.7 else cats[int(rng.integers(0, 12))]
        predicted = f"{guess}:{','.join(own[:2]) if rng.random() < 0.5 else '-1'};{cats[0]}:-1"
        buy = rng.random() < (0.06 if guess == cat else 0.01)
        lines.append(row(
            instance_id=10**17 + i, item_id=3 * 10**18 + item, item_category_list=f"7908382889764677758;{cat}",
            item_property_list=";".join(own), item_brand_id=-1 if item % 9 == 0 else 10**18 + item % 23,
            item_price_level=item % 10, item_sales_level=-1 if item % 13 == 0 else item % 17,
            user_id=int(rng.integers(10**13, 10**13 + 900)), user_gender_id=int(rng.integers(-1, 3)),
            user_age_level=1000 + int(rng.integers(0, 8)), context_id=10**17 + 7 * i, context_timestamp=ts[i],
            context_page_id=4001 + int(rng.integers(0, 20)), predict_category_property=predicted,
            shop_id=6 * 10**18 + item % 31, shop_review_positive_rate=f"{rng.uniform(0.9, 1):.6f}",
            shop_score_service=-1 if i % 97 == 0 else f"{rng.uniform(0.9, 1):.6f}", is_trade=int(buy)))
    return write(d, b"\n".join(lines) + b"\n")


# -- rows and features ------------------------------------------------------------------------


def test_hand_written_rows_give_the_documented_features(tmp_path):
    a = row(context_timestamp=at(0, 23, 3599), is_trade=1)  # 2018-09-18 23:59:59 in UTC+8
    b = row(item_category_list="7908382889764677758;8277336076276184272;123",  # three levels
            item_property_list="2072967855524022579;5131280576272319091;-1",
            predict_category_property="8277336076276184272:2072967855524022579,999;1:5131280576272319091",
            context_timestamp=at(5, 0))  # 2018-09-23 00:00:00: valid
    c = row(item_category_list="7908382889764677758", item_property_list="-1", predict_category_property="-1",
            item_brand_id=-1, user_gender_id=-1, shop_score_delivery=-1, context_timestamp=at(6, 7))
    d = write(tmp_path, a + b"\n" + b + b"\n" + c + b"\n")
    t = pa.concat_tables(read_all(source(d)).values()).to_pylist()
    assert [r["line"] for r in t] == [2, 3, 4] and [r["day"] for r in t] == ["2018-09-18", "2018-09-23", "2018-09-24"]
    assert [r["label"] for r in t] == [1, 0, 0] and [r["hour"] for r in t] == ["23", "0", "7"]
    assert [r["item_category"] for r in t] == ["5799347067982556520", "8277336076276184272", None]
    assert [r["query_category"] for r in t] == ["5799347067982556520", "8277336076276184272", None]
    assert [r["category_predicted"] for r in t] == ["1", "1", "0"]
    # Row b: of the properties predicted for its category (2072..., 999) the item has one; 5131... is
    # predicted for another category and does not count.
    assert [r["property_hits"] for r in t] == pytest.approx([0.0, math.log1p(1), 0.0], rel=1e-12)
    assert [r["item_property_count"] for r in t] == pytest.approx([math.log1p(3), math.log1p(2), 0.0], rel=1e-12)
    assert t[2]["item_brand_id"] is None and t[2]["user_gender_id"] is None and t[2]["shop_score_delivery"] is None
    assert t[0]["item_brand_id"] == "1975590437749032938" and t[0]["shop_score_service"] == 0.98
    assert t[0]["context_page_id"] == "4006" and "instance_id" not in t[0] and "context_id" not in t[0]
    # In UTC the first row is at 15:59:59 on the same day.
    utc = pa.concat_tables(list(source(d, utc_offset_hours=0, split="random", ratios=[1, 0, 0]).chunks("train")))
    assert utc.column("hour").to_pylist()[0] == "15"


def test_fields_and_roles(tmp_path):
    fields = {f.name: f for f in source(tmp_path).fields()}
    assert fields["user_id"].roles == ("user",) and fields["item_id"].roles == ("ad",)
    assert fields["context_page_id"].roles == ("position",)
    assert {n for n, f in fields.items() if f.kind == "dense"} == set(ij.NUMBERS) | set(ij.QUERY_DENSE)
    assert len(fields) == 18 + 2 + 4 + 2
    plain = {f.name for f in source(tmp_path, query_features=False).fields()}
    assert plain == set(fields) - set(ij.QUERY_CATEGORICAL) - set(ij.QUERY_DENSE)


# -- splits and the prepared cache -------------------------------------------------------------


def test_day_split_puts_each_day_where_configured(tmp_path):
    d = sample(tmp_path / "ij", 1_500, seed=1)
    days = {s: set(t.column("day").to_pylist()) for s, t in read_all(source(d)).items()}
    assert days == {"train": {f"2018-09-{x}" for x in range(18, 23)}, "valid": {"2018-09-23"},
                    "test": {"2018-09-24"}}
    src = source(d, valid_days=["2018-09-20", "2018-09-21"], test_days=["2018-09-22"])
    tables = read_all(src)
    assert set(tables["valid"].column("day").to_pylist()) == {"2018-09-20", "2018-09-21"}
    assert sum(t.num_rows for t in tables.values()) == 1_500
    with pytest.raises(DataError, match=r"split 'test' is empty \(no valid row has a day in \['2018-09-25'\]"):
        list(source(d, test_days=["2018-09-25"]).chunks("test"))
    # Days are read in UTC+8: in UTC the rows after 16:00 move to the next day.
    ts = np.array([int(line.split(b" ")[16]) for line in (d / FILE).read_bytes().splitlines()[1:]])
    utc = read_all(source(d, utc_offset_hours=0))
    utc_day = DAY0 + 6 * 86400 + 8 * 3600  # 2018-09-24 00:00 UTC
    assert 0 < utc["test"].num_rows == int(((ts >= utc_day) & (ts < utc_day + 86400)).sum())


def test_random_split_prepares_every_row_once(tmp_path, monkeypatch):
    d = sample(tmp_path / "ij", 3_000, seed=2)
    src = source(d, split="random")
    data = build(src, tmp_path / "c")
    rows = data.provenance["rows"]
    assert sum(rows.values()) == 3_000 and data.provenance["rejected_rows"] == {s: 0 for s in SPLITS}
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(rows[split] / 3_000 - share) < 0.03  # 5 binomial standard deviations
    fm = data.feature_map
    assert fm.by_role("user").name == "user_id" and fm.by_role("position").name == "context_page_id"
    assert fm.dense_columns == [*ij.NUMBERS, *ij.QUERY_DENSE]
    model = MODELS.build("deepfm", {}, fm, embedding={"name": "full", "dim": 8})  # the cache feeds a model
    batch = next(data.batches("train", 256, shuffle=True))
    loss = model.loss(batch, model(batch))
    assert batch["dense"].shape == (256, len(fm.dense_columns)) and torch.isfinite(loss)
    text = (d / FILE).read_bytes().splitlines()[1:]
    positives = sum(line.endswith(b" 1") for line in text)
    assert sum(data.column(s, "label").sum() for s in SPLITS) == positives > 0
    full = read_all(src)
    lines = {s: full[s].column("line").to_pylist() for s in SPLITS}
    assert sorted(sum(lines.values(), [])) == list(range(2, 3_002))
    again = build(source(d, split="random"), tmp_path / "c2")  # deterministic: the same bytes
    for split in SPLITS:
        assert (again.root / f"{split}.parquet").read_bytes() == (data.root / f"{split}.parquet").read_bytes()
    monkeypatch.setattr(ij, "PROBE_BYTES", 4096)  # a first block of 4 KiB, then the rest
    small = read_all(source(d, split="random"))
    for split in SPLITS:
        assert small[split].to_pylist() == full[split].to_pylist()
    assert pa.concat_tables(list(source(d, split="random", seed=1).chunks("test"))).column(
        "line").to_pylist() != lines["test"]


# -- bad input ----------------------------------------------------------------------------------

BAD = {  # case -> (kind, the bad line, the column and value strict mode names, or None)
    "empty": ("empty", b"", None),
    "cr": ("cr", row().replace(b" 4006 ", b" 40\r06 "), None),
    "ascii": ("ascii", row(user_id="2477978830\xe9"), None),
    "fields": ("fields", row().rsplit(b" ", 1)[0], "26 field(s), expected 27"),
    "label": ("label", row(is_trade=2), "is_trade = '2'"),
    "integer": ("integer", row(user_age_level="abc"), "user_age_level = 'abc'"),
    "timestamp": ("timestamp", row(context_timestamp="1.5e9"), "context_timestamp = '1.5e9'"),
    "number": ("number", row(shop_score_service="nan"), "shop_score_service = 'nan'"),
    "number-inf": ("number", row(shop_score_delivery="1e400"), "shop_score_delivery = '1e400'"),
    "list": ("list", row(item_category_list="7908382889764677758;;1"), "item_category_list = '7908382889764677758;;1'"),
}


def body_with(bad: bytes, line: int = 4) -> bytes:
    """Seven valid rows (lines 2.., on days of every split) with ``bad`` as line ``line`` of the file."""
    good = [row(context_timestamp=at(day), instance_id=day) for day in (0, 1, 5, 6, 2, 5, 6)]
    return b"".join(text + b"\n" for text in good[: line - 2] + [bad] + good[line - 2:])


@pytest.mark.parametrize("case", list(BAD))
def test_each_malformed_kind_is_skipped_counted_and_named(case, tmp_path, capsys):
    kind, bad, detail = BAD[case]
    d = write(tmp_path, body_with(bad))
    src = source(d)
    tables = read_all(src)
    assert rejected(src) == [4] and sorted(n for t in tables.values() for n in t.column("line").to_pylist()) == \
        [2, 3, 5, 6, 7, 8, 9]
    assert f"skipped 1 row(s) ({ij.KINDS[kind]}), e.g. line(s) [4]" in capsys.readouterr().err
    message = rf"{FILE}: line 4: {re.escape(ij.KINDS[kind])}" + (rf" \({re.escape(detail)}\)" if detail else "")
    with pytest.raises(DataError, match=message):
        read_all(source(d, strict=True))
    data = build(source(d), tmp_path / "c")
    assert sum(data.provenance["rows"].values()) == 7 and sum(data.provenance["rejected_rows"].values()) == 1


def test_a_rejected_line_belongs_to_the_split_of_its_day(tmp_path):
    body = body_with(row(is_trade=7, context_timestamp=at(6))) + b" ".join(row().split(b" ")[:10]) + b"\n"
    src = source(write(tmp_path, body))
    read_all(src)
    assert src.rejected == {"train": [10], "valid": [], "test": [4]}  # line 10 has no readable timestamp


def test_last_lines_crlf_and_long_lines(tmp_path, capsys):
    d = write(tmp_path, body_with(row()) + row(context_timestamp=at(6, 1)))  # complete, no line end: kept
    assert sum(t.num_rows for t in read_all(source(d)).values()) == 9
    assert "the last line (10) has no line end; kept" in capsys.readouterr().err
    d = write(tmp_path, body_with(row()) + row(context_timestamp=at(6, 1))[:-30])  # cut: truncated
    src = source(d)
    assert sum(t.num_rows for t in read_all(src).values()) == 8 and rejected(src) == [10]
    assert f"({ij.KINDS['truncated']}), e.g. line(s) [10]" in capsys.readouterr().err
    d = write(tmp_path, body_with(b"1 " * (ij.MAX_LINE // 2 + 10), 6))  # line 6 is over 1 MiB
    src = source(d)
    assert sum(t.num_rows for t in read_all(src).values()) == 7 and rejected(src) == [6]
    lf = sample(tmp_path / "lf", 800, seed=5)
    crlf = write(tmp_path / "crlf", (lf / FILE).read_bytes().replace(b"\n", b"\r\n"), header=b"")
    built = [build(source(p), tmp_path / "c") for p in (lf, crlf)]
    assert built[0].root != built[1].root
    for split in SPLITS:
        a, b = (pq.read_table(x.root / f"{split}.parquet") for x in built)
        assert a.num_rows > 50 and a.equals(b)


CRITEO_LINE = b"0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t" + b"\t".join([b"68fd1e64"] * 26)


@pytest.mark.parametrize("content,message", [
    (b"", r"is empty \(0 bytes\); expected Tianchi's round1_ijcai_18_train file"),
    (HEADER + b"\n", "no data row after the header"),
    (HEADER.replace(b" is_trade", b"") + b"\n" + row().rsplit(b" ", 1)[0] + b"\n", "no is_trade column"),
    (row() + b"\n" + row() + b"\n", "looks like a data row: the file has no header"),
    ((CRITEO_LINE + b"\n") * 3, r"tab-separated \(40 fields\)"),
    (b"1::1193::5::978300760\n" * 3, "::-separated, as MovieLens"),
    (b"id,click,hour\n1,0,14102100\n", "comma-separated"),
    (HEADER + b"\n" + b"1 2 3\n" * 50, r"none of the first 50 data line\(s\).*field count other than 27.*expected"),
    (HEADER + b"\n" + row(is_trade="yes") + b"\n", r"none of the first 1 data line\(s\).*is_trade = 'yes'"),
    (bytes(b for b in range(256) if b != 10) * 5000, "no line end in the first MiB"),
], ids=["empty", "header-only", "test-file", "no-header", "criteo", "movielens", "csv", "garbage", "bad-labels",
        "binary"])
def test_files_that_are_not_the_training_file_fail_clearly(content, message, tmp_path):
    d = write(tmp_path, content, header=b"")
    with pytest.raises(DataError, match=message):
        read_all(source(d))


def test_a_missing_file_and_bad_config_are_named(tmp_path):
    with pytest.raises(DataError, match=r"the training file not found: .*round1_ijcai_18_train_20180301\.txt there"):
        source(tmp_path).fingerprint()
    for kw, message in [({"split": "time"}, "split='time'"), ({"ratios": [0.9, 0.2, 0.1]}, "sum to 1"),
                        ({"valid_days": ["20180923"]}, "'20180923'; expected YYYY-MM-DD"),
                        ({"test_days": ["2018-09-31"]}, "expected YYYY-MM-DD"),
                        ({"valid_days": ["2018-09-24"]}, "in both valid_days and test_days"),
                        ({"test_days": []}, "test_days is empty"), ({"utc_offset_hours": 20}, "utc_offset_hours=20"),
                        ({"timezone": 8}, "unknown config key")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            source(tmp_path, **kw)


def test_the_conf_file_builds_the_source():
    block = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "ijcai18.yaml"))
    assert block.pop("name") == "ijcai18" and block.pop("min_count") == 1 and block.pop("cache_root") == "cache"
    cfg = SOURCES.config("ijcai18", block)
    assert (cfg.split, cfg.test_days, cfg.valid_days, cfg.utc_offset_hours) == ("day", ["2018-09-24"],
                                                                                ["2018-09-23"], 8)


# -- fingerprint ---------------------------------------------------------------------------------


def test_fingerprint_follows_the_file_without_reading_it_whole(tmp_path, monkeypatch, bytes_read):
    path = tmp_path / FILE
    with open(path, "wb") as f:
        f.truncate(40 << 20)  # 40 MiB (sparse): the fingerprint never parses it
    first = source(tmp_path).fingerprint()
    assert 0 < sum(bytes_read) <= 8 * 65536
    monkeypatch.undo()
    assert source(tmp_path, strict=True, block_size_mb=2).fingerprint() == first
    assert source(tmp_path, utc_offset_hours=0).fingerprint() != first
    # same size, same mtime, a byte changed in the first block; then a line appended
    assert_fingerprint_follows_edits(path, lambda: source(tmp_path).fingerprint(), first)


# -- fuzzing -------------------------------------------------------------------------------------

_GOOD = [row(context_timestamp=at(day, hour), is_trade=(day + hour) % 2) for day in range(7) for hour in (3, 20)]
_token = st.sampled_from([b"", b"-1", b"0", b"1", b"2", b"x", b"1.5", b"nan", b"1e400", b"1;2", b"3:4,5", b";",
                         b"\xe9"])


def _damage(t) -> bytes:
    line, column, token, drop = t
    fields = line.split(b" ")
    fields[column] = token
    if drop:
        del fields[(column + 3) % len(fields)]
    return b" ".join(fields)


_line = st.one_of(
    st.sampled_from(_GOOD),
    st.sampled_from(_GOOD),
    st.sampled_from(_GOOD),  # three times: mostly valid rows
    st.tuples(st.sampled_from(_GOOD), st.integers(0, 26), _token, st.booleans()).map(_damage),
    st.tuples(st.sampled_from(_GOOD), st.binary(max_size=4), st.integers(0, 300)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2]:]),
    st.binary(max_size=40),
)
_header = st.sampled_from([HEADER + b"\n"] * 7 + [HEADER + b"\r\n", HEADER[:-1] + b"\n", b""])  # mostly right


@pytest.mark.fuzz
def test_fuzzed_files_give_rows_and_counted_rejections_or_a_clear_error(tmp_path, fuzz_ledger):
    """100 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("ijcai18")
    outcomes, errors = ledger.outcomes, ledger.errors

    @settings(fuzz_settings(100, database=None, derandomize=True, suppress_health_check=list(HealthCheck)))
    @given(header=_header, body=st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])),
                                         min_size=8, max_size=40),
           cut_end=st.booleans(), split=st.sampled_from(["day", "random"]),
           strict=st.integers(0, 4).map(lambda i: i == 4))
    def run(header, body, cut_end, split, strict):
        with ledger.example():
            _run(header, body, cut_end, split, strict)

    def _run(header, body, cut_end, split, strict):
        data = b"".join(line + end for line, end in body)
        if cut_end and body:
            data = data[: -len(body[-1][1])]
        d = write(Path(tempfile.mkdtemp(dir=tmp_path)), data, header)
        src = source(d, split=split, strict=strict, ratios=[0.34, 0.33, 0.33], valid_days=["2018-09-20", "2018-09-21"],
                     test_days=["2018-09-22", "2018-09-23", "2018-09-24"])
        try:
            tables = read_all(src)
        except (DataError, ConfigError) as e:
            assert str(e).startswith("ijcai18: ")
            outcomes["clear error"] += 1
            errors[re.sub(r"/\S+", "", str(e))[:60]] += 1
            return
        content = header + data
        n_lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
        kept = sorted(n for t in tables.values() for n in t.column("line").to_pylist())
        bad = rejected(src)
        assert len(set(kept)) == len(kept) and not set(kept) & set(bad) and len(set(bad)) == len(bad)
        assert sorted(kept + bad) == list(range(2, n_lines + 1))  # every data line: a row or a rejection, once
        assert not (strict and bad)
        for t in tables.values():  # a kept row's numbers are finite (or missing), its label 0/1
            assert all(np.isfinite(t.column(c).drop_null().to_numpy()).all() for c in [*ij.NUMBERS, *ij.QUERY_DENSE])
            assert set(t.column("label").to_pylist()) <= {0, 1}
        outcomes["rows, some rejected" if bad else "rows"] += 1

    run()
    assert sum(outcomes.values()) == ledger.examples == fuzz_examples(100)
    assert outcomes["rows"] + outcomes["rows, some rejected"] >= 20
