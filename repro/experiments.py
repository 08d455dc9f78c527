"""``python -m repro.experiments NAME [NAME ...]``: run every missing or stale run of the named
experiments (conf/experiment/NAME.yaml), then rebuild their tables and plots.

An experiment file lists ``runs`` (a table row each: a label and Hydra overrides), ``seeds``,
``overrides`` shared by every run (a run may list its own ``seeds``: curve points one, headline
rows three), a ``budget_minutes``, a ``report`` block, the paper's
``claims`` and the ``measurements`` its table shows beside the runs (``repro/measurements.py``). Each run is composed by Hydra exactly as ``python -m repro`` would compose it, and
cached by the inputs that decide its numbers (``repro.run.staleness``), so a second call reruns
nothing. All named experiments are planned first, so progress shows the whole job's ETA. The experiment's ``index.json`` lists the
runs of its current definition; run folders no longer listed are removed (git keeps history).

**Parallel runs** (``--jobs N``, ``make reproduce-all JOBS=N``). The stale runs of a plan go to N
worker processes (``concurrent.futures.ProcessPoolExecutor``, spawned), or through submitit to a
SLURM cluster (``--executor submitit``; submitit's local executor runs the same path on one
machine). The choices:
- threads are divided: each job trains with ``cores // N`` threads (at least 1), so no core is
  oversubscribed (two 2-thread processes on 2 cores slowed small ops 10-40x here). The thread count
  is a scheduling input, recorded in the manifest and no part of a run's identity;
- teachers run before their students: the plan runs in waves, a student (``data.teacher``) in the
  wave after the one that holds its teacher, so a student never reads a half-written teacher;
- runs whose speed a claim judges (a condition on ``train samples/s``) run alone, one after the
  other, after the parallel waves; measurements always run alone after the runs. Every run that
  trained beside another job says so in its manifest (``scheduling``), and its table flags its
  samples/s as not comparable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from repro.errors import ConfigError, ReproError
from repro.io import atomic_write_json, stable_hash
from repro.registry import ROOT

EXPERIMENT_KEYS = {"name", "title", "budget_minutes", "seeds", "overrides", "runs", "report", "claims", "measurements"}
RUN_ENTRY_KEYS = {"label", "overrides", "seeds"}  # a run's own `seeds` replace the experiment's
REPORT_KEYS = {"baseline", "paper", "kind", "reference", "group", "group_order"}  # kind: table | compression (repro/compression_report.py) | cascade | creative | position (repro/cascade_report.py); group: a page of several tables (report.write_group_page)


def load_experiment(name: str) -> dict:
    path = ROOT / "conf" / "experiment" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(known)}")
    try:
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # yaml's scanner/parser errors and omegaconf's interpolation errors
        raise ConfigError(f"{path}: not a readable experiment: {' '.join(str(e).split())}") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: an experiment is a mapping of keys, got {type(spec).__name__}")
    _check_keys(path, "the experiment", spec, EXPERIMENT_KEYS)
    if not spec.get("runs"):
        raise ConfigError(f"{path}: lists no runs")
    _check_list(path, "runs", spec["runs"])
    _check_overrides_and_seeds(path, "the experiment", spec)
    for i, run in enumerate(spec["runs"]):
        _check_keys(path, f"runs[{i}]", run, RUN_ENTRY_KEYS)
        if "label" not in run:
            raise ConfigError(f"{path}: runs[{i}] has no label")
        if not isinstance(run["label"], str) or not run["label"]:
            raise ConfigError(f"{path}: runs[{i}]: label must be a non-empty string, got {run['label']!r}")
        _check_overrides_and_seeds(path, f"runs[{i}]", run)
    _check_keys(path, "report", spec.get("report") or {}, REPORT_KEYS)
    measurements = spec.get("measurements") or []
    _check_list(path, "measurements", measurements)
    for i, m in enumerate(measurements):
        from repro.measurements import MEASUREMENT_KEYS

        if not isinstance(m, dict) or "name" not in m:
            raise ConfigError(f"{path}: measurements[{i}] must be a mapping with a name")
        _check_keys(path, f"measurements[{i}]", m, MEASUREMENT_KEYS)
    spec.setdefault("name", name)
    return spec


def _check_keys(path: Path, where: str, block: Any, known: set[str]) -> None:
    """``block`` is a mapping whose keys are all ``known``, else a ``ConfigError`` naming them."""
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: {where} must be a mapping of keys, got {type(block).__name__} {block!r}")
    unknown = sorted((k for k in block if k not in known), key=repr)
    if unknown:
        raise ConfigError(f"{path}: {where} has unknown key(s) {unknown}; known: {sorted(known)}")


def _check_list(path: Path, where: str, value: Any) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {where} must be a list, got {type(value).__name__} {value!r}")


def _check_overrides_and_seeds(path: Path, where: str, block: dict) -> None:
    """``overrides`` a list of Hydra override strings, ``seeds`` a list of integers (when given)."""
    overrides = block.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: {where}: overrides must be a list of strings, got {overrides!r}")
    seeds = block.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{path}: {where}: seeds must be a non-empty list of integers, got {seeds!r}")


def experiment_tag(spec: dict, extra: list[str] = ()) -> str:
    """Where an experiment's runs and report go. Extra overrides (a smoke scale, another data
    set) get their own tag, so they can never replace or prune the experiment's real results."""
    return spec["name"] if not extra else f"{spec['name']}-{stable_hash(list(extra), 8)}"


