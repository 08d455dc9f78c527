"""The hashing trick (Weinberger et al., ICML 2009, "Feature Hashing for Large Scale Multitask
Learning"; as an embedding baseline: every value of a field shares one table of ``budget`` rows).

Mechanism: a value x of a compressed field (vocab_size > ``threshold``, ``repro.compression``)
looks up row h_f(x) mod B_f of its field's table, B_f = ``field_budget(vocab_size, compression)``
rows: exactly the shared budget, so this is the baseline every other scheme is compared against at
equal bytes. Distinct values collide whenever their hashes agree mod B_f.

Choices the method leaves open:

- **One hash function per field**: SplitMix64 (``repro.compression.mix64``) seeded by the field's
  position, so two fields never collide in the same pattern. Seeds are passed as int64 tensors
  (they wrap like the hash itself).
- **What is hashed** (``ids``, default ``raw``): the data contract's 63-bit raw-value hash, so every
  raw value, out-of-vocabulary ones included, keeps its own bucket, as in a production system that
  hashes without a vocabulary. ``ids: vocab`` hashes the vocabulary index instead (every OOV value
  then shares the OOV index's bucket).
- **Small fields** (vocab_size <= ``threshold``) keep one row per vocabulary index, whatever ``ids``.
- **Missing values** (index 0) look up no row at all (``gather`` below), rather than a bucket they
  would share with real values: with SparseAdam a looked-up row moves by its momentum even when its
  gradient is zero, so a padding lookup into a shared bucket would move that bucket.
- **Initialisation**: N(0, init_std^2), as the full table.

This file also holds what the whole family (``baselines/embeddings/``) shares: ``gather``,
``field_seeds`` and ``FamilyEmbedding``, the base that keeps small fields full and reports a
per-field ``plan``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from repro.compression import (CompressedConfig, CompressedEmbedding, FusedTables, field_budget, field_ids,
                               hash_bucket, is_compressed)
from repro.data.featuremap import FeatureMap
from repro.registry import register_embedding

SEED_STRIDE = 1024  # hash function i of field j uses seed j * SEED_STRIDE + i


def field_seeds(n_fields: int, i: int) -> torch.Tensor:
    """[F] int64 seeds of hash function number ``i`` of every field (distinct per field and i)."""
    return torch.arange(n_fields, dtype=torch.long) * SEED_STRIDE + i


def gather(table: FusedTables, rows: torch.Tensor, where: torch.Tensor, sparse: bool) -> torch.Tensor:
    """Rows of ``table`` at ``rows`` ([B, F], local to each field) where ``where`` holds, zeros
    elsewhere -> [B, F, width]. Positions not selected look up nothing, so their gradient (even a
    zero one, which SparseAdam would still turn into a momentum step) touches no row."""
    out = table.weight.new_zeros(*rows.shape, table.dim)
    idx = (rows + table.offsets[: rows.shape[1]])[where]
    out[where] = nn.functional.embedding(idx, table.weight, sparse=sparse)
    return out


class FamilyEmbedding(CompressedEmbedding):
    """Small fields keep full rows (``self.full``); a subclass embeds the compressed ones in
    ``embed_compressed(cat, raw, where)`` (``where``: non-missing positions of compressed fields)
    and records each compressed field in ``self.plan`` through ``plan_field``."""

    scheme = "family"

    def __init__(self, feature_map: FeatureMap, cfg: CompressedConfig) -> None:
        super().__init__(feature_map, cfg)
        self.compressed = [is_compressed(f.vocab_size, cfg) for f in self.fields]
        # Rows a compressed field may store (for a full field: its vocabulary, never used as a budget).
        self.budgets = [field_budget(f.vocab_size, cfg.compression) if c else f.vocab_size
                        for f, c in zip(self.fields, self.compressed)]
        self.register_buffer("is_comp", torch.tensor(self.compressed, dtype=torch.bool), persistent=False)
        # Full fields' tables; a compressed field has 0 rows here (and a full field 0 rows in the
        # scheme's tables), so every table spans all fields and the base's bytes_by_field applies.
        self.full = FusedTables([0 if c else f.vocab_size for f, c in zip(self.fields, self.compressed)],
                                cfg.dim, cfg.init_std)
        self.tables = [self.full]
        self.plan: dict[str, dict] = {
            f.name: {"compressed": False, "floats": f.vocab_size * cfg.dim, "budget_rows": f.vocab_size,
                     "within_budget": True}
            for f, c in zip(self.fields, self.compressed) if not c}

    def per_field(self, values: list[int]) -> list[int]:
        """``values`` for the compressed fields, 0 for the full ones (row counts of a scheme table)."""
        return [v if c else 0 for v, c in zip(values, self.compressed)]

    def plan_field(self, j: int, floats: int, **details) -> None:
        """Record compressed field ``j``: its stored floats against its budget, plus ``details``."""
        budget = self.budgets[j]
        self.plan[self.fields[j].name] = {"compressed": True, **details, "floats": int(floats),
                                          "budget_rows": budget, "within_budget": floats <= budget * self.dim}

    def warn_over_budget(self) -> None:
        over = [name for name, p in self.plan.items() if not p["within_budget"]]
        if over:
            warnings.warn(f"{self.scheme} (dim {self.dim}): field(s) {over} cannot fit the budget of "
                          f"compression {self.cfg.compression}; they store the scheme's minimum, so the "
                          f"achieved ratio is below the target (see .plan)", stacklevel=3)

    def embed(self, cat: torch.Tensor, raw: torch.Tensor | None) -> torch.Tensor:
        keep = cat != 0
        out = gather(self.full, cat, keep & ~self.is_comp, self.sparse_grad)
        if any(self.compressed):
            out = out + self.embed_compressed(cat, raw, keep & self.is_comp)
        return out

    def embed_compressed(self, cat: torch.Tensor, raw: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class HashingConfig(CompressedConfig):
    ids: str = "raw"  # raw: hash the raw-value hash (OOV values stay apart) | vocab: the vocabulary index


@register_embedding("hashing", config=HashingConfig)
class HashingEmbedding(FamilyEmbedding):
    """The hashing trick: one table of ``field_budget`` rows per compressed field, one hash each."""

    scheme = "hashing"

    def __init__(self, feature_map: FeatureMap, cfg: HashingConfig) -> None:
        super().__init__(feature_map, cfg)
        self.hashed = FusedTables(self.per_field(self.budgets), cfg.dim, cfg.init_std)
        self.tables = [self.full, self.hashed]
        # max(1, .): a full field's column is hashed too (then discarded), and mod 0 is undefined.
        self.register_buffer("n_buckets", torch.tensor([max(1, n) for n in self.hashed.rows]), persistent=False)
        self.register_buffer("seeds", field_seeds(len(self.fields), 0), persistent=False)
        for j, c in enumerate(self.compressed):
            if c:
                self.plan_field(j, self.budgets[j] * cfg.dim, buckets=self.budgets[j])

    def bucket_of(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, F] bucket of every id (meaningful for compressed fields)."""
        return hash_bucket(ids, self.n_buckets, self.seeds)

    def embed_compressed(self, cat: torch.Tensor, raw: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
        return gather(self.hashed, self.bucket_of(field_ids(cat, raw, self.cfg.ids)), where, self.sparse_grad)
