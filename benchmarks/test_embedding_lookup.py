"""Lookup cost of every embedding scheme: forward + backward of one batch of 4096 rows over 24
fields (8 ID fields of 200k rows, 8 of 20k, 8 small ones), each compressed scheme at 16x and at
1000x. Run with ``make bench``; the closing table gives each scheme's time and stored size as
ratios to the full table measured in the same run (never asserted: the machines are noisy)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from benchmarks.conftest import LOOKUPS, synthetic_feature_map
from repro.registry import EMBEDDINGS

BATCH, DIM = 4096, 16
VOCABS = [200_000] * 8 + [20_000] * 8 + [50] * 8
CASES = [("full", {})] + [
    (name, {"compression": ratio}) for ratio in (16, 1000)
    for name in ("hashing", "qr", "hash_embedding", "double_hashing", "mde", "bh")
] + [("amtl", {})]


def make_lookup_inputs() -> tuple:
    """(feature map, categorical indices, raw ids) of one batch over ``VOCABS``."""
    fm = synthetic_feature_map(VOCABS)
    gen = torch.Generator().manual_seed(0)
    # Zipf-like indices, as a real batch has (rank r drawn with probability ~ 1/r).
    u = torch.rand(BATCH, len(VOCABS), generator=gen)
    sizes = torch.tensor(VOCABS, dtype=torch.float64) - 2
    cat = (torch.exp(u.double() * torch.log(sizes)).long()).clamp(min=1)
    raw = torch.randint(1, 2**62, (BATCH, len(VOCABS)), generator=gen)
    return fm, cat, raw


def lookup_step(name: str, extra: dict, inputs: tuple) -> tuple[Callable[[], None], nn.Module]:
    """One forward+backward of scheme ``name`` over ``inputs`` (sparse gradients where the scheme
    has them), and the layer; the benchmark here and the ratio guards time this same step."""
    torch.manual_seed(0)
    fm, cat, raw = inputs
    layer = EMBEDDINGS.build(name, {"dim": DIM, **extra}, fm)
    layer.sparse_grad = layer.supports_sparse_grad
    layer.train()

    def step() -> None:
        layer.forget()
        for p in layer.parameters():
            p.grad = None
        layer(cat, raw).sum().backward()

    return step, layer


@pytest.fixture(scope="module")
def lookup_inputs():
    return make_lookup_inputs()


@pytest.mark.parametrize("name, extra", CASES, ids=[f"{n}-{e.get('compression', 1)}x" for n, e in CASES])
def test_lookup_forward_backward(benchmark, lookup_inputs, name, extra):
    torch.set_num_threads(2)
    step, layer = lookup_step(name, extra, lookup_inputs)

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    key = f"{name} {extra.get('compression', 1)}x" if extra else name
    LOOKUPS[key] = {"ms": 1000 * benchmark.stats.stats.mean, "mb": layer.stored_bytes() / 2**20}
