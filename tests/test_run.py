"""Runs: reproducible, cached by config and code, failures recorded, reports built from manifests."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import repro.run as run_module
from repro.errors import ConfigError, TrainingError
from repro.registry import ROOT
from repro.run import execute, resolve


def metrics_of(manifest_cfg):
    run = resolve(manifest_cfg)
    return json.loads((run.run_dir / "metrics.json").read_text()), run


def test_a_run_writes_manifest_and_metrics_and_learns(run_config):
    manifest = execute(run_config())
    assert manifest["status"] == "done"
    for key in ("config", "config_hash", "seed", "code", "packages", "machine", "data", "started", "finished"):
        assert key in manifest, key
    assert manifest["data"]["fingerprint"] and manifest["code"]["fingerprint"]
    metrics, _ = metrics_of(run_config())
    test = metrics["test"]
    assert 0.6 < test["auc"] < metrics["bayes"]["test"]["auc"]
    for key in ("logloss", "gauc_user", "gauc_request", "pcoc", "auc_random"):
        assert key in test
    assert metrics["profile"]["train_samples_per_s"] > 0 and metrics["profile"]["parameters"] > 0


def test_same_seed_same_numbers(run_config, tmp_path):
    a = run_config()
    b = {**run_config(), "results_dir": str(tmp_path / "other")}
    execute(a), execute(b)
    ma, _ = metrics_of(a)
    mb, _ = metrics_of(b)
    assert ma["test"]["auc"] == mb["test"]["auc"] and ma["test"]["logloss"] == mb["test"]["logloss"]


def test_done_runs_are_not_rerun(run_config, monkeypatch):
    execute(run_config())

    def boom(*a, **k):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(run_module, "train", boom)
    assert execute(run_config())["status"] == "done"
    with pytest.raises(AssertionError):
        execute(run_config(), force=True)


def test_nan_loss_fails_clearly_and_keeps_earlier_results(run_config, monkeypatch):
    good = run_config()
    execute(good)
    before, run = metrics_of(good)
    # A forced rerun of the very same run diverges: the earlier result must survive it.
    real_train = run_module.train

    def diverging(model, data, cfg, seed, **kw):
        cfg.lr, cfg.embedding_lr, cfg.grad_clip_norm, cfg.epochs = 1e30, 1e30, 0.0, 3
        return real_train(model, data, cfg, seed, **kw)

    monkeypatch.setattr(run_module, "train", diverging)
    with pytest.raises(TrainingError, match="loss is|non-finite"):
        execute(good, force=True)
    failed = json.loads((run.run_dir.with_name(run.run_dir.name + ".failed") / "manifest.json").read_text())
    assert failed["status"] == "failed" and "TrainingError" in failed["reason"]
    after, _ = metrics_of(good)
    assert before == after
    assert json.loads((run.run_dir / "manifest.json").read_text())["status"] == "done"
    assert not run.run_dir.with_name(run.run_dir.name + ".partial").exists()


def test_unknown_config_keys_are_rejected(run_config):
    with pytest.raises(ConfigError, match="lerning_rate"):
        resolve(run_config(lerning_rate=0.1))
    with pytest.raises(ConfigError, match="unknown data source 'wrld'"):
        resolve({**run_config(), "data": {"name": "wrld"}})
    with pytest.raises(ConfigError, match="bogus"):
        resolve({**run_config(), "bogus": 1})


def test_report_numbers_come_from_manifests(tmp_path, cache_root):
    from repro.experiments import run_experiment
    from repro.report import write_report

    results = tmp_path / "results"
    extra = ["data.scale=smoke", f"data.cache_root={cache_root}", f"results_dir={results}", "train.epochs=1", "train.lr=0.01",
             "train.progress=false", "embedding.dim=4"]
    dirs = run_experiment("baselines_smoke", extra=extra)
    tag = dirs[0].parents[1].name
    assert tag.startswith("baselines_smoke-"), "extra overrides must not write under the experiment's own name"
    md, csv, png = write_report("baselines_smoke", results, tag)
    table = pd.read_csv(csv, index_col=0)
    for label, row in table.iterrows():
        aucs = []
        for manifest in results.glob(f"runs/{tag}/*/seed*/manifest.json"):
            m = json.loads(manifest.read_text())
            if m["label"] == label:
                aucs.append(json.loads((manifest.parent / "metrics.json").read_text())["test"]["auc"])
        assert len(aucs) == row["seeds"] == 2
        assert row["test AUC mean"] == np.mean(aucs)  # unrounded in the CSV
    text = md.read_text()
    assert "Bayes-optimal" in text and "smoke" in text and png.stat().st_size > 10_000


def test_gauc_by_user_groups_raw_users_not_the_oov_bucket(smoke_data):
    fm = smoke_data.feature_map
    assert fm.group_key("user").name == "user_key" and fm.by_role("user").name == "user_id"
    encoded = smoke_data.column("test", "user_id")
    raw = smoke_data.column("test", "user_key")
    oov = fm.field("user_id").oov_index
    assert len(np.unique(raw[encoded == oov])) > 1  # many users share the OOV index


def test_bad_experiment_files_are_config_errors(tmp_path, monkeypatch):
    import repro.experiments as ex

    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "typo.yaml").write_text("runs:\n  - {label: X, override: [model=lr]}\n")
    monkeypatch.setattr(ex, "ROOT", tmp_path)
    with pytest.raises(ConfigError, match="unknown key.*override"):
        ex.load_experiment("typo")
    # A colon inside an unquoted value: yaml's own error, reported as a config error naming the file.
    (tmp_path / "conf" / "experiment" / "colon.yaml").write_text("claims:\n  - source: Yan, \"APG\": a net\n")
    with pytest.raises(ConfigError, match="colon.yaml: not a readable experiment"):
        ex.load_experiment("colon")
    (tmp_path / "conf" / "experiment" / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a mapping of keys"):
        ex.load_experiment("list")


def test_cli_reports_bad_input_in_one_line():
    for cmd, needle in [
        ([sys.executable, "-m", "repro", "+model.hiden_units=[8]", "train.progress=false"], "hiden_units"),
        ([sys.executable, "-m", "repro.experiments", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
    ]:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_interrupted_run_resumes_from_its_checkpoint_and_equals_an_uninterrupted_one(run_config, tmp_path,
                                                                                       monkeypatch, capsys):
    import repro.train as trainer

    whole = {**run_config(epochs=2), "results_dir": str(tmp_path / "whole")}
    execute(whole)
    cut = run_config(epochs=2)
    steps_per_epoch = -(-100_000 // 2048)

    def interrupt(step):
        if step == steps_per_epoch + 5:  # in epoch 2, after the first checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute(cut)
    run = resolve(cut)
    work = run.run_dir.with_name(run.run_dir.name + ".partial")
    assert json.loads((work / "manifest.json").read_text())["status"] == "interrupted"
    assert (work / "checkpoint.pt").exists() and not (run.run_dir / "manifest.json").exists()
    monkeypatch.setattr(trainer, "_after_step", None)
    capsys.readouterr()
    manifest = execute(cut)
    assert "[resume]" in capsys.readouterr().out and manifest["resumed"] == 1
    assert not list(run.run_dir.glob("*.pt")) and not work.exists()
    a, _ = metrics_of(whole)
    b, _ = metrics_of(cut)
    assert a["test"]["auc"] == b["test"]["auc"] and a["history"] == b["history"]


def test_ad_hoc_runs_land_in_the_local_store_and_experiments_in_the_reference():
    """`python -m repro ...` must never write into the committed results/ (git-ignored local/ instead)."""
    from hydra import compose, initialize_config_dir

    from repro.experiments import load_experiment, run_overrides
    from repro.registry import ROOT
    from repro.run import resolve

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        adhoc = resolve(compose("config", overrides=["data.scale=smoke"]))
        spec = load_experiment("baselines_smoke")
        listed = resolve(compose("config", overrides=run_overrides(spec, spec["runs"][0], 0)))
    assert adhoc.run_dir.is_relative_to(ROOT / "local" / "runs" / "adhoc")
    assert listed.run_dir.is_relative_to(ROOT / "results" / "runs" / "baselines_smoke")
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {"local/", "data/", "results/runs/**/*.failed/"} <= set(ignored)


def test_replicates_are_packed_losslessly_and_read_back_as_lists():
    import numpy as np

    from repro.io import PACKED, pack_floats, unpack_floats

    rng = np.random.default_rng(0)
    metrics = {"test": {"auc": 0.78, "bootstrap": {"auc": rng.random(500).tolist(), "unit": "request",
                                                   "n_replicates": 500}},
               "history": [{"epoch": 1, "valid_auc": 0.7}], "few": [0.1, 0.2, 0.3]}
    packed = pack_floats(metrics)
    assert set(packed["test"]["bootstrap"]["auc"]) == {PACKED}  # 500 floats: packed
    assert packed["few"] == [0.1, 0.2, 0.3] and packed["history"] == metrics["history"]  # short lists stay
    assert unpack_floats(json.loads(json.dumps(packed))) == metrics  # bit for bit through JSON
    assert len(json.dumps(packed)) < len(json.dumps(metrics)) / 1.8
