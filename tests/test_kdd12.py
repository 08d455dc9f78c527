"""The KDD Cup 2012 Track 2 reader (datasets/kdd12.py) on small files written here, byte for byte
in the layout of ``training.txt`` and ``userid_profile.txt`` (tab-separated integers, no header,
LF line ends). Nothing is downloaded."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro import metrics
from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import ConfigError, DataError
from repro.registry import SOURCES, load_plugins
from tests.conftest import assert_fingerprint_follows_edits, fuzz_examples, fuzz_settings

load_plugins()
kdd12 = sys.modules["adrepro_datasets.kdd12"]  # datasets/ is loaded by path, never imported
COLUMNS = kdd12.COLUMNS
SPLITS = ("train", "valid", "test")
# The first line of training.txt as quoted by public preprocessing code [as reported].
GOOD = "0\t1\t4298118681424644510\t7686695\t385\t3\t3\t1601\t5521\t7709\t576\t490234"


def source(data_dir, **kw):
    return SOURCES.build("kdd12", {"data_dir": str(data_dir), **kw})


def read_all(src) -> tuple[dict[str, pa.Table], dict[str, list[int]]]:
    """Every split's chunks, concatenated, and its rejected line numbers."""
    tables = {s: pa.concat_tables(list(src.chunks(s))) for s in SPLITS}
    return tables, {s: list(src.rejected[s]) for s in SPLITS}


def line(**fields) -> str:
    """``GOOD`` with some fields replaced."""
    values = dict(zip(COLUMNS, GOOD.split("\t")))
    values.update({k: str(v) for k, v in fields.items()})
    return "\t".join(values[c] for c in COLUMNS)


