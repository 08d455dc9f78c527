"""Data-parallel training (issue 9): two gloo workers launched by torchrun train what one process
trains on the same global batch; the loader's shards cover every row once; bad settings fail
before any worker starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repro.errors import ConfigError
from repro.run import execute, resolve

SETTINGS = {"batch_size": 1000, "epochs": 1, "threads": 2, "progress": False}
MODEL = {"name": "deepfm", "hidden_units": [32, 16], "dropout": 0.0}  # no dropout: ranks draw their own
pytestmark = pytest.mark.usefixtures("torchrun_tmp")


def _run(run_config, **train):
    cfg = {**run_config(**{**SETTINGS, **train}), "model": MODEL}
    execute(cfg)
    run = resolve(cfg)
    return json.loads((run.run_dir / "metrics.json").read_text()), run


def test_two_gloo_workers_train_what_one_process_trains(run_config):
    one, _ = _run(run_config)
    two, run = _run(run_config, world_size=2)
    assert two["profile"]["world_size"] == 2 and one["profile"]["world_size"] == 1
    # Same rows, same steps, same global batch: only the order of float sums differs.
    assert two["train"]["steps"] == one["train"]["steps"] and two["train"]["samples"] == one["train"]["samples"]
    assert two["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], rel=1e-5)
    assert two["test"]["auc"] == pytest.approx(one["test"]["auc"], abs=2e-4)
    assert two["test"]["logloss"] == pytest.approx(one["test"]["logloss"], rel=1e-3)
    # Sparse embedding rows and fp32 dense buckets went through the counting hook.
    assert two["profile"]["comm_bytes_per_step"] > 0


def test_fp16_compression_halves_the_dense_bytes(run_config):
    plain, _ = _run(run_config, world_size=2, embedding_optimizer="adam")  # every gradient dense
    fp16, _ = _run(run_config, world_size=2, embedding_optimizer="adam", comm_hook="fp16")
    assert fp16["profile"]["comm_bytes_per_step"] == pytest.approx(plain["profile"]["comm_bytes_per_step"] / 2)
    assert fp16["test"]["auc"] == pytest.approx(plain["test"]["auc"], abs=5e-3)


def test_shards_cover_every_row_of_every_batch_once(smoke_data):
    whole = list(smoke_data.batches("train", 777, shuffle=True, seed=3, epoch=1))
    parts = [list(smoke_data.batches("train", 777, shuffle=True, seed=3, epoch=1, shard=(r, 3))) for r in range(3)]
    assert all(len(p) == len(whole) for p in parts)
    for k, batch in enumerate(whole):
        joined = torch.cat([parts[r][k]["cat"] for r in range(3)])
        assert torch.equal(joined, batch["cat"])
        sizes = [len(parts[r][k]["label"]) for r in range(3)]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("train", [{"world_size": 0}, {"comm_hook": "bf16"}])
def test_bad_parallel_settings_are_config_errors(run_config, train):
    with pytest.raises(ConfigError, match="world_size|comm_hook"):
        execute(run_config(**{**SETTINGS, **train}))
