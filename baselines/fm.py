"""Factorization Machine (Rendle, 2010): first-order terms plus all pairwise field interactions."""

from dataclasses import dataclass

from repro.layers import FieldEmbedder, FirstOrder, fm_interaction
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class FMConfig:
    pass


@register_model("fm", config=FMConfig)
class FactorizationMachine(CTRModel):
    def __init__(self, feature_map, cfg: FMConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.linear = FirstOrder(feature_map, embedding)
        self.embed = FieldEmbedder(feature_map, embedding)

    def forward(self, batch):
        return self.linear(batch) + fm_interaction(self.embed(batch))
