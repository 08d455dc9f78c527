"""Wide & Deep (Cheng et al., 2016): LR on the raw fields plus an MLP on their embeddings."""

from dataclasses import dataclass

from repro.layers import MLP, MLPConfig, FieldEmbedder, FirstOrder
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class WideDeepConfig(MLPConfig):
    pass


@register_model("wide_deep", config=WideDeepConfig)
class WideDeep(CTRModel):
    def __init__(self, feature_map, cfg: WideDeepConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.wide = FirstOrder(feature_map, embedding)
        self.embed = FieldEmbedder(feature_map, embedding)
        self.deep = MLP.from_config(self.embed.flat_dim, cfg, out_dim=1)

    def forward(self, batch):
        return self.wide(batch) + self.deep(self.embed(batch).flatten(1)).squeeze(-1)
