"""The MovieLens-1M reader (datasets/movielens.py) on files written here in the exact ml-1m layout.

Every file is small and written byte for byte into tmp_path (``::``-separated, LF, latin-1 titles);
nothing is downloaded.
"""

from __future__ import annotations

import os
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
from tests.conftest import fuzz_examples, fuzz_settings

load_plugins()
ml = sys.modules["adrepro_datasets.movielens"]
SPLITS = ("train", "valid", "test")

USERS = b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n4::M::45::7::02460\n5::F::25::20::98107-2117\n"
MOVIES = (
    b"1::Toy Story (1995)::Animation|Children's|Comedy\n"
    b"2::Mis\xe9rables, Les (1995)::Drama|Musical\n"  # latin-1: e-acute is one byte, 0xE9
    b"3::Cit\xe9 des enfants perdus, La (1995)::Adventure|Sci-Fi\n"
    b"4::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
)


def source(data_dir, **kw):
    return SOURCES.build("movielens", {"data_dir": str(data_dir), **kw})


def write(d: Path, ratings: bytes, users: bytes = USERS, movies: bytes = MOVIES) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_bytes(ratings)
    (d / "users.dat").write_bytes(users)
    (d / "movies.dat").write_bytes(movies)
    return d


def ratings(rows) -> bytes:
    return b"".join(f"{u}::{m}::{r}::{t}\n".encode() for u, m, r, t in rows)


def read_all(src) -> dict[str, pa.Table]:
    return {s: pa.concat_tables(list(src.chunks(s))) for s in SPLITS}


def all_rows(src) -> pa.Table:
    """Every split's rows, in file order."""
    table = pa.concat_tables(read_all(src).values())
    return table.take(pa.array(np.argsort(table.column("line").to_numpy())))


def rejected(src) -> list[int]:
    return sorted(n for s in SPLITS for n in src.rejected[s])


def build(src, root) -> PreparedDataset:
    return PreparedDataset(prepare(src, PrepareConfig(min_count=1, cache_root=str(root)), verbose=False))


def sample(d: Path, n: int, seed: int = 0, n_users: int = 60, n_movies: int = 40) -> Path:
    """``n`` ratings of ``n_users`` users on ``n_movies`` movies, in the exact ml-1m layout."""
    rng = np.random.default_rng(seed)
    genders = rng.choice(["M", "F"], n_users)
    ages, occ = rng.choice(ml.AGES, n_users), rng.integers(0, 21, n_users)
    zips = [f"{z:05d}" + ("-1234" if z % 7 == 0 else "") for z in rng.integers(0, 99999, n_users)]
    users = "".join(f"{i + 1}::{g}::{a}::{o}::{z}\n" for i, (g, a, o, z) in enumerate(zip(genders, ages, occ, zips)))
    movies = []
    for i in range(n_movies):
        genres = sorted(rng.choice(ml.GENRES, rng.integers(1, 4), replace=False))  # alphabetical, as in the file
        title = f"Caf\xe9 {i}, Le" if i % 5 == 0 else f"Movie {i}"
        movies.append(f"{i + 1}::{title} ({1919 + i * 2})::{'|'.join(genres)}\n")
    users_of = rng.integers(1, n_users + 1, n)
    movies_of = rng.integers(1, n_movies + 1, n)
    taste = (genders[users_of - 1] == "F") * 0.8 + (movies_of % 3 == 0) * 0.7
    stars = np.clip(np.round(2.6 + taste + rng.normal(0, 1.1, n)), 1, 5).astype(int)
    ts = 956703932 + np.sort(rng.integers(0, 10**8, n))
    return write(d, ratings(zip(users_of, movies_of, stars, ts)), users.encode(), "".join(movies).encode("latin-1"))


# -- rows, joins, labels ------------------------------------------------------------------------


