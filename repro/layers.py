"""Building blocks shared by the baselines: field embedding of every input, first-order terms,
MLPs, the FM interaction and the DCN cross networks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.embeddings import EmbeddingLayer, build_embedding

Batch = dict[str, torch.Tensor]


class FieldEmbedder(nn.Module):
    """Every input field as one vector: [B, F_cat + F_dense, dim].

    Categorical fields go through the pluggable embedding layer. A dense scalar field x becomes
    x * v_field (FuxiCTR's numeric embedding); a vector field (content) a bias-free linear map.
    """

    def __init__(self, feature_map: FeatureMap, embedding_block) -> None:
        super().__init__()
        self.categorical: EmbeddingLayer = build_embedding(feature_map, embedding_block)
        d = self.dim = self.categorical.dim
        self.dense_fields = feature_map.dense
        self.scalar_idx = [feature_map.dense_slice(f.name).start for f in self.dense_fields if f.kind == "dense"]
        self.scalar = nn.Parameter(torch.randn(len(self.scalar_idx), d) * 1e-2)
        self.vectors = nn.ModuleList(nn.Linear(f.dim, d, bias=False) for f in self.dense_fields if f.kind == "vector")
        self.vector_slices = [feature_map.dense_slice(f.name) for f in self.dense_fields if f.kind == "vector"]
        self.num_fields = len(feature_map.categorical) + len(self.dense_fields)

    @property
    def flat_dim(self) -> int:
        """Width of the flattened [B, F * dim] input that deep towers take."""
        return self.num_fields * self.dim

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = [self.categorical(batch["cat"], batch.get("raw"))]
        if self.scalar_idx:
            x = batch["dense"][:, self.scalar_idx]
            parts.append(x.unsqueeze(-1) * self.scalar)
        for lin, s in zip(self.vectors, self.vector_slices):
            parts.append(lin(batch["dense"][:, s]).unsqueeze(1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class FirstOrder(nn.Module):
    """Bias + one weight per categorical value + a linear map of the dense columns (LR's logit).

    The per-value weights are the model's embedding scheme at dim 1 (``build_embedding(...,
    first_order=True)``; a dim-1 ``FullEmbedding`` for ``embedding=full``), so a compressed
    embedding compresses them too, and the trainer treats them as an embedding table like any
    other: the lookup penalty (``train.embedding_l2``) and sparse updates apply.
    """

    def __init__(self, feature_map: FeatureMap, embedding_block=None) -> None:
        super().__init__()
        self.weights = build_embedding(feature_map, embedding_block, first_order=True)
        self.dense = nn.Linear(feature_map.num_dense, 1) if feature_map.num_dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        out = self.weights(batch["cat"], batch.get("raw")).sum(dim=(1, 2)) + self.bias
        if self.dense is not None:
            out = out + self.dense(batch["dense"]).squeeze(-1)
        return out


@dataclass
class MLPConfig:
    """The deep tower's hyper-parameters, shared by every model that has one."""

    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


class MLP(nn.Sequential):
    def __init__(self, in_dim: int, hidden: list[int], dropout: float = 0.0, batch_norm: bool = False,
                 out_dim: int | None = None) -> None:
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Linear(in_dim, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim if out_dim is not None else in_dim

    @classmethod
    def from_config(cls, in_dim: int, cfg: MLPConfig, out_dim: int | None = None) -> "MLP":
        return cls(in_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm, out_dim)


def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
    """Sum of pairwise inner products of field vectors, in O(F d): 0.5((sum v)^2 - sum v^2)."""
    square_of_sum = emb.sum(dim=1).pow(2)
    sum_of_square = emb.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class CrossNet(nn.Module):
    """DCN (Wang et al., 2017): x_{l+1} = x0 * (x_l . w_l) + b_l + x_l, one vector w_l per layer."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.randn(dim) * dim**-0.5) for _ in range(layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.w, self.b):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 (Wang et al., 2021): x_{l+1} = x0 * (W_l x_l + b_l) + x_l, full-rank W_l."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for lin in self.linears:
            x = x0 * lin(x) + x
        return x
