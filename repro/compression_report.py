"""The embedding-compression table and its Pareto plot (``report: {kind: compression}``).

Rows are labelled ``<scheme> <ratio>x`` (``BH 1000x``, ``DCNv2 · QR 16x``); everything before the
ratio names the curve a row belongs to, the ratio is the *nominal* target (the scheme's
``embedding.compression``). Every other figure is measured from the runs' manifests:

- **stored MiB**: ``profile.embedding_bytes`` / 2**20, the bytes a server would hold for every
  embedding layer of the model, first-order tables included (AMTL: its exported ragged store);
- **measured ratio**: the reference row's stored bytes / this row's (the ratio actually reached:
  fields at or below the schemes' ``threshold`` stay full, and a scheme whose structure cannot
  meet the target reaches less);
- **AUC / ref**: test AUC relative to the reference row (the papers' "% of full performance");
- **reachable kept**: (AUC - 0.5) / (Bayes AUC - 0.5), the share of the AUC that the world allows
  above chance which the row reaches;
- **tail AUC**: AUC on the test rows whose entity IDs are in the bottom frequency decile
  (``repro.run.tail_rows``);
- speed: training samples/s and the median inference lookup time of 4096 rows through every
  embedding layer (``lookup ms``), measured on the machine in the table's header and never judged.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd


_LABEL = re.compile(r"^(?P<curve>.*?)\s+(?P<ratio>\d+(?:\.\d+)?)x$")


def parse_label(label: str) -> tuple[str, float | None]:
    """``"BH 1000x"`` -> ``("BH", 1000.0)``; a label without a ratio is its own curve."""
    m = _LABEL.match(label)
    return (m["curve"], float(m["ratio"])) if m else (label, None)


def frame(loaded: list[tuple[str, dict, dict]]) -> pd.DataFrame:
    """One row per run with the figures the compression table needs."""
    rows = []
    for _, manifest, metrics in loaded:
        prof, test = metrics.get("profile", {}), metrics.get("test", {})
        curve, ratio = parse_label(manifest["label"])
        row = {
            "label": manifest["label"], "curve": curve, "nominal": ratio, "seed": manifest["seed"],
            "scheme": manifest["config"]["embedding"]["name"], "model": manifest["config"]["model"]["name"],
            "dim": manifest["config"]["embedding"].get("dim"),
            "bytes": prof.get("embedding_bytes"), "parameters": prof.get("embedding_parameters"),
            "auc": test.get("auc"), "logloss": test.get("logloss"), "tail auc": test.get("auc_tail"),
            "tail share": (test.get("n_tail") or 0) / test["n"] if test.get("n") else None,
            "random auc": metrics.get("test_random", {}).get("auc"),
            "bayes auc": metrics.get("bayes", {}).get("test", {}).get("auc"),
            "samples/s": prof.get("train_samples_per_s"), "lookup ms": prof.get("lookup_ms_4096"),
        }
        for name, b in (prof.get("embedding_bytes_by_field") or {}).items():
            row[f"bytes {name}"] = b
        rows.append(row)
    df = pd.DataFrame(rows)
    numeric = [c for c in df.columns if c not in ("label", "curve", "scheme", "model")]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    return df


def summary(df: pd.DataFrame, order: list[str], reference: str | None) -> pd.DataFrame:
    """Per row label: means (and stds of the accuracy figures) over seeds, plus the ratios to the
    reference row (``report.reference``)."""
    g = df.groupby("label", sort=False)
    out = g[["nominal", "bytes", "parameters", "samples/s", "lookup ms", "bayes auc", "tail share", "dim"]].mean()
    out["scheme"] = g["scheme"].first()
    out["curve"] = g["curve"].first()
    out["model"] = g["model"].first()
    out["seeds"] = g.size()
    for c in ("auc", "logloss", "tail auc", "random auc"):
        out[f"{c} mean"] = g[c].mean()
        out[f"{c} std"] = g[c].std(ddof=1)
    for c in [c for c in df.columns if c.startswith("bytes ")]:
        out[c] = g[c].mean()
    if reference in out.index:
        ref = out.loc[reference]
        out["measured ratio"] = ref["bytes"] / out["bytes"]
        out["AUC / ref"] = out["auc mean"] / ref["auc mean"]
    out["reachable kept"] = (out["auc mean"] - 0.5) / (out["bayes auc"] - 0.5)
    return out.reindex([o for o in order if o in out.index])


def _pm(mean: float, std: float, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format(std, fmt)}"


def _num(v: float, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def table_lines(s: pd.DataFrame, reference: str | None) -> list[str]:
    """The Markdown table (one line per row label) and the per-field bytes of the 3-seed rows."""
    header = ["row", "seeds", "nominal", "stored MiB", "measured ratio", "test AUC", "test logloss",
              f"AUC / {reference or 'ref'}", "reachable kept", "tail AUC", "AUC test_random", "train samples/s",
              "lookup ms"]
    lines = []
    if reference in s.index and s.loc[reference, "scheme"] == "full":
        ref = s.loc[reference]  # a full table: one dim-wide row plus one first-order weight per value
        lines += [f"Full vocabulary: {ref['parameters'] / (ref['dim'] + 1):,.0f} embedding rows over all fields "
                  f"(dim {ref['dim']:g}), {ref['bytes'] / 2**20:,.1f} MiB stored.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in s.iterrows():
        lines.append("| " + " | ".join([
            str(label), str(int(r["seeds"])), _num(r["nominal"], "g") + ("x" if not pd.isna(r["nominal"]) else ""),
            _num(r["bytes"] / 2**20, ".3f"), _num(r.get("measured ratio"), ",.1f"),
            _pm(r["auc mean"], r["auc std"], ".4f"), _pm(r["logloss mean"], r["logloss std"], ".4f"),
            _num(r.get("AUC / ref"), ".4f"), _num(r["reachable kept"], ".3f"),
            _pm(r["tail auc mean"], r["tail auc std"], ".4f"), _pm(r["random auc mean"], r["random auc std"], ".4f"),
            _num(r["samples/s"], ",.0f"), _num(r["lookup ms"], ".2f"),
        ]) + " |")
    bayes = s["bayes auc"].dropna()
    if len(bayes) and bayes.max() - bayes.min() < 1e-12:
        lines.append(f"| **Bayes-optimal** (true p_click) | – | – | – | – | {bayes.iloc[0]:.4f} | – | – | 1.000 | – | – | – | – |")
    share = s["tail share"].dropna()
    if len(share):
        lines += ["", f"Tail rows are {share.mean():.1%} of the test split (ties at the decile's count are included)."]
    fields = [c for c in s.columns if c.startswith("bytes ")]
    heads = s[s["seeds"] >= 3]
    if fields and len(heads):
        lines += ["", "Stored KiB per field (embedding and first-order tables together), rows with three seeds:", ""]
        names = [c[len("bytes "):] for c in fields]
        lines.append("| row | " + " | ".join(names) + " |")
        lines.append("|" + "---|" * (len(names) + 1))
        for label, r in heads.iterrows():
            lines.append(f"| {label} | " + " | ".join(_num(r[c] / 1024, ",.1f") for c in fields) + " |")
    return lines


def pareto_figure(title: str, s: pd.DataFrame, df: pd.DataFrame, reference: str | None, machine: str):
    """Test AUC against stored embedding MiB, one curve per scheme (its own colour and marker),
    seeds as dots, each point labelled with its *nominal* ratio. Choices (``repro.plot_rules``): the
    stored-size axis is logarithmic where sizes span a decade or more (every compression table does);
    a top axis reads the *measured* ratio (the reference row's stored bytes / a row's), so nominal
    and measured are never confused; the legend sits outside the axes, since the reference row, the
    headline point, lies at the largest size in the corner a legend would take; the machine is the
    footnote."""
    from repro.plot_rules import axis_scale, finish_figure, legend_outside, series_styles
    from repro.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5))
    mib = 2**20
    curves = list(dict.fromkeys(s["curve"]))
    for curve, style in zip(curves, series_styles(len(curves))):
        part = s[s["curve"] == curve].sort_values("bytes")
        ax.errorbar(part["bytes"] / mib, part["auc mean"], yerr=part["auc std"].fillna(0), ms=4, capsize=2,
                    label=curve, lw=1.2, **style)
        seeds = df[df["curve"] == curve]
        ax.scatter(seeds["bytes"] / mib, seeds["auc"], s=6, color=style["color"], alpha=0.5, zorder=3)
        for label, r in part.iterrows():
            if not pd.isna(r["nominal"]):
                ax.annotate(f"{r['nominal']:g}x", (r["bytes"] / mib, r["auc mean"]), textcoords="offset points",
                            xytext=(3, -9), fontsize=6, color=style["color"])
    if reference in s.index:
        ref = s.loc[reference]
        ax.axhline(ref["auc mean"], color="0.4", ls=":", lw=1, label=f"{reference} (reference)")
        ref_mib = ref["bytes"] / mib
        top = ax.secondary_xaxis("top", functions=(lambda m: ref_mib / np.maximum(m, 1e-12),
                                                   lambda r: ref_mib / np.maximum(r, 1e-12)))
        top.set_xlabel(f"measured ratio: {reference}'s stored bytes / the row's", fontsize=8)
    bayes = s["bayes auc"].dropna()
    if len(bayes) and bayes.max() - bayes.min() < 1e-12:
        ax.axhline(bayes.iloc[0], color="#C44E52", ls="--", lw=1, label="Bayes-optimal")
    scale = axis_scale(s["bytes"])
    ax.set_xscale(scale)
    ax.set_xlabel("stored MiB (bytes / 2**20), all embedding and first-order tables"
                  + (" (log)" if scale == "log" else ""))
    ax.set_ylabel("test AUC (mean ± std over seeds; dots = seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    legend_outside(ax, title="point labels: nominal ratio", title_fontsize=7)
    finish_figure(fig, machine)
    return fig


def pareto_plot(title: str, s: pd.DataFrame, df: pd.DataFrame, path: Path, reference: str | None,
                machine: str) -> None:
    """``pareto_figure`` written to ``path``."""
    from repro.plot_rules import save_report_figure

    save_report_figure(pareto_figure(title, s, df, reference, machine), path)