def run_overrides(spec: dict, run: dict, seed: int, extra: list[str] = (), results_dir: str | None = None) -> list[str]:
    where = [f"results_dir={results_dir}"] if results_dir else []
    # experiments default to the committed reference (the config's own default is the local store)
    return ["results_dir=results", *spec.get("overrides", []), *run.get("overrides", []), *extra, *where,
            f"seed={seed}", f"experiment_name={experiment_tag(spec, extra)}", f"label='{run['label']}'"]


@dataclass
class Job:
    experiment: str
    label: str
    seed: int
    cfg: Any  # the composed Hydra config
    run_dir: Path
    reasons: list[str]  # why it must run; empty = cached
    estimate_s: float  # the reference run's wall time, or an average when there is none
    exclusive: bool = False  # its speed is judged: it never trains beside another job
    teacher: str = ""  # the label of the run it distils (data.teacher), run before it


def reference_seconds(run_dir: Path, label: str, reference_root: Path | None = None) -> float:
    """The wall time of this run in the committed reference (``results/``), for the ETA: the run
    of the same config if the reference has it, else the newest finished run there of the same
    label and seed (a config change renames the run folder but rarely changes its time much);
    0 when the reference has neither."""
    from repro.run import load_json

    reference = (reference_root or ROOT / "results") / run_dir.relative_to(run_dir.parents[3])
    others = []
    for other in reference.parents[1].glob(f"{reference.parent.name.rsplit('-', 1)[0]}-*/{reference.name}"):
        manifest = load_json(other / "manifest.json") or {}
        if other != reference and manifest.get("status") == "done" and manifest.get("label") == label:
            others.append((manifest.get("finished", ""), other))
    for where in [reference, *(o for _, o in sorted(others, reverse=True))]:
        prof = (load_json(where / "metrics.json") or {}).get("profile", {})
        seconds = prof.get("run_wall_seconds") or (prof.get("train_seconds", 0) + prof.get("eval_seconds", 0))
        if seconds:
            return float(seconds)
    return 0.0


def plan(names: list[str], force: bool = False, extra: list[str] = (), results_dir: str | None = None) -> list[Job]:
    """Every run of the named experiments, composed, with what is stale and an estimate of its time."""
    from repro.run import resolve, staleness

    jobs = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in names:
            spec = load_experiment(name)
            for run in spec["runs"]:
                for seed in run.get("seeds", spec.get("seeds", [0])):
                    try:
                        cfg = compose("config", overrides=run_overrides(spec, run, seed, extra, results_dir))
                    except HydraException as e:
                        raise ConfigError(f"experiment {name!r}, run {run['label']!r}: {e}") from e
                    resolved = resolve(cfg)
                    reasons = ["forced"] if force else staleness(resolved)
                    estimate = reference_seconds(resolved.run_dir, run["label"])
                    jobs.append(Job(name, run["label"], seed, cfg, resolved.run_dir, reasons, estimate,
                                    exclusive=run["label"] in speed_judged_rows(spec),
                                    teacher=str(resolved.config["data"].get("teacher") or "")))
    known = [j.estimate_s for j in jobs if j.estimate_s > 0]
    for j in jobs:
        if j.estimate_s <= 0:
            j.estimate_s = float(np.mean(known)) if known else 60.0
    return jobs


SPEED_METRICS = ("train samples/s",)


