"""APG's efficiency against a static full-rank MLP of the same widths, in one process.

The paper's claim (C3: -38.7% time, -96.6% memory) is against a *regular* static deep tower (notes
``papers.md`` sec. 3, pitfall 6); basic APG (a full W_i generated per row) is measured too, since
it is what the efficient form saves against. Towers have DeepFM's widths on the default world
(input 256 = 16 fields x 16, hidden 256-128-64, one output); the condition is a 16-dim group
embedding (group-wise) or the layer input (self-wise). Latency: pytest-benchmark, inference in
eval mode under ``no_grad`` (over-parameterised factors merged once) and a training step
(forward + backward). Peak memory: the torch profiler's allocation trace over one call (tensors
allocated during the call, parameters excluded). The closing table gives every figure as a ratio
to the static tower measured in the same run; nothing is asserted about speed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.conftest import APG_FIGURES
from methods.model_deepening.apg import APGConfig, APGLinear, APGTower
from repro.layers import MLP

BATCH, IN_DIM, COND_DIM, HIDDEN = 4096, 256, 16, [256, 128, 64]


class StaticTower(nn.Module):
    """The regular deep tower: ``repro.layers.MLP`` with the (ignored) condition argument."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(IN_DIM, HIDDEN, out_dim=1)

    def forward(self, x, condition_emb, condition_ids):
        return self.mlp(x)


def apg(**kw) -> APGTower:
    return APGTower(IN_DIM, APGConfig(hidden_units=HIDDEN, **kw), COND_DIM, 1)


TOWERS = {
    "static MLP": StaticTower,
    "APG group K=32/16/8": lambda: apg(condition="group", rank=[32, 16, 8]),
    "APG self K=32/16/8": lambda: apg(condition="self", rank=[32, 16, 8]),
    "APG group K=32/16/8 P=64": lambda: apg(condition="group", rank=[32, 16, 8], overparam=64),
    "basic APG group": lambda: apg(condition="group", rank=[0, 0, 0]),
}


def peak_mb(fn) -> float:
    """Peak of the bytes allocated (and not yet freed) during ``fn()``, from the profiler's trace."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def served_parameters(tower: nn.Module) -> int:
    """Parameters a server holds: over-parameterised factors merged (``APGLinear.merge_``)."""
    served = copy.deepcopy(tower)
    for m in served.modules():
        if isinstance(m, APGLinear):
            m.merge_()
    return sum(p.numel() for p in served.parameters())


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(BATCH, IN_DIM, generator=g), torch.randn(BATCH, COND_DIM, generator=g),
            torch.zeros(BATCH, 1, dtype=torch.long))


@pytest.mark.parametrize("name", list(TOWERS))
def test_apg_inference(benchmark, name, inputs):
    torch.manual_seed(0)
    tower = TOWERS[name]().eval()

    def infer():
        with torch.no_grad():
            return tower(*inputs)

    infer()  # merges over-parameterised factors once, as serving would
    benchmark.pedantic(infer, rounds=10, warmup_rounds=1)
    fig = APG_FIGURES.setdefault(name, {})
    fig["params"] = served_parameters(tower)
    fig["infer ms"] = benchmark.stats.stats.mean * 1e3
    fig["infer peak MB"] = peak_mb(infer)


@pytest.mark.parametrize("name", list(TOWERS))
def test_apg_training_step(benchmark, name, inputs):
    torch.manual_seed(0)
    tower = TOWERS[name]().train()

    def step():
        tower.zero_grad(set_to_none=True)
        tower(*inputs).sum().backward()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    fig = APG_FIGURES.setdefault(name, {})
    fig["train ms"] = benchmark.stats.stats.mean * 1e3
    fig["train peak MB"] = peak_mb(step)
