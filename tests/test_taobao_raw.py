"""The raw Tianchi Taobao reader (datasets/taobao_raw.py) on small files written in the real layouts."""

import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import ConfigError, DataError
from repro.registry import SOURCES
from tests.conftest import assert_fingerprint_follows_edits, fuzz_examples, fuzz_settings

SAMPLE_HEADER = b"user,time_stamp,adgroup_id,pid,nonclk,clk\n"
AD_HEADER = b"adgroup_id,cate_id,campaign_id,customer,brand,price\n"
# the real file's last column name ends in a space
USER_HEADER = (b"userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
               b"occupation,new_user_class_level \n")

# 2017-05-13 00:00 in Beijing time (UTC+8) is 2017-05-12 16:00 UTC: unix 1494604800
DAY8 = 1494604800
DAY = 86400
# line 2: day 1 (05-06) train; 3: day 7 (05-12) valid; 4: one second before day 8 (valid); 5: day 8
# at 00:00 Beijing (test); 6: day 6 (train) with an ad missing from ad_feature.csv; 7: a user missing
# from user_profile.csv (test)
SAMPLE = (SAMPLE_HEADER
          + f"581738,{DAY8 - 7 * DAY + 5},1,430548_1007,1,0\n".encode()
          + f"449818,{DAY8 - DAY + 10},3,430548_1007,1,0\n".encode()
          + f"914836,{DAY8 - 1},3,430539_1007,0,1\n".encode()
          + f"914836,{DAY8},1,430548_1007,1,0\n".encode()
          + f"581738,{DAY8 - 2 * DAY},999,430548_1007,0,1\n".encode()
          + f"777,{DAY8 + 100},3,430548_1007,1,0\n".encode())
AD = AD_HEADER + b"1,6406,83237,1,95471,170.0\n3,1326,1,2,NULL,2.0\n"
USER = USER_HEADER + b"581738,0,1,2,1,,3,0,3\n449818,8,4,2,4,2,3,0,\n914836,0,5,2,5,,,1,\n"


def write(root, sample=SAMPLE, ad=AD, user=USER):
    for name, data in (("raw_sample.csv", sample), ("ad_feature.csv", ad), ("user_profile.csv", user)):
        Path(root, name).write_bytes(data)
    return root


def source(root, **kw):
    return SOURCES.get("taobao_raw").factory(SOURCES.config("taobao_raw", {"data_dir": str(root), **kw}))


def read_all(src):
    tables, rejected = {}, {}
    for split in ("train", "valid", "test"):
        chunks = list(src.chunks(split))
        tables[split] = pa.concat_tables(chunks)
        rejected[split] = list(src.rejected[split])
    return tables, rejected


def test_rows_labels_join_and_the_day_split_in_beijing_time(tmp_path, capsys):
    tables, rejected = read_all(source(write(tmp_path)))
    train, valid, test = (tables[s].to_pylist() for s in ("train", "valid", "test"))
    assert [(r["userid"], r["adgroup_id"]) for r in train] == [("581738", "1"), ("581738", "999")]
    assert [r["clk"] for r in valid] == [0.0, 1.0] and [r["pid"] for r in valid] == ["430548_1007", "430539_1007"]
    assert [(r["userid"], r["clk"]) for r in test] == [("914836", 0.0), ("777", 0.0)]
    first = train[0]  # the join: ad 1 and user 581738
    ad = (first["cate_id"], first["campaign_id"], first["customer"], first["brand"])
    assert ad == ("6406", "83237", "1", "95471")
    assert first["price"] == pytest.approx(np.log1p(170.0))
    assert (first["cms_segid"], first["age_level"], first["pvalue_level"], first["new_user_class_level"]) == (
        "0", "1", None, "3")  # an empty profile field is missing
    assert valid[0]["brand"] is None and valid[0]["new_user_class_level"] is None  # NULL brand, empty last field
    assert train[1]["cate_id"] is None and train[1]["price"] == 0.0  # ad 999 is not in ad_feature.csv: kept
    assert test[1]["cms_segid"] is None and test[1]["brand"] is None  # user 777 has no profile: kept
    assert rejected == {"train": [], "valid": [], "test": []}
    err = capsys.readouterr().err
    assert "train: kept 1 row(s) whose adgroup_id is not in ad_feature.csv" in err
    assert "test: kept 1 row(s) whose user is not in user_profile.csv" in err


def test_day_lists_are_configurable_and_checked(tmp_path, capsys):
    src = source(write(tmp_path), train_days=["2017-05-06"], valid_days=["2017-05-10"], test_days=["2017-05-13"])
    tables, _ = read_all(src)
    assert [tables[s].num_rows for s in ("train", "valid", "test")] == [1, 0, 2]
    assert "train: 3 row(s) on a day (UTC+8) in no split, left out" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="in two splits"):
        source(tmp_path, valid_days=["2017-05-11"])
    with pytest.raises(ConfigError, match="not a YYYY-MM-DD"):
        source(tmp_path, test_days=["13 May"])


