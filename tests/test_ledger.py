"""The data identity: a run depends on its cache's content, the cache key on the normalised code."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import world
from repro.data import ledger
from repro.data import prepare as prepare_module
from repro.data.prepare import PrepareConfig, cache_key, normalised_digest, prepare
from repro.errors import DataError
from repro.io import file_digest
from repro.registry import ROOT

SMALL = {"requests": 2_000, "random_requests": 500}  # a few seconds to prepare


def small_world():
    return world(**SMALL)


def cache_files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The small world prepared twice, the second time under a refactored preparation (another
    prep-code digest, so another cache key and a fresh build), and once with another min_count."""
    cache_root = tmp_path_factory.mktemp("ledger-cache")
    cfg = PrepareConfig(min_count=2, cache_root=str(cache_root))
    first = prepare(small_world(), cfg, verbose=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prepare_module, "prepare_code_digest", lambda source: "a-refactor-of-the-preparation")
        refactored_key = cache_key(small_world(), cfg)
        refactored = prepare(small_world(), cfg, verbose=False)
    other = prepare(small_world(), PrepareConfig(min_count=1, cache_root=str(cache_root)), verbose=False)
    return {"first": first, "refactored": refactored, "refactored_key": refactored_key, "other_min_count": other,
            "cfg": cfg}


def test_a_preparation_refactor_that_builds_the_same_bytes_keeps_the_content_digest(built, tmp_path):
    first, refactored = built["first"], built["refactored"]
    assert refactored != first and built["refactored_key"] != cache_key(small_world(), built["cfg"])
    assert ledger.content_digest(refactored) == ledger.content_digest(first)
    # The plan's view: each key recorded, the run's identity (the content) is the same under both codes.
    book = tmp_path / "ledger.json"
    assert ledger.record(first, book) == ledger.record(refactored, book)
    assert ledger.data_identity(small_world(), built["cfg"], book) == ledger.content_digest(first)
    assert set(ledger.load_ledger(book)) == {first.name.split("-")[-1], built["refactored_key"]}


def test_building_a_cache_again_writes_the_same_bytes_but_for_the_provenance(built):
    """Determinism: parquet (data and truth), frequencies and feature map are byte-identical; the
    provenance differs in the build's seconds and the code identity only."""
    first, refactored = cache_files(built["first"]), cache_files(built["refactored"])
    differ = {name for name in first if first[name] != refactored.get(name)}
    assert set(first) == set(refactored) and differ <= {"provenance.json"}
    a, b = (json.loads((built[k] / "provenance.json").read_text()) for k in ("first", "refactored"))
    assert {k for k in a if a[k] != b[k]} <= set(ledger.PROVENANCE_EXCLUDED)


def test_a_behaviour_change_of_the_preparation_gives_another_content_digest(built):
    assert ledger.content_digest(built["other_min_count"]) != ledger.content_digest(built["first"])


@pytest.fixture
def copy(built, tmp_path):
    out = tmp_path / built["first"].name
    shutil.copytree(built["first"], out)
    return out


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["train.parquet", "truth/valid.parquet", "feature_map.json", "test_random.parquet"])
def test_the_content_digest_covers_every_cache_file(copy, name):
    before = ledger.content_digest(copy)
    flip_last_byte(copy / name)
    assert ledger.content_digest(copy) != before


