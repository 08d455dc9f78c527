"""``python -m repro.experiments NAME [NAME ...]``: run every missing or stale run of the named
experiments (conf/experiment/NAME.yaml), then rebuild their tables and plots.

An experiment file lists ``runs`` (a table row each: a label and Hydra overrides), ``seeds``,
``overrides`` shared by every run, a ``budget_minutes`` and a ``report`` block. Each run is
composed by Hydra exactly as ``python -m repro`` would compose it, and cached by its config hash
and code fingerprint, so a second call reruns nothing. The experiment's ``index.json`` lists the
runs of its current definition; run folders no longer listed are removed (git keeps history).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from repro.errors import ConfigError, ReproError
from repro.io import atomic_write_json, stable_hash
from repro.registry import ROOT

EXPERIMENT_KEYS = {"name", "title", "budget_minutes", "seeds", "overrides", "runs", "report"}
RUN_ENTRY_KEYS = {"label", "overrides"}
REPORT_KEYS = {"baseline", "paper"}


def load_experiment(name: str) -> dict:
    path = ROOT / "conf" / "experiment" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(known)}")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    _check_keys(path, "the experiment", spec, EXPERIMENT_KEYS)
    if not spec.get("runs"):
        raise ConfigError(f"{path}: lists no runs")
    for i, run in enumerate(spec["runs"]):
        _check_keys(path, f"runs[{i}]", run, RUN_ENTRY_KEYS)
        if "label" not in run:
            raise ConfigError(f"{path}: runs[{i}] has no label")
    _check_keys(path, "report", spec.get("report") or {}, REPORT_KEYS)
    spec.setdefault("name", name)
    return spec


def _check_keys(path: Path, where: str, block: dict, known: set[str]) -> None:
    unknown = sorted(set(block) - known)
    if unknown:
        raise ConfigError(f"{path}: {where} has unknown key(s) {unknown}; known: {sorted(known)}")


def experiment_tag(spec: dict, extra: list[str] = ()) -> str:
    """Where an experiment's runs and report go. Extra overrides (a smoke scale, another data
    set) get their own tag, so they can never replace or prune the experiment's real results."""
    return spec["name"] if not extra else f"{spec['name']}-{stable_hash(list(extra), 8)}"


def run_overrides(spec: dict, run: dict, seed: int, extra: list[str] = ()) -> list[str]:
    return [*spec.get("overrides", []), *run.get("overrides", []), *extra,
            f"seed={seed}", f"experiment_name={experiment_tag(spec, extra)}", f"label='{run['label']}'"]


def run_experiment(name: str, force: bool = False, extra: list[str] = ()) -> list[Path]:
    """Run what is missing or stale; returns the run folders (``<results>/runs/<tag>/...``)."""
    from repro.run import execute, resolve

    spec = load_experiment(name)
    jobs = [(run, seed) for run in spec["runs"] for seed in spec.get("seeds", [0])]
    started = time.time()
    run_dirs = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for i, (run, seed) in enumerate(jobs, 1):
            try:
                cfg = compose("config", overrides=run_overrides(spec, run, seed, extra))
            except HydraException as e:
                raise ConfigError(f"experiment {name!r}, run {run['label']!r}: {e}") from e
            resolved = resolve(cfg)
            elapsed = time.time() - started
            print(f"[{name} {i}/{len(jobs)}] {run['label']} seed={seed}  (elapsed {elapsed / 60:.1f} min)", flush=True)
            execute(cfg, force=force)
            run_dirs.append(resolved.run_dir)
    minutes = (time.time() - started) / 60
    budget = spec.get("budget_minutes")
    if budget and minutes > budget:
        print(f"warning: experiment {name} took {minutes:.1f} min, over its budget of {budget} min", file=sys.stderr)
    root = run_dirs[0].parents[1]  # results/runs/<tag>
    _prune(root, run_dirs)
    atomic_write_json(root / "index.json", {
        "experiment": spec["name"],
        "tag": root.name,
        "extra_overrides": list(extra),
        "runs": [str(d.relative_to(root)) for d in run_dirs],
    })
    return run_dirs


def _prune(root: Path, keep: list[Path]) -> None:
    keep_set = {d.resolve() for d in keep}
    for manifest in root.glob("*/seed*/manifest.json"):
        if manifest.parent.resolve() not in keep_set:
            shutil.rmtree(manifest.parent)
    for variant in root.iterdir() if root.exists() else []:
        if variant.is_dir() and not any(variant.iterdir()):
            variant.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", help="names under conf/experiment/")
    parser.add_argument("--force", default="0", help="1 reruns every run")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for every run")
    args = parser.parse_args(argv)
    from repro.report import write_and_announce

    try:
        for name in args.experiments:
            dirs = run_experiment(name, force=args.force not in ("0", "", "false"), extra=args.override)
            write_and_announce(name, results_dir=dirs[0].parents[3], tag=dirs[0].parents[1].name)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
