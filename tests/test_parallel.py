"""Parallel runs of a plan: waves that put teachers before students, threads divided among jobs,
the same numbers as a serial run, and the same plan through submitit's local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.errors import ConfigError
from repro.experiments import Job, Scheduling, execute_plan, plan, speed_judged_rows, waves

SMOKE = ["data.scale=smoke", "train.epochs=1", "train.lr=0.01", "train.progress=false", "embedding.dim=4"]


def fake_job(label: str, teacher: str = "", seed: int = 0, root: Path = Path("/r/runs/exp")) -> Job:
    return Job("exp", label, seed, None, root / f"{label}-abc" / f"seed{seed}", ["no run yet"], 1.0, teacher=teacher)


def test_teachers_run_in_a_wave_before_their_students():
    jobs = [fake_job("student", teacher="ranker"), fake_job("ranker"), fake_job("grandchild", teacher="student"),
            fake_job("alone"), fake_job("student", teacher="ranker", seed=1)]
    got = [[(j.label, j.seed) for j in wave] for wave in waves(jobs)]
    # seed 1's teacher is not in the plan (already done): the student is free to run at once
    assert got == [[("ranker", 0), ("alone", 0), ("student", 1)], [("student", 0)], [("grandchild", 0)]]


def test_a_teacher_cycle_is_a_config_error():
    with pytest.raises(ConfigError, match="cycle"):
        waves([fake_job("a", teacher="b"), fake_job("b", teacher="a")])


def test_rows_whose_speed_a_claim_judges_run_alone():
    spec = {"claims": [{"id": "x", "conditions": [{"metric": "train samples/s", "rows": ["Fast", "Slow"]}]},
                       {"id": "y", "conditions": [{"metric": "test AUC", "rows": ["A", "B"]}]}]}
    assert speed_judged_rows(spec) == {"Fast", "Slow"}


def test_threads_are_divided_among_jobs(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert Scheduling(jobs=4).threads_per_job() == 4
    assert Scheduling(jobs=32).threads_per_job() == 1
    assert Scheduling(jobs=2, threads=3).threads_per_job() == 3


def _smoke_plan(tmp_path: Path, cache_root: Path, store: str) -> list[Job]:
    jobs = plan(["baselines_smoke"], extra=[*SMOKE, f"data.cache_root={cache_root}"], results_dir=str(tmp_path / store))
    return [j for j in jobs if j.seed == 0]  # LR and DeepFM at seed 0: two independent runs


def _metrics(job: Job) -> dict:
    return json.loads((job.run_dir / "metrics.json").read_text())


def _manifest(job: Job) -> dict:
    return json.loads((job.run_dir / "manifest.json").read_text())


def test_two_parallel_jobs_give_the_serial_numbers_and_say_they_ran_beside_each_other(tmp_path, cache_root):
    serial = _smoke_plan(tmp_path, cache_root, "serial")
    execute_plan(serial)
    parallel = _smoke_plan(tmp_path, cache_root, "parallel")
    execute_plan(parallel, Scheduling(jobs=2, threads=1))
    for s, p in zip(serial, parallel):
        assert s.label == p.label
        # one thread instead of two sums in another order: equal to tolerance, not bit for bit
        assert _metrics(p)["test"]["auc"] == pytest.approx(_metrics(s)["test"]["auc"], abs=2e-3)
        scheduling = _manifest(p)["scheduling"]
        assert scheduling["parallel_jobs"] == 2 and scheduling["threads_per_job"] == 1
        assert _manifest(p)["config"]["train"]["threads"] == 1
        assert "scheduling" not in _manifest(s)
    # a second call finds every run done and reruns nothing
    again = _smoke_plan(tmp_path, cache_root, "parallel")
    assert all(not j.reasons for j in again)


def test_the_plan_goes_through_submitits_local_executor(tmp_path, cache_root):
    pytest.importorskip("submitit", reason="submitit is in requirements.txt; this venv lacks it")
    jobs = _smoke_plan(tmp_path, cache_root, "submitit")[:1]
    execute_plan(jobs, Scheduling(jobs=1, executor="submitit", cluster="local", folder=tmp_path / "submitit", threads=1))
    manifest = _manifest(jobs[0])
    assert manifest["status"] == "done" and manifest["scheduling"]["executor"] == "submitit"
    assert list((tmp_path / "submitit").glob("*_log.out")), "submitit's local executor leaves each job's log"
