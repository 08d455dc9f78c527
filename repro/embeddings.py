"""Embedding layers: categorical indices [B, F] -> vectors [B, F, dim].

Every layer is registered under a short name (``full`` here; compressed and quantised layers
arrive as files in ``methods/``) and reports two sizes: ``num_parameters()`` (what training
holds) and ``stored_bytes()`` (what a server would hold, which differs for masked or quantised
tables). Any model runs with any embedding layer, because models only see this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.registry import EMBEDDINGS, register_embedding


class EmbeddingLayer(nn.Module):
    """Base class. Subclasses set ``self.dim`` and implement ``forward``."""

    dim: int

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stored_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())


@dataclass
class FullEmbeddingConfig:
    dim: int = 16
    init_std: float = 1e-2


@register_embedding("full", config=FullEmbeddingConfig)
class FullEmbedding(EmbeddingLayer):
    """One row per vocabulary entry of every field, in one table with per-field offsets.

    One fused table (rather than one ``nn.Embedding`` per field) turns F lookups into one gather,
    which on the CPU is the difference that matters. Index 0 (padding/missing) of every field
    maps to the zero vector, as ``padding_idx`` would (its row is masked, so it never trains).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FullEmbeddingConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        sizes = torch.tensor([f.vocab_size for f in feature_map.categorical], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Parameter(torch.randn(int(sizes.sum()), cfg.dim) * cfg.init_std)
        with torch.no_grad():
            self.weight[self.offsets] = 0.0

    def forward(self, cat: torch.Tensor) -> torch.Tensor:
        out = nn.functional.embedding(cat + self.offsets, self.weight)
        return out * (cat != 0).unsqueeze(-1).to(out.dtype)


def build_embedding(feature_map: FeatureMap, block) -> EmbeddingLayer:
    """Build the embedding layer named by ``block.name`` (default ``full``)."""
    name = block.get("name", "full") if block is not None else "full"
    return EMBEDDINGS.build(name, block, feature_map)