def test_hand_written_rows_are_joined_and_labelled(tmp_path):
    d = write(tmp_path, ratings([(1, 1, 5, 978300760), (2, 2, 3, 978300761), (5, 3, 4, 978300762),
                                 (4, 4, 1, 978300763), (3, 2, 4, 978300764), (1, 4, 2, 978300765)]))
    src = source(d, split="time", ratios=[0.5, 0.25, 0.25])
    t = all_rows(src)
    assert rejected(src) == [] and src.side_rejected == {"users": [], "movies": []}
    assert t.column("line").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert t.column("rating").to_pylist() == [5, 3, 4, 1, 4, 2]
    assert t.column("label").to_pylist() == [1, 0, 1, 0, 1, 0]  # rating >= 4
    assert t.column("user_id").to_pylist() == [1, 2, 5, 4, 3, 1]
    assert t.column("gender").to_pylist() == ["F", "M", "F", "M", "M", "F"]
    assert t.column("age").to_pylist() == [1, 56, 25, 45, 25, 1]
    assert t.column("occupation").to_pylist() == [10, 16, 20, 7, 15, 10]
    assert t.column("zip").to_pylist() == ["48067", "70072", "98107-2117", "02460", "55117", "48067"]
    assert t.column("zip_prefix").to_pylist() == ["480", "700", "981", "024", "551", "480"]
    assert t.column("genre").to_pylist() == ["Animation", "Drama", "Adventure", "Action", "Drama", "Action"]
    assert t.column("year").to_pylist() == [1995, 1995, 1995, 1977, 1995, 1977]  # after a latin-1 title too
    hot = np.stack([t.column(f"genres_{i}").to_numpy() for i in range(18)], axis=1)
    star_wars = {ml.GENRES[i] for i in np.flatnonzero(hot[3])}
    assert star_wars == {"Action", "Adventure", "Fantasy", "Sci-Fi"} and hot.sum(axis=1).tolist() == [3, 2, 2, 4, 2, 4]
    # The label threshold and dropped ratings are config.
    assert all_rows(source(d, split="time", ratios=[0.5, 0.25, 0.25], positive_threshold=5)).column(
        "label").to_pylist() == [1, 0, 0, 0, 0, 0]
    src = source(d, split="time", ratios=[0.5, 0.25, 0.25], drop_ratings=[3])
    t = all_rows(src)
    assert t.column("line").to_pylist() == [1, 3, 4, 5, 6] and rejected(src) == []  # dropped, not rejected


def test_fields_follow_the_config(tmp_path):
    fields = {f.name: f for f in source(tmp_path).fields()}
    assert fields["user_id"].roles == ("user",) and fields["movie_id"].roles == ("ad",)
    assert fields["genres"].kind == "vector" and fields["genres"].dim == 18 and fields["genre"].kind == "categorical"
    assert "genres" not in {f.name for f in source(tmp_path, genres="first").fields()}
    names = {f.name for f in source(tmp_path, genres="multi_hot", zip_prefix=0).fields()}
    assert "genre" not in names and "zip_prefix" not in names and "genres" in names


# -- splits and the prepared cache -------------------------------------------------------------


def test_random_split_prepares_every_row_once(tmp_path, monkeypatch):
    d = sample(tmp_path / "ml", 6_000, seed=1)
    src = source(d)
    data = build(src, tmp_path / "c")
    rows = data.provenance["rows"]
    assert sum(rows.values()) == 6_000 and data.provenance["rejected_rows"] == {s: 0 for s in SPLITS}
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(rows[split] / 6_000 - share) < 0.02  # 5 binomial standard deviations
    fm = data.feature_map
    assert fm.by_role("user").name == "user_id" and fm.by_role("ad").name == "movie_id"
    assert fm.dense_columns == [f"genres_{i}" for i in range(18)]
    model = MODELS.build("deepfm", {}, fm, embedding={"name": "full", "dim": 8})  # the cache feeds a model
    batch = next(data.batches("train", 256, shuffle=True))
    loss = model.loss(batch, model(batch))
    assert batch["dense"].shape == (256, len(fm.dense_columns)) and torch.isfinite(loss)
    text = (d / "ratings.dat").read_text()
    stars = np.array([int(line.split("::")[2]) for line in text.splitlines()])
    labels = np.concatenate([data.column(s, "label") for s in SPLITS])
    assert labels.sum() == (stars >= 4).sum() and 0.3 < labels.mean() < 0.7
    full = read_all(src)
    lines = {s: full[s].column("line").to_pylist() for s in SPLITS}
    assert sorted(sum(lines.values(), [])) == list(range(1, 6_001))
    # Deterministic: another build writes the same bytes; small blocks give the same rows.
    again = build(source(d), tmp_path / "c2")
    assert again.root.name == data.root.name
    for split in SPLITS:
        assert (again.root / f"{split}.parquet").read_bytes() == (data.root / f"{split}.parquet").read_bytes()
    monkeypatch.setattr(ml, "PROBE_BYTES", 4096)  # a first block of 4 KiB, then the rest
    small = read_all(source(d))
    for split in SPLITS:
        assert small[split].to_pylist() == full[split].to_pylist()
    # Another seed assigns other rows.
    assert pa.concat_tables(list(source(d, seed=1).chunks("test"))).column("line").to_pylist() != lines["test"]


