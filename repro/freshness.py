"""Which committed results still stand against the checked-out code, and why not: what the tables,
``results/claims.md`` and ``make plan`` say about each run and measurement.

A run is one of
- ``current``: every input that decides its numbers is unchanged (``repro.run.staleness`` is empty);
- ``waiting``: its inputs are unchanged, but a local artefact it needs is missing. Predictions are
  git-ignored (``.gitignore``: 18 MB a run), so on a fresh clone a student's teacher has no
  predictions yet, and a run that keeps its own predictions has none: rerunning the teacher (or
  the run) rebuilds them and gives the same numbers. Such a run is not stale;
- ``stale``: an input changed (config, data, code, library versions, its teacher's inputs), it is
  not done, or the experiment no longer lists it; its numbers describe other code than this.
``repro.run.staleness`` marks the reasons of the second kind (``repro.run.LocalArtefact``); any
other reason makes a run stale.

The runs an experiment's table shows are those of its ``index.json``; the runs it should show are
those its yaml plans now (``repro.experiments.plan``, with the index's extra overrides). A listed
run the plan no longer holds is stale ("no longer in the experiment"); a planned run without a done
run is missing. Measurements are stale when their inputs (config, code, library versions) moved.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from repro.errors import ReproError
from repro.run import load_json

CURRENT, WAITING, STALE = "current", "waiting", "stale"


@dataclass
class State:
    state: str
    reasons: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.state + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def classify(reasons: list[str]) -> State:
    """A run's state from its staleness reasons (see the module docstring)."""
    from repro.run import LocalArtefact

    if not reasons:
        return State(CURRENT)
    if all(isinstance(r, LocalArtefact) for r in reasons):
        return State(WAITING, list(reasons))
    return State(STALE, [r for r in reasons if not isinstance(r, LocalArtefact)])


@dataclass
class ExperimentFreshness:
    experiment: str
    tag: str
    runs: dict[str, State]  # index entry (``<label>-<hash>/seed<k>``) -> its state
    labels: dict[str, str]  # index entry -> row label
    missing: list[str]  # planned runs with no done run: "<label> seed <k>: why"
    measurements: dict[str, State]
    stale_seconds: float = 0.0  # the reference time of the stale and missing runs (a regeneration's budget)
    error: str = ""  # why freshness could not be judged (then every run counts as unknown)

    def rows(self) -> dict[str, State]:
        """Row label -> the worst state among its runs, with their reasons (deduplicated)."""
        out: dict[str, State] = {}
        order = {CURRENT: 0, WAITING: 1, STALE: 2}
        for rel, state in self.runs.items():
            label = self.labels[rel]
            have = out.setdefault(label, State(CURRENT))
            if order[state.state] > order[have.state]:
                have.state = state.state
            have.reasons += [r for r in state.reasons if r not in have.reasons]
        return out

    def counts(self) -> dict[str, int]:
        out = {CURRENT: 0, WAITING: 0, STALE: 0}
        for s in self.runs.values():
            out[s.state] += 1
        return out

    def summary(self) -> str:
        """One line: the runs' and measurements' states and the regeneration budget."""
        if self.error:
            return f"freshness not judged: {self.error}"
        c = self.counts()
        parts = [f"{len(self.runs)} runs: {c[CURRENT]} current, {c[WAITING]} waiting for local artefacts, "
                 f"{c[STALE]} stale"]
        if self.missing:
            parts.append(f"{len(self.missing)} planned runs missing")
        stale_m = [n for n, s in self.measurements.items() if s.state != CURRENT]
        if self.measurements:
            parts.append(f"{len(self.measurements)} measurements, {len(stale_m)} stale")
        if c[STALE] or self.missing or stale_m:
            parts.append(f"about {self.stale_seconds / 60:.0f} min of runs to regenerate (the reference's times)")
        return "; ".join(parts)

    def stale_rows(self) -> set[str]:
        return {label for label, s in self.rows().items() if s.state == STALE}

    def stale_measurements(self) -> set[str]:
        return {name for name, s in self.measurements.items() if s.state != CURRENT}


