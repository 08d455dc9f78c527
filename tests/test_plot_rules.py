"""The report's plots are legible (issue 27, part 6) and its units say MiB.

Every figure the report side draws is built here from synthetic summaries (no training) and checked
for what ``repro.plot_rules`` promises: the machine in the figure's text, no legend over a data
point or bar, a distinct colour per series, log axes where values span a decade, measured figures
labelled as measured; and every "MB" label of a bytes / 2**20 figure says MiB."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repro import cascade_report as kr
from repro import compression_report as cr
from repro import report
from repro.plot_rules import axis_scale, machine_note, series_styles
from repro.plots import pyplot

MACHINE = machine_note([{"machine": {"cpu_model": "Test CPU 9000", "cores": 2}}] * 3)


def standard_figure():
    labels = ["LR", "FM", "DNN", "DeepFM", "DCNv2"]
    auc = [0.805, 0.820, 0.822, 0.827, 0.829]
    summary = pd.DataFrame({"test AUC mean": auc, "test AUC std": [0.001] * 5,
                            "train samples/s mean": [4.8e5, 2e5, 1.2e5, 9.6e4, 6.2e4]}, index=labels)
    df = pd.DataFrame({"label": labels, "test AUC": auc, "bayes AUC": [0.86] * 5})
    return report.figure({"name": "baselines", "title": "zoo"}, summary, df, MACHINE)


def compression_rows():
    """The high-cardinality table's shape: the reference (Full) is the largest and sits low, far
    below the Bayes-optimal AUC, in the lower-right corner where a corner legend would go."""
    rows = [("Full", 1.0, 3.3e8, 0.804), ("Hashing 16x", 16, 2.1e7, 0.7988), ("Hashing 1000x", 1000, 3.4e5, 0.7987),
            ("QR 16x", 16, 2.0e7, 0.8026), ("MDE 16x", 16, 2.2e7, 0.8065), ("BH 1000x", 1000, 2.3e5, 0.7977)]
    df = pd.DataFrame([{"label": label, "curve": cr.parse_label(label)[0], "nominal": nominal if nominal > 1 else None,
                        "seed": 0, "scheme": "full" if label == "Full" else "other", "model": "deepfm", "dim": 16,
                        "bytes": b, "parameters": b / 4, "auc": auc, "logloss": 0.4, "tail auc": auc - 0.01,
                        "tail share": 0.1, "random auc": auc - 0.02, "bayes auc": 0.854, "samples/s": 1e5,
                        "lookup ms": 1.0} for label, nominal, b, auc in rows])
    return cr.summary(df, [r[0] for r in rows], "Full"), df


def compression_figure():
    s, df = compression_rows()
    return cr.pareto_figure("compression", s, df, "Full", MACHINE)


def cascade_summary():
    ks = [6, 10, 20, 30]
    rows = {}
    for i, label in enumerate(["Ranker", "Two-tower", "Two-tower + KD", "COLD-like", "FSCD"]):
        r = {"ranker": "self" if i == 0 else "teacher", "ranker share": 0.754}
        for k in ks:  # every pre-ranker converges on the ranker's revenue at large K1, bottom right
            r[f"recall@{k}"] = 1 - (0.3 - 0.05 * i) * 6 / k
            r[f"revenue_share@{k}"] = 0.754 - (0.04 - 0.005 * i) * 6 / k
            r[f"recall@{k} std"] = r[f"revenue_share@{k} std"] = 0.005
        rows[label] = r
    return pd.DataFrame(rows).T.infer_objects()


def cascade_figure():
    return kr.cascade_figure("cascade", cascade_summary(), MACHINE)


def creative_figure():
    s = pd.DataFrame({"gap_closed": [0.80, 0.38, 0.74, 0.82, np.nan], "gap_closed cold": [0.74, 0.32, 0.69, 0.77, np.nan],
                      "gap_closed std": [0.02] * 5, "gap_closed cold std": [0.04] * 5},
                     index=["Ranker", "Tower · ID", "Tower · content", "CACS", "CACS · creatives off"])
    return kr.creative_figure("creatives", s, MACHINE)


POSITION_LABELS = [f"row {i}" for i in range(12)]  # cascade_oracle's table has 12 rows


def position_figure():
    rng = np.random.default_rng(0)
    s = pd.DataFrame({"random relevance auc": rng.uniform(0.73, 0.77, 12), "random auc": rng.uniform(0.75, 0.785, 12),
                      "random relevance auc std": [0.002] * 12, "random auc std": [0.003] * 12}, index=POSITION_LABELS)
    return kr.position_figure("position", s, MACHINE)


FIGURES = {"standard": standard_figure, "compression": compression_figure, "cascade": cascade_figure,
           "creative": creative_figure, "position": position_figure}


@pytest.fixture(params=sorted(FIGURES))
def drawn(request):
    fig = FIGURES[request.param]()
    fig.canvas.draw()
    yield fig
    pyplot().close(fig)


def data_points(ax) -> np.ndarray:
    """Display coordinates of every marker, scatter dot and error-bar end the axes draw."""
    points = [np.empty((0, 2))]
    for line in ax.get_lines():
        if line.get_marker() not in (None, "", "None", " "):
            points.append(line.get_transform().transform(line.get_xydata()))
    for coll in ax.collections:
        offsets = coll.get_offsets()
        if len(offsets) and not hasattr(coll, "get_segments"):
            points.append(coll.get_offset_transform().transform(offsets))
        if hasattr(coll, "get_segments"):  # error bars: both ends of each segment
            for seg in coll.get_segments():
                points.append(coll.get_transform().transform(np.asarray(seg)))
    return np.vstack([np.asarray(p, dtype=float).reshape(-1, 2) for p in points])


def test_every_figure_names_its_machine(drawn):
    texts = [t.get_text() for t in drawn.texts]
    assert any("Test CPU 9000, 2 cores" in t for t in texts), texts


def test_no_legend_covers_a_data_point_or_a_bar(drawn):
    legends = [(ax, ax.get_legend()) for ax in drawn.axes if ax.get_legend() is not None]
    assert legends, "every figure here has a legend"
    for ax, legend in legends:
        box = legend.get_window_extent()
        for other in drawn.axes:
            points = data_points(other)
            inside = [(x, y) for x, y in points if box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1]
            assert not inside, f"legend covers {len(inside)} data points"
            bars = [p for p in other.patches if p.get_width() and p.get_height() and not np.isnan(p.get_height())]
            assert not [p for p in bars if box.overlaps(p.get_window_extent())], "legend covers a bar"


def test_the_compression_plot_would_hide_the_reference_point_in_a_corner():
    """The test above bites: the synthetic table's reference point is where the old lower-right legend was."""
    fig = compression_figure()
    ax = fig.axes[0]
    fig.canvas.draw()
    corner = ax.legend(loc="lower right", ncol=2, fontsize=7).get_window_extent()
    s, _ = compression_rows()
    full = ax.transData.transform((s.loc["Full", "bytes"] / 2**20, s.loc["Full", "auc mean"]))
    assert corner.contains(*full)
    pyplot().close(fig)


