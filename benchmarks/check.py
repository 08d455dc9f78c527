"""``make bench-check`` and ``make bench-baseline``: pytest-benchmark regression checks against a
committed baseline of this CPU, plus the same-run ratio guards (``benchmarks/test_ratio_guards.py``).

    python -m benchmarks.check check      # compare with this CPU's baseline; non-zero on a regression
    python -m benchmarks.check baseline   # save (replace) this CPU's baseline: a maintainer's act

Choices:
- **Keyed by the CPU model.** Baselines live in ``benchmarks/baselines/<slug of /proc/cpuinfo's
  model name>/`` (pytest-benchmark's ``--benchmark-storage``), under which pytest-benchmark itself
  adds its machine id (OS, interpreter, Python minor version, word size): a timing is only compared
  with one taken on the same CPU model and interpreter. A virtual machine may report a generic
  model name (this one says "Intel(R) Xeon(R) Processor"), so two hosts of different speed can
  share a slug; the comparison then fails loudly rather than passing, and the cure is a quiet
  ``make bench-baseline`` on the machine that runs the check.
- **No baseline, no pass.** Without a baseline for this CPU and interpreter ``check`` prints so,
  with the baselines that do exist and the command that makes one, and exits 2 without running
  anything; it never saves one itself. A benchmark that the baseline lacks fails the check too,
  and so, in the default selection, does a baseline benchmark that was not timed (skipped, or
  removed): pytest-benchmark would pass over both silently.
- **Median, 25%.** ``--benchmark-compare-fail=median:25%``: the median of a benchmark's rounds
  ignores the few rounds a neighbour's burst slows (the mean and the max do not, and the min rewards
  luck); 25% is above the run-to-run spread of these medians on a quiet 2-core machine and well
  below what the regressions worth catching cost (a lost fused lookup, a dense update, a per-row
  loop: 2x and more). Run it on a quiet machine: on a loaded one a pass means little and a failure
  should be rerun before it is believed.
- **A selection, at the smoke world.** ``COMPARED`` is a few minutes on 2 cores: the loader, two
  models' training steps, the dense and the sparse table update at 4M rows, the full table's and
  four compressed lookups, the ladder's large-batch step in fp32 and bf16, and two APG towers.
  World-backed benchmarks always run at ``ADREPRO_BENCH_SCALE=smoke`` (prepared in seconds; a
  batch of 4096 costs about the same at every world size), whatever the caller's environment says,
  so a baseline and a check never compare two world sizes.
- **Baselines only from a clean run.** ``baseline`` saves through ``--benchmark-save`` and keeps
  the new file only when every benchmark passed; it then removes the older baseline files of this
  CPU and interpreter (git keeps their history), so the check compares with exactly one file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_benchmark.utils import get_machine_id

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "benchmarks" / "baselines"
THRESHOLD_STAT, THRESHOLD_PCT = "median", 25
SAVE_NAME = "baseline"
SCALE = "smoke"

# The benchmarks compared with the baseline (node ids, relative to the repository root).
COMPARED = [
    "benchmarks/test_throughput.py::test_loader",
    "benchmarks/test_throughput.py::test_train_step[deepfm]",
    "benchmarks/test_throughput.py::test_train_step[dcnv2]",
    "benchmarks/test_throughput.py::test_embedding_update[adam]",
    "benchmarks/test_throughput.py::test_embedding_update[sparse_adam]",
    "benchmarks/test_embedding_lookup.py::test_lookup_forward_backward[full-1x]",
    "benchmarks/test_embedding_lookup.py::test_lookup_forward_backward[hashing-16x]",
    "benchmarks/test_embedding_lookup.py::test_lookup_forward_backward[qr-16x]",
    "benchmarks/test_embedding_lookup.py::test_lookup_forward_backward[double_hashing-16x]",
    "benchmarks/test_embedding_lookup.py::test_lookup_forward_backward[bh-16x]",
    "benchmarks/test_ladder_techniques.py::test_large_batch_step[fp32]",
    "benchmarks/test_ladder_techniques.py::test_large_batch_step[bf16 autocast]",
    "benchmarks/test_apg_efficiency.py::test_apg_inference[static MLP]",
    "benchmarks/test_apg_efficiency.py::test_apg_training_step[static MLP]",
]
# The same-run ratio guards: plain tests (no baseline), run by ``check`` after the comparison.
GUARDS = ["benchmarks/test_ratio_guards.py"]


def cpu_model() -> str:
    """The CPU's model name: the first ``model name`` of /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown cpu"