def sample_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` plausible lines as uint64 columns: few clicks, 1-3 ads per list, repeated ids, some
    DisplayURLs at or above 2**63, some UserIDs 0 (the competition's unidentified user)."""
    rng = np.random.default_rng(seed)
    impressions = rng.geometric(0.55, n)
    clicks = rng.binomial(impressions, 0.05) + (rng.random(n) < 0.03) * impressions // 2  # some lines all clicks
    clicks = np.minimum(clicks, impressions)
    depth = rng.integers(1, 4, n)
    position = rng.integers(0, 3, n) % depth + 1
    cols = {"Click": clicks, "Impression": impressions,
            "DisplayURL": rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False),
            "AdID": rng.integers(1, 500, n), "AdvertiserID": rng.integers(1, 60, n), "Depth": depth,
            "Position": position, "QueryID": rng.integers(0, 2000, n), "KeywordID": rng.integers(0, 300, n),
            "TitleID": rng.integers(0, 400, n), "DescriptionID": rng.integers(0, 400, n),
            "UserID": np.where(rng.random(n) < 0.1, 0, rng.integers(1, 3000, n))}
    return {c: np.asarray(v).astype(np.uint64) for c, v in cols.items()}


def write_training(path: Path, cols: dict[str, np.ndarray], end: bytes = b"\n") -> bytes:
    """The columns as training.txt: 12 tab-separated decimal integers per line, LF (or ``end``)."""
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table({c: cols[c] for c in COLUMNS}), sink,
                    pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none", eol=end.decode()))
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data)
    return data


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("kdd12")
    cols = sample_columns(4_000, seed=1)
    write_training(folder / "training.txt", cols)
    return folder, cols


def test_the_written_file_is_the_real_layout(sample):
    folder, cols = sample
    data = (folder / "training.txt").read_bytes()
    lines = data.split(b"\n")
    assert lines.pop() == b"" and len(lines) == 4_000 and b"\r" not in data
    assert all(re.fullmatch(rb"[0-9]+(\t[0-9]+){11}", x) for x in lines)
    assert (cols["DisplayURL"] >= 2**63).any()  # ids beyond int64 are in the test
    assert lines[0].split(b"\t")[2] == str(cols["DisplayURL"][0]).encode()


# -- rows, weights, labels, splits ------------------------------------------------------------


def test_each_line_gives_a_positive_and_a_negative_row_weighted_by_its_counts(sample):
    folder, cols = sample
    tables, rejected = read_all(source(folder))
    assert rejected == {s: [] for s in SPLITS}
    lines_of = {s: t.column("line").to_numpy() for s, t in tables.items()}
    every = np.concatenate(list(lines_of.values()))
    assert sorted(set(every.tolist())) == list(range(1, 4_001))  # each line in exactly one split ...
    assert sum(len(set(v.tolist())) for v in lines_of.values()) == 4_000  # ... with all of its rows
    for split, t in tables.items():
        at = lines_of[split] - 1  # row -> index of its line
        label, weight = t.column("label").to_numpy(), t.column("weight").to_numpy()
        mine = np.unique(at)
        assert weight.sum() == cols["Impression"][mine].sum()  # the expansion's row count
        assert weight[label == 1].sum() == cols["Click"][mine].sum()
        assert (weight > 0).all() and set(label.tolist()) <= {0, 1}
        expected = np.where(label == 1, cols["Click"][at], cols["Impression"][at] - cols["Click"][at])
        assert (weight == expected).all()
        per_line = np.bincount(at, minlength=4_000)[mine]
        both = (cols["Click"][mine] > 0) & (cols["Click"][mine] < cols["Impression"][mine])
        assert (per_line == np.where(both, 2, 1)).all()
        # Ids exactly, DisplayURL beyond int64 included (int64 with the same 64 bits).
        for name in kdd12.IDS:
            assert (t.column(name).fill_null(0).to_numpy().view(np.uint64) == cols[name][at]).all()
        unidentified = t.column("UserID").is_null().to_numpy(zero_copy_only=False)
        assert unidentified.any() and (unidentified == (cols["UserID"][at] == 0)).all()  # UserID 0 is missing
        assert (t.column("user_key").to_numpy().view(np.uint64) == cols["UserID"][at]).all()
        depth, position = cols["Depth"][at].astype(float), cols["Position"][at].astype(float)
        assert np.allclose(t.column("RelativePosition").to_numpy(), (depth - position) / depth)
    counts = {s: len(set(v.tolist())) for s, v in lines_of.items()}
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(counts[split] / 4_000 - share) < 0.03, counts  # about 5 binomial sd
    names = [f.name for f in source(folder).fields()]
    assert "Gender" not in names and names[-2:] == ["RelativePosition", "user_key"]


def test_weighted_metrics_equal_those_of_the_expanded_impressions(sample):
    """The reason for the weight column: AUC and logloss on weighted rows are those of one row per
    impression (the pitfall of shared/protocols.md 2.1)."""
    folder, cols = sample
    t = pa.concat_tables(source(folder).chunks("train"))
    label, weight = t.column("label").to_numpy(), t.column("weight").to_numpy()
    ad = t.column("AdID").to_numpy()
    p = 1 / (1 + np.exp(-((ad % 17) / 4.0 - 3)))  # a score with many ties
    expanded_y, expanded_p = np.repeat(label, weight), np.repeat(p, weight)
    assert metrics.auc(label, p, weight) == pytest.approx(metrics.auc(expanded_y, expanded_p), abs=1e-12)
    assert metrics.logloss(label, p, weight) == pytest.approx(metrics.logloss(expanded_y, expanded_p), abs=1e-12)
    assert metrics.auc(label, p) != pytest.approx(metrics.auc(expanded_y, expanded_p), abs=1e-4)  # unweighted differs


def test_reads_are_deterministic_and_the_seed_and_only_the_seed_moves_lines(tmp_path):
    write_training(tmp_path / "training.txt", sample_columns(40_000, seed=2))  # 2.3 MiB: several blocks
    base, _ = read_all(source(tmp_path))
    again, _ = read_all(source(tmp_path))
    small_blocks, _ = read_all(source(tmp_path, block_size_mb=1, strict=True))
    for split in SPLITS:
        assert again[split].equals(base[split]) and small_blocks[split].equals(base[split])
    other, _ = read_all(source(tmp_path, seed=1))
    moved = {s: set(other[s].column("line").to_pylist()) ^ set(base[s].column("line").to_pylist()) for s in SPLITS}
    assert all(moved.values())
    assert sum(t.num_rows for t in other.values()) == sum(t.num_rows for t in base.values())


# -- the profile --------------------------------------------------------------------------------


def test_the_profile_joins_gender_and_age_by_user(tmp_path, capsys):
    lines = [line(UserID=u) for u in (11, 12, 13, 0, 11, 2**64 - 1)]
    (tmp_path / "training.txt").write_text("\n".join(lines) + "\n")
    profile = ["11\t1\t3", "12\t2\t6", "12\t0\t1", "13\t0\t7", "13\t3\t2", "x\t1\t1"]  # 12 twice; 13 bad twice
    (tmp_path / "userid_profile.txt").write_text("\n".join(profile) + "\n")
    src = source(tmp_path, profile_file="userid_profile.txt")
    assert [f.name for f in src.fields()][8:10] == ["Gender", "Age"]
    tables, _ = read_all(src)
    t = pa.concat_tables(tables.values()).sort_by("line")
    assert t.column("UserID").to_pylist() == [11, 12, 13, None, 11, -1]  # 2**64 - 1: int64 -1, the same bits
    assert t.column("Gender").to_pylist() == [1, 2, None, None, 1, None]
    assert t.column("Age").to_pylist() == [3, 6, None, None, 3, None]
    assert list(src.profile_rejected) == [3, 4, 5, 6]  # the repeat of 12, Age 7, Gender 3, a non-integer
    err = capsys.readouterr().err
    assert "profile: skipped 1 row(s) (a UserID listed on an earlier line), e.g. line(s) [3]" in err
    # Ids far apart take the sorted look-up instead of the table: the same answers.
    (tmp_path / "userid_profile.txt").write_text("\n".join(profile + [f"{10**18}\t2\t2"]) + "\n")
    sparse = source(tmp_path, profile_file="userid_profile.txt")
    t2 = pa.concat_tables(read_all(sparse)[0].values()).sort_by("line")
    assert not sparse._profile.dense and src._profile.dense
    assert t2.column("Gender").equals(t.column("Gender")) and t2.column("Age").equals(t.column("Age"))
    with pytest.raises(DataError, match=r"userid_profile\.txt: line 3: a UserID listed on an earlier line"):
        read_all(source(tmp_path, profile_file="userid_profile.txt", strict=True))
    with pytest.raises(DataError, match="user profile file not found"):
        source(tmp_path, profile_file="nowhere.txt").fingerprint()
    (tmp_path / "userid_profile.txt").write_text(GOOD + "\n")  # a training file given as the profile
    with pytest.raises(DataError, match=r"12 field\(s\), expected 3.*userid_profile\.txt: 3 tab-separated"):
        read_all(source(tmp_path, profile_file="userid_profile.txt"))


# -- bad input -----------------------------------------------------------------------------------

BAD = {  # kind -> a line of that kind (the first failing check decides)
    "fields": line().rsplit("\t", 1)[0],
    "empty": "",
    "cr": line(AdID="76\r86695"),
    "negative": line(Click=-1),
    "integer": line(AdID="7x"),
    "impressions": line(Click=0, Impression=0),
    "clicks": line(Click=3, Impression=2),
    "position": line(Depth=2, Position=3),
}
MORE_BAD = [  # (line, kind): the edges of each check
    (line(DisplayURL=2**64 - 1), None), (line(DisplayURL=2**64), "integer"), (line(DisplayURL="0" * 21), "integer"),
    (line(Impression=2**63 - 1), None), (line(Impression=2**63), "integer"), (line(Click=" 1"), "integer"),
    (line(UserID=""), "integer"), (line(Position=0), "position"), (line(Depth=0, Position=0), "position"),
    (line(Click=-1, Impression="x"), "negative"), (line(Click="x", Impression=-1), "integer"),
    (line(Click=0, Impression=0, Depth=0), "impressions"), (line() + "\t1", "fields"), (line() + "\r", None),
    ("\t".join(["1"] * 40), "fields"), (line(AdID="\u00e9"), "integer"), (line(Click=1, Impression=1), None),
]


def test_hand_written_bad_lines_are_rejected_by_kind_with_their_line_numbers(tmp_path, capsys):
    rows = [GOOD] + [text for text in BAD.values()] + [text for text, _ in MORE_BAD] + [GOOD]
    data = "\n".join(rows).encode() + b"\n"
    (tmp_path / "training.txt").write_bytes(data)
    block = kdd12.parse_block(data, 1)
    got = dict(zip(block.bad_lines.tolist(), map(kdd12.kind_of, block.bad_codes)))
    expected = {i + 2: kind for i, kind in enumerate(BAD)}
    expected.update({i + 2 + len(BAD): kind for i, (_, kind) in enumerate(MORE_BAD) if kind})
    assert got == expected
    assert block.lines.tolist() == sorted(set(range(1, len(rows) + 1)) - set(expected))
    tables, rejected = read_all(source(tmp_path))
    assert sorted(n for v in rejected.values() for n in v) == sorted(expected)
    assert sum(len(set(t.column("line").to_pylist())) for t in tables.values()) == len(rows) - len(expected)
    err = capsys.readouterr().err
    for kind in BAD:
        assert kdd12.KINDS[kind] in err


@pytest.mark.parametrize("kind", [*BAD, "truncated", "long"])
def test_strict_mode_names_file_line_and_reason(tmp_path, kind):
    rows = [GOOD] * 30
    if kind == "truncated":  # the last line cut in its UserID, no line end
        data = ("\n".join(rows) + "\n" + GOOD[:-2]).encode()
        bad = 31
    elif kind == "long":
        data = ("\n".join(rows[:20] + ["1\t" * kdd12.MAX_LINE] + rows[20:]) + "\n").encode()
        bad = 21
    else:
        data = ("\n".join(rows[:12] + [BAD[kind]] + rows[12:]) + "\n").encode()
        bad = 13
    (tmp_path / "training.txt").write_bytes(data)
    reason = re.escape(kdd12.KINDS[kind])
    blocks = {"block_size_mb": 1} if kind == "long" else {}  # a long line outgrows a 1 MiB read
    with pytest.raises(DataError, match=rf"training\.txt: line {bad}: {reason} \(.+\) \(strict: true"):
        read_all(source(tmp_path, strict=True, **blocks))
    tables, rejected = read_all(source(tmp_path, **blocks))  # the default skips and counts it
    assert sorted(n for v in rejected.values() for n in v) == [bad]
    assert sum(t.num_rows for t in tables.values()) == 30  # GOOD gives one (negative) row


def test_crlf_line_ends_read_as_lf(tmp_path):
    cols = sample_columns(500, seed=3)
    for name, end in (("lf", b"\n"), ("crlf", b"\r\n")):
        (tmp_path / name).mkdir()
        write_training(tmp_path / name / "training.txt", cols, end)
    assert b"\r\n" in (tmp_path / "crlf" / "training.txt").read_bytes()[:200]
    lf, crlf = (read_all(source(tmp_path / n)) for n in ("lf", "crlf"))
    assert lf[1] == crlf[1] == {s: [] for s in SPLITS}
    for split in SPLITS:
        assert lf[0][split].num_rows > 0 and lf[0][split].equals(crlf[0][split])


def test_an_empty_file_and_files_of_other_data_sets_fail_at_once(tmp_path, bytes_read):
    path = tmp_path / "training.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="training.txt is empty .expected KDD Cup 2012 Track 2 training.txt"):
        read_all(source(tmp_path))
    criteo = "0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t68fd1e64\t80e26c9b" + "\tfb936136" * 24
    path.write_text((criteo + "\n") * 100_000)  # 26 MiB: a line in the layout of Criteo's train.txt, repeated
    bytes_read.clear()
    with pytest.raises(DataError, match=r"none of the first \d+ line\(s\) is a valid row \(line 1: a field count "
                                        r"other than 12: 40 field\(s\), expected 12\); expected KDD Cup 2012"):
        read_all(source(tmp_path))
    assert sum(bytes_read) <= 2 << 20  # it stopped after the first block
    path.write_text("id,click,hour,C1,banner_pos\n1000009418151094273,0,14102100,1005,0\n")  # Avazu
    with pytest.raises(DataError, match="none of the first 2 line"):
        read_all(source(tmp_path))
    path.write_bytes(bytes(b for b in range(256) if b != 10) * 4000)  # no line end at all
    with pytest.raises(DataError, match="none of the first 1 line"):
        read_all(source(tmp_path))
    with pytest.raises(DataError, match="training.txt not found"):
        read_all(source(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="block_size_mb=0"):
        source(tmp_path, block_size_mb=0)
    with pytest.raises(ConfigError, match="unknown config key"):
        source(tmp_path, split="x4")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        next(source(tmp_path).chunks("dev"))


# -- fingerprint and the prepared cache ---------------------------------------------------------


def test_fingerprint_follows_the_files_and_reads_only_samples(tmp_path, monkeypatch, bytes_read):
    path = tmp_path / "training.txt"
    with open(path, "wb") as f:
        f.truncate(50 << 20)  # 50 MiB (sparse): the fingerprint never parses it
    (tmp_path / "userid_profile.txt").write_text("11\t1\t3\n")
    bytes_read.clear()
    first = source(tmp_path).fingerprint()
    assert 0 < sum(bytes_read) <= 8 << 16  # eight 64 KiB samples of a 50 MiB file
    monkeypatch.undo()
    assert source(tmp_path, strict=True, block_size_mb=8).fingerprint() == first
    assert source(tmp_path, seed=1).fingerprint() != first
    with_profile = source(tmp_path, profile_file="userid_profile.txt").fingerprint()
    assert with_profile != first
    (tmp_path / "userid_profile.txt").write_text("11\t2\t3\n")
    assert source(tmp_path, profile_file="userid_profile.txt").fingerprint() != with_profile
    # same size, same mtime, a byte changed in the first block; then a line appended
    assert_fingerprint_follows_edits(path, lambda: source(tmp_path).fingerprint(), first)


def test_prepare_builds_a_weighted_cache_with_roles(tmp_path, sample):
    sample_folder, cols = sample
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(sample_folder / "training.txt", folder)
    profile = "\n".join(f"{u}\t{u % 3}\t{u // 2 % 6 + 1}" for u in range(1, 3000, 2)) + "\n"
    (folder / "userid_profile.txt").write_text(profile)
    src = source(folder, profile_file="userid_profile.txt")
    root = prepare(src, PrepareConfig(min_count=2, cache_root=str(tmp_path / "cache")), verbose=False)
    fmap = json.loads((root / "feature_map.json").read_text())
    assert fmap["weight"] == "weight"
    fields = {f["name"]: f for f in fmap["fields"]}
    assert fields["Position"]["roles"] == ["position"] and fields["AdID"]["roles"] == ["ad"]
    assert fields["user_key"]["kind"] == "key" and fields["RelativePosition"]["kind"] == "dense"
    assert fields["Gender"]["vocab_size"] == 3 + 2 and fields["Age"]["vocab_size"] == 6 + 2  # pad, OOV
    data = PreparedDataset(root)
    impressions = sum(data.column(s, "weight").sum() for s in SPLITS)
    assert impressions == cols["Impression"].sum()
    clicks = sum((data.column(s, "weight") * data.column(s, "label")).sum() for s in SPLITS)
    assert clicks == cols["Click"].sum()
    provenance = json.loads((root / "provenance.json").read_text())
    assert provenance["rejected_rows"] == {s: 0 for s in SPLITS}
    assert sum(provenance["rows"].values()) == sum(pq.read_metadata(root / f"{s}.parquet").num_rows for s in SPLITS)
    # A missing Gender (a user without a profile, even-numbered here) is the padding index.
    user = data.column("train", "user_key")
    gender = data.column("train", "Gender")
    assert ((gender == 0) == ((user % 2 == 0) | (user >= 3000))).all()
    # Strictness and block size change no row: the same cache.
    same = prepare(source(folder, profile_file="userid_profile.txt", block_size_mb=1, strict=True),
                   PrepareConfig(min_count=2, cache_root=str(tmp_path / "cache")), verbose=False)
    assert same == root


# -- fuzzing -----------------------------------------------------------------------------------

_field = st.one_of(
    st.sampled_from(["", "0", "1", "2", "3", "-1", "007", " 1", "1e3", "x", "+1", "9" * 20, "1" + "0" * 19,
                     str(2**63), str(2**64)]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
)


@st.composite
def _lines(draw) -> bytes:
    """A line: a valid row, a valid row with a damaged field, a random line, or random bytes."""
    kind = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))
    fields = line(Click=draw(st.integers(0, 3)), Impression=draw(st.integers(1, 6)), Depth=draw(st.integers(1, 3)),
                  Position=draw(st.integers(1, 3))).split("\t")
    if kind == 0:
        return "\t".join(fields).encode()
    if kind == 1:
        fields[draw(st.integers(0, 11))] = draw(_field)
        if draw(st.booleans()):
            del fields[draw(st.integers(0, 10))]
        return "\t".join(fields).encode("utf-8", errors="surrogatepass")
    if kind == 2:
        return "\t".join(draw(st.lists(_field, max_size=14))).encode("utf-8", errors="surrogatepass")
    return draw(st.binary(max_size=60))


@pytest.mark.fuzz
def test_fuzzed_input_gives_rows_and_rejections_or_a_clear_error(record_property, fuzz_ledger):
    """100 random examples in ``make test`` (not derandomised, as before), ``make fuzz``'s count there."""
    ledger = fuzz_ledger("kdd12")
    outcomes = ledger.outcomes

    @settings(fuzz_settings(100, suppress_health_check=list(HealthCheck), database=None))
    @given(lines=st.lists(_lines(), max_size=30), crlf=st.booleans(), final=st.booleans(), seed=st.integers(0, 3))
    def check(lines, crlf, final, seed):
        with ledger.example():
            _check(lines, crlf, final, seed)

    def _check(lines, crlf, final, seed):
        data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if final and lines else b"")
        # The vectorised checks and the line-by-line twin give every line the same verdict.
        raw = data.split(b"\n")
        if data.endswith(b"\n") or not data:
            raw.pop()
        verdicts = [kdd12.diagnose(text, unterminated=(i == len(raw) - 1 and not data.endswith(b"\n")))
                    for i, text in enumerate(raw)]
        block = kdd12.parse_block(data, 1)
        assert dict(zip(block.bad_lines.tolist(), map(kdd12.kind_of, block.bad_codes))) == {
            i + 1: v[0] for i, v in enumerate(verdicts) if v}
        assert block.lines.tolist() == [i + 1 for i, v in enumerate(verdicts) if v is None]
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "training.txt").write_bytes(data)
            try:
                tables, rejected = read_all(source(tmp, seed=seed))
            except (DataError, ConfigError) as e:
                assert str(e).startswith("kdd12: ")
                outcomes["clear error"] += 1
                return
        good = {int(n) for t in tables.values() for n in t.column("line").to_pylist()}
        bad = sorted(n for v in rejected.values() for n in v)
        assert len(set(bad)) == len(bad) and not good & set(bad)
        assert sorted(good | set(bad)) == list(range(1, len(raw) + 1))  # every line once
        impressions = sum(int(raw[n - 1].rstrip(b"\r").split(b"\t")[1]) for n in good)
        assert sum(t.column("weight").to_numpy().sum() for t in tables.values()) == impressions
        outcomes["rows and rejections"] += 1

    check()
    record_property("hypothesis_examples", ledger.examples)
    assert ledger.examples == fuzz_examples(100) and outcomes["rows and rejections"] > 0 and outcomes["clear error"] > 0
    assert ledger.lines["fields"] > 0  # a dropped field is the generator's commonest damage


def test_conf_preset_resolves():
    from hydra import compose, initialize_config_dir

    from repro.registry import ROOT
    from repro.run import DATA_PREP_KEYS, resolve

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        data = resolve(compose(config_name="config", overrides=["data=kdd12"])).config["data"]
    assert data["name"] == "kdd12" and data["file"] == "training.txt" and data["profile_file"] is None
    assert data["min_count"] == 10
    SOURCES.config("kdd12", {k: v for k, v in data.items() if k not in DATA_PREP_KEYS})  # every key known
