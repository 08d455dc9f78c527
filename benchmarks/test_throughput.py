"""Training throughput of every baseline and batch throughput of the loader alone.

Run with ``make bench``. Speed is guarded here, as pytest-benchmark statistics and a ratio table,
never as timed assertions in the unit tests (the machines are shared and noisy).
"""

import itertools

import pytest
import torch

from benchmarks.conftest import RESULTS
from repro.registry import MODELS
from repro.train import TrainConfig, make_optimizer

BATCH = 4096
STEPS = 10


def test_loader(benchmark, bench_data):
    list(itertools.islice(bench_data.batches("train", BATCH, shuffle=True), 1))  # decode once (cached)

    def run():
        for _ in itertools.islice(bench_data.batches("train", BATCH, shuffle=True, seed=1), STEPS * 5):
            pass

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    per_batch = benchmark.stats.stats.mean / (STEPS * 5)
    RESULTS["loader"] = {"batches_per_s": 1 / per_batch, "samples_per_s": BATCH / per_batch}


@pytest.mark.parametrize("name", ["lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2"])
def test_train_step(benchmark, bench_data, name):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = MODELS.build(name, {}, bench_data.feature_map, embedding={"name": "full", "dim": 16})
    optimizer = make_optimizer(model, TrainConfig())
    batches = list(itertools.islice(bench_data.batches("train", BATCH, shuffle=True), STEPS))

    def run():
        for batch in batches:
            loss = model.loss(batch, model(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    per_step = benchmark.stats.stats.mean / STEPS
    RESULTS[name] = {"batches_per_s": 1 / per_step, "samples_per_s": BATCH / per_step}
