"""The result contract: tables (Markdown, CSV) and plots built only from ``done`` run manifests.

``python -m repro.report NAME`` rebuilds ``results/NAME.{md,csv,png}`` from the runs listed in
``results/runs/NAME/index.json``; nothing else is read, so every number in a table can be traced
to a manifest. Cells are mean +- std over seeds. Where the data has ground truth, a Bayes-optimal
row (the true click probability used as the prediction) shows how far from reachable each row is.
A paper's own figures, when an experiment names them, sit in separate columns labelled as the
paper's and are never mixed into ours.

Checks compare every row with the experiment's ``report.baseline`` row by a 95% interval that is
paired by request and covers seed noise (``repro.claims.compare``), on ``test`` and, where runs
have it, on the fully randomised ``test_random`` split, and say which rows are separable. Each
table ends with the experiment's declared ``claims`` and their verdicts; ``results/claims.md``
(``write_claims_index``) gathers the claims of every experiment with a built report.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from repro import claims as claims_mod
from repro.errors import ConfigError, DataError, ReproError
from repro.io import atomic_write_text
from repro.plot_rules import machine_note
from repro.registry import ROOT
from repro.run import load_json, load_metrics

METRICS = [  # (column, path into metrics.json, format)
    ("test AUC", ("test", "auc"), ".4f"),
    ("test logloss", ("test", "logloss"), ".4f"),
    ("GAUC user", ("test", "gauc_user"), ".4f"),
    ("GAUC request", ("test", "gauc_request"), ".4f"),
    ("AUC random slice", ("test", "auc_random"), ".4f"),
    ("AUC test_random", ("test_random", "auc"), ".4f"),
    ("PCOC", ("test", "pcoc"), ".3f"),
    ("valid AUC", ("valid", "auc"), ".4f"),
    ("train samples/s", ("profile", "train_samples_per_s"), ",.0f"),
    ("params", ("profile", "parameters"), ",.0f"),
    ("model MiB", ("profile", "model_bytes"), ".2f"),  # bytes / 2**20 (frame)
    ("best epoch", ("train", "best_epoch"), ".2f"),
    ("run seconds", ("profile", "run_seconds"), ".0f"),
]


def load_runs(experiment: str, results_dir: Path) -> list[tuple[str, dict, dict]]:
    """(run folder, manifest, metrics) of every done run listed in the experiment's index."""
    root = Path(results_dir) / "runs" / experiment
    index = load_json(root / "index.json")
    if index is None:
        raise DataError(f"no run index at {root / 'index.json'}: run `python -m repro.experiments {experiment}` first")
    out = []
    for rel in index["runs"]:
        manifest = load_json(root / rel / "manifest.json")
        metrics = load_metrics(root / rel / "metrics.json")
        if not manifest or manifest.get("status") != "done" or metrics is None:
            print(f"report: skipping {rel} (not done)", file=sys.stderr)
            continue
        out.append((rel, manifest, metrics))
    if not out:
        raise DataError(f"experiment {experiment!r} has no done runs to report")
    return out


def runs_by_label(loaded: list[tuple[str, dict, dict]]) -> dict[str, list[dict]]:
    """Row label -> the metrics.json dicts of its seeds (what ``repro.claims`` reads)."""
    out: dict[str, list[dict]] = {}
    for _, manifest, metrics in loaded:
        out.setdefault(manifest["label"], []).append(metrics)
    return out


def row_inputs(loaded: list[tuple[str, dict, dict]]) -> claims_mod.RowInputs:
    """Each row's seeds (in ``runs_by_label``'s order) and the teacher run it reads
    (``data.teacher``): what the claims' seed-pairing rule needs."""
    seeds: dict[str, list[int]] = {}
    teachers: dict[str, str] = {}
    for _, manifest, _ in loaded:
        seeds.setdefault(manifest["label"], []).append(int(manifest["seed"]))
        teachers[manifest["label"]] = str(manifest.get("config", {}).get("data", {}).get("teacher") or "")
    return claims_mod.RowInputs(seeds, teachers)


