"""Reproduce means rerun: a local run store, a cell-by-cell comparison with the reference, promote, verify."""

import json
import shutil

import pytest

from repro.experiments import run_experiment
from repro.reproduce import promote, tolerance, verdict, verify, write_comparison
from repro.run import load_metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_root):
    """The smoke experiment run once into a 'committed' results folder."""
    ref = tmp_path_factory.mktemp("reference")
    extra = ["data.scale=smoke", f"data.cache_root={cache_root}", "train.epochs=1", "train.lr=0.01", "train.progress=false",
             "embedding.dim=4"]
    dirs = run_experiment("baselines_smoke", extra=extra, results_dir=str(ref))
    return ref, dirs[0].parents[1].name, extra


def test_tolerance_rule():
    assert tolerance(0.0, 3) == 1e-4                      # never stricter than 1e-4
    assert tolerance(0.01, 3) == 1e-3                     # never looser than BARS's 1e-3
    assert tolerance(3e-4, 4) == pytest.approx(3e-4)      # two standard errors of the mean
    assert verdict("test AUC", 0.78, 0.78, 1e-4) == "identical"
    assert verdict("test AUC", 0.78, 0.78005, 1e-4) == "within tolerance"
    assert verdict("test AUC", 0.78, 0.7790, 1e-4) == "differs"
    assert verdict("params", 100, 101, 1.0) == "differs"  # structure must match exactly
    assert verdict("train samples/s", 1e5, 5e4, 1e-4).startswith("not judged")
    # the thread count is no part of a run's identity: equal numbers at another count are not "identical"
    assert verdict("test AUC", 0.78, 0.78, 1e-4, same_threads=False) == "within tolerance"
    assert verdict("params", 100, 100, 1.0, same_threads=False) == "identical"  # structure does not sum


def test_a_rerun_here_matches_the_reference_cell_by_cell(reference, tmp_path):
    ref, tag, extra = reference
    local = tmp_path / "local"
    # A second store: every run is rerun (nothing is shared with the reference folder).
    dirs = run_experiment("baselines_smoke", extra=extra, results_dir=str(local))
    assert dirs[0].parents[1].name == tag
    md = write_comparison([tag], reference=ref, local=local)
    report = json.loads((local / "reproduction.json").read_text())
    counts = report["summary"][tag]
    assert counts.get("identical", 0) > 0 and counts.get("differs", 0) == 0, counts
    assert "identical" in md.read_text()


def test_a_changed_number_is_reported_as_differing(reference, tmp_path):
    ref, tag, _ = reference
    local = tmp_path / "local"
    shutil.copytree(ref, local)
    index = json.loads((local / "runs" / tag / "index.json").read_text())
    metrics_path = local / "runs" / tag / index["runs"][0] / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["test"]["auc"] -= 0.01
    metrics_path.write_text(json.dumps(metrics))
    write_comparison([tag], reference=ref, local=local)
    cells = json.loads((local / "reproduction.json").read_text())["cells"]
    bad = [c for c in cells if c["verdict"] == "differs"]
    assert [(c["column"]) for c in bad] == ["test AUC"]


def test_verdicts_are_compared_beside_the_cells(reference, tmp_path):
    ref, tag, _ = reference
    local = tmp_path / "local"
    shutil.copytree(ref, local)
    write_comparison([tag], reference=ref, local=local)
    claims = {c["claim"]: c for c in json.loads((local / "reproduction.json").read_text())["claims"]}
    assert claims and all(c["same"] for c in claims.values())
    # Make every LR run far better than DeepFM here (smoke DeepFM leads LR by ~0.24): deepfm-over-lr
    # must flip, and say so.
    index = json.loads((local / "runs" / tag / "index.json").read_text())
    for rel in index["runs"]:
        manifest = json.loads((local / "runs" / tag / rel / "manifest.json").read_text())
        if manifest["label"] == "LR":
            path = local / "runs" / tag / rel / "metrics.json"
            metrics = load_metrics(path)  # its replicates are packed (repro.io.pack_floats)
            metrics["test"]["auc"] += 0.45
            metrics["test"]["bootstrap"]["auc"] = [a + 0.45 for a in metrics["test"]["bootstrap"]["auc"]]
            path.write_text(json.dumps(metrics))
    md = write_comparison([tag], reference=ref, local=local)
    moved = {c["claim"]: c for c in json.loads((local / "reproduction.json").read_text())["claims"]}
    assert not moved["deepfm-over-lr"]["same"] and moved["deepfm-over-lr"]["this machine"] == "does not hold"
    assert "moved: deepfm-over-lr" in md.read_text()


def test_promote_replaces_the_reference_whole(reference, tmp_path):
    ref, tag, _ = reference
    local, target = tmp_path / "local", tmp_path / "target"
    shutil.copytree(ref, local)
    (local / "runs" / tag / "stray.partial").mkdir()  # work folders never reach the reference
    (target / "runs" / tag / "old-run").mkdir(parents=True)
    promote([tag], local=local, reference=target)
    assert (target / "runs" / tag / "index.json").exists()
    assert not (target / "runs" / tag / "old-run").exists()
    assert not (target / "runs" / tag / "stray.partial").exists()


def test_verify_reruns_one_run_and_agrees(reference, tmp_path, capsys):
    ref, tag, _ = reference
    index = json.loads((ref / "runs" / tag / "index.json").read_text())
    run_dir = ref / "runs" / tag / index["runs"][-1]
    assert verify(run_dir, local=tmp_path / "local") == 0
    out = capsys.readouterr().out
    assert "overall: identical" in out


def test_the_eta_takes_the_reference_time_of_the_same_config_else_of_the_same_label(tmp_path):
    from repro.experiments import reference_seconds

    def committed(folder: str, label: str, finished: str, seconds: float, status: str = "done") -> None:
        d = tmp_path / "runs" / "exp" / folder / "seed0"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"label": label, "status": status, "finished": finished}))
        (d / "metrics.json").write_text(json.dumps({"profile": {"run_wall_seconds": seconds}}))

    committed("Full-old1", "Full", "2026-11-01", 100.0)
    committed("Full-old2", "Full", "2026-11-20", 200.0)  # the newest finished run of the label
    committed("Full-old3", "Full", "2026-11-30", 900.0, status="failed")
    committed("Full-x-old4", "Full-x", "2026-12-01", 50.0)  # another label whose folder starts alike
    local = tmp_path / "reproduced" / "runs" / "exp"
    assert reference_seconds(local / "Full-new" / "seed0", "Full", tmp_path) == 200.0
    assert reference_seconds(local / "Full-old1" / "seed0", "Full", tmp_path) == 100.0  # same config
    assert reference_seconds(local / "Full-new" / "seed1", "Full", tmp_path) == 0.0  # no such seed
    assert reference_seconds(local / "QR-new" / "seed0", "QR", tmp_path) == 0.0
