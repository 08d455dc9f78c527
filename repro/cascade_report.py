"""The cascade table and its plot (``report: {kind: cascade}``), and, below, the creative-selection
table (``report: {kind: creative}``) and the position-bias table (``report: {kind: position}``).

Each row is a run scored as the pre-ranker of a cascade whose ranker is its teacher (the row that
is its own ranker is scored as the only stage), on the test split's candidate log
(``metrics.json["cascade"]``, ``repro.cascade``):

- **test AUC**, **PCOC**: on the shown test rows, as every table;
- **relevance AUC**: over every logged candidate, shown or not, against the world's position-free
  relevance (``repro.metrics.relevance_auc``): what a pre-ranker is for;
- **recall@K1**, **NDCG@K1**: of the ranker's own top slots (ranking every candidate) within this
  row's top K1, and of this row's order with the ranker's eCPM as the gain;
- **revenue@K1 / oracle**: the true expected revenue of the page the cascade builds with this
  row keeping K1, as a share of the oracle cascade's (every candidate by true relevance x bid);
  ``ranker alone`` is the ranker with no pre-ranking cut;
- **ms / request (batched)**: this row's prediction time per request's candidates, from its rows
  per second over the whole log predicted in large batches (so across requests), on this machine;
  never judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from repro.plot_rules import finish_figure, legend_outside, save_report_figure, series_styles
from repro.plots import pyplot as _pyplot

TABLE_K1 = 10  # the K1 of the table's columns (every K1 is in the plot and the csv)


def _frame(rows: list[dict], text: tuple[str, ...] = ("label",)) -> pd.DataFrame:
    """The runs' rows as a frame, every column but ``text`` numeric (a missing figure is NaN)."""
    df = pd.DataFrame(rows)
    numeric = [col for col in df.columns if col not in text]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    return df



def frame(loaded: list[tuple[str, dict, dict]]) -> pd.DataFrame:
    """One row per run: the cascade figures of every K1 and the run's headline figures."""
    rows = []
    for _, manifest, metrics in loaded:
        c = metrics.get("cascade") or {}
        test = metrics.get("test", {})
        speed = (metrics.get("unlabelled", {}).get("candidates_test") or {}).get("predict_rows_per_s")
        row = {"label": manifest["label"], "seed": manifest["seed"], "test auc": test.get("auc"),
               "pcoc": test.get("pcoc"), "random auc": metrics.get("test_random", {}).get("auc"),
               "relevance auc": c.get("auc_relevance"), "ranker": c.get("ranker"),
               "ranker share": c.get("revenue_share@ranker"), "oracle revenue": c.get("revenue_oracle"),
               "ms/request": (1000 * c["candidates_per_request"] / speed) if speed and c else None}
        for k in c.get("k1", []):
            for fig in ("recall", "ndcg", "revenue_share", "clicks"):
                row[f"{fig}@{k}"] = c.get(f"{fig}@{k}")
        rows.append(row)
    return _frame(rows, text=("label", "ranker"))