BAD = (SAMPLE_HEADER
       + f"1,{DAY8},1,430548_1007,1,0\n".encode()  # 2: good (test)
       + b"1,2,3\n"  # 3: fields
       + b"\n"  # 4: empty
       + f"x1,{DAY8},1,430548_1007,1,0\n".encode()  # 5: id
       + f"1,{DAY8},1,430548_1007,1,1\n".encode()  # 6: label (clk + nonclk = 2)
       + f"1,{DAY8},1,430548_1007,0,2\n".encode()  # 7: label (clk 2)
       + f"1,{DAY8},1,,1,0\n".encode()  # 8: pid
       + f"1,{DAY8 - DAY},1,430548_1007,1,0,\n".encode()  # 9: fields
       + f"1,{DAY8 - DAY},1,430548_1007,1,0\n".encode()  # 10: good (valid)
       + f"1,{DAY8 - 2 * DAY},1,430548_1007,1,0\n".encode())  # 11: good (train)


def test_bad_lines_are_skipped_and_counted_with_their_line_numbers(tmp_path, capsys):
    tables, rejected = read_all(source(write(tmp_path, sample=BAD)))
    assert [tables[s].num_rows for s in ("train", "valid", "test")] == [1, 1, 1]
    # a line whose time stamp is readable counts in its day's split; the others in train
    assert rejected == {"train": [3, 4, 9], "valid": [], "test": [5, 6, 7, 8]}
    err = capsys.readouterr().err
    assert "train: skipped 2 row(s) (a field count other than 6), e.g. line(s) [3, 9]" in err
    assert "test: skipped 2 row(s) (clk or nonclk outside {0, 1}, or clk + nonclk != 1), e.g. line(s) [6, 7]" in err
    data = PreparedDataset(prepare(source(tmp_path), PrepareConfig(cache_root=str(tmp_path / "c")), verbose=False))
    assert data.provenance["rejected_rows"] == {"train": 3, "valid": 0, "test": 4}


@pytest.mark.parametrize("line, reason", [(b"1,2,3\n", "field count other than 6"),
                                          (f"1,{DAY8},1,430548_1007,1,1\n".encode(), "clk + nonclk != 1"),
                                          (b"1,12:00,1,430548_1007,1,0\n", "not an integer")])
def test_strict_mode_names_file_line_and_reason(tmp_path, line, reason):
    write(tmp_path, sample=SAMPLE + line)
    with pytest.raises(DataError, match=rf"raw_sample.csv: line 8: .*{re.escape(reason)}.*strict: true"):
        read_all(source(tmp_path, strict=True))


def test_side_tables_bad_lines_and_strict(tmp_path, capsys):
    ad = AD + b"x,1,2,3,4,5\n4,1,2\n3,9,9,9,9,9\n"  # line 4: key, 5: fields, 6: a duplicate (first kept)
    tables, _ = read_all(source(write(tmp_path, ad=ad)))
    assert tables["valid"].column("cate_id").to_pylist() == ["1326", "1326"]
    err = capsys.readouterr().err
    assert "ad_feature.csv: side table: skipped 1 row(s) (a key that is not an integer), e.g. line(s) [4]" in err
    with pytest.raises(DataError, match=r"ad_feature.csv: line 4: a key that is not an integer"):
        read_all(source(tmp_path, strict=True))


def test_missing_empty_and_foreign_files_fail_clearly(tmp_path):
    write(tmp_path)
    Path(tmp_path, "user_profile.csv").unlink()
    with pytest.raises(DataError, match=r"taobao_raw: the user table not found: .*user_profile.csv"):
        read_all(source(tmp_path))
    write(tmp_path, sample=b"")
    with pytest.raises(DataError, match="raw_sample.csv is empty"):
        read_all(source(tmp_path))
    write(tmp_path, sample=b"clk,time_stamp,userid\n0,1,2\n")  # FuxiCTR's layout is taobao_ad's
    with pytest.raises(DataError, match="line 1 is not raw_sample.csv's header"):
        read_all(source(tmp_path))
    write(tmp_path, user=USER_HEADER.replace(b"userid", b"user"))
    with pytest.raises(DataError, match="user_profile.csv: line 1 is not the expected header"):
        read_all(source(tmp_path))


