"""Hash embeddings (Svenstrup, Hansen, Winther, "Hash Embeddings for Efficient Word
Representations", NIPS 2017, arXiv 1709.03933).

Mechanism: value x of a compressed field gets e(x) = sum_{i<k} p_x[i] * E[h_i(x)]: k hash
functions pick k vectors from a shared pool E of P vectors, and the k importance weights p_x are
the row h_imp(x) of an importance table of K buckets x k (a second hashed table). Two values that
collide under one h_i are still told apart by their other components and their weights.

Choices the paper leaves open:

- **Budget split** (``importance_share``, default 0.5): of the field's ``budget * dim`` floats, the
  importance table gets K = floor(share * budget * dim / k) buckets (k floats each) and the pool
  the P = floor((budget * dim - K * k) / dim) vectors that remain (at least 1 of each). Per value,
  an importance row costs k / dim of a pool vector, so half the bytes buys many more importance
  buckets than pool vectors: it is the importance weights that make the combination nearly
  unique per value, at the price of fewer distinct components.
- **Hash functions**: SplitMix64 with seeds j * 1024 + i for the k pool hashes of field j and
  j * 1024 + k for the importance hash (independent hashes; the pool hashes of one value may
  coincide, as in the paper).
- **Ids** (``ids``, default ``raw``): the raw-value hash, so no vocabulary is needed, the paper's
  point; ``vocab`` hashes the vocabulary index.
- **No concatenation of p_x** to the output (the paper's optional variant): the output stays dim.
- **Initialisation**: pool N(0, init_std^2 / k), importance weights 1 + N(0, init_std^2), so
  e(x) starts near the sum of its k components at the full table's scale and the pool's gradient
  (p_x ~ 1) is not scaled away. With the first-order zero start (init_std = 0: pool 0, weights 1)
  the per-value weights can learn, so the default ``first_order`` (dim 1) is kept.
- Small fields keep full rows; missing values look up nothing (``FamilyEmbedding``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from baselines.embeddings.hashing import SEED_STRIDE, FamilyEmbedding, field_seeds, gather
from repro.compression import CompressedConfig, FusedTables, field_ids, hash_bucket
from repro.data.featuremap import FeatureMap
from repro.registry import register_embedding


@dataclass
class HashEmbeddingConfig(CompressedConfig):
    ids: str = "raw"  # raw: hash the raw-value hash | vocab: the vocabulary index
    num_hashes: int = 2  # k: pool vectors combined per value
    importance_share: float = 0.5  # share of a field's budget floats spent on the importance table

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.num_hashes < SEED_STRIDE:
            raise ValueError(f"hash_embedding num_hashes must be in [1, {SEED_STRIDE}), got {self.num_hashes}")
        if not 0.0 < self.importance_share < 1.0:
            raise ValueError(f"hash_embedding importance_share must be in (0, 1), got {self.importance_share}")


def split_budget(budget_rows: int, dim: int, k: int, share: float) -> tuple[int, int]:
    """(pool vectors P, importance buckets K) of a field of ``budget_rows`` dim-wide rows."""
    floats = budget_rows * dim
    buckets = max(1, math.floor(share * floats / k))
    pool = max(1, (floats - buckets * k) // dim)
    return pool, buckets


@register_embedding("hash_embedding", config=HashEmbeddingConfig)
class HashEmbedding(FamilyEmbedding):
    """Hash embeddings: a pool and an importance table per compressed field (module docstring)."""

    scheme = "hash_embedding"

    def __init__(self, feature_map: FeatureMap, cfg: HashEmbeddingConfig) -> None:
        super().__init__(feature_map, cfg)
        k = cfg.num_hashes
        split = [split_budget(b, cfg.dim, k, cfg.importance_share) for b in self.budgets]
        self.pool = FusedTables(self.per_field([p for p, _ in split]), cfg.dim, cfg.init_std / math.sqrt(k))
        self.importance = FusedTables(self.per_field([b for _, b in split]), k, cfg.init_std)
        with torch.no_grad():
            self.importance.weight.add_(1.0)  # p_x ~ 1 + N(0, init_std^2): see the module docstring
        self.tables = [self.full, self.pool, self.importance]
        self.register_buffer("n_pool", torch.tensor([max(1, n) for n in self.pool.rows]), persistent=False)
        self.register_buffer("n_importance", torch.tensor([max(1, n) for n in self.importance.rows]),
                             persistent=False)
        # Row i < k: pool hash i; row k: the importance hash.
        self.register_buffer("seeds", torch.stack([field_seeds(len(self.fields), i) for i in range(k + 1)]),
                             persistent=False)
        for j, c in enumerate(self.compressed):
            if c:
                pool, buckets = split[j]
                self.plan_field(j, pool * cfg.dim + buckets * k, pool=pool, importance_buckets=buckets)
        self.warn_over_budget()

    def hashes(self, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The k pool rows ([B, F] each) and the importance bucket ([B, F]) of every id."""
        k = self.cfg.num_hashes
        pool = [hash_bucket(ids, self.n_pool, self.seeds[i]) for i in range(k)]
        return pool, hash_bucket(ids, self.n_importance, self.seeds[k])

    def embed_compressed(self, cat: torch.Tensor, raw: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
        pool_rows, bucket = self.hashes(field_ids(cat, raw, self.cfg.ids))
        p = gather(self.importance, bucket, where, self.sparse_grad)  # [B, F, k]
        return sum(p[..., i:i + 1] * gather(self.pool, rows, where, self.sparse_grad)
                   for i, rows in enumerate(pool_rows))