def summary(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per row label, in the experiment's order: the mean and std over seeds of every figure."""
    g = df.groupby("label", sort=False)
    numeric = [col for col in df.columns if col not in ("label", "ranker", "seed")]
    out = g[numeric].mean()
    for col in numeric:
        out[f"{col} std"] = g[col].std(ddof=1)
    out["seeds"] = g.size()
    if "ranker" in df:
        out["ranker"] = g["ranker"].first()
    return out.reindex([o for o in order if o in out.index])


def k1_values(df: pd.DataFrame) -> list[int]:
    return sorted(int(c.split("@")[1]) for c in df.columns if c.startswith("recall@") and not c.endswith(" std"))


def _pm(r: pd.Series, col: str, fmt: str) -> str:
    mean, std = r.get(col), r.get(f"{col} std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return format(mean, fmt) if std is None or pd.isna(std) else f"{format(mean, fmt)} ± {format(std, fmt)}"


def table_lines(s: pd.DataFrame) -> list[str]:
    k = TABLE_K1
    header = ["row", "seeds", "ranked by", "test AUC", "relevance AUC", "PCOC", f"recall@{k}", f"NDCG@{k}",
              f"revenue@{k} / oracle", "ranker alone / oracle", "ms / request (batched)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in s.iterrows():
        ranked = "itself (one stage)" if r["ranker"] == "self" else "its teacher"
        lines.append("| " + " | ".join([
            str(label), str(int(r["seeds"])), ranked, _pm(r, "test auc", ".4f"), _pm(r, "relevance auc", ".4f"),
            _pm(r, "pcoc", ".3f"), _pm(r, f"recall@{k}", ".3f"), _pm(r, f"ndcg@{k}", ".3f"),
            _pm(r, f"revenue_share@{k}", ".4f"), _pm(r, "ranker share", ".4f"), _pm(r, "ms/request", ".2f"),
        ]) + " |")
    lines += ["", f"Recall and revenue at every K1 (mean over seeds; revenue as a share of the oracle cascade's):", ""]
    ks = k1_values(s)
    lines.append("| row | " + " | ".join(f"recall@{k}" for k in ks) + " | "
                 + " | ".join(f"revenue@{k}" for k in ks) + " |")
    lines.append("|" + "---|" * (2 * len(ks) + 1))
    for label, r in s.iterrows():
        lines.append(f"| {label} | " + " | ".join(f"{r[f'recall@{k}']:.3f}" for k in ks) + " | "
                     + " | ".join(f"{r[f'revenue_share@{k}']:.4f}" for k in ks) + " |")
    return lines


def cascade_figure(title: str, s: pd.DataFrame, machine: str):
    """Recall of the ranker's choices and true revenue (share of the oracle's) against K1, one line
    per pre-ranker with the same colour and marker in both panels (``repro.plot_rules``), one legend
    outside the axes (the lines meet at large K1, where a corner legend covered their error bars),
    and the machine as the footnote."""
    plt = _pyplot()
    ks = k1_values(s)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    rows = [(label, r) for label, r in s.iterrows() if r["ranker"] != "self"]
    for (label, r), style in zip(rows, series_styles(len(rows))):
        ax1.errorbar(ks, [r[f"recall@{k}"] for k in ks], yerr=[r.get(f"recall@{k} std") or 0 for k in ks],
                     ms=3, capsize=2, lw=1.2, label=label, **style)
        ax2.errorbar(ks, [r[f"revenue_share@{k}"] for k in ks],
                     yerr=[r.get(f"revenue_share@{k} std") or 0 for k in ks], ms=3, capsize=2, lw=1.2,
                     label=label, **style)
    ranker = s["ranker share"].dropna()
    if len(ranker):
        ax2.axhline(float(np.mean(ranker)), color="0.3", ls=":", lw=1, label="ranker alone (no cut)")
    ax1.set(xlabel="K1 (candidates the pre-ranker keeps)", ylabel="recall of the ranker's top slots",
            title="alignment with the ranker")
    ax2.set(xlabel="K1", ylabel="true expected revenue / oracle cascade", title="end-to-end true revenue")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    legend_outside(ax2)
    finish_figure(fig, machine, title)
    return fig


def plot(title: str, s: pd.DataFrame, path: Path, machine: str) -> None:
    """``cascade_figure`` written to ``path``."""
    save_report_figure(cascade_figure(title, s, machine), path)


# -- creative selection (``report: {kind: creative}``) --------------------------------------------
CREATIVE_FIGURES = ("ctr_chosen", "ctr_best", "ctr_random", "gap_closed", "top1", "auc")


def creative_frame(loaded: list[tuple[str, dict, dict]]) -> pd.DataFrame:
    """One row per run: its creative-selection figures on the test creative log
    (``metrics.json["creatives"]``, ``repro.cascade.evaluate_creatives``), overall and cold."""
    rows = []
    for _, manifest, metrics in loaded:
        c = metrics.get("creatives") or {}
        row = {"label": manifest["label"], "seed": manifest["seed"], "test auc": metrics.get("test", {}).get("auc"),
               "groups": c.get("groups"), "cold groups": c.get("cold_groups")}
        for fig in CREATIVE_FIGURES:
            row[fig] = c.get(fig)
            row[f"{fig} cold"] = c.get(f"{fig}_cold")
        rows.append(row)
    return _frame(rows)


def creative_table_lines(s: pd.DataFrame) -> list[str]:
    """True CTR of the chosen creative (the world's relevance) against each ad's best and a uniform
    choice; `gap closed` = (chosen - uniform) / (best - uniform)."""
    header = ["row", "seeds", "chosen CTR", "best CTR", "uniform CTR", "gap closed", "picks the best",
              "creative AUC", "cold: chosen CTR", "cold: gap closed", "cold: creative AUC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in s.iterrows():
        lines.append("| " + " | ".join([
            str(label), str(int(r["seeds"])), _pm(r, "ctr_chosen", ".5f"), _pm(r, "ctr_best", ".5f"),
            _pm(r, "ctr_random", ".5f"), _pm(r, "gap_closed", ".3f"), _pm(r, "top1", ".3f"), _pm(r, "auc", ".4f"),
            _pm(r, "ctr_chosen cold", ".5f"), _pm(r, "gap_closed cold", ".3f"), _pm(r, "auc cold", ".4f"),
        ]) + " |")
    groups = s["groups"].dropna()
    if len(groups):
        lines += ["", f"Scored on {groups.iloc[0]:,.0f} shown ads of the test creative log, "
                      f"{s['cold groups'].dropna().iloc[0]:,.0f} of them with a cold creative (born during the log)."]
    return lines


def creative_figure(title: str, s: pd.DataFrame, machine: str):
    """Share of the best-over-uniform gap each row closes, overall and over the ads with a cold
    creative; a row without the figure (creatives off: no gap to close) says ``n/a`` where its bars
    would be. The legend sits outside the axes, the machine in the footnote (``repro.plot_rules``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = np.arange(len(s))
    for offset, col, name in ((-0.2, "gap_closed", "all ads"), (0.2, "gap_closed cold", "ads with a cold creative")):
        ax.bar(x + offset, s[col], width=0.4, yerr=s.get(f"{col} std"), capsize=2, label=name)
    for xi, value in zip(x, s["gap_closed"]):
        if pd.isna(value):
            ax.annotate("n/a", (xi, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7, color="0.3")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, s.index, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("gap closed: (chosen - uniform) / (best - uniform)")
    legend_outside(ax, fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    finish_figure(fig, machine, title)
    return fig


def creative_plot(title: str, s: pd.DataFrame, path: Path, machine: str) -> None:
    """``creative_figure`` written to ``path``."""
    save_report_figure(creative_figure(title, s, machine), path)


# -- position bias (``report: {kind: position}``) -------------------------------------------------
def position_frame(loaded: list[tuple[str, dict, dict]]) -> pd.DataFrame:
    """One row per run: AUC on the logged test split (positions as logged), on the randomised split,
    against the world's relevance on both, PAUC, and calibration per position on the randomised split."""
    rows = []
    for _, manifest, metrics in loaded:
        test, rnd = metrics.get("test", {}), metrics.get("test_random", {})
        row = {"label": manifest["label"], "seed": manifest["seed"], "test auc": test.get("auc"),
               "random auc": rnd.get("auc"), "relevance auc": test.get("auc_relevance"),
               "random relevance auc": rnd.get("auc_relevance"), "pauc": test.get("pauc"), "pcoc": test.get("pcoc"),
               "random pcoc": rnd.get("pcoc")}
        for k, v in (rnd.get("by_position") or {}).items():
            row[f"random pcoc @{k}"] = v.get("pcoc")
        rows.append(row)
    return _frame(rows)


def position_table_lines(s: pd.DataFrame) -> list[str]:
    header = ["row", "seeds", "test AUC (logged positions)", "AUC test_random", "relevance AUC (test)",
              "relevance AUC (test_random)", "PAUC (test)", "PCOC test", "PCOC test_random"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in s.iterrows():
        lines.append("| " + " | ".join([
            str(label), str(int(r["seeds"])), _pm(r, "test auc", ".4f"), _pm(r, "random auc", ".4f"),
            _pm(r, "relevance auc", ".4f"), _pm(r, "random relevance auc", ".4f"), _pm(r, "pauc", ".4f"),
            _pm(r, "pcoc", ".3f"), _pm(r, "random pcoc", ".3f"),
        ]) + " |")
    slots = sorted((c for c in s.columns if c.startswith("random pcoc @") and not c.endswith(" std")),
                   key=lambda c: int(c.rsplit("@", 1)[1]))
    if slots:
        lines += ["", "Calibration by position on the randomised split (PCOC = predicted / observed clicks; a "
                      "position-free score overpredicts where examination is low):", ""]
        lines.append("| row | " + " | ".join(f"position {c.rsplit('@', 1)[1]}" for c in slots) + " |")
        lines.append("|" + "---|" * (len(slots) + 1))
        for label, r in s.iterrows():
            lines.append(f"| {label} | " + " | ".join(_pm(r, c, ".2f") for c in slots) + " |")
    return lines


def position_figure(title: str, s: pd.DataFrame, machine: str):
    """AUC on the randomised split against relevance AUC there, one point per row with its spread;
    each row its own colour and marker (the oracle table has 12 rows: tab10 alone repeated two),
    the legend outside the axes, the machine in the footnote (``repro.plot_rules``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    for (label, r), style in zip(s.iterrows(), series_styles(len(s))):
        ax.errorbar(r["random relevance auc"], r["random auc"], xerr=r.get("random relevance auc std") or 0,
                    yerr=r.get("random auc std") or 0, ms=5, capsize=2, ls="none", label=label, **style)
    ax.set(xlabel="AUC against the true relevance (test_random)", ylabel="AUC on clicks (test_random)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    finish_figure(fig, machine, title)
    return fig


def position_plot(title: str, s: pd.DataFrame, path: Path, machine: str) -> None:
    """``position_figure`` written to ``path``."""
    save_report_figure(position_figure(title, s, machine), path)


@dataclass(frozen=True)
class ReportKind:
    frame: Callable[[list], pd.DataFrame]
    summary: Callable[[pd.DataFrame, list[str]], pd.DataFrame]
    table_lines: Callable[[pd.DataFrame], list[str]]
    plot: Callable[[str, pd.DataFrame, Path, str], None]  # (title, summary, png path, machine note)
    figure: Callable[[str, pd.DataFrame, str], object]  # what ``plot`` writes, for tests


KINDS = {"cascade": ReportKind(frame, summary, table_lines, plot, cascade_figure),
         "creative": ReportKind(creative_frame, summary, creative_table_lines, creative_plot, creative_figure),
         "position": ReportKind(position_frame, summary, position_table_lines, position_plot, position_figure)}