def cpu_slug(model: str) -> str:
    """A folder name for a CPU model: lower case, trademarks dropped, runs of other characters as
    one dash ("Intel(R) Xeon(R) Processor" -> "intel-xeon-processor")."""
    text = re.sub(r"\((r|tm|c)\)", " ", model.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.") or "unknown-cpu"


def storage_dir(root: Path, model: str) -> Path:
    """This CPU's pytest-benchmark storage (pytest-benchmark adds the machine id below it)."""
    return root / cpu_slug(model)


def baseline_files(storage: Path) -> list[Path]:
    """The saved baselines of this interpreter in ``storage``, oldest first (pytest-benchmark's
    counter prefix orders them)."""
    return sorted((storage / get_machine_id()).glob(f"[0-9][0-9][0-9][0-9]_{SAVE_NAME}.json"))


def compare_fail_expr(pct: int = THRESHOLD_PCT, stat: str = THRESHOLD_STAT) -> str:
    return f"{stat}:{pct}%"


def pytest_command(mode: str, storage: Path, nodeids: list[str], json_out: Path,
                   baseline: Path | None = None, pct: int = THRESHOLD_PCT) -> list[str]:
    """The pytest command line of ``mode`` (``check`` or ``baseline``): pytest-benchmark's own
    storage, save, compare and compare-fail options."""
    # hypothesis's and hydra's pytest plugins serve no benchmark and cost seconds of start-up.
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
           "-p", "no:hydra_pytest", *nodeids,
           f"--benchmark-storage=file://{storage}", f"--benchmark-json={json_out}",
           "--benchmark-columns=median,iqr,mean,rounds", "--benchmark-sort=fullname"]
    if mode == "baseline":
        return cmd + [f"--benchmark-save={SAVE_NAME}", "--benchmark-only"]
    assert baseline is not None
    return cmd + [f"--benchmark-compare={baseline}", f"--benchmark-compare-fail={compare_fail_expr(pct)}"]


def _medians(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text())
    return {b["fullname"]: b["stats"]["median"] for b in data.get("benchmarks", [])}


def report(baseline: Path, current: Path, pct: int) -> tuple[list[str], list[str]]:
    """Print each benchmark's median against the baseline's; return the names the baseline lacks
    and the baseline's names this run did not time (pytest-benchmark compares neither, so the check
    decides on them here)."""
    before, now = _medians(baseline), _medians(current)
    limit = 1 + pct / 100
    shown = baseline.relative_to(ROOT) if baseline.is_relative_to(ROOT) else baseline
    print(f"\nbench-check: medians against {shown} (fails above {limit:.2f}x)")
    missing = []
    for name, t in sorted(now.items()):
        if name not in before:
            missing.append(name)
            print(f"  MISSING  {name}: {t * 1e3:.2f} ms now, not in the baseline")
            continue
        ratio = t / before[name]
        verdict = "SLOWER" if ratio > limit else "ok"
        print(f"  {verdict:<7}  {name}: {before[name] * 1e3:.2f} -> {t * 1e3:.2f} ms ({ratio:.2f}x)")
    not_run = sorted(set(before) - set(now))
    for name in not_run:
        print(f"  NOT RUN  {name}: in the baseline, not timed now")
    return missing, not_run