def speed_judged_rows(spec: dict) -> set[str]:
    """The rows of an experiment whose speed a claim judges: they must run alone."""
    rows = set()
    for claim in spec.get("claims") or []:
        for cond in [*(claim.get("conditions") or []), *(claim.get("requires") or [])]:
            if isinstance(cond, dict) and cond.get("metric") in SPEED_METRICS:
                rows.update(cond.get("rows") or [])
    return rows


def waves(jobs: list[Job]) -> list[list[Job]]:
    """The jobs in dependency order: each wave holds the jobs whose teacher (same experiment,
    results folder and seed) is in an earlier wave or not in the plan at all."""
    key = {(j.experiment, j.run_dir.parents[1], j.seed, j.label): j for j in jobs}
    depth: dict[int, int] = {}

    def level(job: Job, seen: tuple = ()) -> int:
        if id(job) in depth:
            return depth[id(job)]
        teacher = key.get((job.experiment, job.run_dir.parents[1], job.seed, job.teacher)) if job.teacher else None
        if teacher is not None and id(teacher) in seen:
            raise ConfigError(f"experiment {job.experiment!r}: teachers form a cycle through {job.label!r}")
        depth[id(job)] = 0 if teacher is None else level(teacher, (*seen, id(job))) + 1
        return depth[id(job)]

    out: list[list[Job]] = []
    for job in jobs:
        d = level(job)
        while len(out) <= d:
            out.append([])
        out[d].append(job)
    return out


@dataclass
class Scheduling:
    """How the stale runs are executed: ``jobs`` processes at ``threads`` threads each."""

    jobs: int = 1
    executor: str = "processes"  # "processes" (this machine) | "submitit"
    cluster: str | None = None  # submitit: None (auto: SLURM if present, else local) | "local" | "slurm" | "debug"
    folder: Path = field(default_factory=lambda: ROOT / "reproduced" / "submitit")
    threads: int = 0  # 0: cores // jobs

    def threads_per_job(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, self.jobs))


def run_job(cfg: dict, force: bool, threads: int | None, scheduling: dict | None) -> str:
    """One run in a worker process (a plain config: picklable); returns its folder. A run that
    trained beside other jobs records it in its manifest (``scheduling``)."""
    from repro.io import atomic_write_json
    from repro.run import execute, load_json, resolve

    if threads is not None:
        cfg = {**cfg, "train": {**(cfg.get("train") or {}), "threads": threads}}
    manifest = execute(cfg, force=force)
    where = resolve(cfg).run_dir
    if scheduling and manifest.get("finished", "") >= scheduling["started"]:  # it ran now, not cached
        done = load_json(where / "manifest.json") or manifest
        atomic_write_json(where / "manifest.json", {**done, "scheduling": scheduling})
    return str(where)


def execute_plan(jobs: list[Job], scheduling: Scheduling | None = None) -> dict[str, float]:
    """Run the stale jobs (in order, or ``scheduling.jobs`` at a time) and return the seconds spent
    per experiment (parallel: the waves' wall time, shared out by the jobs' estimates)."""
    if scheduling is not None and (scheduling.jobs > 1 or scheduling.executor == "submitit"):
        return _execute_parallel(jobs, scheduling)
    return _execute_serial(jobs)


def _execute_parallel(jobs: list[Job], scheduling: Scheduling) -> dict[str, float]:
    todo = [j for j in jobs if j.reasons or j.teacher]
    by_label = {(j.experiment, j.run_dir.parents[1], j.seed, j.label): j for j in todo}
    for j in todo:  # a student of a teacher that runs alone (after the waves) runs after it, alone too
        teacher = by_label.get((j.experiment, j.run_dir.parents[1], j.seed, j.teacher))
        if teacher is not None and teacher.exclusive:
            j.exclusive = True
    alone = [j for j in todo if j.exclusive]
    threads = scheduling.threads_per_job()
    print(f"{len(jobs)} runs: {len(jobs) - len(todo)} up to date, {len(todo)} to run in {scheduling.jobs} parallel "
          f"jobs of {threads} thread(s) ({len(alone)} alone after them: their speed is judged)", flush=True)
    spent: dict[str, float] = {}
    started = _now_iso()
    info = {"parallel_jobs": scheduling.jobs, "threads_per_job": threads, "executor": scheduling.executor,
            "started": started}
    parallel = [j for j in todo if not j.exclusive]
    for number, wave in enumerate(waves(parallel), 1):
        t = time.time()
        plain = [(OmegaConf.to_container(j.cfg, resolve=True), j.reasons == ["forced"]) for j in wave]
        print(f"wave {number}: {len(wave)} run(s)", flush=True)
        if scheduling.executor == "submitit":
            _submitit_wave(plain, threads, info, scheduling)
        else:
            _process_wave(plain, threads, info, scheduling.jobs)
        wall = time.time() - t
        total = sum(j.estimate_s for j in wave) or 1.0
        for j in wave:
            spent[j.experiment] = spent.get(j.experiment, 0.0) + wall * j.estimate_s / total
    for j in alone:
        t = time.time()
        run_job(OmegaConf.to_container(j.cfg, resolve=True), j.reasons == ["forced"], None, None)
        spent[j.experiment] = spent.get(j.experiment, 0.0) + time.time() - t
    return spent


