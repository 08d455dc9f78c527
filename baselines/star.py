"""STAR-style multi-domain tower (Sheng et al., CIKM 2021, "One Model to Serve All: Star Topology
Adaptive Recommender for Multi-Domain CTR Prediction", arXiv 2101.11427): the coarse parameter
allocation by condition that APG's paper contrasts itself with.

Each hidden layer has a shared weight W and bias b and, per domain p (a value of the single
condition field, e.g. the scene), a specific W_p and b_p; a row of domain p uses

    y = relu(x (W * W_p) + b + b_p)            (* element-wise: the star topology FCN)

so parameters are allocated per domain, not per row. ``base`` picks DNN, DeepFM or DCN-V2 around
it (``repro.towers``); the output layer stays shared.

Choices where the paper leaves room or that were left out:
- W_p starts at ones and b_p at zeros, so training starts from the shared network;
- the paper's partitioned normalisation and auxiliary domain network are not built (the tower has
  no batch norm by default, and the domain's own effect reaches the model through the condition
  field's embedding, as every field's does);
- every encoded value of the condition field is a domain (missing and OOV included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from repro.errors import ConfigError
from repro.registry import register_model
from repro.towers import ConditionedConfig, ConditionedTowerModel


@dataclass
class STARConfig(ConditionedConfig):
    pass


class StarLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, domains: int) -> None:
        super().__init__()
        shared = nn.Linear(in_dim, out_dim)
        self.weight = nn.Parameter(shared.weight.detach().t().contiguous())  # [N, M]
        self.bias = nn.Parameter(shared.bias.detach().clone())
        self.domain_weight = nn.Parameter(torch.ones(domains, in_dim, out_dim))
        self.domain_bias = nn.Parameter(torch.zeros(domains, out_dim))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(x.shape[0], self.weight.shape[1])
        # A batch holds few domains: one matrix product per domain present, never a [B, N, M] tensor.
        for d in torch.unique(domain).tolist():
            rows = (domain == d).nonzero().squeeze(1)
            out[rows] = x[rows] @ (self.weight * self.domain_weight[d]) + self.domain_bias[d]
        return out + self.bias


class StarTower(nn.Module):
    def __init__(self, in_dim: int, hidden: list[int], domains: int, dropout: float, out_dim: int | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for h in hidden:
            self.layers.append(StarLinear(in_dim, h, domains))
            in_dim = h
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(in_dim, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else in_dim

    def forward(self, x: torch.Tensor, condition_emb: torch.Tensor, condition_ids: torch.Tensor) -> torch.Tensor:
        domain = condition_ids[:, 0]
        for layer in self.layers:
            x = self.dropout(torch.relu(layer(x, domain)))
        return self.head(x) if self.head is not None else x


@register_model("star", config=STARConfig)
class STAR(ConditionedTowerModel):
    def build_tower(self, in_dim, cfg, condition_dim, condition_vocab, out_dim):
        if len(condition_vocab) != 1:
            raise ConfigError(f"STAR: needs exactly one domain field, got condition_fields={cfg.condition_fields}")
        if cfg.batch_norm:
            raise ConfigError("STAR: batch_norm is not built (the paper's partitioned normalisation is left out)")
        return StarTower(in_dim, cfg.hidden_units, condition_vocab[0], cfg.dropout, out_dim)
