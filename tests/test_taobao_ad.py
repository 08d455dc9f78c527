"""The Taobao ad CSV reader on the real FuxiCTR tiny_csv rows, and on a file with broken rows."""

import shutil

import pytest

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import DataError
from repro.registry import ROOT, SOURCES

SAMPLES = ROOT.parent / "shared" / "ctr_samples" / "fuxictr_tiny_csv"


def source(data_dir, **kw):
    return SOURCES.get("taobao_ad").factory(SOURCES.config("taobao_ad", {"data_dir": str(data_dir), **kw}))


@pytest.fixture
def sample_dir(tmp_path):
    if not SAMPLES.exists():
        pytest.skip(f"shared sample files not found at {SAMPLES} (../shared must sit beside the checkout)")
    for split in ("train", "valid", "test"):
        shutil.copy(SAMPLES / f"{split}_sample.csv", tmp_path / f"{split}.csv")
    return tmp_path


def test_reads_the_real_sample_rows(sample_dir, tmp_path):
    data = PreparedDataset(prepare(source(sample_dir), PrepareConfig(cache_root=str(tmp_path / "c")), verbose=False))
    assert data.provenance["rows"] == {"train": 100, "valid": 100, "test": 100}
    assert data.column("train", "label").sum() == 4  # the sample has 4 clicks per file
    fm = data.feature_map
    assert fm.by_role("user").name == "userid" and fm.by_role("scene").name == "pid"
    b = next(data.batches("train", 100))
    assert b["cat"].shape == (100, 15) and b["dense"].shape == (100, 1)
    # pvalue_level is empty in some rows: missing maps to padding 0, never to a real value.
    col = data.column("train", "pvalue_level")
    assert (col == 0).any() and (col > 0).any()


def test_malformed_rows_are_skipped_and_counted(sample_dir, tmp_path, capsys):
    lines = (sample_dir / "train.csv").read_text().splitlines()
    lines.insert(5, "0,too,few,columns")
    (sample_dir / "train.csv").write_text("\n".join(lines) + "\n")
    data = PreparedDataset(prepare(source(sample_dir), PrepareConfig(cache_root=str(tmp_path / "c")), verbose=False))
    assert data.provenance["rows"]["train"] == 100
    assert data.provenance["rejected_rows"]["train"] == 1
    assert "train: skipped 1 row(s) (wrong field count), e.g. line(s) [6]" in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="train file not found"):
        prepare(source(tmp_path), PrepareConfig(cache_root=str(tmp_path / "c")), verbose=False)
