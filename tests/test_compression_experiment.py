"""The compression experiments: every declared run resolves (a misspelt embedding key fails here,
not after an hour of training), and a smoke slice runs end to end into the compression table,
its Pareto plot and its claims."""

from __future__ import annotations

import pandas as pd
import pytest

from repro.claims import parse_claims
from repro.compression_report import parse_label
from repro.experiments import load_experiment, plan, run_experiment
from repro.registry import ROOT


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_resolves_and_its_claims_parse(name, tmp_path):
    spec = load_experiment(name)
    parse_claims(name, spec.get("claims"), labels=[r["label"] for r in spec["runs"]])
    jobs = plan([name], results_dir=str(tmp_path))  # composes and validates every run's config
    seeds = sum(len(r.get("seeds", spec.get("seeds", [0]))) for r in spec["runs"])
    assert len(jobs) == seeds and all(j.reasons for j in jobs)


def test_labels_name_the_curve_and_the_nominal_ratio():
    assert parse_label("BH 1000x") == ("BH", 1000.0)
    assert parse_label("DCNv2 · QR 16x") == ("DCNv2 · QR", 16.0)
    assert parse_label("AMTL") == ("AMTL", None)


def test_compression_smoke_experiment_end_to_end(tmp_path, cache_root):
    results = tmp_path / "results"
    extra = ["data.scale=smoke", "train.epochs=1", "train.lr=0.01", "train.progress=false",
             "model.hidden_units=[32,16]", "embedding.dim=8", f"data.cache_root={cache_root}"]
    dirs = run_experiment("embedding_compression_smoke", extra=extra, results_dir=str(results))
    assert len(dirs) == 5  # Full has two seeds, every other row one
    from repro.report import write_report

    tag = dirs[0].parents[1].name
    md, csv, png = write_report("embedding_compression_smoke", results, tag=tag)
    text = md.read_text()
    assert "| row | seeds | nominal | stored MiB | measured ratio |" in text
    assert "Stored KiB per field" not in text  # no row has three seeds
    assert "Full vocabulary:" in text and "## Claims" in text and "`bh-keeps-90pct`" in text
    table = pd.read_csv(csv, index_col=0)
    assert table.loc["Full", "measured ratio"] == 1.0
    # The compressed rows store less than the full table, and the measured ratio says by how much.
    for row in ("Hashing 16x", "BH 16x"):
        assert table.loc[row, "bytes"] < table.loc["Full", "bytes"]
        assert table.loc[row, "measured ratio"] == pytest.approx(table.loc["Full", "bytes"] / table.loc[row, "bytes"])
    assert table["tail auc mean"].notna().all() and png.stat().st_size > 10_000
