"""Staleness follows the inputs: config, data, executed code, numeric library versions; nothing else."""

import json
import shutil
from pathlib import Path

import pytest

import repro.environment as env
import repro.run as run_module
from repro.registry import ROOT
from repro.run import execute, inputs, resolve, staleness


# -- the code a run executes ------------------------------------------------------------------
@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A miniature project: the core (repro/run.py's _run -> repro/train.py), two methods, a report."""
    files = {
        "repro/__init__.py": "",
        "repro/run.py": ("from repro.train import fit\nimport numpy\n\ndef _run():\n    return fit()\n\n"
                         "def staleness():\n    return 0\n"),
        "repro/train.py": ('from .layers import MLP\n\ndef fit():\n    """Fit."""\n    from repro import io\n'
                           "    return io.X + MLP\n"),
        "repro/layers.py": "MLP = 1\n",
        "repro/io.py": "X = 1\n",
        "repro/report.py": "from repro.run import *\n",
        "methods/__init__.py": "",
        "methods/a.py": "from methods import common\nfrom repro.layers import MLP\n\ndef model():\n    return common.Y + MLP\n",
        "methods/common.py": "Y = 2\n",
        "methods/b.py": "Z = 3\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(env, "ROOT", tmp_path)
    monkeypatch.setattr(env, "CORE_ENTRY", tmp_path / "repro" / "run.py")
    env.code_identity.cache_clear()
    yield tmp_path
    env.code_identity.cache_clear()


def identity(tree: Path) -> dict:
    env.code_identity.cache_clear()
    return env.code_identity(str(tree / "methods" / "a.py"))


def test_the_executed_code_is_what_the_run_reaches_plus_its_own_modules(fake_tree):
    files = set(identity(fake_tree)["files"])
    # not repro/__init__.py and methods/__init__.py: empty, they hold nothing to identify
    assert files == {"repro/run.py", "repro/train.py", "repro/layers.py", "repro/io.py",
                     "methods/a.py", "methods/common.py"}
    assert set(identity(fake_tree)["files_raw"]) == files


@pytest.mark.parametrize("edited, old, new, triggers", [
    ("repro/train.py", "io.X + MLP", "io.X - MLP", True),   # core, reached from _run
    ("repro/io.py", "X = 1", "X = 2", True),                 # core, imported inside a function
    ("methods/a.py", "common.Y + MLP", "common.Y * MLP", True),  # the run's own model
    ("methods/common.py", "Y = 2", "Y = 3", True),           # what the model uses
    ("methods/b.py", "Z = 3", "Z = 4", False),               # an unrelated method
    ("repro/report.py", "*", "staleness", False),            # the report
    ("repro/run.py", "return 0", "return 1", False),         # bookkeeping the computation never calls
    ("repro/train.py", "io.X + MLP\n", "io.X + MLP  # why\n# edited\n", False),  # a comment
    ("repro/train.py", '"""Fit."""', '"""Fit the model: a docstring edit."""', False),
])
def test_an_edit_triggers_exactly_when_the_run_can_compute_differently(fake_tree, edited, old, new, triggers):
    before = identity(fake_tree)
    text = (fake_tree / edited).read_text()
    assert old in text
    (fake_tree / edited).write_text(text.replace(old, new))
    after = identity(fake_tree)
    assert (before["fingerprint"] != after["fingerprint"]) is triggers
    if triggers:
        assert before["files"][edited] != after["files"][edited]
    if edited in before["files_raw"]:
        assert before["files_raw"][edited] != after["files_raw"][edited]  # the record still tells


def test_a_new_method_file_changes_nothing(fake_tree):
    before = identity(fake_tree)
    (fake_tree / "methods" / "new_method.py").write_text("W = 4\n")
    assert identity(fake_tree) == before


# -- a real run: every trigger and non-trigger -------------------------------------------------
@pytest.fixture
def done_run(run_config):
    cfg = run_config()
    execute(cfg)
    return cfg, resolve(cfg)


def test_a_done_run_with_unchanged_inputs_is_fresh(done_run):
    cfg, run = done_run
    assert staleness(run) == []
    # cosmetic: the progress flag is not an input
    assert staleness(resolve({**cfg, "train": {**cfg["train"], "progress": True}})) == []


def test_the_thread_count_is_no_input(done_run):
    """A scheduling input: kept in the manifest's config, out of the hash and the folder's name."""
    cfg, run = done_run
    other = resolve({**cfg, "train": {**cfg["train"], "threads": run.config["train"]["threads"] + 3}})
    assert other.run_dir == run.run_dir and other.config_hash == run.config_hash
    assert other.config["train"]["threads"] == run.config["train"]["threads"] + 3
    assert staleness(other) == []


def test_a_changed_config_is_stale(done_run):
    cfg, _ = done_run
    other = resolve({**cfg, "train": {**cfg["train"], "lr": 0.02}})
    # another config is another run folder: it has no result yet
    assert staleness(other) == ["no run yet"]
    # the same folder with another config (e.g. a changed default) says so
    manifest = json.loads((resolve(cfg).run_dir / "manifest.json").read_text())
    other.run_dir = resolve(cfg).run_dir
    assert any("config" in r for r in staleness(other, manifest=manifest))


def test_auto_device_is_resolved_before_hashing(run_config):
    cfg = run_config()
    auto = resolve({**cfg, "train": {**cfg["train"], "device": "auto"}})
    assert auto.config["train"]["device"] in ("cpu", "cuda")
    if auto.config["train"]["device"] == "cpu":
        assert auto.config_hash == resolve(cfg).config_hash


def test_changed_numeric_library_versions_make_a_run_stale(done_run, monkeypatch):
    _, run = done_run
    real = run_module.package_versions
    monkeypatch.setattr(run_module, "package_versions", lambda: {**real(), "torch": "9.9.9"})
    assert any("torch" in r for r in staleness(run))
    monkeypatch.setattr(run_module, "package_versions", lambda: {**real(), "matplotlib": "0.0"})
    assert staleness(run) == []  # recorded, not an input


def test_changed_code_makes_a_run_stale_and_names_the_file(done_run, monkeypatch):
    _, run = done_run
    real = run_module.code_identity

    def edited(*files):
        ident = real(*files)
        return {**ident, "fingerprint": "0" * 16, "files": {**ident["files"], "repro/train.py": "edited"}}

    monkeypatch.setattr(run_module, "code_identity", edited)
    reasons = staleness(run)
    assert len(reasons) == 1 and "repro/train.py" in reasons[0]


def test_a_preparation_change_that_builds_the_same_bytes_reruns_nothing(done_run, monkeypatch):
    """A refactor of the preparation moves the cache key (its code digest is in it); the ledger
    does not know the new key, so the plan cannot tell; execute() builds the cache, finds the
    content it recorded before and reruns nothing."""
    import repro.data.prepare as prepare_module

    cfg, run = done_run
    before = json.loads((run.run_dir / "manifest.json").read_text())
    real = prepare_module.prepare_code_digest
    monkeypatch.setattr(prepare_module, "prepare_code_digest", lambda source: "refactored-" + real(source))
    assert staleness(run) == ["the data preparation changed: its cache must be built to tell"]
    assert execute(cfg)["finished"] == before["finished"]  # cached: the same content
    assert staleness(run) == []  # the ledger knows the new key now


def test_a_manifest_without_inputs_is_stale(done_run):
    _, run = done_run
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    manifest.pop("inputs")
    assert staleness(run, manifest=manifest) == ["its manifest predates input tracking"]


# -- data: a replaced raw file changes the data key ---------------------------------------------
SAMPLES = ROOT.parent / "shared" / "ctr_samples" / "fuxictr_tiny_csv"


def test_replacing_a_raw_data_file_makes_runs_stale(tmp_path, run_config):
    if not SAMPLES.exists():
        pytest.skip(f"shared sample files not found at {SAMPLES} (../shared must sit beside the checkout)")
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(SAMPLES / f"{split}_sample.csv", raw / f"{split}.csv")
    cfg = run_config()
    cfg["data"] = {"name": "taobao_ad", "min_count": 1, "cache_root": str(tmp_path / "cache"), "data_dir": str(raw)}
    from repro.data.ledger import record
    from repro.run import ledger_path, open_data

    run = resolve(cfg)
    record(open_data(run.config, verbose=False).root, ledger=ledger_path(run))
    before = inputs(run)
    manifest = {"status": "done", "inputs": before}
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.json").write_text("{}")
    assert before["data"] is not None and staleness(run, manifest=manifest) == []
    lines = (raw / "test.csv").read_text().splitlines()
    (raw / "test.csv").write_text("\n".join(lines[:-1]) + "\n")  # the user replaced a file: one row fewer
    assert staleness(run, manifest=manifest) == ["the data preparation changed: its cache must be built to tell"]
    record(open_data(run.config, verbose=False).root, ledger=ledger_path(run))  # what execute() does first
    after = inputs(run)
    assert before["data"] != after["data"] and before["code"] == after["code"]
    assert before["config_hash"] == after["config_hash"]
    reasons = staleness(run, manifest=manifest)
    assert len(reasons) == 1 and "data changed" in reasons[0]


# -- data.strict holds on a cache hit --------------------------------------------------------
def test_strict_fails_on_a_cache_a_lenient_run_built_from_bad_lines(tmp_path, run_config):
    import sys

    from repro.data.prepare import PrepareConfig, prepare
    from repro.errors import DataError
    from repro.registry import SOURCES, load_plugins

    load_plugins()
    criteo = sys.modules["adrepro_datasets.criteo"]  # datasets/ is loaded by path, never imported
    (tmp_path / "raw").mkdir()
    placed = criteo.write_criteo_sample(tmp_path / "raw" / "train.txt", 2_000, seed=8, bad_label=2, wrong_fields=1)
    first_bad = min(n for lines in placed.values() for n in lines)
    cfg = run_config()
    cfg["data"] = {"name": "criteo", "min_count": 1, "cache_root": str(tmp_path / "cache"),
                   "data_dir": str(tmp_path / "raw")}
    lenient = prepare(SOURCES.build("criteo", {"data_dir": str(tmp_path / "raw")}),
                      PrepareConfig(min_count=1, cache_root=str(tmp_path / "cache")), verbose=False)
    strict = {**cfg, "data": {**cfg["data"], "strict": True}}
    assert resolve(strict).config["data"]["strict"] is True
    with pytest.raises(DataError, match=rf"train\.txt: line {first_bad}: a malformed line"):
        execute(strict)
    failed = json.loads((resolve(strict).run_dir.with_name("seed0.failed") / "manifest.json").read_text())
    assert failed["status"] == "failed" and "data.strict=true" in failed["reason"]
    assert str(lenient) in failed["reason"]  # the same cache: strict is not part of its key
    run_module.check_strict_data(resolve(cfg).config)  # lenient: the check does nothing


def test_strict_passes_on_a_clean_cache(tmp_path):
    import sys

    from repro.registry import load_plugins

    load_plugins()
    criteo = sys.modules["adrepro_datasets.criteo"]
    (tmp_path / "raw").mkdir()
    criteo.write_criteo_sample(tmp_path / "raw" / "train.txt", 2_000, seed=8)
    config = resolve({"data": {"name": "criteo", "min_count": 1, "cache_root": str(tmp_path / "cache"),
                               "data_dir": str(tmp_path / "raw"), "strict": True},
                      "train": {"device": "cpu"}}).config
    run_module.check_strict_data(config)  # raises nothing
