"""Deep & Cross Network (Wang et al., 2017): a cross network and an MLP in parallel on the
flattened embeddings, their outputs concatenated into one logit."""

from dataclasses import dataclass

import torch
from torch import nn

from repro.layers import MLP, CrossNet, FieldEmbedder, MLPConfig
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class DCNConfig(MLPConfig):
    cross_layers: int = 3


@register_model("dcn", config=DCNConfig)
class DCN(CTRModel):
    cross_network = CrossNet

    def __init__(self, feature_map, cfg, embedding=None) -> None:
        super().__init__(feature_map)
        self.embed = FieldEmbedder(feature_map, embedding)
        width = self.embed.flat_dim
        self.cross = self.cross_network(width, cfg.cross_layers)
        self.mlp = MLP.from_config(width, cfg)
        self.out = nn.Linear(width + self.mlp.out_dim, 1)

    def forward(self, batch):
        x0 = self.embed(batch).flatten(1)
        return self.out(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(-1)