def test_prepare_runs_end_to_end_with_taobao_ad_roles(tmp_path):
    write(tmp_path, sample=SAMPLE.replace(b"\n", b"\r\n"))  # CRLF parses as LF
    data = PreparedDataset(prepare(source(tmp_path), PrepareConfig(cache_root=str(tmp_path / "c")), verbose=False))
    assert data.provenance["rows"] == {"train": 2, "valid": 2, "test": 2}
    assert data.column("valid", "label").tolist() == [0, 1]
    fm = data.feature_map
    assert (fm.by_role("user").name, fm.by_role("ad").name, fm.by_role("scene").name) == ("userid", "adgroup_id", "pid")
    b = next(data.batches("train", 2))
    assert b["cat"].shape == (2, 15) and b["dense"].shape == (2, 1)


def test_fingerprint_follows_edits_and_ignores_speed_keys(tmp_path):
    write(tmp_path, sample=SAMPLE * 1 + b"".join(f"1,{DAY8},1,430548_1007,1,0\n".encode() for _ in range(100)))
    first = source(tmp_path).fingerprint()
    assert source(tmp_path, strict=True, block_size_mb=8).fingerprint() == first
    assert source(tmp_path, test_days=["2017-05-14"]).fingerprint() != first
    assert_fingerprint_follows_edits(tmp_path / "raw_sample.csv", lambda: source(tmp_path).fingerprint(), first)
    second = source(tmp_path).fingerprint()
    with open(tmp_path / "ad_feature.csv", "ab") as f:
        f.write(b"5,1,1,1,1,1\n")
    assert source(tmp_path).fingerprint() != second


def test_conf_preset_resolves():
    from hydra import compose, initialize_config_dir

    from repro.registry import ROOT
    from repro.run import DATA_PREP_KEYS, resolve

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        data = resolve(compose(config_name="config", overrides=["data=taobao_raw"])).config["data"]
    src = source(data["data_dir"], **{k: v for k, v in data.items() if k not in (*DATA_PREP_KEYS, "data_dir")})
    assert src.cfg.test_days == ["2017-05-13"] and len(src.cfg.train_days) + len(src.cfg.valid_days) == 7


# -- fuzzing ----------------------------------------------------------------------------------

_field = st.one_of(
    st.sampled_from(["", "0", "1", "2", "-1", "x", "NULL", "430548_1007", " 1", "9" * 25, str(DAY8), "1.0"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)


def _good(i: int) -> str:
    return f"{i % 5},{DAY8 - (i % 3) * DAY},{1 + i % 4},430548_1007,{1 - i % 2},{i % 2}"


@st.composite
def _lines(draw):
    kind = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))  # half of the lines are valid rows
    if kind == 0:
        return _good(draw(st.integers(0, 100))).encode()
    if kind == 1:
        fields = _good(draw(st.integers(0, 100))).split(",")
        fields[draw(st.integers(0, 5))] = draw(_field)
        return ",".join(fields).encode("utf-8", errors="surrogatepass")
    if kind == 2:
        return ",".join(draw(st.lists(_field, max_size=8))).encode("utf-8", errors="surrogatepass")
    return draw(st.binary(max_size=40))


@pytest.mark.fuzz
def test_fuzzed_raw_sample_gives_rows_and_rejections_or_a_clear_error(record_property, fuzz_ledger):
    """100 random examples in ``make test`` (not derandomised, as before), ``make fuzz``'s count there."""
    ledger = fuzz_ledger("taobao_raw")
    outcomes = ledger.outcomes

    @settings(fuzz_settings(100, suppress_health_check=list(HealthCheck), database=None))
    @given(lines=st.lists(_lines(), max_size=30), header=st.sampled_from([True, True, True, False]),
           crlf=st.booleans(), final=st.booleans())
    def check(lines, header, crlf, final):
        with ledger.example():
            _check(lines, header, crlf, final)

    def _check(lines, header, crlf, final):
        end = b"\r\n" if crlf else b"\n"
        data = (SAMPLE_HEADER.replace(b"\n", end) if header else b"") + end.join(lines) + (end if final else b"")
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, sample=data)
            try:
                src = source(tmp, train_days=["2017-05-11"])
                tables, rejected = read_all(src)
            except (DataError, ConfigError) as e:
                assert str(e).startswith("taobao_raw: ")
                outcomes["clear error"] += 1
                return
        n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        rows = sum(t.num_rows for t in tables.values())
        bad = sorted(n for v in rejected.values() for n in v)
        assert len(set(bad)) == len(bad) and all(2 <= n <= n_lines for n in bad)
        assert rows + len(bad) + src.outside_days == n_lines - 1  # every line after the header once
        for t in tables.values():
            assert set(t.column("clk").to_pylist()) <= {0.0, 1.0}
        outcomes["rows and rejections"] += 1

    check()
    record_property("hypothesis_examples", ledger.examples)
    assert ledger.examples >= fuzz_examples(100) // 2 and outcomes["rows and rejections"] > 0