_MEMO: dict[tuple, ExperimentFreshness] = {}


def experiment_freshness(name: str, results_dir: Path, tag: str | None = None) -> ExperimentFreshness:
    """The state of every run and measurement an experiment's committed table shows (remembered
    for the process while its index is unchanged: ``make report`` asks once per table and once
    for claims.md)."""
    index_path = Path(results_dir) / "runs" / (tag or name) / "index.json"
    key = (name, str(Path(results_dir).resolve()), tag or name,
           index_path.stat().st_mtime_ns if index_path.exists() else None)
    if key not in _MEMO:
        _MEMO[key] = _experiment_freshness(name, Path(results_dir), tag)
    return _MEMO[key]


def _experiment_freshness(name: str, results_dir: Path, tag: str | None = None) -> ExperimentFreshness:
    from repro.experiments import load_experiment, plan
    from repro.measurements import load_measurement, measurement_inputs

    results_dir = Path(results_dir)
    tag = tag or name
    root = results_dir / "runs" / tag
    index = load_json(root / "index.json") or {"runs": []}
    labels = {rel: (load_json(root / rel / "manifest.json") or {}).get("label", rel) for rel in index["runs"]}
    try:
        spec = load_experiment(name)
        jobs = plan([name], extra=index.get("extra_overrides", []), results_dir=str(results_dir))
    except ReproError as e:
        unknown = {rel: State(STALE, [f"its experiment does not plan: {e}"]) for rel in index["runs"]}
        return ExperimentFreshness(name, tag, unknown, labels, [], {}, 0.0, str(e))
    planned = {str(j.run_dir.relative_to(root)): j for j in jobs if j.run_dir.is_relative_to(root)}
    runs, seconds = {}, 0.0
    for rel in index["runs"]:
        job = planned.get(rel)
        runs[rel] = classify(job.reasons) if job else State(STALE, ["no longer in the experiment's definition"])
        if job and runs[rel].state == STALE:
            seconds += job.estimate_s
    missing = []
    for rel, job in planned.items():
        if rel not in runs:
            missing.append(f"{job.label} seed {job.seed}: {'; '.join(job.reasons) or 'not in the index'}")
            seconds += job.estimate_s
    measurements = {}
    for m in spec.get("measurements") or []:
        stored = load_measurement(root, m["name"])
        if stored is None:
            measurements[m["name"]] = State(STALE, ["not measured"])
            continue
        then, now = stored.get("inputs", {}), measurement_inputs(m["name"], m.get("params"))
        why = [f"its {k} changed" for k in ("config", "code", "versions") if then.get(k) != now.get(k)]
        measurements[m["name"]] = State(STALE if why else CURRENT, why)
        if why:
            seconds += float(stored.get("seconds") or 0.0)
    return ExperimentFreshness(name, tag, runs, labels, missing, measurements, seconds)


def header_lines(fresh: ExperimentFreshness) -> list[str]:
    """The table's header lines on what is stale (a reader must see it before the numbers)."""
    if fresh.error:
        return [f"- **freshness not judged**: {fresh.error}"]
    rows = fresh.rows()
    stale = {k: v for k, v in rows.items() if v.state == STALE}
    waiting = {k: v for k, v in rows.items() if v.state == WAITING}
    stale_m = {n: s for n, s in fresh.measurements.items() if s.state != CURRENT}
    if not (stale or waiting or stale_m or fresh.missing):
        return ["- freshness: every run and measurement of this table is current against the checked-out code"]
    lines = [f"- freshness: {fresh.summary()}"]
    for label, s in stale.items():
        lines.append(f"  - **stale row** {label}: {'; '.join(s.reasons)}")
    for name, s in stale_m.items():
        lines.append(f"  - **stale measurement** `{name}`: {'; '.join(s.reasons)}")
    for item in fresh.missing:
        lines.append(f"  - **missing run** {item}")
    for label, s in waiting.items():
        lines.append(f"  - waiting (not stale) {label}: {'; '.join(s.reasons)}")
    return lines