def collect(experiment: str, results_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """One row per done run listed in the experiment's index."""
    return frame(load_runs(experiment, results_dir))


def frame(loaded: list[tuple[str, dict, dict]]) -> tuple[pd.DataFrame, list[dict]]:
    rows, manifests = [], []
    for rel, manifest, metrics in loaded:
        row = {"label": manifest["label"], "seed": manifest["seed"], "run": rel}
        for col, path, _ in METRICS:
            row[col] = _get(metrics, path)
        row["model MiB"] = row["model MiB"] / 2**20 if row["model MiB"] is not None else None
        train = metrics.get("train", {})
        if train.get("steps"):
            row["best epoch"] = train["best_step"] / train["steps"] * train["epochs_run"]
        profile = metrics.get("profile", {})
        row["run seconds"] = profile.get("train_seconds", 0) + profile.get("eval_seconds", 0)
        bayes = metrics.get("bayes", {})
        for col, path, _ in METRICS:
            if path[0] in ("test", "test_random"):
                row[f"bayes {col}"] = _get(bayes, path)
        for split in extra_test_splits(metrics):  # a data set's own test splits (test_unseen_pairs)
            row[f"AUC {split}"] = _get(metrics, (split, "auc"))
            row[f"bayes AUC {split}"] = _get(bayes, (split, "auc"))
        row["bayes AUC"] = row["bayes test AUC"]
        rows.append(row)
        manifests.append(manifest)
    df = pd.DataFrame(rows)
    numeric = [c for c in df.columns if c not in ("label", "run")]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")  # absent metrics -> NaN
    return df, manifests


def extra_test_splits(metrics: dict) -> list[str]:
    """The evaluated test splits beyond ``test`` and ``test_random``, in the order the run wrote them."""
    return [k for k, v in metrics.items() if k.startswith("test_") and k != "test_random"
            and isinstance(v, dict) and "auc" in v]


def split_columns(df: pd.DataFrame) -> list[str]:
    """The table columns of those extra splits (``AUC <split>``)."""
    return [c for c in df.columns if c.startswith("AUC test_") and c != "AUC test_random"]


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
    cols = [c for c, _, _ in METRICS] + split_columns(df)
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


def markdown(spec: dict, summary: pd.DataFrame, df: pd.DataFrame, manifests: list[dict],
             runs: dict[str, list[dict]] | None = None, claim_results: list | None = None,
             table: list[str] | None = None, sections: list[str] | None = None,
             inputs: claims_mod.RowInputs | None = None, fresh=None) -> str:
    """The table; ``runs`` (label -> metrics dicts) enables the paired intervals, ``claim_results``
    (``repro.claims.evaluate_claims``) the Claims section. ``table`` replaces the standard table
    (a report kind's own, e.g. ``repro.compression_report.table_lines``); ``sections`` follow the
    table (the experiment's measurements, ``repro.measurements.measurement_lines``)."""
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
    ]
    mixed = mixed_code(manifests)
    if mixed:
        lines.append(f"- {mixed}")
    if fresh is not None:  # repro.freshness.ExperimentFreshness: what is stale against the checked-out code
        from repro.freshness import header_lines

        lines += header_lines(fresh)
    beside = [m for m in manifests if (m.get("scheduling") or {}).get("parallel_jobs", 1) > 1]
    if beside:
        jobs = sorted({m["scheduling"]["parallel_jobs"] for m in beside})
        lines.append(f"- **speed: {len(beside)} of {len(manifests)} runs trained beside other jobs "
                     f"(`--jobs {'/'.join(map(str, jobs))}`): their samples/s are not comparable with a run alone**")
    lines += [
        "- AUC random slice: the randomised-exposure requests inside `test`; AUC test_random: the separate, "
        "fully randomised-exposure test split (n/a where the runs predate it)",
        "",
    ]
    body = table if table is not None else standard_table(summary, df)
    if fresh is not None:
        from repro.freshness import mark_table

        body = mark_table(body, fresh)
    lines += body
    lines += sections or []
    lines += ["", "## Checks", ""]
    lines += [f"- {c}" for c in checks(summary, df, (spec.get("report") or {}).get("baseline"), runs, inputs)]
    if claim_results is not None:
        lines += ["", "## Claims", ""]
        lines += claims_lines(claim_results) or ["No claims declared for this experiment."]
    lines += ["", "Plot: " + f"`{spec['name']}.png`. CSV: `{spec['name']}.csv`.", ""]
    return "\n".join(lines)


