"""Shared fixtures: one smoke-scale world prepared once per session in a temporary cache."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Callable

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


@pytest.fixture(scope="session")
def blind(smoke_data) -> PreparedDataset:
    """The smoke world with the position left out of the model's inputs (carried by role only)."""
    return PreparedDataset(smoke_data.root, drop_roles=("position",))


def moved(batch):
    """The same rows at other positions (the position role, and its side column if present)."""
    import torch

    out = dict(batch, position=torch.flip(batch["position"], [0]))
    if "side:position" in out:
        out["side:position"] = out["position"]
    return out


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


@pytest.fixture
def torchrun_tmp(tmp_path, monkeypatch) -> None:
    """torchrun's agent leaves a ``torchelastic_*`` folder in the temporary directory per launch:
    keep them in the test's own folder (the workers inherit the environment) rather than /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture
def bytes_read(monkeypatch) -> list[int]:
    """Counts the bytes every ``open``ed file hands out while the test runs (``monkeypatch.undo()``
    stops counting): how a reader's fingerprint is shown to sample a file, not read it whole."""
    read: list[int] = []
    real_open = builtins.open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    return read


def assert_fingerprint_follows_edits(path: Path, fingerprint: Callable[[], str], first: str) -> None:
    """A raw file's fingerprint (``first`` now) changes when a byte of its first sampled block
    changes with the size and modification time kept, and again when a line is appended."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"x")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = fingerprint()
    assert second != first
    with open(path, "ab") as f:
        f.write(b"\n")
    assert fingerprint() not in (first, second)
