"""``make bench-check`` fails on an injected slowdown: a tiny benchmark whose body sleeps for a
controlled time is saved as a baseline into a temporary storage by ``benchmarks.check baseline``,
then compared by ``benchmarks.check check`` (the code path of ``make bench-check``, in a
subprocess as make runs it) with its body slowed to 1.5x the threshold (must fail) and to 0.5x
(must pass).

Why sleeps: a sleep's length does not depend on how busy the cores are (a spin's does); what load
adds is a wake-up delay of well under a millisecond in most rounds, which the median of 9 rounds
ignores. At a 40 ms body and the 25% threshold the fail line is 50 ms and the two cases' medians
are 45 ms and 55 ms: 5 ms either side of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import check

BODY_S = 0.040
SLEEPING_BENCHMARK = '''
import os, time

def test_sleeping_body(benchmark):
    seconds = float(os.environ["ADREPRO_TEST_BODY_S"])
    benchmark.pedantic(time.sleep, args=(seconds,), rounds=9, warmup_rounds=1)
'''


def run_check(mode: str, bench: Path, storage: Path, body_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADREPRO_TEST_BODY_S": str(body_s)}
    return subprocess.run([sys.executable, "-m", "benchmarks.check", mode, str(bench), "--storage-root", str(storage)],
                          cwd=check.ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def saved_baseline(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("bench_check")
    bench = tmp / "test_sleeping_benchmark.py"
    bench.write_text(SLEEPING_BENCHMARK)
    storage = tmp / "baselines"
    done = run_check("baseline", bench, storage, BODY_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return bench, storage


def slowdown(share_of_threshold: float) -> float:
    """The body's slowdown factor that puts it at ``share_of_threshold`` of the check's threshold."""
    return 1 + share_of_threshold * check.THRESHOLD_PCT / 100


def test_baseline_is_saved_under_this_cpu_and_interpreter(saved_baseline):
    _, storage = saved_baseline
    files = check.baseline_files(check.storage_dir(storage, check.cpu_model()))
    assert len(files) == 1 and files[0].name == "0001_baseline.json"
    assert files[0].parent.parent.name == check.cpu_slug(check.cpu_model())


def test_check_fails_at_one_and_a_half_times_the_threshold(saved_baseline):
    bench, storage = saved_baseline
    done = run_check("check", bench, storage, BODY_S * slowdown(1.5))
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Performance has regressed" in done.stdout + done.stderr
    assert "SLOWER" in done.stdout


def test_check_passes_at_half_the_threshold(saved_baseline):
    bench, storage = saved_baseline
    done = run_check("check", bench, storage, BODY_S * slowdown(0.5))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bench-check: passed" in done.stdout


def test_check_without_a_baseline_fails_loudly_and_saves_none(tmp_path, saved_baseline):
    bench, _ = saved_baseline
    storage = tmp_path / "empty"
    done = run_check("check", bench, storage, BODY_S)
    assert done.returncode == 2
    assert "NO BASELINE" in done.stderr
    assert not list(storage.rglob("*.json"))


def test_report_names_benchmarks_missing_from_the_baseline_or_from_the_run(tmp_path, capsys):
    def saved(path: Path, medians: dict[str, float]) -> Path:
        path.write_text(json.dumps({"benchmarks": [{"fullname": k, "stats": {"median": v}} for k, v in medians.items()]}))
        return path

    baseline = saved(tmp_path / "0001_baseline.json", {"a.py::test_old": 0.010})
    current = saved(tmp_path / "current.json", {"a.py::test_old": 0.011, "a.py::test_new": 0.010})
    assert check.report(baseline, current, check.THRESHOLD_PCT) == (["a.py::test_new"], [])
    out = capsys.readouterr().out
    assert "MISSING  a.py::test_new" in out and "ok       a.py::test_old" in out and "(1.10x)" in out
    assert check.report(current, baseline, check.THRESHOLD_PCT) == ([], ["a.py::test_new"])
    assert "NOT RUN  a.py::test_new" in capsys.readouterr().out


@pytest.mark.parametrize("model, slug", [("Intel(R) Xeon(R) Processor", "intel-xeon-processor"),
                                         ("AMD EPYC 7B13 64-Core Processor", "amd-epyc-7b13-64-core-processor"),
                                         ("", "unknown-cpu")])
def test_cpu_slug(model, slug):
    assert check.cpu_slug(model) == slug


def test_check_command_uses_pytest_benchmarks_compare_options(tmp_path):
    cmd = check.pytest_command("check", tmp_path, ["x.py"], tmp_path / "o.json", tmp_path / "0001_baseline.json")
    assert f"--benchmark-compare-fail=median:{check.THRESHOLD_PCT}%" in cmd
    assert f"--benchmark-compare={tmp_path / '0001_baseline.json'}" in cmd
    assert not any(a.startswith("--benchmark-save") for a in cmd)
