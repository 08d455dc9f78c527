"""Deep & Cross Network (Wang et al., 2017): a cross network and an MLP in parallel on the
flattened embeddings, their outputs concatenated into one logit."""

from dataclasses import dataclass, field

import torch
from torch import nn

from repro.layers import MLP, CrossNet, FieldEmbedder
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class DCNConfig:
    cross_layers: int = 3
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@register_model("dcn", config=DCNConfig)
class DCN(CTRModel):
    cross_network = CrossNet

    def __init__(self, feature_map, cfg, embedding=None) -> None:
        super().__init__(feature_map)
        self.embed = FieldEmbedder(feature_map, embedding)
        width = self.embed.num_fields * self.embed.dim
        self.cross = self.cross_network(width, cfg.cross_layers)
        self.mlp = MLP(width, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self.out = nn.Linear(width + self.mlp.out_dim, 1)

    def forward(self, batch):
        x0 = self.embed(batch).flatten(1)
        return self.out(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(-1)
