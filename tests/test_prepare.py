"""The preparation step: train-only vocabularies, OOV and padding, rejected rows, atomic caches."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from repro.data.dataset import PreparedDataset
from repro.data import prepare as prepare_module
from repro.data.prepare import PrepareConfig, prepare
from repro.data.source import RawField
from repro.errors import DataError


class TinySource:
    """A hand-made source whose expected encoding can be written down."""

    name = "tiny"
    split_protocol = "fixed"
    label = "y"
    weight = None
    truth_columns = ()

    def __init__(self, fail_at: str | None = None):
        self.fail_at = fail_at
        self.calls = 0
        self.data = {
            "train": {"shop": ["a", "b", "a", "c", "a", "b", None, "d"], "x": [1.0, 2, 3, 4, 5, 6, 7, 8],
                      "y": [0, 1, 0, 0, 1, 0, 1, 0]},
            "valid": {"shop": ["a", "z", "z", "b", "a"], "x": [1.0, 2, 3, 4, 5], "y": [1, 0, None, 7, 0.5]},
            "test": {"shop": ["d", "c", "a", "q"], "x": [1.0, 2, 3, None], "y": [0, 1, 0, 1]},
        }

    def fields(self):
        return [RawField("shop", "categorical", ("ad",)), RawField("x", "dense", ("bid",))]

    def fingerprint(self):
        return "tiny-v1"

    def describe(self):
        return {}

    def expected_rows(self, split):
        return None

    def chunks(self, split):
        self.calls += 1
        if split == self.fail_at:
            raise RuntimeError("source died mid-way")
        d = self.data[split]
        yield pa.table({"shop": pa.array(d["shop"]), "x": pa.array(d["x"], pa.float64()), "y": pa.array(d["y"], pa.float64())})


@pytest.fixture
def tiny(tmp_path):
    root = prepare(TinySource(), PrepareConfig(min_count=2, cache_root=str(tmp_path)), verbose=False)
    return PreparedDataset(root)


def test_vocabulary_is_fitted_on_train_by_descending_frequency(tiny):
    spec = tiny.feature_map.field("shop")
    # train counts: a=3, b=2, c=1, d=1 -> kept (min_count 2): a->1, b->2; OOV = 3; pad 0.
    assert spec.vocab_size == 4 and spec.oov_index == 3
    assert tiny.column("train", "shop").tolist() == [1, 2, 1, 3, 1, 2, 0, 3]
    # "z" never occurs in train: OOV, although it occurs twice in valid.
    assert tiny.column("test", "shop").tolist() == [3, 3, 1, 3]
    # [missing, a, b, OOV (c and d)]: the one missing train value is counted at index 0.
    np.testing.assert_array_equal(tiny.frequencies["shop"], [1, 3, 2, 2])


def test_rows_with_bad_labels_are_rejected_and_counted(tiny):
    assert tiny.provenance["rows"] == {"train": 8, "valid": 2, "test": 4}
    assert tiny.provenance["rejected_rows"]["valid"] == 3  # missing, 7 and 0.5: labels must be 0/1
    assert tiny.column("valid", "shop").tolist() == [1, 3]


def test_missing_dense_values_become_zero_and_roles_are_kept(tiny):
    assert tiny.column("test", "x").tolist() == [1.0, 2.0, 3.0, 0.0]
    assert tiny.feature_map.by_role("bid").name == "x"
    assert tiny.feature_map.by_role("scene") is None


def test_second_prepare_reuses_the_cache(tmp_path):
    src = TinySource()
    cfg = PrepareConfig(min_count=2, cache_root=str(tmp_path))
    first = prepare(src, cfg, verbose=False)
    calls = src.calls
    assert prepare(src, cfg, verbose=False) == first and src.calls == calls


def test_a_killed_preparation_leaves_nothing_that_looks_finished(tmp_path):
    cfg = PrepareConfig(min_count=1, cache_root=str(tmp_path))
    with pytest.raises(RuntimeError):
        prepare(TinySource(fail_at="test"), cfg, verbose=False)
    assert not any((p / "DONE").exists() for p in tmp_path.iterdir())
    root = prepare(TinySource(), cfg, verbose=False)  # a retry completes
    assert (root / "DONE").exists()


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no prepared data set"):
        PreparedDataset(tmp_path / "nowhere")


def test_corrupt_parquet_names_the_file(tiny):
    (tiny.root / "valid.parquet").write_bytes(b"this is not parquet")
    fresh = PreparedDataset(tiny.root)
    with pytest.raises(DataError, match="valid.parquet"):
        next(fresh.batches("valid", 2))


def test_provenance_fingerprints_the_files(tiny):
    prov = json.loads((tiny.root / "provenance.json").read_text())
    assert set(prov["file_sha256"]) == {"train.parquet", "valid.parquet", "test.parquet"}
    assert prov["split_protocol"] == "fixed" and len(prov["fingerprint"]) == 16


class TinyWithExtraSplit(TinySource):
    """A source that declares a split of its own (as the world declares ``test_random``)."""

    splits = ("train", "valid", "test", "extra")

    def __init__(self, **kw):
        super().__init__(**kw)
        self.data["extra"] = {"shop": ["b", "zz", "zz", "a"], "x": [1.0, 2, 3, 4], "y": [1, 0, 2, 0]}

    def fingerprint(self):
        return "tiny-extra-v1"


def test_every_declared_split_is_prepared_with_the_train_vocabulary(tmp_path):
    data = PreparedDataset(prepare(TinyWithExtraSplit(), PrepareConfig(min_count=2, cache_root=str(tmp_path)),
                                   verbose=False))
    assert data.splits == ("train", "valid", "test", "extra")
    assert data.provenance["rows"] == {"train": 8, "valid": 2, "test": 4, "extra": 3}
    assert data.provenance["rejected_rows"]["extra"] == 1
    # "zz" (twice in extra, never in train) is OOV; the vocabulary and frequencies are train's alone.
    assert data.column("extra", "shop").tolist() == [2, 3, 1]
    np.testing.assert_array_equal(data.frequencies["shop"], [1, 3, 2, 2])
    assert data.num_rows("extra") == 3 and next(data.batches("extra", 8))["label"].tolist() == [1, 0, 0]
    assert "extra.parquet" in data.provenance["file_sha256"]
    # A declared split whose file is gone is an error that names it.
    (data.root / "extra.parquet").unlink()
    with pytest.raises(DataError, match="extra"):
        PreparedDataset(data.root)


def test_a_source_without_a_training_split_is_refused(tmp_path):
    src = TinySource()
    src.splits = ("valid", "test")
    with pytest.raises(DataError, match="train"):
        prepare(src, PrepareConfig(cache_root=str(tmp_path)), verbose=False)


def test_a_source_that_declares_no_splits_gets_train_valid_test(tiny):
    assert tiny.splits == ("train", "valid", "test")


# -- the streaming machinery (issue 10): one lookup per field, one read per file, prefetching ----

def _index_in_codes(raw: pa.Array, vocab: pa.Array) -> np.ndarray:
    """The reference encoding: FuxiCTR's semantics through pyarrow's own set lookup."""
    idx = pc.index_in(raw, value_set=vocab)
    return np.asarray(pc.if_else(pc.is_null(raw), 0, pc.fill_null(pc.add(idx, 1), len(vocab) + 1)))


@pytest.mark.parametrize("kind", ["text", "int"])
def test_vocabulary_lookup_equals_pyarrows_set_lookup(kind):
    rng = np.random.default_rng(0)
    values = rng.integers(-50, 400, size=5_000)
    raw = pa.array([None if v % 17 == 0 else (f"v{v:x}" if kind == "text" else int(v)) for v in values])
    vocab = pa.array(sorted({(f"v{v:x}" if kind == "text" else int(v)) for v in values[:300] if v % 17}, key=str))
    codes, hashes = prepare_module.VocabLookup(vocab).encode(pa.chunked_array([raw[:1234], raw[1234:]]))
    np.testing.assert_array_equal(codes, _index_in_codes(raw, vocab))
    np.testing.assert_array_equal(hashes, prepare_module.raw_hash(raw))


def test_a_hash_collision_never_mis_encodes_a_value(monkeypatch):
    """With a deliberately weak hash (7 buckets), values outside the vocabulary that share a
    vocabulary value's hash stay OOV, and a vocabulary whose own values collide falls back to the
    exact set lookup: the codes equal pyarrow's either way."""
    strong = prepare_module.raw_hash

    def weak(values):
        h = strong(values)
        return np.where(h == 0, 0, h % 7 + 1)

    monkeypatch.setattr(prepare_module, "raw_hash", weak)
    raw = pa.array([f"x{i}" for i in range(200)] + [None, "x3"])
    for vocab in (pa.array(["x3"]), pa.array(["x3", "x5", "x8", "x100"])):  # no collision / collisions
        lookup = prepare_module.VocabLookup(vocab)
        assert lookup.exact == (len(vocab) == 1)
        np.testing.assert_array_equal(lookup.encode(raw)[0], _index_in_codes(raw, vocab))


