"""Mixed-dimension embeddings (MDE; Ginart, Naumov, Mudigere, Yang, Zou, "Mixed Dimension
Embeddings with Application to Memory-Efficient Recommendation Systems", arXiv 1909.11810, IEEE
ISIT 2021; reference code: facebookresearch/dlrm ``tricks/md_embedding_bag.py``).

Mechanism (the paper's within-table frequency blocking): the values of a compressed field are
split into blocks by training frequency; block i stores d_i-wide rows, d_i set by the power rule
(popular values get more dimensions), and a bias-free linear map d_i -> dim projects its rows to
the common width. Every value keeps its own row: MDE compresses by width, never by collisions.

Choices the paper leaves open:

- **Blocks** (``blocks``, default 4): over the field's indices 1..N-1 in index order, which is
  descending training frequency (the data contract; the OOV index is last, in the rarest block:
  its row stands for the rare values). Block sizes are geometric, doubling: block i holds a
  2^i / (2^blocks - 1) share of the values, so the most frequent block is the smallest and a
  large width there is cheap. Empty blocks (tiny fields) are dropped.
- **Power rule**: d_i = lambda * f_i^alpha (``alpha``, default 0.3 = dlrm's ``--md-temperature``),
  f_i the block's mean *training* count. This is dlrm's d_i = lambda * p_i^(-alpha) with its proxy
  p_i ~ rows per query, i.e. the inverse of the per-value frequency. Each d_i is rounded, clamped to
  [1, dim] and made non-increasing from the most to the least frequent block (the OOV count can
  raise the last block's mean).
- **lambda from the budget**: the largest lambda (bisection) whose field floats
  sum_i n_i d_i + sum_{i: d_i < dim} d_i * dim (rows plus projections) fit ``budget * dim``. So the
  most frequent block gets the largest width, the full dim only when the budget allows. A block at
  the full dim needs no projection (identity, as in dlrm). If even d_i = 1 everywhere does not fit
  (compression above dim), every d_i is 1, the field stores more than its budget, ``plan`` marks it
  and a warning says the achieved ratio is below the target.
- **Initialisation**: block rows N(0, init_std^2), projections N(0, 1/d_i), so a projected row
  starts at the full table's scale (dlrm uses nn.Linear's default).
- **Parameters**: block tables are sparse (``FusedTables``), projections dense (the dense
  embedding optimizer); the lookup penalty applies to the projected output.
- **Ids**: vocabulary indices only (``ids: raw`` is rejected): blocks follow the vocabulary's
  frequency order.
- **First-order weights**: the hashing trick (``ids: vocab``) at the same compression, from zero.
  At dim 1 the power rule has nothing to shrink (every d_i >= 1 = dim), so MDE would be a full
  table plus 1x1 projections: no compression at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from baselines.embeddings.hashing import FamilyEmbedding, HashingConfig, HashingEmbedding
from repro.compression import CompressedConfig, FusedTables
from repro.data.featuremap import FeatureMap
from repro.registry import register_embedding


@dataclass
class MDEConfig(CompressedConfig):
    blocks: int = 4  # frequency blocks per compressed field (geometric sizes, most frequent smallest)
    alpha: float = 0.3  # power-rule exponent: d_i ~ (block mean training count)^alpha

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ids != "vocab":
            raise ValueError("mde embeds vocabulary indices only (ids: vocab): its blocks follow the "
                             "vocabulary's frequency order")
        if self.blocks < 1:
            raise ValueError(f"mde blocks must be >= 1, got {self.blocks}")
        if self.alpha < 0:
            raise ValueError(f"mde alpha must be >= 0, got {self.alpha}")


def block_bounds(vocab_size: int, blocks: int) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of the blocks over indices 1..vocab_size-1, block i a 2^i/(2^blocks-1)
    share (most frequent first); empty blocks dropped."""
    n = vocab_size - 1
    cuts = [1 + round(n * (2 ** i - 1) / (2 ** blocks - 1)) for i in range(blocks + 1)]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def mde_floats(sizes: list[int], dims: list[int], dim: int) -> int:
    """Rows plus projections (none for a block at the full dim)."""
    return int(sum(n * d for n, d in zip(sizes, dims)) + sum(d * dim for d in dims if d < dim))


