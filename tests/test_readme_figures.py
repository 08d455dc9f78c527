"""README figures against the committed results (issue 27, part 6): the committed README passes its
own check, an edited figure or a moved result fails it, and --write puts the results' text back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from repro import readme_figures as rf
from repro.environment import CORE_ENTRY, import_closure

COMMITTED = rf.README.read_text()


def committed_results() -> rf.Results:
    return rf.Results(rf.RESULTS)


def test_committed_readme_matches_committed_results():
    mismatches = rf.check(COMMITTED, committed_results())
    assert mismatches == [], "\n".join(map(str, mismatches))


def test_the_readme_marks_every_figure_and_each_marker_names_one():
    marked = [m.name for m in rf.marks(COMMITTED)]
    assert set(marked) == set(rf.FIGURES)
    assert all(m.text is not None for m in rf.marks(COMMITTED))


def test_an_edited_figure_fails_the_check_and_write_restores_it(tmp_path, capsys):
    stale = COMMITTED.replace("<!-- fig:dp_two_process_ratio -->0.64-0.69x", "<!-- fig:dp_two_process_ratio -->0.74-0.80x")
    assert stale != COMMITTED
    readme = tmp_path / "README.md"
    readme.write_text(stale)

    mismatches = rf.check(stale, committed_results())
    assert [(m.figure, m.readme, m.results) for m in mismatches] == [("dp_two_process_ratio", "0.74-0.80x", "0.64-0.69x")]
    assert "results/runs/hpc_ladder/measurements/hpc_data_parallel.json" in mismatches[0].source

    assert rf.main(["--check", "--readme", str(readme)]) == 1
    out = capsys.readouterr().out
    assert "fig:dp_two_process_ratio" in out and "'0.74-0.80x'" in out and "'0.64-0.69x'" in out

    assert rf.main(["--write", "--readme", str(readme)]) == 0
    assert readme.read_text() == COMMITTED
    assert rf.main(["--check", "--readme", str(readme)]) == 0


def test_a_figure_of_another_shape_unknown_names_and_unmarked_figures_are_reported():
    text = COMMITTED.replace("<!-- fig:apg_infer_time -->1.74-2.19x", "<!-- fig:apg_infer_time -->about 2x")
    text = text.replace("<!-- fig:dp_mib_dense -->", "")
    text += "\n<!-- fig:no_such_figure -->1.0x\n"
    found = {m.figure: m for m in rf.check(text, committed_results())}
    assert set(found) == {"apg_infer_time", "dp_mib_dense", "no_such_figure"}
    assert found["apg_infer_time"].results == "1.74-2.19x" and "shape" in found["apg_infer_time"].source
    assert found["dp_mib_dense"].readme == "(not marked)"
    assert found["no_such_figure"].results == "(no such figure)"
    # --write leaves what it cannot rewrite alone and says so
    new, problems = rf.rewrite(text, committed_results())
    assert "about 2x" in new and {p.figure for p in problems} == {"apg_infer_time", "no_such_figure"}


def _measurement(root: Path, experiment: str, name: str, columns: list[str], rows: list[list]) -> None:
    path = root / "runs" / experiment / "measurements" / f"{name}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"result": {"columns": columns, "rows": rows, "notes": []}}))


def test_a_moved_result_moves_the_figure(tmp_path):
    src = json.loads((rf.RESULTS / "runs/hpc_ladder/measurements/hpc_data_parallel.json").read_text())["result"]
    rows = [list(r) for r in src["rows"]]
    col = src["columns"].index("x 1 process")
    rows[1][col] = "0.81"  # a regeneration that speeds up one two-process row
    _measurement(tmp_path, "hpc_ladder", "hpc_data_parallel", src["columns"], rows)
    got = rf.evaluate(rf.Results(tmp_path), {"dp_two_process_ratio", "dp_mib_fp32"})
    assert got["dp_two_process_ratio"].text == "0.64-0.81x"
    assert got["dp_mib_fp32"].text == "0.87"
    # and the committed README no longer passes against those results
    names = {m.figure for m in rf.check(COMMITTED, rf.Results(tmp_path))}
    assert "dp_two_process_ratio" in names and "dp_mib_fp32" not in names


def test_missing_results_are_a_mismatch_not_a_crash(tmp_path):
    got = rf.evaluate(rf.Results(tmp_path), {"dp_two_process_ratio"})["dp_two_process_ratio"]
    assert got.text is None and "does not exist" in got.error


def test_runs_are_found_by_manifest_label_through_the_index(tmp_path):
    root = tmp_path / "runs" / "exp"
    for folder, label, seed, auc in [("A-1111/seed0", "Row A", 0, 0.80), ("A-1111/seed1", "Row A", 1, 0.82),
                                     ("B-2222/seed0", "Row B", 0, 0.70), ("stale-3333/seed0", "Row A", 0, 0.10)]:
        (root / folder).mkdir(parents=True)
        (root / folder / "manifest.json").write_text(json.dumps({"label": label, "seed": seed, "status": "done"}))
        (root / folder / "metrics.json").write_text(json.dumps({"test": {"auc": auc}}))
    # the stale folder is not in the index, so it is not read
    (root / "index.json").write_text(json.dumps({"runs": ["A-1111/seed0", "A-1111/seed1", "B-2222/seed0"]}))
    r = rf.Results(tmp_path)
    assert r.seed_mean("exp", "Row A", ("test", "auc")) == pytest.approx(0.81)
    assert r.touched == ["results/runs/exp/<'Row A'>/seed{0,1}/metrics.json"]
    with pytest.raises(KeyError, match="no done run labelled 'Row C'"):
        r.run_metrics("exp", "Row C")


def test_peers_tables_are_read_as_the_file_states_them(tmp_path):
    (tmp_path / "peers.md").write_text(
        "intro\n\n| library | seeds | test AUC mean ± sd | training samples/s |\n|---|---|---|---|\n"
        "| FuxiCTR | 0, 1 | 0.8073 ± 0.0006 | 61,707 [57,282, 86,030] |\n\nafter\n")
    t = rf.Results(tmp_path).peers_table("peers", "seeds")
    assert t.number("FuxiCTR", "test AUC mean ± sd", sep="±") == 0.8073
    assert t.number("FuxiCTR", "training samples/s") == 61707
    assert "no committed manifests" in t.where
    stale = COMMITTED.replace("<!-- fig:peers_auc_adrepro -->0.8059", "<!-- fig:peers_auc_adrepro -->0.8058")
    (m,) = rf.check(stale, committed_results())
    assert m.figure == "peers_auc_adrepro" and m.source == "results/peers.md" + rf.PEERS_CAVEAT


@pytest.mark.parametrize("fmt, values, text", [
    (rf.value(2), (0.125,), "0.13"),                       # half-up on the decimal text
    (rf.value(2), (2.675,), "2.68"),                       # not the binary float's 2.67499...
    (rf.value(4, signed=True), (-0.00004,), "+0.0000"),    # zero never keeps a minus
    (rf.value(4, signed=True), (0.0020,), "+0.0020"),
    (rf.value(4, minus="−"), (-0.00316,), "−0.0032"),
    (rf.value(0, thousands=True), (1622.0,), "1,622"),
    (rf.value(0, "k", scale=1e-3), (117310,), "117k"),
    (rf.value(1, "M", scale=1e-6), (12_499_328,), "12.5M"),
    (rf.span(-1), (324, 422), "320-420"),
    (rf.span(2, "x"), (0.64, 0.69), "0.64-0.69x"),
    (rf.span(0, "x"), (3.98, 4.0), "4x"),                  # a range whose ends render alike
    (rf.span(4, joiner=" to ", signed=True), (0.0006, 0.0036), "+0.0006 to +0.0036"),
    (rf.pair((2, 1), "x"), (0.945, 1.207), "0.95x / 1.2x"),
    (rf.pair((0, 0, 1), " s"), (49.2, 9.2, 3.8), "49 s / 9 s / 3.8 s"),
    (rf.pair(1, "x", collapse=True), (1.20, 1.16), "1.2x"),
    (rf.pair(1, "x"), (1.20, 1.16), "1.2x / 1.2x"),        # a pair keeps both parts
])
def test_formats_render_exactly(fmt, values, text):
    assert fmt.render(values) == text
    shape = fmt.pattern(len(values))
    assert shape.fullmatch(text)


def test_a_shape_owns_the_figure_and_nothing_after_it():
    shape = rf.span(2, "x").pattern(2)
    assert shape.match("0.74-0.80x of one").group() == "0.74-0.80x"
    assert shape.match("1.9x the static").group() == "1.9x"  # a collapsed range still has the shape
    assert shape.match("about 2x") is None
    pair = rf.pair(0, "x").pattern(2)
    assert pair.match("110x / 111x** over").group() == "110x / 111x"
    assert pair.match("110x over") is None
    assert rf.value(0).pattern(1).match("146, where").group() == "146"
    assert rf.value(0, thousands=True).pattern(1).match("1,622: SparseAdam").group() == "1,622"
    three = rf.pair(4).pattern(3)
    assert three.match("0.8291 / 0.8285 / 0.8284, 30k").group() == "0.8291 / 0.8285 / 0.8284"


def test_no_run_executes_the_readme_figures():
    """The module is report code: no run's code identity may include it."""
    module = Path(rf.__file__).resolve()
    assert module not in import_closure([CORE_ENTRY])
    root = module.parent.parent
    importers = [p for folder in ("repro", "baselines", "methods", "datasets", "peers")
                 for p in (root / folder).rglob("*.py")
                 if p != module and re.search(r"\breadme_figures\b", p.read_text())]
    assert importers == []