def test_time_split_is_global_timestamp_order_with_exact_shares(tmp_path):
    rng = np.random.default_rng(3)
    ts = 978300000 + rng.integers(0, 40, 200)  # many ties
    bad = b"1::1::9::978300010\n"  # a rejected line with a readable timestamp
    rows = ratings(zip(rng.integers(1, 6, 200), rng.integers(1, 5, 200), rng.integers(1, 6, 200), ts))
    lines = rows.splitlines(keepends=True)
    d = write(tmp_path, b"".join(lines[:50]) + bad + b"".join(lines[50:]) + b"1::1::3\n")
    src = source(d, split="time")
    tables = read_all(src)
    assert [tables[s].num_rows for s in SPLITS] == [160, 20, 20]
    keys = {s: list(zip(tables[s].column("timestamp").to_pylist(), tables[s].column("line").to_pylist()))
            for s in SPLITS}
    # By hand: the valid lines' (timestamp, line) sorted; the last 20 are test, the 20 before valid.
    by_time = sorted((int(t), n if n <= 50 else n + 1) for n, t in enumerate(ts, 1))
    assert sorted(keys["test"]) == by_time[-20:] and sorted(keys["valid"]) == by_time[-40:-20]
    assert sorted(keys["train"]) == by_time[:-40]
    bad_key = (978300010, 51)  # the rejected line goes where its (timestamp, line) would have put it
    owner = "test" if bad_key >= min(keys["test"]) else "valid" if bad_key >= min(keys["valid"]) else "train"
    assert 51 in src.rejected[owner] and 202 in src.rejected["train"]  # line 202 has no timestamp: train's
    assert rejected(src) == [51, 202]
    # drop_ratings shrinks the set the shares are taken of.
    kept = read_all(source(d, split="time", drop_ratings=[1, 2]))
    n = sum(t.num_rows for t in kept.values())
    assert [kept[s].num_rows for s in SPLITS] == [n - 2 * round(n * 0.1), round(n * 0.1), round(n * 0.1)]


def test_an_empty_split_is_an_error(tmp_path):
    d = write(tmp_path, ratings([(1, 1, 5, 978300760), (2, 2, 3, 978300761)]))
    with pytest.raises(DataError, match="split 'valid' is empty"):
        list(source(d, split="time").chunks("valid"))  # round(2 * 0.1) = 0 rows


# -- bad input ----------------------------------------------------------------------------------

GOOD = ratings([(1, 1, 5, 978300760), (2, 2, 3, 978300761), (3, 3, 4, 978300762), (4, 4, 1, 978300763),
                (5, 1, 2, 978300764), (1, 2, 4, 978300765), (2, 3, 5, 978300766), (3, 4, 3, 978300767)])
BAD_RATINGS = {  # kind -> the bad line (line 3 of ratings.dat)
    "empty": b"",
    "cr": b"1::1::\r5::978300760",
    "ascii": b"1::1::5::97830\xe90760",
    "fields": b"1::1::5",
    "integer": b"1::x::5::978300760",
    "rating": b"1::1::3.5::978300760",
    "user": b"99::1::5::978300760",
    "movie": b"1::99::5::978300760",
}
BAD_USERS = {"fields": b"6::F::1::10", "integer": b"6x::F::1::10::48067", "gender": b"6::X::1::10::48067",
             "age": b"6::F::17::10::48067", "occupation": b"6::F::1::21::48067", "zip": b"6::F::1::10::",
             "duplicate": b"1::M::18::3::11111", "ascii": b"6::F::1::10::4806\xff"}
BAD_MOVIES = {"fields": b"5::Heat (1995)", "genre": b"5::Heat (1995)::Action|Cartoon",
              "control": b"5::He\x85at (1995)::Action",  # 0x85: a C1 control in latin-1
              "duplicate": b"1::Heat (1995)::Action", "integer": b"five::Heat (1995)::Action"}


