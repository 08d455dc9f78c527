"""The artefact cache: one build per (data, config, code), atomic, rebuilt when any input changes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from repro.artefacts import ArtefactSpec, artefact_dir, build_or_load

CALLS: list[dict] = []


def write_graph(data, config: dict, folder: Path) -> None:
    CALLS.append(config)
    if config.get("fail"):
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-build")
    (folder / "graph.txt").write_text(f"{data.fingerprint}:{config['window']}")


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()


def data(fp: str = "data-a"):
    return SimpleNamespace(fingerprint=fp)


def test_a_build_is_reused_and_any_input_change_rebuilds(tmp_path):
    spec = ArtefactSpec("pcf", {"window": 0.25}, write_graph)
    first = build_or_load(spec, data(), tmp_path, verbose=False)
    assert (first / "DONE").exists() and (first / "graph.txt").read_text() == "data-a:0.25"
    assert build_or_load(spec, data(), tmp_path, verbose=False) == first and len(CALLS) == 1  # three seeds, one build
    other_config = build_or_load(ArtefactSpec("pcf", {"window": 0.5}, write_graph), data(), tmp_path, verbose=False)
    other_data = build_or_load(spec, data("data-b"), tmp_path, verbose=False)
    assert len({first, other_config, other_data}) == 3 and len(CALLS) == 3


def test_a_change_to_the_builders_code_gives_a_new_key(tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text("A = 1\n")
    spec = ArtefactSpec("pcf", {"window": 0.25}, write_graph, extra_files=(str(helper),))
    before = artefact_dir(spec, "data-a", tmp_path)
    helper.write_text("A = 2\n")
    assert artefact_dir(spec, "data-a", tmp_path) != before


def test_a_failed_build_leaves_nothing_a_later_run_trusts(tmp_path):
    spec = ArtefactSpec("pcf", {"window": 0.25, "fail": True}, write_graph)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_or_load(spec, data(), tmp_path, verbose=False)
    assert not artefact_dir(spec, "data-a", tmp_path).exists()
    assert not list((tmp_path / "artefacts").glob("*.partial-*"))
