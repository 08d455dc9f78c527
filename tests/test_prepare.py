"""The preparation step: train-only vocabularies, OOV and padding, rejected rows, atomic caches."""

import json

import numpy as np
import pyarrow as pa
import pytest

from repro.data.dataset import PreparedDataset
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