def _process_wave(plain: list[tuple[dict, bool]], threads: int, info: dict, jobs: int) -> None:
    import multiprocessing

    # spawned, not forked: a fork of a process that has started torch's thread pools can hang
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_limit_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(run_job, cfg, force, threads, info): cfg.get("label") for cfg, force in plain}
        failed = []
        for future in as_completed(futures):
            try:
                print(f"[finished] {future.result()}", flush=True)
            except Exception as e:  # the run's own .failed/ folder holds its manifest and traceback
                failed.append(f"{futures[future]}: {type(e).__name__}: {e}")
    if failed:
        raise ReproError(f"{len(failed)} parallel run(s) failed: " + "; ".join(failed))


def _limit_threads(threads: int) -> None:
    """A worker's BLAS/OpenMP pools sized before torch starts them."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _submitit_wave(plain: list[tuple[dict, bool]], threads: int, info: dict, scheduling: Scheduling) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=str(scheduling.folder), cluster=scheduling.cluster)
    # one task of `threads` cores per run; SLURM runs at most `jobs` of the array at once
    executor.update_parameters(timeout_min=24 * 60, cpus_per_task=threads, slurm_array_parallelism=scheduling.jobs)
    with executor.batch():
        submitted = [executor.submit(run_job, cfg, force, threads, info) for cfg, force in plain]
    failed = []
    for job in submitted:
        try:
            print(f"[finished] {job.result()}", flush=True)
        except Exception as e:  # submitit raises the worker's exception, with its log's path
            failed.append(f"job {job.job_id}: {type(e).__name__}: {str(e)[-400:]}")
    if failed:
        raise ReproError(f"{len(failed)} submitted run(s) failed: " + "; ".join(failed))


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _execute_serial(jobs: list[Job]) -> dict[str, float]:
    """Run the stale jobs in order, printing progress and the whole job's ETA; returns the seconds
    spent per experiment. The ETA scales the reference runs' times by how fast this machine has
    been so far."""
    from repro.run import execute

    # A student (data.teacher) up to date at planning is looked at again when its turn comes: its
    # teacher may have rerun since (execute() reruns it only if it is stale by then).
    todo = [j for j in jobs if j.reasons or _has_teacher(j.cfg)]
    total_est = sum(j.estimate_s for j in todo)
    print(f"{len(jobs)} runs: {len(jobs) - len(todo)} up to date, {len(todo)} to run "
          f"(about {total_est / 60:.0f} min at the reference machine's speed)", flush=True)
    started = time.time()
    done_est = 0.0
    spent: dict[str, float] = {}
    for i, job in enumerate(todo, 1):
        elapsed = time.time() - started
        speed = elapsed / done_est if done_est > 0 else 1.0
        eta = (total_est - done_est) * speed
        print(f"[{i}/{len(todo)}] {job.experiment}: {job.label} seed={job.seed}  "
              f"(elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min)", flush=True)
        t = time.time()
        execute(job.cfg, force=job.reasons == ["forced"])
        spent[job.experiment] = spent.get(job.experiment, 0.0) + time.time() - t
        done_est += job.estimate_s
    return spent


def _has_teacher(cfg) -> bool:
    data = cfg.get("data") or {}
    return bool(data.get("teacher"))


def run_experiment(name: str, force: bool = False, extra: list[str] = (), results_dir: str | None = None) -> list[Path]:
    """Run what is missing or stale; returns the run folders (``<results>/runs/<tag>/...``)."""
    spec = load_experiment(name)
    started = time.time()
    jobs = plan([name], force, extra, results_dir)
    execute_plan(jobs)
    run_measurements(spec, jobs, force)
    finish_experiment(spec, jobs, extra, time.time() - started)
    return [j.run_dir for j in jobs]


def run_measurements(spec: dict, jobs: list[Job], force: bool = False) -> None:
    """The experiment's measurements, written beside its runs (``runs/<tag>/measurements/``)."""
    from repro.measurements import measure

    for m in spec.get("measurements") or []:
        measure(m["name"], m.get("params"), jobs[0].run_dir.parents[1], force=force)


