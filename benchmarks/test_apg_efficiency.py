"""APG towers against the static MLP of the same widths (pytest-benchmark timings; the towers,
their served parameters and the profiler's peak memory come from the ``apg_efficiency``
measurement, ``methods/model_deepening/apg_efficiency.py``, whose docstring says what is compared
and why). The closing table gives every figure as a ratio to the static tower measured in the
same run; nothing is asserted about speed."""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import APG_FIGURES
from methods.model_deepening.apg_efficiency import APGEfficiencyConfig, peak_mb, served_parameters, towers

CFG = APGEfficiencyConfig()
TOWERS = towers(CFG)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(CFG.batch, CFG.in_dim, generator=g), torch.randn(CFG.batch, CFG.condition_dim, generator=g),
            torch.zeros(CFG.batch, 1, dtype=torch.long))


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