def no_baseline_message(root: Path, model: str, storage: Path) -> str:
    existing = sorted(str(p.parent.relative_to(root)) for p in root.glob(f"*/*/*_{SAVE_NAME}.json")) if root.exists() else []
    return "\n".join([
        "",
        "=" * 78,
        f"bench-check: NO BASELINE for this CPU ({model!r}) and interpreter ({get_machine_id()}).",
        f"  looked in: {storage / get_machine_id()}",
        f"  baselines that exist: {', '.join(existing) or 'none'}",
        "  Nothing was compared, so nothing passed. On a quiet machine, a maintainer runs",
        "  `make bench-baseline` and commits the file it writes.",
        "=" * 78,
    ])


def run(mode: str, root: Path, nodeids: list[str] | None, pct: int, model: str) -> int:
    """Run ``mode``; the exit status of ``make bench-check`` / ``make bench-baseline``."""
    storage = storage_dir(root, model)
    if os.environ.get("ADREPRO_BENCH_SCALE", SCALE) != SCALE:
        print(f"bench-{mode}: ignoring ADREPRO_BENCH_SCALE={os.environ['ADREPRO_BENCH_SCALE']}: baselines are "
              f"saved and compared at the {SCALE!r} world only", file=sys.stderr)
    env = {**os.environ, "ADREPRO_BENCH_SCALE": SCALE}
    with tempfile.TemporaryDirectory() as tmp:
        json_out = Path(tmp) / "current.json"
        if mode == "check":
            found = baseline_files(storage)
            if not found:
                print(no_baseline_message(root, model, storage), file=sys.stderr)
                return 2
            baseline = found[-1]
            cmd = pytest_command("check", storage, nodeids or COMPARED + GUARDS, json_out, baseline, pct)
            print("bench-check:", " ".join(cmd[1:]), flush=True)
            rc = subprocess.call(cmd, cwd=ROOT, env=env)
            if not json_out.exists():
                print("bench-check: FAILED: pytest wrote no benchmark results", file=sys.stderr)
                return rc or 1
            missing, not_run = report(baseline, json_out, pct)
            if missing:
                print(f"bench-check: FAILED: {len(missing)} benchmark(s) not in the baseline; "
                      f"`make bench-baseline` saves a new one", file=sys.stderr)
                return rc or 1
            if not_run and not nodeids:  # the default selection must time all of its baseline
                print(f"bench-check: FAILED: {len(not_run)} baseline benchmark(s) not timed (skipped or "
                      f"removed); `make bench-baseline` saves a new baseline if that was meant", file=sys.stderr)
                return rc or 1
            print(f"bench-check: {'FAILED' if rc else 'passed'} (pytest exit status {rc})", flush=True)
            return rc
        before = set(baseline_files(storage))
        cmd = pytest_command("baseline", storage, nodeids or COMPARED, json_out)
        print("bench-baseline:", " ".join(cmd[1:]), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        new = [p for p in baseline_files(storage) if p not in before]
        if rc != 0:
            for p in new:
                p.unlink()
            print(f"bench-baseline: NOT SAVED: pytest exit status {rc}", file=sys.stderr)
            return rc
        if len(new) != 1:
            print(f"bench-baseline: expected one new baseline file, found {new}", file=sys.stderr)
            return 1
        for p in before:
            p.unlink()
        print(f"bench-baseline: saved {new[0]} (CPU {model!r}); replaced {len(before)} older file(s). "
              f"Commit it if this machine was quiet.")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["check", "baseline"])
    parser.add_argument("nodeids", nargs="*", help="pytest node ids (default: COMPARED, plus GUARDS for check)")
    parser.add_argument("--storage-root", type=Path, default=BASELINES,
                        help="folder of the per-CPU baseline folders (default: benchmarks/baselines)")
    parser.add_argument("--threshold-pct", type=int, default=THRESHOLD_PCT,
                        help=f"fail where a {THRESHOLD_STAT} is more than this many percent slower (default {THRESHOLD_PCT})")
    parser.add_argument("--cpu-model", default=None, help="key the baseline by this model name instead of this CPU's")
    args = parser.parse_intermixed_args(argv)
    return run(args.mode, args.storage_root.resolve(), args.nodeids, args.threshold_pct, args.cpu_model or cpu_model())


if __name__ == "__main__":
    sys.exit(main())