def finish_experiment(spec: dict, jobs: list[Job], extra: list[str], seconds: float) -> None:
    """Check the budget, prune runs the experiment no longer lists and write its index."""
    minutes = seconds / 60
    budget = spec.get("budget_minutes")
    if budget and minutes > budget:
        print(f"warning: experiment {spec['name']} took {minutes:.1f} min, over its budget of {budget} min", file=sys.stderr)
    run_dirs = [j.run_dir for j in jobs]
    root = run_dirs[0].parents[1]  # results/runs/<tag>
    _prune(root, run_dirs)
    atomic_write_json(root / "index.json", {
        "experiment": spec["name"],
        "tag": root.name,
        "extra_overrides": list(extra),
        "runs": [str(d.relative_to(root)) for d in run_dirs],
    })


def _prune(root: Path, keep: list[Path]) -> None:
    keep_set = {d.resolve() for d in keep}
    for manifest in root.glob("*/seed*/manifest.json"):
        if manifest.parent.resolve() not in keep_set:
            shutil.rmtree(manifest.parent)
    for variant in root.iterdir() if root.exists() else []:
        if variant.is_dir() and not any(variant.iterdir()):
            variant.rmdir()


def print_plan(names: list[str], results_dir: Path, extra: list[str] = ()) -> None:
    """``make plan``: per experiment, its runs' and measurements' states against the checked-out
    code (``repro.freshness``), the stale ones with their reasons, and the time to regenerate them."""
    from repro.freshness import CURRENT, STALE, experiment_freshness

    total = 0.0
    for name in names:
        spec = load_experiment(name)
        tag = experiment_tag(spec, list(extra))
        fresh = experiment_freshness(name, results_dir, tag)
        budget = spec.get("budget_minutes")
        print(f"{tag}: {fresh.summary()}" + (f" (budget {budget} min)" if budget else ""))
        for label, state in fresh.rows().items():
            if state.state != CURRENT:
                print(f"  {'STALE' if state.state == STALE else 'waiting'} {label}: {'; '.join(state.reasons)}")
        for item in fresh.missing:
            print(f"  MISSING {item}")
        for m, state in fresh.measurements.items():
            if state.state != CURRENT:
                print(f"  STALE measurement {m}: {'; '.join(state.reasons)}")
        total += fresh.stale_seconds
    print(f"to regenerate: about {total / 60:.0f} min of runs and measurements at the reference machine's speed "
          f"(`make reproduce-all EXPERIMENTS=...`, then `make promote`)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", help="names under conf/experiment/")
    parser.add_argument("--force", default="0", help="1 reruns every run")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for every run")
    parser.add_argument("--results-dir", default=None,
                        help="run store and tables (default: the config's, results/); `make reproduce-all` uses reproduced/")
    parser.add_argument("--jobs", type=int, default=1, help="parallel runs, cores divided among them (default 1)")
    parser.add_argument("--executor", choices=("processes", "submitit"), default="processes",
                        help="processes on this machine, or submitit (SLURM where present)")
    parser.add_argument("--cluster", default=None, help="submitit: local | slurm | debug (default: auto)")
    parser.add_argument("--plan", action="store_true",
                        help="run nothing: print, per experiment, what is stale in the run store, why, and the budget")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    from repro.report import write_and_announce

    force = args.force not in ("0", "", "false")
    if args.plan:
        try:
            print_plan(args.experiments, Path(args.results_dir) if args.results_dir else ROOT / "results", args.override)
        except ReproError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        jobs = plan(args.experiments, force, args.override, args.results_dir)
        spent = execute_plan(jobs, Scheduling(args.jobs, args.executor, args.cluster))
        for name in args.experiments:
            mine = [j for j in jobs if j.experiment == name]
            spec = load_experiment(name)
            started = time.time()
            run_measurements(spec, mine, force)
            # this experiment's own runs and measurements, not the whole command's time
            finish_experiment(spec, mine, args.override, spent.get(name, 0.0) + time.time() - started)
            results_dir, tag = mine[0].run_dir.parents[3], mine[0].run_dir.parents[1].name
            write_and_announce(name, results_dir=results_dir, tag=tag)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
