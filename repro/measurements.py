"""Measurements: figures an experiment's table needs that no training run gives, such as a layer's
latency and memory against a static baseline, measured in one process so the ratios are fair.

A measurement is a function registered with ``@register_measurement("name", config=Cfg)`` in a
method's module; it takes its config and returns ``{"columns": [...], "rows": [[...], ...],
"notes": [...]}``; ``plot=`` may name a function ``(result, path, title)`` that draws it (the
report writes ``<experiment>.<name>.png`` beside its table). An experiment lists the ones it shows (``measurements: [{name, params}]``);
``python -m repro.experiments`` runs each after the experiment's runs and writes it, with a
manifest (config, executed-code fingerprint, commit, packages, machine, times), to
``<results>/runs/<tag>/measurements/<name>.json`` beside the runs, so it is promoted, compared
and rebuilt with them. Like a run it is redone only when its config, its code or the numeric
libraries change; its figures are speeds and sizes, shown in the report but never judged by
``make reproduce-all``'s comparison (a shared machine's timings are not reproducible to 1e-3).
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from repro.environment import NUMERIC_PACKAGES, code_identity, git_state, machine, package_versions
from repro.errors import ConfigError
from repro.io import atomic_write_json
from repro.registry import Registry
from repro.run import load_json

MEASUREMENTS = Registry("measurement")
MEASUREMENT_KEYS = {"name", "params"}
MEASUREMENT_PLOTS: dict[str, Callable[[dict, Path, str], None]] = {}


def register_measurement(name: str, config: type, plot: Callable[[dict, Path, str], None] | None = None) -> Callable:
    if plot is not None:
        MEASUREMENT_PLOTS[name] = plot
    return MEASUREMENTS.register(name, config)


def measurement_path(run_root: Path, name: str) -> Path:
    return Path(run_root) / "measurements" / f"{name}.json"


def measurement_inputs(name: str, params: dict | None) -> dict:
    """What decides a measurement's figures: its config, its executed code, the numeric libraries."""
    cfg = MEASUREMENTS.config(name, params or {})
    versions = package_versions()
    return {
        "config": dataclasses.asdict(cfg),
        "code": code_identity(inspect.getsourcefile(MEASUREMENTS.get(name).factory))["fingerprint"],
        "versions": {k: versions.get(k) for k in NUMERIC_PACKAGES},
    }


def check_result(name: str, result: Any) -> dict:
    if not isinstance(result, dict) or not isinstance(result.get("columns"), list) or \
            not isinstance(result.get("rows"), list):
        raise ConfigError(f"measurement {name!r} must return a dict with 'columns' and 'rows' lists")
    for i, row in enumerate(result["rows"]):
        if len(row) != len(result["columns"]):
            raise ConfigError(f"measurement {name!r}: row {i} has {len(row)} cells for {len(result['columns'])} columns")
    return {"columns": result["columns"], "rows": result["rows"], "notes": list(result.get("notes", []))}


def measure(name: str, params: dict | None, run_root: Path, force: bool = False) -> Path:
    """Run the measurement unless a result with the same inputs exists; returns its JSON path."""
    path = measurement_path(run_root, name)
    now = measurement_inputs(name, params)
    previous = load_json(path)
    if previous and previous.get("inputs") == now and not force:
        print(f"[cached] measurement {name}")
        return path
    entry = MEASUREMENTS.get(name)
    print(f"[measure] {name}", flush=True)
    started = time.perf_counter()
    # the config the inputs were computed from (validated there), rebuilt as the dataclass it is
    result = check_result(name, entry.factory(entry.config(**now["config"])))
    source = inspect.getsourcefile(entry.factory)
    atomic_write_json(path, {
        "measurement": name,
        "inputs": now,
        "code": {**git_state(), **code_identity(source)},
        "packages": package_versions(),
        "machine": machine(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "result": result,
    })
    return path


def median_ms(fn: Callable[[], Any], rounds: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``rounds`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def load_measurement(run_root: Path, name: str) -> dict | None:
    """The stored measurement (``result``, ``inputs``, ``machine``...), or None when not measured."""
    return load_json(measurement_path(run_root, name))


def measurement_lines(run_root: Path, names: list[str], plot_dir: Path | None = None,
                      stem: str = "") -> list[str]:
    """Markdown sections for the report: one table per measurement, with where it was measured, and
    its plot (``<plot_dir>/<stem>.<name>.png``) where the measurement registered one."""
    if plot_dir is not None:
        from repro.registry import load_plugins

        load_plugins()  # the measurements' modules register their plots
    lines: list[str] = []
    for name in names:
        m = load_measurement(run_root, name)
        lines += ["", f"### Measurement `{name}`", ""]
        if m is None:
            lines.append("Not measured yet (`python -m repro.experiments` runs it after the experiment's runs).")
            continue
        r, mach = m["result"], m.get("machine", {})
        lines.append(f"Measured in one process on {mach.get('cpu_model')}, {mach.get('cores')} cores, "
                     f"GPU: {mach.get('gpu')}; commit {m['code']['commit'][:10]}{'+dirty' if m['code'].get('dirty') else ''}, "
                     f"{m['finished'][:10]}, "
                     f"{m['seconds']:.0f} s; config `{m['inputs']['config']}`.")
        lines += ["", "| " + " | ".join(r["columns"]) + " |", "|" + "---|" * len(r["columns"])]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in r["rows"]]
        lines += [""] + [f"- {n}" for n in r["notes"]] if r["notes"] else []
        if plot_dir is not None and name in MEASUREMENT_PLOTS:
            png = f"{stem}.{name}.png"
            MEASUREMENT_PLOTS[name](r, Path(plot_dir) / png, f"Measurement {name}")
            lines += ["", f"![{name}]({png})"]
    return lines
