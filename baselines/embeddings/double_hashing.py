"""Frequency-based double hashing (Zhang et al., "Model Size Reduction Using Frequency Based Double
Hashing for Recommender Systems", RecSys 2020 late-breaking results, arXiv 2007.14523).

Mechanism: the most frequent values of a compressed field keep their own rows (the head); every
other value (the tail) is embedded through two hash functions into a shared tail table and the
two rows are combined, so two tail values share a vector only if both hashes collide (~1/T^2 per
pair for a tail table of T rows, against 1/T for the hashing trick).

Choices the paper leaves open (it sets the head by a frequency threshold):

- **Head size from the budget** (``head_share``, default 0.5): h = round(head_share * budget) rows
  (at most the number of vocabulary values, and leaving the tail at least 1 row) go to the head,
  the other T = budget - h rows to the tail. The head is vocabulary indices 1..h: indices are in
  descending *training* frequency (the data contract), so no counting is needed here.
- **Tail**: every value outside the head: the vocabulary's rarer values, the OOV index and, with
  ``ids: raw``, each out-of-vocabulary raw value under its own raw hash.
- **Combination**: the sum of the two rows (the paper offers sum or concatenation; the sum keeps
  the output dim without halving the rows). Both hashes go into one shared tail table (seeds
  j * 1024 and j * 1024 + 1 for field j); they may coincide for a value (then 2 * that row).
- **Ids** (``ids``, default ``raw``): what the tail hashes; head membership is by vocabulary index.
- **Initialisation**: head rows N(0, init_std^2), tail rows N(0, init_std^2 / 2), so a tail sum
  starts at the head's scale. The first-order table (dim 1, zero start) learns as is: both terms
  of a sum get the full gradient.
- Small fields keep full rows; missing values look up nothing (``FamilyEmbedding``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from baselines.embeddings.hashing import FamilyEmbedding, field_seeds, gather
from repro.compression import CompressedConfig, FusedTables, field_ids, hash_bucket
from repro.data.featuremap import FeatureMap
from repro.registry import register_embedding


@dataclass
class DoubleHashingConfig(CompressedConfig):
    ids: str = "raw"  # raw: the tail hashes raw-value hashes | vocab: vocabulary indices
    head_share: float = 0.5  # share of a field's budget rows given to the most frequent values

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.head_share <= 1.0:
            raise ValueError(f"double_hashing head_share must be in [0, 1], got {self.head_share}")


def split_head_tail(vocab_size: int, budget_rows: int, head_share: float) -> tuple[int, int]:
    """(head rows h, tail rows T) of a field: h + T = budget, T >= 1, h <= vocabulary values."""
    head = min(round(head_share * budget_rows), vocab_size - 2, budget_rows - 1)  # -2: missing, OOV
    head = max(0, head)
    return head, budget_rows - head


@register_embedding("double_hashing", config=DoubleHashingConfig)
class DoubleHashingEmbedding(FamilyEmbedding):
    """Full rows for the head, two hashed rows summed for the tail (module docstring). A field's
    table holds its h head rows first, then its T tail rows."""

    scheme = "double_hashing"

    def __init__(self, feature_map: FeatureMap, cfg: DoubleHashingConfig) -> None:
        super().__init__(feature_map, cfg)
        split = [split_head_tail(f.vocab_size, b, cfg.head_share) for f, b in zip(self.fields, self.budgets)]
        self.table = FusedTables(self.per_field([h + t for h, t in split]), cfg.dim, cfg.init_std)
        with torch.no_grad():
            for j, (h, _) in enumerate(split):
                if self.compressed[j]:
                    lo = int(self.table.offsets[j])
                    self.table.weight[lo + h: lo + self.table.rows[j]] /= math.sqrt(2)
        self.tables = [self.full, self.table]
        self.register_buffer("head", torch.tensor(self.per_field([h for h, _ in split])), persistent=False)
        self.register_buffer("tail", torch.tensor([max(1, t) for _, t in split]), persistent=False)
        self.register_buffer("seeds", torch.stack([field_seeds(len(self.fields), i) for i in range(2)]),
                             persistent=False)
        for j, c in enumerate(self.compressed):
            if c:
                self.plan_field(j, sum(split[j]) * cfg.dim, head=split[j][0], tail=split[j][1])

    def embed_compressed(self, cat: torch.Tensor, raw: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
        head = where & (cat <= self.head)  # where excludes index 0, so this is 1..h
        tail = where & ~head
        ids = field_ids(cat, raw, self.cfg.ids)
        first = torch.where(head, cat - 1, self.head + hash_bucket(ids, self.tail, self.seeds[0]))
        second = self.head + hash_bucket(ids, self.tail, self.seeds[1])
        return gather(self.table, first, where, self.sparse_grad) + gather(self.table, second, tail, self.sparse_grad)