def test_the_content_digest_covers_the_frequencies_not_their_zip_container(copy):
    before = ledger.content_digest(copy)
    with np.load(copy / "frequencies.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(copy / "frequencies.npz", **arrays)  # other container bytes, same arrays
    assert ledger.content_digest(copy) == before
    arrays["ad_id"] = arrays["ad_id"] + 1
    np.savez(copy / "frequencies.npz", **arrays)
    assert ledger.content_digest(copy) != before


def test_the_content_digest_ignores_times_paths_settings_and_code_in_the_provenance_but_not_its_rows(copy):
    before = ledger.content_digest(copy)
    provenance = json.loads((copy / "provenance.json").read_text())
    changed = {**provenance, "seconds": provenance["seconds"] + 100, "source_fingerprint": "elsewhere",
               "cache_key": "other", "prepare_code": "refactored",
               "source_config": {**provenance["source_config"], "data_dir": "/elsewhere", "strict": True}}
    (copy / "provenance.json").write_text(json.dumps(changed))
    assert ledger.content_digest(copy) == before
    changed["rows"] = {**changed["rows"], "train": changed["rows"]["train"] + 1}
    (copy / "provenance.json").write_text(json.dumps(changed))
    assert ledger.content_digest(copy) != before


def test_an_extra_file_in_the_cache_counts_and_an_unfinished_cache_has_no_digest(copy):
    before = ledger.content_digest(copy)
    (copy / "truth" / "extra.parquet").write_bytes(b"x")
    assert ledger.content_digest(copy) != before
    (copy / "DONE").unlink()
    with pytest.raises(DataError, match="no DONE marker"):
        ledger.content_digest(copy)


# -- the ledger --------------------------------------------------------------------------------


def test_an_unknown_cache_key_has_no_identity(built, tmp_path):
    book = tmp_path / "ledger.json"
    assert ledger.data_identity(small_world(), built["cfg"], book) is None
    ledger.record(built["other_min_count"], book)
    assert ledger.data_identity(small_world(), built["cfg"], book) is None
    assert ledger.data_identity(small_world(), PrepareConfig(min_count=1), book) == \
        ledger.content_digest(built["other_min_count"])


def test_record_refuses_another_digest_for_a_known_key(built, copy, tmp_path):
    book = tmp_path / "ledger.json"
    digest = ledger.record(built["first"], book)
    flip_last_byte(copy / "train.parquet")  # the same key, other bytes
    with pytest.raises(DataError, match="the same key built other bytes"):
        ledger.record(copy, book)
    assert ledger.load_ledger(book)[ledger.cache_key_of(copy)]["content"] == digest  # left as it was
    assert ledger.record(copy, book, replace=True) != digest
    entry = ledger.load_ledger(book)[ledger.cache_key_of(copy)]
    assert entry["source"] == "world" and entry["scale"] == "smoke" and entry["min_count"] == 2


def test_a_cache_built_before_provenance_named_its_key_is_keyed_by_its_folder(copy):
    provenance = json.loads((copy / "provenance.json").read_text())
    key = provenance.pop("cache_key")
    (copy / "provenance.json").write_text(json.dumps(provenance))
    assert ledger.cache_key_of(copy) == key == copy.name.split("-", 1)[1]


# -- the normalised code digest ---------------------------------------------------------------


def test_comments_docstrings_and_formatting_do_not_change_the_code_digest():
    code = b'def f(x):\n    return max(x, 1)\n'
    same = b'"""Module."""\n\n# a comment\ndef f(x):  # why\n    """Doc."""\n\n    return max(x,\n               1)\n'
    assert normalised_digest(same) == normalised_digest(code)
    assert normalised_digest(b'def f(x):\n    return max(x, 2)\n') != normalised_digest(code)


@pytest.mark.parametrize("path", ["datasets/world.py", "repro/data/prepare.py", "repro/data/featuremap.py"])
def test_a_comment_edit_of_the_preparation_keeps_the_cache_key_a_code_edit_does_not(path, monkeypatch):
    cfg = PrepareConfig(min_count=2)
    before = cache_key(small_world(), cfg)
    real = Path.read_bytes
    edited = (ROOT / path).resolve()

    def read_bytes_with(suffix: bytes):
        monkeypatch.setattr(Path, "read_bytes", lambda p: real(p) + (suffix if p.resolve() == edited else b""))

    read_bytes_with(b"\n# a comment that changes no byte of any cache\n")
    assert cache_key(small_world(), cfg) == before
    read_bytes_with(b"\nEDITED = 1\n")
    assert cache_key(small_world(), cfg) != before


def test_the_committed_ledger_knows_the_cache_of_every_committed_run():
    """The plan decides a run's data identity from the ledger alone: every data config a committed
    manifest names has its current key there, with a content digest or as unreproduced (run
    `python -m repro.data.ledger build --reuse` after changing the preparation code)."""
    from repro.run import make_source

    known = set(ledger.load_ledger()) | set(ledger.load_unreproduced())
    configs = ledger.manifest_data_configs(ROOT / "results")
    unknown = [recorded for recorded, entry in configs.items()
               if cache_key(make_source(entry["config"]), PrepareConfig(min_count=entry["config"]["data"]["min_count"]))
               not in known]
    assert len(configs) >= 14
    assert not unknown, f"cache keys the manifests recorded whose current key the ledger lacks: {unknown}"


def split_digest(root: Path) -> str:
    """``PreparedDataset.fingerprint``: the digest of the split files, as manifests record it."""
    return json.loads((root / "provenance.json").read_text())["fingerprint"]


def write_manifest(results: Path, name: str, recorded_key: str, fingerprint: str, min_count: int = 2) -> None:
    path = results / "runs" / "exp" / name / "seed0" / "manifest.json"
    path.parent.mkdir(parents=True)
    data = {"name": "world", "min_count": min_count, "drop_roles": [], "teacher": "", "scale": "smoke", "seed": 0, **SMALL}
    path.write_text(json.dumps({"config": {"data": data}, "inputs": {"data": recorded_key},
                                "data": {"fingerprint": fingerprint, "root": f"world-{recorded_key}"}}))


def test_build_records_the_caches_the_manifests_trained_on_and_refuses_a_mismatch(built, tmp_path):
    first = split_digest(built["first"])
    results, cache_root, book = tmp_path / "results", tmp_path / "cache", tmp_path / "ledger.json"
    write_manifest(results, "a", "oldkey1", first)
    write_manifest(results, "b", "oldkey2", "not-the-split-digest", min_count=1)
    shutil.copytree(built["first"], cache_root / "world-oldkey1")  # as built by the previous code, under its key
    out = ledger.build(results, cache_root, book, reuse=True, verbose=False)
    assert out["oldkey1"]["reused"] and out["oldkey1"]["content"] == ledger.content_digest(built["first"])
    assert out["oldkey2"]["content"] is None and not out["oldkey2"]["reused"]  # built now, and it differs
    assert ledger.load_ledger(book) == {out["oldkey1"]["key"]: {"content": out["oldkey1"]["content"], "source": "world",
                                                                "scale": "smoke", "min_count": 2}}
    assert ledger.data_identity(small_world(), built["cfg"], book) == out["oldkey1"]["content"]
    unreproduced = ledger.load_unreproduced(book)[out["oldkey2"]["key"]]
    assert unreproduced["manifest_split_digest"] == "not-the-split-digest"
    assert unreproduced["rebuilt_split_digest"] == out["oldkey2"]["fingerprint"] and unreproduced["runs"] == 1
    assert ledger.data_identity(small_world(), PrepareConfig(min_count=1), book) is None
