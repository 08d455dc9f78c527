"""Shared pieces of the compressed embedding layers (hashing family, BH, AMTL).

One budget rule for every scheme, so their points on a memory/AUC curve are comparable:

- ``compression`` is the *target* ratio of full rows to stored rows, applied per field: a field
  with ``vocab_size`` rows gets a budget of ``ceil(vocab_size / compression)`` d-dim rows (each
  scheme spends it its own way: hash buckets, Q and R tables, code-block tables...).
- Fields with at most ``threshold`` rows (scene, hour, device, position...) stay full: at 1000x they
  would get a single row, and their tables are negligible next to the ID fields (dlrm's
  ``--qr-threshold``/``--md-threshold`` semantics, default 200 as there).
- The ratio a run *achieves* is measured, not assumed: every run records the stored bytes of all
  its embedding layers (first-order tables included, see ``repro.run.embedding_sizes``), and the
  tables report that measured ratio beside the nominal one.

Ids: a scheme hashes either the vocabulary index (``ids: vocab``; unique per training value,
every out-of-vocabulary value shares the OOV index) or the raw-value hash (``ids: raw``; every
distinct raw value, in the vocabulary or not, keeps its identity, as in a production system that
hashes values without a vocabulary). Index 0 / raw 0 (missing) always maps to the zero vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.embeddings import EmbeddingConfig, EmbeddingLayer

IDS = ("vocab", "raw")


@dataclass
class CompressedConfig(EmbeddingConfig):
    """Knobs every compressed scheme shares (a scheme's config extends it)."""

    compression: float = 1.0  # target ratio full rows / stored rows, per compressed field
    threshold: int = 200  # fields with at most this many rows stay full
    ids: str = "vocab"  # vocab | raw: what is hashed (see the module docstring)

    def __post_init__(self) -> None:
        if self.compression < 1.0:
            raise ValueError(f"embedding compression must be >= 1, got {self.compression}")
        if self.ids not in IDS:
            raise ValueError(f"embedding ids: unknown {self.ids!r}; expected one of {IDS}")


def field_budget(vocab_size: int, compression: float) -> int:
    """Rows a compressed field may store: ``ceil(vocab_size / compression)`` (at least 1)."""
    return max(1, math.ceil(vocab_size / compression))


def is_compressed(vocab_size: int, cfg: CompressedConfig) -> bool:
    return vocab_size > cfg.threshold and cfg.compression > 1.0


# 64-bit mixing constants (SplitMix64 / Murmur3 finaliser). torch's int64 arithmetic wraps on
# overflow, which is what a multiplicative hash wants.
_M1 = -0x40A7B892E31B1A47  # 0xBF58476D1CE4E5B9 as a signed int64
_M2 = -0x6B2FB644ECCEEE15  # 0x94D049BB133111EB as a signed int64
_GOLDEN = -0x61C8864680B583EB  # 0x9E3779B97F4A7C15 as a signed int64


def mix64(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A well-mixed non-negative int64 hash of int64 ``x`` under ``seed`` (SplitMix64 finaliser;
    logical shifts emulated on signed int64 by masking)."""
    x = x + _wrap64(_GOLDEN * (seed + 1)) if isinstance(seed, int) else x + _GOLDEN * (seed + 1)
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    x = x ^ _srl(x, 31)
    return x & 0x7FFFFFFFFFFFFFFF


def _wrap64(v: int) -> int:
    """A Python int reduced to the signed int64 it wraps to (torch refuses larger scalars)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _srl(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of a signed int64 tensor."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def hash_bucket(x: torch.Tensor, buckets: int, seed: int = 0) -> torch.Tensor:
    """Bucket in ``[0, buckets)`` of every id in ``x`` under hash function number ``seed``."""
    return torch.remainder(mix64(x, seed), buckets)


def field_ids(cat: torch.Tensor, raw: torch.Tensor | None, ids: str) -> torch.Tensor:
    """The ids a scheme hashes: the vocabulary indices or the raw-value hashes ([B, F] int64)."""
    if ids == "vocab":
        return cat
    if raw is None:
        raise ValueError("this embedding hashes raw values (ids: raw) but the batch carries no 'raw' "
                         "(the loader adds it for layers with uses_raw_ids)")
    return raw


class FusedTables(nn.Module):
    """Per-field tables of chosen row counts in one fused parameter (one gather for every field),
    with sparse gradients on request; ``lookup(rows)`` takes [B, F] row indices local to each
    field and returns [B, F, dim]."""

    def __init__(self, rows: list[int], dim: int, init_std: float, init: str = "normal") -> None:
        super().__init__()
        sizes = torch.tensor(rows, dtype=torch.long)
        self.rows = list(rows)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        if init == "normal":
            weight = torch.randn(int(sizes.sum()), dim) * init_std
        elif init == "ones":
            weight = torch.ones(int(sizes.sum()), dim)
        else:
            raise ValueError(f"unknown init {init!r}")
        self.weight = nn.Parameter(weight)
        self.dim = dim

    def lookup(self, rows: torch.Tensor, sparse: bool) -> torch.Tensor:
        return nn.functional.embedding(rows + self.offsets[: rows.shape[1]], self.weight, sparse=sparse)

    def field_bytes(self) -> list[int]:
        return [n * self.dim * self.weight.element_size() for n in self.rows]


class CompressedEmbedding(EmbeddingLayer):
    """Base of the schemes: fields, padding mask, sparse-gradient plumbing and sizes.

    A subclass builds its parameters in ``__init__`` (after ``super().__init__(feature_map, cfg)``)
    and implements ``embed(cat, raw) -> [B, F, dim]``; this class zeroes missing values (index 0),
    remembers the lookup for the penalty, and lists ``self.tables`` (its ``FusedTables``) as the
    sparse parameters.
    """

    supports_sparse_grad = True

    def __init__(self, feature_map: FeatureMap, cfg: CompressedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.fields = list(feature_map.categorical)
        self.penalty_fields = [f.name for f in self.fields]
        self.uses_raw_ids = cfg.ids == "raw"
        self.tables: list[FusedTables] = []  # set by the subclass (registered as its attributes)

    def embed(self, cat: torch.Tensor, raw: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, cat: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        out = self.embed(cat, raw)
        return self.remember(out * (cat != 0).unsqueeze(-1).to(out.dtype), cat)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [t.weight for t in self.tables] if self.sparse_grad else []

    def bytes_by_field(self) -> dict[str, int] | None:
        """Each table's rows attributed to its field; a subclass with shared or extra parameters
        overrides this so the values add up to ``stored_bytes()``."""
        if any(len(t.rows) != len(self.fields) for t in self.tables):
            return None
        out = {f.name: 0 for f in self.fields}
        for t in self.tables:
            for f, b in zip(self.fields, t.field_bytes()):
                out[f.name] += b
        extra = self.stored_bytes() - sum(out.values())
        return out if extra == 0 else None
