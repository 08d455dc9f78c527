"""The result contract: tables (Markdown, CSV) and plots built only from ``done`` run manifests.

``python -m repro.report NAME`` rebuilds ``results/NAME.{md,csv,png}`` from the runs listed in
``results/runs/NAME/index.json``; nothing else is read, so every number in a table can be traced
to a manifest. Cells are mean +- std over seeds. Where the data has ground truth, a Bayes-optimal
row (the true click probability used as the prediction) shows how far from reachable each row is.
A paper's own figures, when an experiment names them, sit in separate columns labelled as the
paper's and are never mixed into ours.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from repro.errors import DataError, ReproError
from repro.io import atomic_write, atomic_write_text
from repro.registry import ROOT
from repro.run import load_json

METRICS = [  # (column, path into metrics.json, format)
    ("test AUC", ("test", "auc"), ".4f"),
    ("test logloss", ("test", "logloss"), ".4f"),
    ("GAUC user", ("test", "gauc_user"), ".4f"),
    ("GAUC request", ("test", "gauc_request"), ".4f"),
    ("AUC random slice", ("test", "auc_random"), ".4f"),
    ("PCOC", ("test", "pcoc"), ".3f"),
    ("valid AUC", ("valid", "auc"), ".4f"),
    ("train samples/s", ("profile", "train_samples_per_s"), ",.0f"),
    ("params", ("profile", "parameters"), ",.0f"),
    ("model MB", ("profile", "model_bytes"), ".2f"),
    ("best epoch", ("train", "best_epoch"), ".2f"),
    ("run seconds", ("profile", "run_seconds"), ".0f"),
]


def collect(experiment: str, results_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """One row per done run listed in the experiment's index."""
    root = results_dir / "runs" / experiment
    index = load_json(root / "index.json")
    if index is None:
        raise DataError(f"no run index at {root / 'index.json'}: run `python -m repro.experiments {experiment}` first")
    rows, manifests = [], []
    for rel in index["runs"]:
        manifest = load_json(root / rel / "manifest.json")
        metrics = load_json(root / rel / "metrics.json")
        if not manifest or manifest.get("status") != "done" or metrics is None:
            print(f"report: skipping {rel} (not done)", file=sys.stderr)
            continue
        row = {"label": manifest["label"], "seed": manifest["seed"], "run": rel}
        for col, path, _ in METRICS:
            row[col] = _get(metrics, path)
        row["model MB"] = row["model MB"] / 2**20 if row["model MB"] is not None else None
        train = metrics.get("train", {})
        if train.get("steps"):
            row["best epoch"] = train["best_step"] / train["steps"] * train["epochs_run"]
        profile = metrics.get("profile", {})
        row["run seconds"] = profile.get("train_seconds", 0) + profile.get("eval_seconds", 0)
        bayes = metrics.get("bayes", {})
        for col, path, _ in METRICS:
            if path[0] == "test":
                row[f"bayes {col}"] = _get(bayes, path)
        row["bayes AUC"] = row["bayes test AUC"]
        rows.append(row)
        manifests.append(manifest)
    if not rows:
        raise DataError(f"experiment {experiment!r} has no done runs to report")
    df = pd.DataFrame(rows)
    numeric = [c for c in df.columns if c not in ("label", "run")]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")  # absent metrics -> NaN
    return df, manifests


def single_bayes(df: pd.DataFrame) -> bool:
    """True when every row was measured on the same data, so one Bayes-optimal row applies."""
    b = df["bayes AUC"]
    return bool(b.notna().all() and b.max() - b.min() < 1e-12)