def insert(data: bytes, line: bytes, at: int) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(lines[: at - 1] + [line + b"\n"] + lines[at - 1:])


@pytest.mark.parametrize("kind", list(BAD_RATINGS))
def test_each_malformed_rating_is_skipped_counted_and_named(kind, tmp_path, capsys):
    d = write(tmp_path, insert(GOOD, BAD_RATINGS[kind], 3))
    src = source(d, split="time", ratios=[0.5, 0.25, 0.25])
    t = all_rows(src)
    assert rejected(src) == [3] and t.column("line").to_pylist() == [1, 2, 4, 5, 6, 7, 8, 9]
    assert f"skipped 1 row(s) ({ml.KINDS[kind]}), e.g. line(s) [3]" in capsys.readouterr().err
    with pytest.raises(DataError, match=rf"ratings\.dat: line 3: {re.escape(ml.KINDS[kind])}.*strict: true"):
        read_all(source(d, split="time", ratios=[0.5, 0.25, 0.25], strict=True))
    data = build(source(d, split="time", ratios=[0.5, 0.25, 0.25]), tmp_path / "c")
    assert sum(data.provenance["rows"].values()) == 8 and sum(data.provenance["rejected_rows"].values()) == 1


@pytest.mark.parametrize("file,kind", [("users", k) for k in BAD_USERS] + [("movies", k) for k in BAD_MOVIES])
def test_a_bad_user_or_movie_line_is_counted_and_its_ratings_rejected(file, kind, tmp_path, capsys):
    bad = (BAD_USERS if file == "users" else BAD_MOVIES)[kind]
    side = {"users": USERS, "movies": MOVIES}
    side[file] = insert(side[file], bad, 2 if kind != "duplicate" else 3)
    line = 2 if kind != "duplicate" else 3
    bad_id = 1 if kind == "duplicate" else 6 if file == "users" else 5
    extra = f"{bad_id}::1::5::978300770\n" if file == "users" else f"1::{bad_id}::5::978300770\n"  # rates its id
    d = write(tmp_path, GOOD + extra.encode(), side["users"], side["movies"])
    src = source(d, split="time", ratios=[0.5, 0.25, 0.25])
    t = all_rows(src)
    assert src.side_rejected[file] == [line] and src.side_rejected[{"users": "movies", "movies": "users"}[file]] == []
    err = capsys.readouterr().err
    assert f"{file}.dat: {file}: skipped 1 row(s) ({ml.KINDS[kind]}), e.g. line(s) [{line}]" in err
    if kind == "duplicate":  # the first line of the id stands: its ratings are kept
        assert t.num_rows == 9 and rejected(src) == []
        first = {"users": ("gender", "F"), "movies": ("genre", "Animation")}[file]  # user 1's, Toy Story's
        assert t.column(first[0])[-1].as_py() == first[1]
    else:
        assert t.num_rows == 8 and rejected(src) == [9]
    with pytest.raises(DataError, match=rf"{file}\.dat: line {line}: {re.escape(ml.KINDS[kind])}"):
        read_all(source(d, split="time", ratios=[0.5, 0.25, 0.25], strict=True))


def test_encodings(tmp_path):
    good = ratings([(1, 2, 5, 978300760), (2, 3, 4, 978300761), (3, 1, 1, 978300762), (4, 4, 2, 978300763),
                    (5, 1, 3, 978300764), (1, 4, 4, 978300765), (2, 1, 5, 978300766), (3, 4, 3, 978300767)])
    latin = write(tmp_path / "latin", good)
    utf8 = write(tmp_path / "utf8", good, movies=MOVIES.decode("latin-1").encode("utf-8"))
    ratios = [0.5, 0.25, 0.25]
    expected = all_rows(source(latin, split="time", ratios=ratios))
    assert all_rows(source(utf8, split="time", ratios=ratios, encoding="utf-8")).equals(expected)
    # The latin-1 file read as UTF-8: its two lines with 0xE9 are not UTF-8, and their ratings go too.
    src = source(latin, split="time", ratios=ratios, encoding="utf-8")
    t = all_rows(src)
    assert src.side_rejected["movies"] == [2, 3] and rejected(src) == [1, 2] and t.num_rows == 6
    # A UTF-8 copy read as latin-1 is still text (mojibake in titles, which are not features): same rows.
    assert all_rows(source(utf8, split="time", ratios=ratios)).equals(expected)


