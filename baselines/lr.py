"""Logistic regression: a weight per categorical value plus a linear map of dense inputs."""

from dataclasses import dataclass

from repro.layers import FirstOrder
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class LRConfig:
    pass


@register_model("lr", config=LRConfig)
class LogisticRegression(CTRModel):
    def __init__(self, feature_map, cfg: LRConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.linear = FirstOrder(feature_map, embedding)

    def forward(self, batch):
        return self.linear(batch)