def _get(d: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def summarise(df: pd.DataFrame, order: list[str], baseline: str | None) -> pd.DataFrame:
    cols = [c for c, _, _ in METRICS]
    g = df.groupby("label", sort=False)
    out = pd.DataFrame({"seeds": g.size()})
    for c in cols:
        out[f"{c} mean"] = g[c].mean()
        out[f"{c} std"] = g[c].std(ddof=1)
    if baseline in out.index:
        base = out.loc[baseline, "test AUC mean"]
        out["RelaImpr % vs " + baseline] = ((out["test AUC mean"] - 0.5) / (base - 0.5) - 1) * 100
    # Each row against the optimum of its own data (rows may use different world settings).
    out["gap to Bayes AUC"] = g["bayes AUC"].mean() - out["test AUC mean"]
    return out.reindex([o for o in order if o in out.index])


def _cell(mean: float, std: float, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None or (isinstance(std, float) and math.isnan(std)) or fmt.startswith(","):
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format(std, fmt)}"


def markdown(spec: dict, summary: pd.DataFrame, df: pd.DataFrame, manifests: list[dict]) -> str:
    m0 = manifests[0]
    data = m0.get("data", {})
    cfg_data = m0["config"]["data"]
    seeds = sorted(df["seed"].unique().tolist())
    commits = sorted({m["code"]["commit"][:10] + ("+dirty" if m["code"]["dirty"] else "") for m in manifests})
    machine = m0["machine"]
    lines = [
        f"# {spec.get('title', spec['name'])}",
        "",
        f"- data set: `{data.get('source')}` scale `{cfg_data.get('scale', 'n/a')}`, "
        f"rows train/valid/test = {data.get('rows', {}).get('train')}/{data.get('rows', {}).get('valid')}/"
        f"{data.get('rows', {}).get('test')}, split: {data.get('split_protocol')}, fingerprint `{data.get('fingerprint')}`",
        f"- seeds: {seeds} ({len(seeds)} per row); cells are mean ± std over seeds",
        f"- machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, GPU: {machine.get('gpu')}",
        f"- code: {', '.join(commits)}; built {datetime.now(timezone.utc).strftime('%Y-%m-%d')} from "
        f"{len(df)} run manifests under `results/runs/{spec['name']}/`",
        f"- compute: {df['run seconds'].sum() / 60:.1f} min of training and evaluation summed over runs "
        f"(data preparation excluded); best epoch = where validation AUC peaked (early stopping keeps it)",
        "",
    ]
    shown = ["test AUC", "test logloss", "GAUC user", "GAUC request", "AUC random slice", "PCOC", "best epoch",
             "train samples/s", "params"]
    fmts = {c: f for c, _, f in METRICS}
    extra = [c for c in summary.columns if c.startswith("RelaImpr") or c == "gap to Bayes AUC"]
    header = ["model", "seeds", *shown, *extra]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for label, r in summary.iterrows():
        cells = [str(label), str(int(r["seeds"]))]
        cells += [_cell(r[f"{c} mean"], r[f"{c} std"], fmts[c]) for c in shown]
        cells += [format(r[c], "+.2f" if c.startswith("RelaImpr") else ".4f") for c in extra]
        lines.append("| " + " | ".join(cells) + " |")
    if single_bayes(df):
        cells = [_cell(df[f"bayes {c}"].mean(), None, fmts[c]) if f"bayes {c}" in df else "–" for c in shown]
        lines.append("| **Bayes-optimal** (true p_click) | – | " + " | ".join(cells + ["–"] * len(extra)) + " |")
    elif df["bayes AUC"].notna().any():
        lines += ["", "Rows use different data, so each has its own Bayes-optimal AUC (see the gap column)."]
    lines += ["", "## Checks", ""]
    lines += [f"- {c}" for c in checks(summary, df, spec.get("report", {}).get("baseline"))]
    lines += ["", "Plot: " + f"`{spec['name']}.png`. CSV: `{spec['name']}.csv`.", ""]
    return "\n".join(lines)


def checks(summary: pd.DataFrame, df: pd.DataFrame, baseline: str | None) -> list[str]:
    """Verdicts computed from the numbers above, never written by hand."""
    out = []
    if df["bayes AUC"].notna().all():
        over = df[df["test AUC"] > df["bayes AUC"]]
        best = df.loc[df["test AUC"].idxmax()]
        verdict = "holds" if over.empty else f"does not hold ({len(over)} runs)"
        out.append(f"No run exceeds the Bayes-optimal test AUC of its data (max {df['bayes AUC'].max():.4f}); "
                   f"best single run {best['test AUC']:.4f} ({best['label']}): **{verdict}**.")
    if baseline in summary.index:
        base_mean, base_std = summary.loc[baseline, "test AUC mean"], summary.loc[baseline, "test AUC std"]
        for label, r in summary.iterrows():
            if label == baseline:
                continue
            margin = r["test AUC mean"] - base_mean
            spread = (r["test AUC std"] if not math.isnan(r["test AUC std"]) else 0) + (base_std if not math.isnan(base_std) else 0)
            verdict = "beats" if margin > spread else "does not beat"
            out.append(f"{label} {verdict} {baseline} beyond the seed spread: ΔAUC {margin:+.4f} vs summed std {spread:.4f}.")
    return out


def plot(spec: dict, summary: pd.DataFrame, df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(summary.index)
    x = np.arange(len(labels))
    ax1.bar(x, summary["test AUC mean"], yerr=summary["test AUC std"].fillna(0), capsize=4, color="#4C72B0")
    for xi, seed_vals in zip(x, [df[df.label == lab]["test AUC"].to_numpy() for lab in labels]):
        ax1.scatter(np.full(len(seed_vals), xi), seed_vals, color="k", s=8, zorder=3)
    if single_bayes(df):
        ax1.axhline(df["bayes AUC"].mean(), color="#C44E52", ls="--", label="Bayes-optimal")
        ax1.legend(loc="lower right")
    lo = min(summary["test AUC mean"].min() - 0.01, 0.7)
    hi = np.nanmax([df["bayes AUC"].max(), summary["test AUC mean"].max()]) + 0.01
    ax1.set_ylim(lo, hi)
    ax1.set_xticks(x, labels, rotation=30, ha="right")
    ax1.set_ylabel("test AUC (mean ± std; dots = seeds)")
    ax1.set_title("Accuracy")
    ax2.errorbar(summary["train samples/s mean"], summary["test AUC mean"], yerr=summary["test AUC std"].fillna(0), fmt="o")
    for label, r in summary.iterrows():
        ax2.annotate(label, (r["train samples/s mean"], r["test AUC mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("training samples/s (log)")
    ax2.set_ylabel("test AUC")
    ax2.set_title("Accuracy vs training throughput")
    fig.suptitle(spec.get("title", spec["name"]))
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def write_report(experiment: str, results_dir: Path | None = None, tag: str | None = None) -> list[Path]:
    """Rebuild ``<results_dir>/<tag>.{md,csv,png}``; ``tag`` defaults to the experiment's name."""
    from repro.experiments import load_experiment

    results_dir = results_dir or ROOT / "results"
    spec = load_experiment(experiment)
    if tag and tag != spec["name"]:
        spec = {**spec, "name": tag, "title": f"{spec.get('title', spec['name'])} ({tag})"}
    df, manifests = collect(spec["name"], results_dir)
    order = [r["label"] for r in spec["runs"]]
    summary = summarise(df, order, spec.get("report", {}).get("baseline"))
    md, csv, png = (results_dir / f"{spec['name']}.{ext}" for ext in ("md", "csv", "png"))
    atomic_write_text(md, markdown(spec, summary, df, manifests))
    atomic_write_text(csv, summary.rename_axis("model").to_csv())
    plot(spec, summary, df, png)
    return [md, csv, png]


def write_and_announce(experiment: str, results_dir: Path | None = None, tag: str | None = None) -> None:
    for path in write_report(experiment, results_dir, tag):
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report")
    parser.add_argument("experiments", nargs="+")
    args = parser.parse_args(argv)
    try:
        for name in args.experiments:
            write_and_announce(name)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