def standard_table(summary: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """The default table: one row per model with the headline metrics, and a Bayes-optimal row."""
    lines: list[str] = []
    shown = ["test AUC", "test logloss", "GAUC user", "GAUC request", "AUC random slice", "AUC test_random",
             *split_columns(df), "PCOC", "best epoch", "train samples/s", "params"]
    fmts = {c: f for c, _, f in METRICS} | {c: ".4f" for c in split_columns(df)}
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
    return lines


def mixed_code(manifests: list[dict]) -> str | None:
    """What the reader must know when the runs of one table come from more than one git commit:
    a warning (bold in the table's header) when their harness cores differ, a plain note when only
    the commit does (the core is the same, and each run's own model, embedding and source files are
    in its fingerprint, so a run whose files changed since would have been redone)."""
    commits = sorted({m["code"]["commit"][:10] for m in manifests})
    cores = sorted({m["code"]["core"] for m in manifests if m["code"].get("core")})
    if len(cores) > 1:
        parts = [f"{len(commits)} git commits ({', '.join(commits)})"] if len(commits) > 1 else []
        parts.append(f"{len(cores)} harness-core fingerprints ({', '.join(cores)})")
        return ("**this table mixes code versions: its runs come from " + " and ".join(parts) +
                "; rows may differ by code, not only by model**")
    if len(commits) > 1:
        return (f"runs come from {len(commits)} git commits ({', '.join(commits)}) with one harness core"
                + (f" (`{cores[0]}`)" if cores else "") + ": the commits differ outside the code these runs execute")
    return None


def claims_lines(results: list) -> list[str]:
    """One Markdown line per claim: id, whether a paper claims it or the suite checks it, the claim's
    words, source, verdict in bold (and the multiplicity-adjusted one where it is set), deciding numbers."""
    out = []
    for r in results:
        kind = "paper" if r.claim.kind == "paper" else "suite check"
        adjusted = f" (BH-adjusted: **{r.adjusted}**)" if r.adjusted is not None else ""
        stale = f" ⚠ **stale**: rests on stale {r.stale}" if r.stale else ""
        out.append(f"- `{r.claim.id}` [{kind}]: {r.claim.text} ({r.claim.source}): **{r.verdict}**{adjusted}{stale}: "
                   f"{r.numbers()}")
    return out


def experiment_claims(spec: dict, runs: dict[str, list[dict]], results_dir: Path | None = None,
                      inputs: claims_mod.RowInputs | None = None) -> list:
    """Parse the experiment's ``claims:`` (errors name the file) and judge them on ``runs`` and on
    the experiment's measurements stored under ``results_dir``; ``inputs`` (``row_inputs``) lets
    rows that share a per-seed input be seed-paired."""
    where = str(ROOT / "conf" / "experiment" / f"{spec.get('source_name', spec['name'])}.yaml")
    parsed = claims_mod.parse_claims(where, spec.get("claims"), labels=[r["label"] for r in spec["runs"]])
    measured = {}
    if spec.get("measurements") and results_dir is not None:
        from repro.measurements import load_measurement

        for m in spec["measurements"]:
            found = load_measurement(Path(results_dir) / "runs" / spec["name"], m["name"])
            if found is not None:
                measured[m["name"]] = found["result"]
    return claims_mod.evaluate_claims(parsed, runs, measurements=measured, row_inputs=inputs)


def checks(summary: pd.DataFrame, df: pd.DataFrame, baseline: str | None,
           runs: dict[str, list[dict]] | None = None, inputs: claims_mod.RowInputs | None = None) -> list[str]:
    """Verdicts computed from the numbers above, never written by hand.

    With ``runs`` (label -> metrics dicts): every row against ``baseline`` by a 95% interval of
    ΔAUC that is paired by request and covers seed noise, on ``test`` and on ``test_random`` when
    the runs have it, then which rows are separable from which."""
    out = []
    if df["bayes AUC"].notna().all():
        over = df[df["test AUC"] > df["bayes AUC"]]
        best = df.loc[df["test AUC"].idxmax()]
        verdict = "holds" if over.empty else f"does not hold ({len(over)} runs)"
        out.append(f"No run exceeds the Bayes-optimal test AUC of its data (max {df['bayes AUC'].max():.4f}); "
                   f"best single run {best['test AUC']:.4f} ({best['label']}): **{verdict}**.")
    if runs is None:
        return out
    order = [label for label in summary.index if runs.get(label)]
    metrics = [("test AUC", "test"), ("random AUC", "test_random")]
    extra = dict.fromkeys(sp for ms in runs.values() for m in ms for sp in extra_test_splits(m))
    metrics += [(f"AUC {sp}", sp) for sp in extra]
    tables = {m: claims_mod.pairwise(runs, m, order, row_inputs=inputs) for m, _ in metrics}
    if baseline in order:
        for label in order:
            if label == baseline:
                continue
            parts = []
            for m, split in metrics:
                iv = _interval(tables[m], label, baseline)
                if iv is not None:
                    word = "above" if iv.lo > 0 else "below" if iv.hi < 0 else "not separable from"
                    parts.append(f"{split} {iv.text('+.4f')}, {word} {baseline}")
            if parts:
                out.append(f"ΔAUC {label} − {baseline} (95% interval): " + "; ".join(parts) + ".")
    for m, split in metrics:
        line = separability(tables[m], summary, order, split)
        if line:
            out.append(line)
    return out


def _interval(table: dict, a: str, b: str):
    """The interval of a − b from a pairwise table that holds (a, b) or (b, a)."""
    if (a, b) in table:
        return table[(a, b)]
    if (b, a) in table:
        iv = table[(b, a)]
        return claims_mod.Interval(-iv.estimate, -iv.hi, -iv.lo, iv.seeds[::-1], iv.n_replicates, iv.method, iv.note)
    return None


def separability(table: dict, summary: pd.DataFrame, order: list[str], split: str) -> str | None:
    """Rows ordered by mean AUC; `>` where the 95% interval of the adjacent difference excludes 0,
    `≈` where it straddles 0; then every pair that is not separable. Rows with equal means keep the
    table's order (a set's order would depend on the process's string-hash seed)."""
    labels = sorted(dict.fromkeys(x for pair in table for x in pair), key=lambda lab: -_mean_auc(table, lab, summary, split))
    if len(labels) < 2:
        return None
    chain = labels[0]
    for hi, lo in zip(labels, labels[1:]):
        iv = _interval(table, hi, lo)
        chain += (" > " if iv.lo > 0 else " ≈ ") + lo
    ties = [f"{a}–{b}" for i, a in enumerate(labels) for b in labels[i + 1:]
            if (iv := _interval(table, a, b)).lo <= 0 <= iv.hi]
    methods = {iv.method for iv in table.values()}
    paired = "paired bootstrap (requests x seeds)"
    how = ("paired request x seed bootstrap" if methods == {paired} else
           "seed-only bootstrap: runs without stored test-set replicates" if paired not in methods else
           "paired request x seed bootstrap; seed-only for pairs without stored replicates")
    return (f"Separable on {split} AUC (95% {how}; `>`: the interval of the difference excludes 0, "
            f"`≈`: it does not): {chain}. Not separable: {', '.join(ties) if ties else 'none'}.")


def _mean_auc(table: dict, label: str, summary: pd.DataFrame, split: str) -> float:
    col = {"test": "test AUC mean", "test_random": "AUC test_random mean"}.get(split, f"AUC {split} mean")
    v = summary.loc[label, col] if label in summary.index and col in summary else float("nan")
    return -1.0 if pd.isna(v) else float(v)


def figure(spec: dict, summary: pd.DataFrame, df: pd.DataFrame, machine: str):
    """The standard table's figure: test AUC per row (bars, seeds as dots, the Bayes-optimal AUC as
    a labelled line) and test AUC against measured training throughput. Choices
    (``repro.plot_rules``): the throughput axis is always logarithmic (speeds compare by ratio); each
    row has its own colour and marker there, named in a legend outside the axes (labels written next
    to the points overlapped where rows train at similar speeds); the machine is the footnote."""
    from repro.plot_rules import finish_figure, legend_outside, series_styles
    from repro.plots import pyplot

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    labels = list(summary.index)
    x = np.arange(len(labels))
    ax1.bar(x, summary["test AUC mean"], yerr=summary["test AUC std"].fillna(0), capsize=4, color="#4C72B0")
    for xi, seed_vals in zip(x, [df[df.label == lab]["test AUC"].to_numpy() for lab in labels]):
        ax1.scatter(np.full(len(seed_vals), xi), seed_vals, color="k", s=8, zorder=3)
    lo = min(summary["test AUC mean"].min() - 0.01, 0.7)
    hi = np.nanmax([df["bayes AUC"].max(), summary["test AUC mean"].max()]) + 0.01
    if single_bayes(df):  # a labelled line, not a legend: above every bar, so its label is in free space
        bayes = df["bayes AUC"].mean()
        ax1.axhline(bayes, color="#C44E52", ls="--")
        ax1.annotate(f"Bayes-optimal {bayes:.4f}", (0.0, bayes), xycoords=("axes fraction", "data"),
                     xytext=(4, 3), textcoords="offset points", fontsize=8, color="#C44E52")
        hi = max(hi, bayes + 0.012)
    ax1.set_ylim(lo, hi)
    ax1.set_xticks(x, labels, rotation=30, ha="right")
    ax1.set_ylabel("test AUC (mean ± std; dots = seeds)")
    ax1.set_title("Accuracy")
    for (label, r), style in zip(summary.iterrows(), series_styles(len(summary))):
        ax2.errorbar(r["train samples/s mean"], r["test AUC mean"], yerr=0 if pd.isna(r["test AUC std"]) else r["test AUC std"],
                     ls="none", ms=6, label=label, **style)
    ax2.set_xscale("log")
    ax2.set_xlabel("training samples/s, measured on the machine below (log)")
    ax2.set_ylabel("test AUC")
    ax2.set_title("Accuracy vs measured training throughput")
    legend_outside(ax2, fontsize=8)
    finish_figure(fig, machine, spec.get("title", spec["name"]))
    return fig


def plot(spec: dict, summary: pd.DataFrame, df: pd.DataFrame, path: Path, machine: str) -> None:
    """``figure`` written to ``path``."""
    from repro.plot_rules import save_report_figure

    save_report_figure(figure(spec, summary, df, machine), path)


# Measurement columns labelled "MB" whose figures are bytes / 2**20, checked in the code that computes
# them: apg_efficiency's peak_mb (methods/model_deepening/apg_efficiency.py) and the peak_rss_mb of
# repro.profiling.PeakMemory (rss / 2**20) that hpc_ladder and hpc_torchrec report (summed over
# processes in hpc_torchrec). The stored results keep their names (a measured claim and the README's
# figures name these columns; renaming them would mean remeasuring); only the table shows MiB.
MIB_COLUMNS = {
    "apg_efficiency": {"infer peak MB": "infer peak MiB", "train peak MB": "train peak MiB"},
    "hpc_ladder": {"peak RSS MB": "peak RSS MiB"},
    "hpc_torchrec": {"peak RSS MB": "peak RSS MiB"},
}


def with_mib_labels(lines: list[str]) -> list[str]:
    """``repro.measurements.measurement_lines`` with each measurement table's header relabelled by
    ``MIB_COLUMNS``: the first table line after a ``### Measurement `name``` heading is its header."""
    out, renames = [], {}
    for line in lines:
        if line.startswith("### Measurement `"):
            renames = MIB_COLUMNS.get(line.split("`")[1], {})
        elif renames and line.startswith("| "):
            cells = line[2:-2].split(" | ")
            line = "| " + " | ".join(renames.get(c, c) for c in cells) + " |"
            renames = {}
        out.append(line)
    return out


def write_report(experiment: str, results_dir: Path | None = None, tag: str | None = None) -> list[Path]:
    """Rebuild ``<results_dir>/<tag>.{md,csv,png}``; ``tag`` defaults to the experiment's name."""
    from repro.experiments import load_experiment

    results_dir = results_dir or ROOT / "results"
    spec = load_experiment(experiment)
    if tag and tag != spec["name"]:
        spec = {**spec, "name": tag, "title": f"{spec.get('title', spec['name'])} ({tag})"}
    spec.setdefault("source_name", experiment)
    loaded = load_runs(spec["name"], results_dir)
    df, manifests = frame(loaded)
    runs = runs_by_label(loaded)
    order = [r["label"] for r in spec["runs"]]
    summary = summarise(df, order, (spec.get("report") or {}).get("baseline"))
    paired_by = row_inputs(loaded)
    results = experiment_claims(spec, runs, results_dir, paired_by)
    fresh = _freshness(spec, results_dir, results)
    machine = machine_note(manifests)
    md, csv, png = (results_dir / f"{spec['name']}.{ext}" for ext in ("md", "csv", "png"))
    report = spec.get("report") or {}
    sections = None
    if spec.get("measurements"):
        from repro.measurements import measurement_lines

        sections = ["", "## Measured beside the runs"] + with_mib_labels(measurement_lines(
            results_dir / "runs" / spec["name"], [m["name"] for m in spec["measurements"]], results_dir, spec["name"]))
    if report.get("kind") == "compression":
        from repro import compression_report as cr

        reference = report.get("reference")
        cdf = cr.frame(loaded)
        csummary = cr.summary(cdf, order, reference)
        atomic_write_text(md, markdown(spec, summary, df, manifests, runs, results,
                                       table=cr.table_lines(csummary, reference), sections=sections,
                                       inputs=paired_by, fresh=fresh))
        atomic_write_text(csv, csummary.rename_axis("row").to_csv())
        cr.pareto_plot(spec.get("title", spec["name"]), csummary, cdf, png, reference, machine)
    elif report.get("kind") in ("cascade", "creative", "position"):
        from repro import cascade_report as kr

        build = kr.KINDS[report["kind"]]
        ksummary = build.summary(build.frame(loaded), order)
        atomic_write_text(md, markdown(spec, summary, df, manifests, runs, results,
                                       table=build.table_lines(ksummary), sections=sections,
                                       inputs=paired_by, fresh=fresh))
        atomic_write_text(csv, ksummary.rename_axis("row").to_csv())
        build.plot(spec.get("title", spec["name"]), ksummary, png, machine)
    else:
        atomic_write_text(md, markdown(spec, summary, df, manifests, runs, results, sections=sections,
                                       inputs=paired_by, fresh=fresh))
        atomic_write_text(csv, summary.rename_axis("model").to_csv())
        plot(spec, summary, df, png, machine)
    write_claims_index(results_dir)
    if report.get("group") and tag in (None, spec.get("source_name")):
        write_group_page(report["group"], results_dir)
    return [md, csv, png]


def _freshness(spec: dict, results_dir: Path, results: list):
    """The experiment's ``repro.freshness`` state, with every claim that rests on a stale row or
    measurement marked (``ClaimResult.stale``)."""
    from repro.freshness import claim_staleness, experiment_freshness

    fresh = experiment_freshness(spec.get("source_name", spec["name"]), results_dir, spec["name"])
    for r in results:
        r.stale = claim_staleness(r, fresh)
    return fresh


def write_claims_index(results_dir: Path | None = None) -> Path:
    """``<results_dir>/claims.md``: the claims of every experiment under conf/experiment/ that has a
    built report in ``results_dir`` (one section per report), judged afresh from its run manifests.
    Paper claims and the suite's own checks are counted apart; the paper claims of all experiments
    form one family for the Benjamini-Hochberg adjustment (``repro.claims.adjust_verdicts``)."""
    from repro.experiments import load_experiment

    results_dir = Path(results_dir or ROOT / "results")
    known = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    judged: list[tuple[str, list[str], list]] = []  # (heading, lines before the claims, results)
    for index_path in sorted(results_dir.glob("runs/*/index.json")):
        index = load_json(index_path) or {}
        name, tag = index.get("experiment"), index.get("tag", index_path.parent.name)
        if name not in known or not (results_dir / f"{tag}.md").exists():
            continue
        try:
            spec = {**load_experiment(name), "source_name": name}
            loaded = load_runs(tag, results_dir)
            results = experiment_claims({**spec, "name": tag}, runs_by_label(loaded), results_dir, row_inputs(loaded))
            fresh = _freshness({**spec, "name": tag}, results_dir, results)
        except (ConfigError, DataError) as e:
            judged.append((f"## {name}" + (f" (`{tag}`)" if tag != name else ""), [f"Claims not judged: {e}"], []))
            continue
        title = spec.get("title", name) + (f" (`{tag}`: {' '.join(index.get('extra_overrides', []))})" if tag != name else "")
        judged.append((f"## {title}", [f"Table: [`{tag}.md`]({tag}.md); {len(loaded)} done runs; {fresh.summary()}."],
                       results))
    every = [r for _, _, results in judged for r in results]
    family = claims_mod.adjust_verdicts(every)
    sections = []
    for heading, intro, results in judged:
        if results:
            intro = [intro[0] + " " + _kind_counts(results)]
        sections += [heading, "", *intro, ""]
        sections += claims_lines(results) or ([] if not intro[0].startswith("Table") else
                                              ["No claims declared for this experiment."])
        sections.append("")
    paper = [r for r in every if r.claim.kind == "paper"]
    adjusted = {v: sum(r.adjusted == v for r in paper if r.adjusted is not None) for v in claims_mod.VERDICTS[:3]}
    lines = [
        "# Claims",
        "",
        f"Every claim declared in `conf/experiment/*.yaml` whose experiment has a built table here, judged "
        f"from the run manifests on {datetime.now(timezone.utc).strftime('%Y-%m-%d')}. A condition **holds** when "
        "its whole 95% interval satisfies it, **does not hold** when the whole interval violates it, and is "
        "**inconclusive** when the interval straddles the threshold; a claim holds when all its conditions do. "
        "Intervals are paired by request on the test set with seeds resampled (seed-paired where rows share a "
        "per-seed input such as a teacher run); figures without test-set replicates get Student t-intervals "
        "over seeds; calibration is judged seed by seed; a measured figure needs interleaved repeats; a "
        "vanishing gain is a difference of differences, judged only where the gain exists "
        "(`repro/claims.py` states each rule).",
        "",
        "**Paper claims**: " + _counts({v: sum(r.verdict == v for r in paper) for v in claims_mod.VERDICTS}),
        "",
        "**Suite checks** (the suite's own checks of a method's premises, not claims of a paper): "
        + _counts({v: sum(r.verdict == v for r in every if r.claim.kind != "paper") for v in claims_mod.VERDICTS}),
        "",
        f"**Stale verdicts** (resting on a run or measurement that is stale against the checked-out code, "
        f"`repro/freshness.py`): {sum(bool(r.stale) for r in every)} of {len(every)}"
        + (" (" + ", ".join(f"`{r.claim.id}`" for r in every if r.stale) + ")" if any(r.stale for r in every) else "")
        + "; counted in the verdicts above as they stand, until they are regenerated.",
        "",
        f"**Multiplicity.** {family} paper claims are judged at once, so at 95% about {0.05 * family:.0f} verdicts "
        "could be wrong by chance alone. Benjamini-Hochberg over those claims, at a false discovery rate of 2.5% "
        "in each direction (the two tails of a 95% interval), keeps a verdict where its direction survives and "
        "makes it inconclusive otherwise; each paper claim shows its adjusted verdict beside the raw one. "
        "Adjusted: " + _counts(adjusted) + ".",
        "",
        *sections,
    ]
    path = results_dir / "claims.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _kind_counts(results: list) -> str:
    parts = []
    for kind, word in (("paper", "paper claims"), ("check", "suite checks")):
        mine = [r for r in results if r.claim.kind == kind]
        if mine:
            parts.append(f"{word}: " + _counts({v: sum(r.verdict == v for r in mine) for v in claims_mod.VERDICTS}))
    return "; ".join(parts) + "."


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{v}: {c}" for v, c in counts.items())


def write_group_page(group: str, results_dir: Path | None = None) -> Path:
    """``<results_dir>/<group>.md``: the tables, plots and claims of every experiment whose report
    names this ``group`` (``report: {group: cascade, group_order: 1}``), in ``group_order``, each
    copied from its own built table (an experiment without one yet is listed as not run)."""
    from repro.experiments import load_experiment

    results_dir = Path(results_dir or ROOT / "results")
    members = []
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        spec = load_experiment(path.stem)
        report = spec.get("report") or {}
        if report.get("group") == group:
            members.append((report.get("group_order", 0), path.stem, spec))
    lines = [f"# {group}: every table of the group", "",
             f"Built {datetime.now(timezone.utc).strftime('%Y-%m-%d')} from each experiment's own table in this folder "
             "(its header gives the data, seeds, machine and code); the checks are in each table's own file.", ""]
    for _, name, spec in sorted(members):
        lines += [f"## {spec.get('title', name)}", ""]
        md = results_dir / f"{name}.md"
        if not md.exists():
            lines += [f"Not run yet: `python -m repro.experiments {name}`.", ""]
            continue
        text = md.read_text().splitlines()
        table_start = next((i for i, line in enumerate(text) if line.startswith("| ")), None)
        checks = next((i for i, line in enumerate(text) if line == "## Checks"), len(text))
        claims = next((i for i, line in enumerate(text) if line == "## Claims"), None)
        lines += [f"Full table, checks and provenance: [`{name}.md`]({name}.md).", ""]
        if table_start is not None:  # its own sections one level down, under this page's heading
            lines += ["#" + line if line.startswith("##") else line for line in text[table_start:checks]]
        lines += ["", f"![{name}]({name}.png)", ""]
        if claims is not None:
            lines += ["### Claims", ""] + [line for line in text[claims + 1:] if not line.startswith("Plot:")]
        lines.append("")
    path = results_dir / f"{group}.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def write_and_announce(experiment: str, results_dir: Path | None = None, tag: str | None = None) -> None:
    paths = write_report(experiment, results_dir, tag)
    for path in paths:
        print(f"wrote {path}")
    print(f"wrote {paths[0].parent / 'claims.md'}")


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
