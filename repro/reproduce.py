"""Reproduction: rerun on this machine, compare with the committed reference, promote.

The committed ``results/`` are the *reference*: their manifests name the machine, code and
libraries that made them. ``make reproduce-all`` reruns every experiment into a local, git-ignored
run store (``reproduced/``, same layout as ``results/``; cached there, so a second call reruns
nothing), builds its tables and plots there, and then ``compare`` writes
``reproduced/reproduction.{md,json}``: every table cell with the reference value, this machine's
value, the difference and a verdict. ``promote`` copies a local run set into ``results/`` (for
maintainers), and ``verify`` reruns one committed run and compares it alone.

Tolerance rule (one rule for cells and single runs). A cell is a row's mean over seeds.
- ``identical``: |Δ| <= 1e-9 x max(1, |reference|) (print noise), and the row ran at the
  reference's thread count. Expected on the CPU when the machine's instruction set, the thread count
  and the numeric libraries match the reference's: runs are deterministic there. The thread count is
  a scheduling input, not part of a run's identity (``make reproduce-all JOBS=N`` divides the cores),
  so a row run at another thread count is at best ``within tolerance``: reductions sum in another
  order.
- ``within tolerance``: |Δ| <= tol with tol = max(1e-4, min(1e-3, 2 x s / sqrt(n))), where s is
  the reference row's standard deviation over its n seeds: two standard errors of the reference
  mean, never stricter than 1e-4 and never looser than 1e-3 (BARS's bound for an accurate
  reproduction of an AUC). A single run (``verify``) takes n = 1 and its row's seed spread.
- ``differs``: otherwise.
Structural cells (parameters, model bytes) must be identical. Speed and time cells (samples/s,
seconds) depend on the machine: they are shown with their ratio and never judged.

Verdicts are compared too: every claim of the experiment judged on the reference's runs and on this
machine's (``repro.claims``), side by side, with the claims whose verdict moved listed first.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from repro.errors import DataError, ReproError
from repro.io import atomic_write_json, atomic_write_text
from repro.registry import ROOT

REFERENCE = ROOT / "results"
LOCAL = ROOT / "reproduced"
EXACT = {"params", "model MiB"}  # structure: must be identical
MACHINE = {"train samples/s", "run seconds"}  # speed: shown, never judged
IDENTICAL_REL = 1e-9


def tolerance(seed_std: float, seeds: int) -> float:
    s = 0.0 if seed_std is None or not math.isfinite(seed_std) else seed_std
    return max(1e-4, min(1e-3, 2 * s / math.sqrt(max(seeds, 1))))


def verdict(column: str, ref: float, new: float, tol: float, same_threads: bool = True) -> str:
    if ref is None or new is None or (isinstance(ref, float) and math.isnan(ref)) or (
            isinstance(new, float) and math.isnan(new)):
        return "missing" if (ref is None or ref != ref) != (new is None or new != new) else "n/a"
    if column in MACHINE:
        return "not judged (machine speed)"
    delta = abs(new - ref)
    if delta <= IDENTICAL_REL * max(1.0, abs(ref)):
        return "identical" if same_threads or column in EXACT else "within tolerance"
    if column in EXACT:
        return "differs"
    return "within tolerance" if delta <= tol else "differs"


def compare_experiment(name: str, reference: Path = REFERENCE, local: Path = LOCAL) -> pd.DataFrame:
    """One row per (table row, column) cell of the experiment: reference, local, Δ, verdict."""
    from repro.report import METRICS, collect

    ref_df, ref_manifests = collect(name, reference)
    new_df, new_manifests = collect(name, local)
    ref_threads, new_threads = _threads_by_label(ref_manifests), _threads_by_label(new_manifests)
    columns = [c for c, _, _ in METRICS]
    cells = []
    for label, ref_rows in ref_df.groupby("label", sort=False):
        new_rows = new_df[new_df["label"] == label]
        same_threads = ref_threads.get(label) == new_threads.get(label)
        for col in columns:
            ref_vals = ref_rows[col].dropna()
            new_vals = new_rows[col].dropna() if len(new_rows) else pd.Series(dtype=float)
            ref_mean = float(ref_vals.mean()) if len(ref_vals) else float("nan")
            new_mean = float(new_vals.mean()) if len(new_vals) else float("nan")
            tol = tolerance(float(ref_vals.std(ddof=1)) if len(ref_vals) > 1 else 0.0, len(ref_vals))
            cells.append({
                "experiment": name, "row": label, "column": col, "reference": ref_mean, "this machine": new_mean,
                "difference": new_mean - ref_mean, "tolerance": tol if col not in MACHINE | EXACT else float("nan"),
                "seeds (ref/here)": f"{len(ref_vals)}/{len(new_vals)}",
                "verdict": verdict(col, ref_mean, new_mean, tol, same_threads),
            })
    missing = sorted(set(new_df["label"]) - set(ref_df["label"]))
    for label in missing:
        cells.append({"experiment": name, "row": label, "column": "*", "verdict": "no reference row"})
    out = pd.DataFrame(cells)
    out.attrs["reference_machine"] = ref_manifests[0]["machine"]
    out.attrs["local_machine"] = new_manifests[0]["machine"]
    out.attrs["reference_packages"] = ref_manifests[0].get("packages", {})
    out.attrs["local_packages"] = new_manifests[0].get("packages", {})
    out.attrs["reference_commits"] = sorted({m["code"]["commit"][:10] for m in ref_manifests})
    out.attrs["local_commits"] = sorted({m["code"]["commit"][:10] for m in new_manifests})
    return out


def _threads_by_label(manifests: list[dict]) -> dict[str, frozenset]:
    out: dict[str, set] = {}
    for m in manifests:
        out.setdefault(m["label"], set()).add(m.get("config", {}).get("train", {}).get("threads"))
    return {k: frozenset(v) for k, v in out.items()}


def compare_verdicts(name: str, reference: Path = REFERENCE, local: Path = LOCAL) -> list[dict]:
    """Every claim of the experiment with its verdict on the reference's runs and on this machine's."""
    from repro.experiments import load_experiment
    from repro.report import experiment_claims, load_runs, row_inputs, runs_by_label

    from repro.run import load_json

    # ``name`` is the run folder's tag: the experiment itself, or it with extra overrides
    experiment = (load_json(reference / "runs" / name / "index.json") or {}).get("experiment", name)
    spec = {**load_experiment(experiment), "name": name, "source_name": experiment}
    judged = {}
    for side, root in (("reference", reference), ("this machine", local)):
        loaded = load_runs(name, root)
        judged[side] = {r.claim.id: r for r in experiment_claims(spec, runs_by_label(loaded), root, row_inputs(loaded))}
    out = []
    for cid, ref in judged["reference"].items():
        new = judged["this machine"].get(cid)
        out.append({"experiment": name, "claim": cid, "kind": ref.claim.kind, "reference": ref.verdict,
                    "this machine": new.verdict if new else "missing",
                    "same": bool(new and new.verdict == ref.verdict)})
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def write_comparison(names: list[str], reference: Path = REFERENCE, local: Path = LOCAL) -> Path:
    """``<local>/reproduction.{md,json}`` for the named experiments; returns the Markdown path."""
    frames, problems, verdicts = [], [], {}
    for name in names:
        try:
            frames.append(compare_experiment(name, reference, local))
            verdicts[name] = compare_verdicts(name, reference, local)
        except DataError as e:
            problems.append(f"{name}: {e}")
    lines = ["# Reproduction report", "",
             f"Reference: `{reference.relative_to(ROOT) if reference.is_relative_to(ROOT) else reference}` "
             f"(committed). This machine: `{local.relative_to(ROOT) if local.is_relative_to(ROOT) else local}`.", "",
             "Tolerance rule (see `repro/reproduce.py`): **identical** = equal to print noise, expected on the "
             "CPU with the same instruction set, thread count and numeric libraries (a row run at another "
             "thread count is at best within tolerance); **within tolerance** = "
             "|Δ| <= max(1e-4, min(1e-3, 2 x reference seed std / sqrt(seeds))); structural cells must be "
             "identical; speed cells are machine-dependent and not judged.", ""]
    summary = {}
    for df in frames:
        name = df["experiment"].iloc[0]
        judged = df[~df["verdict"].isin(["not judged (machine speed)", "n/a"])]
        counts = judged["verdict"].value_counts().to_dict()
        summary[name] = counts
        rm, lm = df.attrs["reference_machine"], df.attrs["local_machine"]
        rp, lp = df.attrs["reference_packages"], df.attrs["local_packages"]
        lines += [f"## {name}", "",
                  f"- reference: {rm.get('cpu_model')}, {rm.get('cores')} cores, torch {rp.get('torch')}, "
                  f"numpy {rp.get('numpy')}, commit {', '.join(df.attrs['reference_commits'])}",
                  f"- this machine: {lm.get('cpu_model')}, {lm.get('cores')} cores, torch {lp.get('torch')}, "
                  f"numpy {lp.get('numpy')}, commit {', '.join(df.attrs['local_commits'])}",
                  f"- **{counts.get('identical', 0)} of {len(judged)} judged cells identical, "
                  f"{counts.get('within tolerance', 0)} within tolerance, {counts.get('differs', 0)} differ**"
                  + (f", {counts.get('missing', 0)} missing" if counts.get("missing") else ""), ""]
        claims = verdicts.get(name, [])
        if claims:
            moved = [c for c in claims if not c["same"]]
            lines += [f"- **claims: {len(claims) - len(moved)} of {len(claims)} verdicts the same**"
                      + (f"; moved: {', '.join(c['claim'] for c in moved)}" if moved else ""), "",
                      "| claim | kind | reference verdict | verdict here | same |", "|---|---|---|---|---|"]
            for c in sorted(claims, key=lambda c: c["same"]):
                lines.append(f"| `{c['claim']}` | {c['kind']} | {c['reference']} | {c['this machine']} | "
                             f"{'yes' if c['same'] else '**no**'} |")
            lines.append("")
        lines.append("| row | column | reference | this machine | Δ | tolerance | seeds | verdict |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for _, c in df.iterrows():
            v = c["verdict"]
            lines.append(f"| {c['row']} | {c['column']} | {_fmt(c.get('reference'))} | {_fmt(c.get('this machine'))} | "
                         f"{_fmt(c.get('difference'))} | {_fmt(c.get('tolerance'))} | {c.get('seeds (ref/here)', '')} | "
                         f"{'**' + v + '**' if v == 'differs' else v} |")
        lines.append("")
    if problems:
        lines += ["## Not compared", ""] + [f"- {p}" for p in problems] + [""]
    md = local / "reproduction.md"
    atomic_write_text(md, "\n".join(lines))
    records = [r for df in frames for r in df.to_dict(orient="records")]
    atomic_write_json(local / "reproduction.json", {"summary": summary, "problems": problems, "cells": records,
                                                    "claims": [c for cs in verdicts.values() for c in cs]})
    for name, counts in summary.items():
        judged = sum(counts.values())
        print(f"reproduction of {name}: {counts.get('identical', 0)}/{judged} cells identical, "
              f"{counts.get('within tolerance', 0)} within tolerance, {counts.get('differs', 0)} differ")
    for p in problems:
        print(f"reproduction: not compared: {p}", file=sys.stderr)
    return md


def promote(names: list[str], local: Path = LOCAL, reference: Path = REFERENCE) -> None:
    """Make the local run set of each experiment the committed reference, then rebuild its report.

    Every listed local run must be done. The reference folder is replaced whole (built aside and
    renamed), so a failure leaves the old reference in place."""
    from repro.report import write_and_announce
    from repro.run import load_json

    for name in names:
        src = local / "runs" / name
        index = load_json(src / "index.json")
        if index is None:
            raise DataError(f"nothing to promote for {name!r}: {src / 'index.json'} is missing "
                            f"(run `make reproduce-all EXPERIMENTS={name}` first)")
        for rel in index["runs"]:
            m = load_json(src / rel / "manifest.json")
            if not m or m.get("status") != "done":
                raise DataError(f"cannot promote {name!r}: run {rel} is not done")
            if m.get("code", {}).get("dirty"):
                print(f"warning: {name}/{rel} was made from a dirty work tree (commit {m['code']['commit'][:10]})",
                      file=sys.stderr)
        dst = reference / "runs" / name
        tmp = dst.with_name(dst.name + ".promote")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.partial", "*.failed", "*.old", "*.pt", "*.tmp"))
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if dst.exists():
            dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
        print(f"promoted {src} -> {dst}")
        write_and_announce(index.get("experiment", name), results_dir=reference, tag=name)


def verify(run_dir: Path, local: Path = LOCAL) -> int:
    """Rerun one committed run on this machine (into the local store) and compare its metrics."""
    from repro.run import execute, inputs, load_json, load_metrics, resolve

    run_dir = Path(run_dir).resolve()
    manifest = load_json(run_dir / "manifest.json")
    metrics = load_metrics(run_dir / "metrics.json")
    if not manifest or manifest.get("status") != "done" or metrics is None:
        raise DataError(f"{run_dir} holds no done run (manifest.json with status 'done' and metrics.json)")
    config = manifest["config"]
    cfg = {
        "data": {**config["data"], "cache_root": config.get("cache_root", "cache")},
        "model": config["model"], "embedding": config["embedding"], "train": config["train"],
        "seed": config["seed"], "experiment_name": manifest["experiment"], "label": manifest["label"],
        "results_dir": str(local),
    }
    run = resolve(cfg)
    if run.config_hash != manifest["config_hash"]:
        print("note: the config resolves to another hash under the current code (defaults changed?)")
    now = inputs(run)
    changed = [k for k in ("data", "code", "versions") if manifest.get("inputs", {}).get(k) != now[k]]
    if changed:
        print(f"note: the reference was made with other {', '.join(changed)}: differences are expected")
    execute(cfg)
    mine = load_metrics(run.run_dir / "metrics.json")
    siblings = [load_metrics(p) for p in run_dir.parent.glob("seed*/metrics.json")]
    rows, worst = [], "identical"
    order = ["identical", "within tolerance", "differs"]
    for split in [k for k in metrics if isinstance(metrics[k], dict) and "auc" in metrics[k]]:
        for key in ("auc", "logloss", "gauc_user", "gauc_request", "pcoc", "auc_random"):
            ref, new = metrics[split].get(key), (mine.get(split) or {}).get(key)
            if ref is None:
                continue
            spread = [s[split][key] for s in siblings if s and key in s.get(split, {})]
            tol = tolerance(float(np.std(spread, ddof=1)) if len(spread) > 1 else 0.0, 1)
            v = verdict(f"{split} {key}", ref, new, tol)
            if v in order and order.index(v) > order.index(worst):
                worst = v
            rows.append(f"{split:>12} {key:<14} {ref:>12.6f} {new if new is not None else float('nan'):>12.6f} "
                        f"{(new - ref) if new is not None else float('nan'):>+12.2e} {tol:>9.1e}  {v}")
    print(f"\nverify {run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir} "
          f"(reference machine: {manifest['machine'].get('cpu_model')}, {manifest['machine'].get('cores')} cores)")
    print(f"{'split':>12} {'metric':<14} {'reference':>12} {'here':>12} {'Δ':>12} {'tol':>9}  verdict")
    print("\n".join(rows))
    print(f"overall: {worst}")
    return 0 if worst != "differs" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="repro", description="Reproduce, compare with the reference, promote.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="write reproduced/reproduction.md: reference vs this machine, cell by cell")
    p.add_argument("experiments", nargs="+")
    p = sub.add_parser("promote", help="make the local runs of the experiments the committed reference")
    p.add_argument("experiments", nargs="+")
    p = sub.add_parser("verify", help="rerun one committed run here and compare its metrics")
    p.add_argument("run_dir", type=Path, help="e.g. results/runs/baselines/DeepFM-<hash>/seed0")
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            print(f"wrote {write_comparison(args.experiments)}")
        elif args.command == "promote":
            promote(args.experiments)
        else:
            return verify(args.run_dir)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
