"""Training throughput of every baseline and batch throughput of the loader alone.

Run with ``make bench``. Speed is guarded here, as pytest-benchmark statistics and a ratio table,
never as timed assertions in the unit tests (the machines are shared and noisy).
"""

import itertools
from typing import Callable

import pytest
import torch
from torch import nn

from benchmarks.conftest import RESULTS, synthetic_feature_map
from repro.embeddings import FullEmbedding, FullEmbeddingConfig
from repro.registry import MODELS
from repro.train import TrainConfig, clip_gradients, make_optimizers, train_step

BATCH = 4096
STEPS = 10


def test_loader(benchmark, bench_data):
    list(itertools.islice(bench_data.batches("train", BATCH, shuffle=True), 1))  # decode once (cached)

    def run():
        for _ in itertools.islice(bench_data.batches("train", BATCH, shuffle=True, seed=1), STEPS * 5):
            pass

    # 25 rounds: at the smoke world a round is ~4 ms, where 5 rounds' median moved 1.5x between two
    # back-to-back runs on a quiet machine (bench-check's first try, 2026-12-08)
    benchmark.pedantic(run, rounds=25, warmup_rounds=1)
    per_batch = benchmark.stats.stats.mean / (STEPS * 5)
    RESULTS["loader"] = {"batches_per_s": 1 / per_batch, "samples_per_s": BATCH / per_batch}


@pytest.mark.parametrize("name", ["lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2"])
def test_train_step(benchmark, bench_data, name):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = MODELS.build(name, {}, bench_data.feature_map, embedding={"name": "full", "dim": 16})
    cfg = TrainConfig()
    optimizers = make_optimizers(model, cfg)
    batches = list(itertools.islice(bench_data.batches("train", BATCH, shuffle=True), STEPS))
    model.train()

    def run():
        for batch in batches:
            train_step(model, batch, optimizers, cfg)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    per_step = benchmark.stats.stats.mean / STEPS
    RESULTS[name] = {"batches_per_s": 1 / per_step, "samples_per_s": BATCH / per_step}


# One update of a large table: dense Adam (every row's moments and values, every step) against
# SparseAdam (only the rows the batch looked up). The ratio lands in the closing table.
TABLE_ROWS, FIELDS, DIM = 4_000_000, 17, 16
STEP_TIMES: dict[str, float] = {}


class _TableOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = FullEmbedding(synthetic_feature_map([TABLE_ROWS // FIELDS] * FIELDS), FullEmbeddingConfig(dim=DIM))
        self.out = nn.Linear(FIELDS * DIM, 1)

    def forward(self, cat):
        return self.out(self.emb(cat).flatten(1)).squeeze(-1)


def table_update_step(kind: str) -> Callable[[], None]:
    """One training step of a 4M-row table (``_TableOnly``) with ``kind`` (``adam``: dense,
    ``sparse_adam``: the looked-up rows only) on a fixed batch; the benchmark below and the ratio
    guards time this same step."""
    torch.manual_seed(0)
    model, cfg = _TableOnly(), TrainConfig(embedding_optimizer=kind)
    optimizers = make_optimizers(model, cfg)
    gen = torch.Generator().manual_seed(0)
    cat = torch.randint(1, TABLE_ROWS // FIELDS, (BATCH, FIELDS), generator=gen)
    label = torch.rand(BATCH, generator=gen).round()

    def step() -> None:
        model.emb.forget()
        loss = nn.functional.binary_cross_entropy_with_logits(model(cat), label)
        loss = loss + cfg.embedding_l2 * model.emb.penalty()
        optimizers.zero_grad()
        loss.backward()
        clip_gradients(optimizers.params(), cfg.grad_clip_norm)
        optimizers.step()

    return step


@pytest.mark.parametrize("kind", ["adam", "sparse_adam"])
def test_embedding_update(benchmark, kind):
    torch.set_num_threads(2)
    step = table_update_step(kind)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    STEP_TIMES[kind] = benchmark.stats.stats.mean
    RESULTS[f"table {kind}"] = {"batches_per_s": 1 / STEP_TIMES[kind], "samples_per_s": BATCH / STEP_TIMES[kind]}
    if len(STEP_TIMES) == 2:
        benchmark.extra_info["dense_adam_over_sparse_adam"] = STEP_TIMES["adam"] / STEP_TIMES["sparse_adam"]