def mark_table(lines: list[str], fresh: ExperimentFreshness) -> list[str]:
    """Table lines with each stale row's first cell (its label) flagged."""
    stale = fresh.stale_rows()
    out = []
    for line in lines:
        if line.startswith("| "):
            first, _, rest = line[2:].partition(" |")
            if first in stale:
                line = f"| {first} ⚠ stale |{rest}"
        out.append(line)
    return out


def claim_staleness(result, fresh: ExperimentFreshness) -> str | None:
    """Why a claim's verdict rests on stale results (its rows or measurements), or None."""
    stale_rows, stale_m = fresh.stale_rows(), fresh.stale_measurements()
    conditions = [*result.claim.requires, *result.claim.conditions]
    rows = sorted({r for c in conditions for r in c.rows if r in stale_rows})
    measured = sorted({c.measured[0] for c in conditions if c.measured and c.measured[0] in stale_m})
    parts = ([f"rows {', '.join(rows)}"] if rows else []) + ([f"measurement {', '.join(measured)}"] if measured else [])
    return " and ".join(parts) if parts else None


README_BEGIN, README_END = "<!-- freshness:begin -->", "<!-- freshness:end -->"


def all_experiments(results_dir: Path) -> list[tuple[str, str]]:
    """(experiment, tag) of every committed table under ``results_dir`` (its runs' index)."""
    out = []
    for index_path in sorted(Path(results_dir).glob("runs/*/index.json")):
        index = load_json(index_path) or {}
        name, tag = index.get("experiment"), index.get("tag", index_path.parent.name)
        if name and (Path(results_dir) / f"{tag}.md").exists():
            out.append((name, tag))
    return out


def readme_block(results_dir: Path) -> str:
    """The README's statement of what in ``results_dir`` is stale against the checked-out code."""
    lines = [README_BEGIN, ""]
    stale, waiting = [], []
    for name, tag in all_experiments(results_dir):
        fresh = experiment_freshness(name, results_dir, tag)
        c = fresh.counts()
        if c[STALE] or fresh.missing or fresh.stale_measurements() or fresh.error:
            stale.append(f"- `{tag}`: {fresh.summary()}")
        elif c[WAITING]:
            waiting.append(f"`{tag}` ({c[WAITING]})")
    if stale:
        lines.append("**Stale committed results** (against this commit's code; `make plan` says why):")
        lines += ["", *stale]
    else:
        lines.append("**Every committed run and measurement is current against this commit's code** (`make plan`).")
    if waiting:
        lines += ["", "Waiting on a fresh clone, not stale (their teachers' git-ignored predictions are rebuilt "
                      "by rerunning the teachers): " + ", ".join(waiting) + "."]
    lines += ["", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, results_dir: Path, write: bool) -> bool:
    """True when the README's block states the results' freshness; with ``write`` make it so."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ReproError(f"{readme}: no {README_BEGIN} ... {README_END} block")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    block = readme_block(results_dir)
    if head + block + tail == text:
        return True
    if write:
        from repro.io import atomic_write_text

        atomic_write_text(readme, head + block + tail)
    return False


def main(argv: list[str] | None = None) -> int:
    import argparse

    from repro.registry import ROOT

    parser = argparse.ArgumentParser(prog="python -m repro.freshness", description="the README's statement of "
                                     "which committed results are stale")
    parser.add_argument("--write", action="store_true", help="rewrite the README's block")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    ok = update_readme(ROOT / "README.md", args.results_dir, args.write)
    if not ok and not args.write:
        print("README.md's freshness block is out of date: `python -m repro.freshness --write`", file=sys.stderr)
        return 1
    print("README.md states the committed results' freshness" + (" (rewritten)" if not ok else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