def block_dims(sizes: list[int], counts: list[float], dim: int, alpha: float,
               budget_rows: int) -> tuple[list[int], bool]:
    """Power-rule widths within ``budget_rows * dim`` floats, and whether they fit (module docstring)."""
    w = np.maximum(np.asarray(counts, dtype=float), 1e-9) ** alpha
    budget = budget_rows * dim

    def dims(lam: float) -> list[int]:
        d = np.clip(np.rint(lam * w), 1, dim).astype(int)
        return np.minimum.accumulate(d).tolist()  # never wider for a rarer block

    lo, hi = 0.0, dim / w.min()  # dims(lo): all 1; dims(hi): all dim
    if mde_floats(sizes, dims(hi), dim) <= budget:
        return dims(hi), True
    if mde_floats(sizes, dims(lo), dim) > budget:
        return dims(lo), False
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mde_floats(sizes, dims(mid), dim) <= budget else (lo, mid)
    return dims(lo), True


@register_embedding("mde", config=MDEConfig)
class MDEmbedding(FamilyEmbedding):
    """Mixed-dimension embeddings with frequency blocks (module docstring)."""

    scheme = "mde"

    def __init__(self, feature_map: FeatureMap, cfg: MDEConfig) -> None:
        super().__init__(feature_map, cfg)
        self.block_tables = nn.ModuleList()
        self.projections = nn.ModuleList()
        self._blocks: list[tuple[int, int, int]] = []  # (column, lo, hi), one per block table
        self._block_field: list[str] = []
        for j, f in enumerate(self.fields):
            if not self.compressed[j]:
                continue
            counts = np.asarray(feature_map.field_frequencies(f.name), dtype=float)
            bounds = block_bounds(f.vocab_size, cfg.blocks)
            sizes = [hi - lo for lo, hi in bounds]
            dims, _ = block_dims(sizes, [counts[lo:hi].mean() for lo, hi in bounds], cfg.dim, cfg.alpha,
                                 self.budgets[j])
            for (lo, hi), d in zip(bounds, dims):
                self.block_tables.append(FusedTables([hi - lo], d, cfg.init_std))
                if d < cfg.dim:
                    proj = nn.Linear(d, cfg.dim, bias=False)
                    nn.init.normal_(proj.weight, std=d ** -0.5)  # keeps init_std at the output
                else:
                    proj = nn.Identity()
                self.projections.append(proj)
                self._blocks.append((j, lo, hi))
                self._block_field.append(f.name)
            self.plan_field(j, mde_floats(sizes, dims, cfg.dim), block_sizes=sizes, dims=dims)
        self.tables = [self.full, *self.block_tables]
        self.warn_over_budget()

    @classmethod
    def first_order(cls, feature_map: FeatureMap, cfg: MDEConfig) -> HashingEmbedding:
        """The hashing trick at the same compression, dim 1, from zero (see the module docstring)."""
        return HashingEmbedding(feature_map, HashingConfig(dim=1, init_std=0.0, compression=cfg.compression,
                                                           threshold=cfg.threshold, ids="vocab"))

    def embed_compressed(self, cat: torch.Tensor, raw: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
        n, F = cat.shape
        positions, values = [], []  # flat (row, field) positions and their projected vectors
        for (j, lo, hi), table, proj in zip(self._blocks, self.block_tables, self.projections):
            x = cat[:, j]
            rows = ((x >= lo) & (x < hi) & where[:, j]).nonzero().squeeze(1)
            values.append(proj(nn.functional.embedding(x[rows] - lo, table.weight, sparse=self.sparse_grad)))
            positions.append(rows * F + j)
        # One scatter for all blocks (an in-place write per block would copy the whole output in backward).
        out = self.full.weight.new_zeros(n * F, self.dim)
        return out.index_copy(0, torch.cat(positions), torch.cat(values)).view(n, F, self.dim)

    def bytes_by_field(self) -> dict[str, int]:
        out = {f.name: b for f, b in zip(self.fields, self.full.field_bytes())}
        for name, table, proj in zip(self._block_field, self.block_tables, self.projections):
            out[name] += table.field_bytes()[0] + sum(p.numel() * p.element_size() for p in proj.parameters())
        return out