def test_crlf_reads_as_lf(tmp_path):
    lf = sample(tmp_path / "lf", 2_000, seed=4)
    crlf = write(tmp_path / "crlf", *((lf / f).read_bytes().replace(b"\n", b"\r\n")
                                      for f in ("ratings.dat", "users.dat", "movies.dat")))
    built = [build(source(p), tmp_path / "c") for p in (lf, crlf)]
    assert built[0].root != built[1].root  # other bytes, another fingerprint ...
    for split in SPLITS:  # ... the same rows
        a, b = (pq.read_table(x.root / f"{split}.parquet") for x in built)
        assert a.num_rows > 100 and a.equals(b)


def test_last_lines(tmp_path, capsys):
    d = write(tmp_path, GOOD + b"1::3::4::978300799")  # complete, no line end: kept with a note
    assert all_rows(source(d, split="time", ratios=[0.5, 0.25, 0.25])).num_rows == 9
    assert "the last line (9) has no line end; kept" in capsys.readouterr().err
    d = write(tmp_path, GOOD + b"1::3::4")  # cut in its third field
    src = source(d, split="time", ratios=[0.5, 0.25, 0.25])
    assert all_rows(src).num_rows == 8 and rejected(src) == [9]
    assert f"({ml.KINDS['truncated']}), e.g. line(s) [9]" in capsys.readouterr().err
    d = write(tmp_path, insert(GOOD, b"9" * (ml.MAX_LINE + 10), 2))  # line 2 is over 1 MiB
    src = source(d, split="time", ratios=[0.5, 0.25, 0.25])
    assert all_rows(src).num_rows == 8 and rejected(src) == [2]


@pytest.mark.parametrize("file,content,message", [
    ("ratings", b"", r"ratings\.dat is empty \(expected ratings\.dat: UserID::MovieID"),
    ("users", b"", r"users\.dat is empty"),
    ("ratings", b"196\t242\t3\t881250949\n" * 20,
     r"none of the first 20 line\(s\).*field count.*expected ratings\.dat"),
    ("ratings", b"userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n", r"none of the first 2 line"),
    ("ratings", b"instance_id item_id item_category_list\n1 2 3\n", r"none of the first 2 line"),
    ("users", GOOD, r"users\.dat: none of the first 8 line\(s\).*expected users\.dat: UserID::Gender"),
    ("movies", USERS, r"movies\.dat: none of the first 5 line\(s\).*expected movies\.dat"),
    ("ratings", bytes(range(256)) * 50, r"none of the first"),
], ids=["empty-ratings", "empty-users", "ml-100k", "ml-latest-csv", "ijcai18", "ratings-as-users", "users-as-movies",
        "binary"])
def test_files_of_other_data_sets_fail_clearly(file, content, message, tmp_path):
    files = {"ratings": GOOD, "users": USERS, "movies": MOVIES, file: content}
    d = write(tmp_path, files["ratings"], files["users"], files["movies"])
    with pytest.raises(DataError, match=message):
        read_all(source(d))


def test_missing_files_and_bad_config_are_named(tmp_path):
    with pytest.raises(DataError, match=r"ratings file \(ratings\.dat\) not found: .*unpack GroupLens's ml-1m\.zip"):
        source(tmp_path).fingerprint()
    (tmp_path / "ratings.dat").write_bytes(GOOD)
    with pytest.raises(DataError, match=r"users file \(users\.dat\) not found"):
        read_all(source(tmp_path))
    for kw, message in [({"split": "leave_one_out"}, "split='leave_one_out'"), ({"genres": "all"}, "genres='all'"),
                        ({"ratios": [0.8, 0.2]}, "three shares"), ({"ratios": [0.5, 0.5, 0.5]}, "sum to 1"),
                        ({"positive_threshold": 6}, "ratings are 1-5"), ({"drop_ratings": [0]}, "ratings are 1-5"),
                        ({"encoding": "cp1252"}, "encoding='cp1252'"), ({"zip_prefix": -1}, "zip_prefix=-1"),
                        ({"threshold": 4}, "unknown config key")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            source(tmp_path, **kw)


def test_the_conf_file_builds_the_source():
    block = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "movielens_1m.yaml"))
    assert block.pop("name") == "movielens" and block.pop("min_count") == 1 and block.pop("cache_root") == "cache"
    cfg = SOURCES.config("movielens", block)
    assert (cfg.split, cfg.positive_threshold, cfg.ratios, cfg.genres) == ("random", 4, [0.8, 0.1, 0.1], "both")


