"""Quotient-remainder (QR) compositional embeddings (Shi, Mudigere, Naumov, Yang, "Compositional
Embeddings Using Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020,
arXiv 1909.02107; reference code: facebookresearch/dlrm ``tricks/qr_embedding_bag.py``).

Mechanism: with m collisions, index x of a compressed field gets
e(x) = W_q[x // m] (op) W_r[x mod m], W_q of ceil(N/m) rows and W_r of m rows (N = vocab_size).
(x // m, x mod m) is a bijection of x, so every vocabulary index has its own vector (the two
partitions are complementary), unlike the hashing trick at the same bytes.

Choices the paper leaves open:

- **Ids**: vocabulary indices only (``ids: raw`` is rejected). The quotient of a 63-bit raw hash
  would need a 2^63 / m row table; hashing it first would bring back the collisions QR avoids.
- **m per field from the budget**: the smallest m (the largest quotient table, i.e. the fewest
  values sharing a remainder row) whose floats ceil(N/m) * w_q + m * w_r fit ``budget * dim``
  (w_q, w_r: the part widths). The floats reach their minimum ~2 * sqrt(N) rows at m ~ sqrt(N);
  when the budget is below it, the field takes that cheapest m, stores more than the budget, is
  flagged ``within_budget: False`` in ``plan`` and a warning says the achieved ratio is below target.
  (dlrm instead fixes m globally with ``--qr-collisions``.)
- **Operation** (``operation``): ``mult`` (default; the paper's best), ``add`` or ``concat``.
  ``concat`` gives the quotient ceil(dim/2) and the remainder floor(dim/2) columns, so the output
  stays ``dim`` wide (the paper / dlrm widen the output to the sum instead); each part row is then
  half as wide, so under the same float budget m may be smaller (about twice the rows).
- **Initialisation** (dlrm draws both tables from U(sqrt(1/n), 1), all positive, so a product
  starts far from zero and far larger than a full table's init): ``mult``: W_q ~ N(0, init_std^2),
  W_r ~ 1 + N(0, init_std^2), so e(x) starts ~ W_q[x // m] at the full table's scale, every
  remainder row a slightly different scaling (vectors are distinct from the start) and the
  gradient reaching W_q is not scaled down by a near-zero W_r. ``add``: both N(0, init_std^2 / 2)
  (the sum has the full table's scale). ``concat``: both N(0, init_std^2).
- **First-order weights** (dim 1, zero start): with the init above, init_std = 0 gives W_q = 0,
  W_r = 1, so the per-value weight q * r starts at 0 and d/dq = r = 1 (two zero tables would never
  move under ``mult``). ``concat`` cannot split one column, so its first-order table uses ``add``.
- Small fields keep full rows; missing values look up nothing (``FamilyEmbedding``). The quotient
  is an integer division (dlrm's goes through float division).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from baselines.embeddings.hashing import FamilyEmbedding, gather
from repro.compression import CompressedConfig, FusedTables
from repro.data.featuremap import FeatureMap
from repro.registry import register_embedding

OPERATIONS = ("mult", "add", "concat")


@dataclass
class QRConfig(CompressedConfig):
    operation: str = "mult"  # mult | add | concat: how the quotient and remainder vectors combine

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ids != "vocab":
            raise ValueError("qr embeds vocabulary indices only (ids: vocab); a raw 63-bit hash has no "
                             "usable quotient. Use hashing, hash_embedding or double_hashing for ids: raw")
        if self.operation not in OPERATIONS:
            raise ValueError(f"qr operation: unknown {self.operation!r}; expected one of {OPERATIONS}")


def part_widths(dim: int, operation: str) -> tuple[int, int]:
    """Row widths (w_q, w_r) of the quotient and remainder tables."""
    if operation != "concat":
        return dim, dim
    if dim < 2:
        raise ValueError(f"qr concat needs dim >= 2 to split the vector, got {dim}")
    return dim - dim // 2, dim // 2


def qr_floats(n: int, m: int, wq: int, wr: int) -> int:
    """Stored floats of a field of ``n`` rows at ``m`` collisions."""
    return math.ceil(n / m) * wq + m * wr


def choose_collisions(n: int, budget_rows: int, dim: int, wq: int, wr: int) -> tuple[int, bool]:
    """The smallest m whose floats fit ``budget_rows * dim``, and True; else the cheapest m, False."""
    # The floats fall until m ~ sqrt(n wq / wr) and rise after it: past twice that nothing new fits.
    top = min(n, 2 * math.ceil(math.sqrt(n * wq / wr)) + 2)
    m = np.arange(1, top + 1)
    floats = -(-n // m) * wq + m * wr
    fits = np.flatnonzero(floats <= budget_rows * dim)
    if len(fits):
        return int(m[fits[0]]), True
    return int(m[np.argmin(floats)]), False


@register_embedding("qr", config=QRConfig)
class QREmbedding(FamilyEmbedding):
    """QR embeddings: a quotient and a remainder table per compressed field (module docstring)."""

    scheme = "qr"

    def __init__(self, feature_map: FeatureMap, cfg: QRConfig) -> None:
        super().__init__(feature_map, cfg)
        wq, wr = part_widths(cfg.dim, cfg.operation)
        m = [choose_collisions(f.vocab_size, b, cfg.dim, wq, wr)[0] if c else 1
             for f, b, c in zip(self.fields, self.budgets, self.compressed)]
        self.q = FusedTables(self.per_field([math.ceil(f.vocab_size / k) for f, k in zip(self.fields, m)]), wq,
                             cfg.init_std / math.sqrt(2) if cfg.operation == "add" else cfg.init_std)
        self.r = FusedTables(self.per_field(m), wr,
                             cfg.init_std / math.sqrt(2) if cfg.operation == "add" else cfg.init_std)
        if cfg.operation == "mult":
            with torch.no_grad():
                self.r.weight.add_(1.0)  # W_r ~ 1 + N(0, init_std^2): see the module docstring
        self.tables = [self.full, self.q, self.r]
        self.register_buffer("collisions", torch.tensor(m, dtype=torch.long), persistent=False)
        for j, (f, c) in enumerate(zip(self.fields, self.compressed)):
            if c:
                self.plan_field(j, qr_floats(f.vocab_size, m[j], wq, wr), collisions=m[j],
                                quotient_rows=math.ceil(f.vocab_size / m[j]), remainder_rows=m[j])
        self.warn_over_budget()

    @classmethod
    def first_order(cls, feature_map: FeatureMap, cfg: QRConfig) -> "QREmbedding":
        """Dim 1, zero start (W_q = 0, W_r = 1 under mult); concat cannot split one column: add."""
        op = "add" if cfg.operation == "concat" else cfg.operation
        return cls(feature_map, dataclasses.replace(cfg, dim=1, init_std=0.0, operation=op))

    def embed_compressed(self, cat: torch.Tensor, raw: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
        q = gather(self.q, torch.div(cat, self.collisions, rounding_mode="floor"), where, self.sparse_grad)
        r = gather(self.r, torch.remainder(cat, self.collisions), where, self.sparse_grad)
        if self.cfg.operation == "mult":
            return q * r
        if self.cfg.operation == "add":
            return q + r
        return torch.cat([q, r], dim=-1)
