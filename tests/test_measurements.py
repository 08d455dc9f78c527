"""Measurements: written beside an experiment's runs with a manifest, redone only when their inputs
change, rendered in the report; and APG's efficiency measurement on a tiny tower."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from repro.errors import ConfigError
from repro.measurements import MEASUREMENTS, measure, measurement_lines, measurement_path, register_measurement

CALLS: list[int] = []


@dataclass
class FakeConfig:
    size: int = 3


@MEASUREMENTS.register("fake_for_tests", config=FakeConfig)
def fake(cfg: FakeConfig) -> dict:
    CALLS.append(cfg.size)
    return {"columns": ["what", "ms"], "rows": [["a", f"{cfg.size:.1f}"]], "notes": ["a note"]}


def plot_fake(result: dict, path, title: str) -> None:
    path.write_text(f"{title}: {result['rows'][0][1]}")


@register_measurement("plotted_for_tests", config=FakeConfig, plot=plot_fake)
def plotted(cfg: FakeConfig) -> dict:
    return {"columns": ["what", "ms"], "rows": [["b", f"{cfg.size}"]], "notes": []}


@MEASUREMENTS.register("broken_for_tests", config=FakeConfig)
def broken(cfg: FakeConfig) -> dict:
    return {"columns": ["what", "ms"], "rows": [["only one cell"]]}


def test_a_measurement_is_written_with_its_manifest_and_redone_only_when_its_inputs_change(tmp_path):
    CALLS.clear()
    path = measure("fake_for_tests", None, tmp_path)
    assert path == measurement_path(tmp_path, "fake_for_tests")
    m = json.loads(path.read_text())
    assert m["result"]["rows"] == [["a", "3.0"]] and m["inputs"]["config"] == {"size": 3}
    assert {"commit", "fingerprint"} <= set(m["code"]) and "cores" in m["machine"]
    measure("fake_for_tests", {}, tmp_path)
    assert CALLS == [3]  # cached
    measure("fake_for_tests", {"size": 5}, tmp_path)
    assert CALLS == [3, 5]
    measure("fake_for_tests", {"size": 5}, tmp_path, force=True)
    assert CALLS == [3, 5, 5]
    text = "\n".join(measurement_lines(tmp_path, ["fake_for_tests", "never_run"]))
    assert "| what | ms |" in text and "| a | 5.0 |" in text and "- a note" in text
    assert "### Measurement `never_run`" in text and "Not measured yet" in text


def test_bad_measurements_are_config_errors_and_write_nothing(tmp_path):
    with pytest.raises(ConfigError, match="row 0 has 1 cells for 2 columns"):
        measure("broken_for_tests", None, tmp_path)
    assert not measurement_path(tmp_path, "broken_for_tests").exists()
    with pytest.raises(ConfigError, match="unknown config key"):
        measure("fake_for_tests", {"sise": 4}, tmp_path)
    with pytest.raises(ConfigError, match="unknown measurement"):
        measure("no_such_measurement", None, tmp_path)


def test_apg_efficiency_compares_every_tower_with_the_static_mlp():
    params = {"batch": 32, "in_dim": 12, "condition_dim": 4, "hidden_units": [8, 6], "rank": [2, 2], "overparam": 4,
              "hypernet_units": [5], "rounds": 1, "threads": 1}
    result = MEASUREMENTS.get("apg_efficiency").factory(MEASUREMENTS.config("apg_efficiency", params))
    rows = {r[0]: dict(zip(result["columns"], r)) for r in result["rows"]}
    assert set(rows) == {"static MLP", "APG group K=2/2", "APG self K=2/2", "APG group K=2/2 P=4", "basic APG group"}
    assert rows["static MLP"]["infer time / static"] == "1.00x"
    # served parameters: the over-parameterised tower merges to the plain low-rank one
    assert rows["APG group K=2/2 P=4"]["params"] == rows["APG group K=2/2"]["params"]
    static = 12 * 8 + 8 + 8 * 6 + 6 + 6 + 1
    assert rows["static MLP"]["params"] == f"{static:,}"


def test_a_measurement_with_a_plot_gets_it_drawn_beside_the_report(tmp_path):
    measure("plotted_for_tests", {"size": 7}, tmp_path / "runs")
    measure("fake_for_tests", None, tmp_path / "runs")
    text = "\n".join(measurement_lines(tmp_path / "runs", ["plotted_for_tests", "fake_for_tests"], tmp_path, "exp"))
    assert (tmp_path / "exp.plotted_for_tests.png").read_text() == "Measurement plotted_for_tests: 7"
    assert "![plotted_for_tests](exp.plotted_for_tests.png)" in text
    assert not (tmp_path / "exp.fake_for_tests.png").exists() and "exp.fake_for_tests.png" not in text
    assert "exp.plotted" not in "\n".join(measurement_lines(tmp_path / "runs", ["plotted_for_tests"]))  # no plot_dir: no plot