# -- fingerprint ---------------------------------------------------------------------------------


def test_fingerprint_follows_the_files_without_reading_them_whole(tmp_path, monkeypatch, bytes_read):
    d = write(tmp_path, b"")
    with open(d / "ratings.dat", "wb") as f:
        f.truncate(40 << 20)  # 40 MiB (sparse): the fingerprint never parses it
    first = source(d).fingerprint()
    assert 0 < sum(bytes_read) <= 8 * 65536 + len(USERS) + len(MOVIES)
    monkeypatch.undo()
    assert source(d, strict=True, block_size_mb=2).fingerprint() == first  # they change no row
    assert source(d, positive_threshold=5).fingerprint() != first
    path = d / "users.dat"
    stat = path.stat()
    path.write_bytes(USERS.replace(b"48067", b"48068"))  # same size, same mtime, one byte changed
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = source(d).fingerprint()
    assert second != first
    with open(d / "movies.dat", "ab") as f:
        f.write(b"5::Heat (1995)::Action|Crime|Thriller\n")
    assert source(d).fingerprint() not in (first, second)


# -- fuzzing -------------------------------------------------------------------------------------

_GOOD_LINES = GOOD.splitlines()
_field = st.sampled_from([b"", b"1", b"5", b"0", b"-1", b"3.5", b"x", b"978300760", b"99", b"M", b"\xe9", b" 1"])
_line = st.one_of(
    st.sampled_from(_GOOD_LINES),
    st.sampled_from(_GOOD_LINES),
    st.sampled_from(_GOOD_LINES),  # three times: mostly valid rows
    st.lists(_field, min_size=1, max_size=6).map(b"::".join),
    st.tuples(st.sampled_from(_GOOD_LINES), st.binary(max_size=4), st.integers(0, 20)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2]:]),
    st.binary(max_size=30),
)


@pytest.mark.fuzz
def test_fuzzed_files_give_rows_and_counted_rejections_or_a_clear_error(tmp_path, fuzz_ledger):
    """100 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("movielens")
    outcomes, errors = ledger.outcomes, ledger.errors

    @settings(fuzz_settings(100, database=None, derandomize=True, suppress_health_check=list(HealthCheck)))
    @given(body=st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])),
                         min_size=8, max_size=40),
           cut_end=st.booleans(),
           users=st.integers(0, 5).map(lambda i: [USERS, b"1::F::1::10::48067\n" + b"\xff" * i][i > 3]),
           movies=st.sampled_from([MOVIES, MOVIES, MOVIES, MOVIES.replace(b"|", b"||", 1), b"\x00::\x01"]),
           split=st.sampled_from(["random", "time"]), strict=st.integers(0, 4).map(lambda i: i == 4))
    def run(body, cut_end, users, movies, split, strict):
        with ledger.example():
            _run(body, cut_end, users, movies, split, strict)

    def _run(body, cut_end, users, movies, split, strict):
        data = b"".join(line + end for line, end in body)
        if cut_end and body:
            data = data[: -len(body[-1][1])]
        d = write(Path(tempfile.mkdtemp(dir=tmp_path)), data, users, movies)
        src = source(d, split=split, strict=strict, ratios=[0.34, 0.33, 0.33])
        try:
            tables = read_all(src)
        except (DataError, ConfigError) as e:
            assert str(e).startswith("movielens: ")
            outcomes["clear error"] += 1
            errors[re.sub(r"/\S+", "", str(e))[:60]] += 1
            return
        n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        kept = sorted(n for t in tables.values() for n in t.column("line").to_pylist())
        bad = rejected(src)
        assert len(set(kept)) == len(kept) and not set(kept) & set(bad) and len(set(bad)) == len(bad)
        assert sorted(kept + bad) == list(range(1, n_lines + 1))  # every line: a row or a rejection, once
        assert not (strict and bad)
        outcomes["rows, some rejected" if bad else "rows"] += 1

    run()
    assert sum(outcomes.values()) == ledger.examples == fuzz_examples(100)
    assert outcomes["rows"] + outcomes["rows, some rejected"] >= 10
