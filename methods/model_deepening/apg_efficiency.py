"""APG's efficiency against a static full-rank MLP of the same widths, measured in one process
(the ``apg_efficiency`` measurement of ``conf/experiment/apg.yaml``; ``make bench`` times the same
towers with pytest-benchmark).

The paper's claim (C3: -38.7% time, -96.6% memory) is against a *regular* static deep tower
(notes ``papers.md`` sec. 3, pitfall 6); basic APG (a full W_i generated per row) is measured too,
since it is what the efficient form saves against. The towers have DeepFM's widths on the default
world by default (input 256 = 16 fields x 16, hidden 256-128-64, one output); the condition is a
16-dim group embedding (group-wise) or the layer input (self-wise).

- parameters: as served (over-parameterised factors merged);
- latency: median over ``rounds`` calls after one warm-up, inference in eval mode under
  ``no_grad`` (factors merged once), training = forward + backward;
- peak memory: the torch profiler's allocation trace over one call (tensors allocated during the
  call, parameters excluded), the CPU analogue of ``torch.cuda.max_memory_allocated``.
Every figure also as a ratio to the static tower measured in the same process.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from methods.model_deepening.apg import APGConfig, APGLinear, APGTower
from repro.layers import MLP
from repro.measurements import median_ms, register_measurement  # its warm-up call also merges APG's factors


@dataclass
class APGEfficiencyConfig:
    batch: int = 4096
    in_dim: int = 256
    condition_dim: int = 16
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    rank: list[int] = field(default_factory=lambda: [32, 16, 8])
    overparam: int = 64
    hypernet_units: list[int] = field(default_factory=lambda: [64])
    rounds: int = 10
    threads: int = 2
    seed: int = 0


class StaticTower(nn.Module):
    """The regular deep tower: ``repro.layers.MLP`` (the condition arguments are ignored)."""

    def __init__(self, in_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, out_dim=1)

    def forward(self, x, condition_emb, condition_ids):
        return self.mlp(x)


def towers(cfg: APGEfficiencyConfig) -> dict[str, callable]:
    def apg(**kw) -> APGTower:
        c = APGConfig(hidden_units=cfg.hidden_units, hypernet_units=cfg.hypernet_units, **kw)
        return APGTower(cfg.in_dim, c, cfg.condition_dim, 1)

    k = "/".join(map(str, cfg.rank))
    return {
        "static MLP": lambda: StaticTower(cfg.in_dim, cfg.hidden_units),
        f"APG group K={k}": lambda: apg(condition="group", rank=cfg.rank),
        f"APG self K={k}": lambda: apg(condition="self", rank=cfg.rank),
        f"APG group K={k} P={cfg.overparam}": lambda: apg(condition="group", rank=cfg.rank, overparam=cfg.overparam),
        "basic APG group": lambda: apg(condition="group", rank=[0] * len(cfg.hidden_units)),
    }


def served_parameters(tower: nn.Module) -> int:
    served = copy.deepcopy(tower)
    for m in served.modules():
        if isinstance(m, APGLinear):
            m.merge_()
    return sum(p.numel() for p in served.parameters())


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


def measure_tower(make, inputs, rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    tower = make()
    tower.eval()

    def infer():
        with torch.no_grad():
            return tower(*inputs)

    out = {"params": served_parameters(tower), "infer ms": median_ms(infer, rounds), "infer peak MB": peak_mb(infer)}
    tower.train()

    def step():
        tower.zero_grad(set_to_none=True)
        tower(*inputs).sum().backward()

    out["train ms"] = median_ms(step, max(1, rounds // 2))
    out["train peak MB"] = peak_mb(step)
    return out


@register_measurement("apg_efficiency", config=APGEfficiencyConfig)
def apg_efficiency(cfg: APGEfficiencyConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    g = torch.Generator().manual_seed(cfg.seed)
    inputs = (torch.randn(cfg.batch, cfg.in_dim, generator=g), torch.randn(cfg.batch, cfg.condition_dim, generator=g),
              torch.zeros(cfg.batch, 1, dtype=torch.long))
    figures = {name: measure_tower(make, inputs, cfg.rounds) for name, make in towers(cfg).items()}
    static = figures["static MLP"]
    cols = ["params", "infer ms", "infer peak MB", "train ms", "train peak MB"]
    rows = []
    for name, f in figures.items():
        rows.append([name] + [f"{f[c]:,.0f}" if c == "params" else f"{f[c]:,.1f}" for c in cols]
                    + [f"{f[c] / static[c]:.2f}x" for c in ("infer ms", "infer peak MB", "train ms")])
    return {
        "columns": ["tower", *cols, "infer time / static", "infer memory / static", "train time / static"],
        "rows": rows,
        "notes": [f"batch {cfg.batch}, input {cfg.in_dim}, hidden {cfg.hidden_units}, {cfg.threads} threads; "
                  "the paper's -38.7% time / -96.6% memory would read 0.61x / 0.03x in the static-ratio columns"],
    }