def test_text_hashes_are_pinned_and_ignore_layout():
    """The cache's raw column must be the same on every machine and for every chunking: pinned
    values (little-endian words, BLAKE2b past 32 bytes), sliced, binary and chunked inputs agree."""
    values = ["", "a", "68fd1e64", "x" * 32, "y" * 33, "é"]
    h = prepare_module.raw_hash(pa.array(values))
    assert h.tolist() == PINNED_TEXT_HASHES
    assert len(set(h.tolist())) == len(values) and (h > 0).all()
    padded = pa.array(["pad", *values])
    np.testing.assert_array_equal(prepare_module.raw_hash(padded.slice(1)), h)
    np.testing.assert_array_equal(prepare_module.raw_hash(pa.array([v.encode() for v in values], pa.binary())), h)
    np.testing.assert_array_equal(prepare_module.raw_hash(pa.array(values, pa.large_string())), h)
    # A value padded with zero bytes is another value (the length is hashed too).
    padded_a = prepare_module.raw_hash(pa.array(["a", "a\x00"]))
    assert padded_a[0] != padded_a[1]


# What the implementation gave when the scheme was introduced (PREPARE_VERSION 4); checked against
# the pure-Python restatement below, so neither can drift alone.
PINNED_TEXT_HASHES = [7852832225502881074, 8513358678897720993, 3809499273368307691, 6124950751942431708,
                      3124142640041788085, 5973529187379616538]