def test_twelve_series_get_twelve_colours_and_markers():
    fig = position_figure()
    ax = fig.axes[0]
    colours = {tuple(np.round(line.get_color(), 4)) for line in ax.get_lines() if line.get_marker() not in ("", "None")}
    assert len(colours) == len(POSITION_LABELS)
    pyplot().close(fig)
    many = series_styles(30)
    assert len({s["color"] for s in many[:20]}) == 20  # distinct colours up to 20 series
    assert len({(s["color"], s["marker"]) for s in many}) == 30  # and distinct styles beyond


def test_axes_are_logarithmic_where_values_span_a_decade():
    assert axis_scale([1.0, 9.9]) == "linear" and axis_scale([1.0, 10.0]) == "log"
    assert axis_scale([0.0, np.nan, 2.0, 3.0]) == "linear"  # zero and NaN are not values on a log axis
    fig = compression_figure()
    assert fig.axes[0].get_xscale() == "log"
    pyplot().close(fig)
    fig = standard_figure()
    assert fig.axes[1].get_xscale() == "log"  # throughput: speeds compare by ratio
    pyplot().close(fig)


def test_measured_figures_are_labelled_as_measured():
    fig = compression_figure()
    ax = fig.axes[0]
    top = [child for child in ax.child_axes if "measured ratio" in child.get_xlabel()]
    assert top, "the compression plot reads the measured ratio on a top axis"
    assert "MiB" in ax.get_xlabel() and "nominal" in ax.get_legend().get_title().get_text()
    pyplot().close(fig)
    fig = standard_figure()
    assert "measured" in fig.axes[1].get_xlabel()
    pyplot().close(fig)


def test_the_machine_note_counts_runs_per_machine():
    one = {"machine": {"cpu_model": "AMD EPYC", "cores": 2}}
    other = {"machine": {"cpu_model": "Intel Xeon", "cores": 4}}
    assert machine_note([one]) == "Runs on AMD EPYC, 2 cores (1 run manifest)."
    note = machine_note([one, one, other])
    assert "2 machines" in note and "AMD EPYC, 2 cores (2 runs)" in note and "Intel Xeon, 4 cores (1 run)" in note


# --------------------------------------------------------------------------- units
def test_bytes_over_2_to_the_20_are_labelled_mib():
    assert not [c for c, _, _ in report.METRICS if "MB" in c.split()]
    df, _ = report.frame([("r", {"label": "A", "seed": 0}, {"profile": {"model_bytes": 3 * 2**20}})])
    assert df.loc[0, "model MiB"] == 3.0
    s, _ = compression_rows()
    lines = cr.table_lines(s, "Full")
    assert "| stored MiB |" in next(line for line in lines if line.startswith("| row"))
    assert f"{3.3e8 / 2**20:,.1f} MiB stored." in lines[0]
    assert not [line for line in lines if " MB" in line or " KB" in line]


def test_measurement_tables_show_mib_where_the_method_divides_by_2_to_the_20():
    lines = ["### Measurement `hpc_ladder`", "", "Measured on ...", "",
             "| model · rung | peak RSS MB | model MiB |", "|---|---|---|", "| a · 0 | 1,234 | 5.00 |",
             "### Measurement `unchecked`", "", "| peak RSS MB |", "|---|", "| 7 |"]
    out = report.with_mib_labels(lines)
    assert out[4] == "| model · rung | peak RSS MiB | model MiB |"
    assert out[6] == lines[6]  # cells keep their figures
    assert out[-3] == "| peak RSS MB |"  # a measurement nobody checked keeps its own label
