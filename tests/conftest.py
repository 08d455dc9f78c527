"""Shared fixtures: one smoke-scale world prepared once per session in a temporary cache."""

from __future__ import annotations

import pytest

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.registry import SOURCES

SMOKE = {"scale": "smoke", "seed": 0}


def world(**overrides):
    return SOURCES.get("world").factory(SOURCES.config("world", {**SMOKE, **overrides}))


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def smoke_data(cache_root) -> PreparedDataset:
    root = prepare(world(), PrepareConfig(min_count=2, cache_root=str(cache_root)), verbose=False)
    return PreparedDataset(root)


@pytest.fixture
def run_config(tmp_path, cache_root):
    """A complete run config at smoke scale writing into a temporary results folder."""

    def make(**train):
        return {
            "data": {"name": "world", "min_count": 2, "cache_root": str(cache_root), **SMOKE},
            "model": {"name": "deepfm", "hidden_units": [32, 16]},
            "embedding": {"name": "full", "dim": 8},
            # one smoke epoch learns only with a larger step than the protocol's (0.003 -> AUC ~0.59)
            "train": {"epochs": 1, "batch_size": 2048, "progress": False, "evals_per_epoch": 1, "lr": 0.01, **train},
            "seed": 0,
            "experiment_name": "t",
            "results_dir": str(tmp_path / "results"),
        }

    return make