def _reference_text_hash(text: str) -> int:
    """The documented scheme in plain Python integers: SplitMix64's finaliser chained over the
    length and four little-endian words of the zero-padded UTF-8 bytes; BLAKE2b-64 past 32 bytes."""
    m64 = (1 << 64) - 1

    def mix(x):
        x = (x + 0x9E3779B97F4A7C15) & m64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m64
        return x ^ (x >> 31)

    data = text.encode()
    if len(data) > 32:
        h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    else:
        h = mix(len(data) ^ 0x243F6A8885A308D3)
        padded = data.ljust(32, b"\0")
        for j in range(4):
            h = mix(h ^ int.from_bytes(padded[8 * j:8 * j + 8], "little"))
    return (h & (2**63 - 1)) or 1


def test_the_pinned_text_hashes_follow_the_documented_scheme():
    values = ["", "a", "68fd1e64", "x" * 32, "y" * 33, "é"]
    assert [_reference_text_hash(v) for v in values] == PINNED_TEXT_HASHES


def test_prefetched_keeps_order_and_raises_where_the_producer_failed():
    assert list(prepare_module.prefetched(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        yield 2
        raise ValueError("chunk 3 is malformed")

    got = []
    with pytest.raises(ValueError, match="chunk 3"):
        for item in prepare_module.prefetched(broken()):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_closes_the_producer_when_the_consumer_stops():
    closed = []

    def chunks():
        try:
            for i in range(1_000):
                yield i
        finally:
            closed.append(True)

    for item in prepare_module.prefetched(chunks(), depth=1):
        if item == 3:
            break
    assert closed == [True]


def test_merging_value_counts_early_changes_nothing(tmp_path, monkeypatch):
    whole = prepare(TinySource(), PrepareConfig(min_count=2, cache_root=str(tmp_path / "a")), verbose=False)
    monkeypatch.setattr(prepare_module, "MERGE_COUNTS_AT", 0)
    merged = prepare(TinySource(), PrepareConfig(min_count=2, cache_root=str(tmp_path / "b")), verbose=False)
    a, b = (json.loads((r / "provenance.json").read_text())["file_sha256"] for r in (whole, merged))
    assert a == b


class OnePassSource(TinySource):
    """Offers ``split_chunks``: preparation must read it once for all splits, not once per split."""

    def __init__(self):
        super().__init__()
        self.passes = 0

    def split_chunks(self, splits):
        self.passes += 1
        for split in splits:
            yield from ((split, chunk) for chunk in super().chunks(split))


def test_every_split_is_read_once_and_a_source_with_split_chunks_in_one_pass(tmp_path, tiny):
    plain = TinySource()
    prepare(plain, PrepareConfig(min_count=2, cache_root=str(tmp_path / "plain")), verbose=False)
    assert plain.calls == 3  # pass 2 reads the spool, not the source
    source = OnePassSource()
    root = prepare(source, PrepareConfig(min_count=2, cache_root=str(tmp_path / "one")), verbose=False)
    assert source.passes == 1 and source.calls == 3
    assert not (root / "spool").exists()
    assert json.loads((root / "provenance.json").read_text())["file_sha256"] == \
        json.loads((tiny.root / "provenance.json").read_text())["file_sha256"]


@pytest.mark.parametrize("name", ["label", "weight", "shop__raw"])
def test_a_field_that_would_overwrite_another_cache_column_is_refused(tmp_path, name):
    class Clashing(TinySource):
        def fields(self):
            return [RawField("shop", "categorical"), RawField(name, "dense")]

    with pytest.raises(DataError, match=f"{name!r}"):
        prepare(Clashing(), PrepareConfig(cache_root=str(tmp_path)), verbose=False)


def test_rejected_rows_are_listed_in_the_rejects_file(tmp_path):
    class Malformed(TinySource):
        rejected = {"test": [3, 9, 12]}  # what a reader's parser skipped, by line number

    root = prepare(Malformed(), PrepareConfig(min_count=2, cache_root=str(tmp_path)), verbose=False)
    ledger = json.loads((root / prepare_module.REJECTS_FILE).read_text())
    assert ledger == {
        "valid": {"rejected": 3, "missing_or_invalid_label": 3, "malformed_lines": 0, "first_malformed_line_numbers": []},
        "test": {"rejected": 3, "missing_or_invalid_label": 0, "malformed_lines": 3,
                 "first_malformed_line_numbers": [3, 9, 12]},
    }
    assert json.loads((root / "provenance.json").read_text())["rejected_rows"] == {"train": 0, "valid": 3, "test": 3}


def test_unsigned_integers_hash_beyond_int64_and_agree_below_it():
    big = prepare_module.raw_hash(pa.array([2**64 - 1, 2**63, 5, None], pa.uint64()))
    assert (big[:3] > 0).all() and big[3] == 0 and len(set(big[:3].tolist())) == 3
    assert big[2] == prepare_module.raw_hash(pa.array([5], pa.int64()))[0]
