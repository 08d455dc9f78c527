"""Wide & Deep (Cheng et al., 2016): LR on the raw fields plus an MLP on their embeddings."""

from dataclasses import dataclass, field

from repro.layers import MLP, FieldEmbedder, FirstOrder
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class WideDeepConfig:
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@register_model("wide_deep", config=WideDeepConfig)
class WideDeep(CTRModel):
    def __init__(self, feature_map, cfg: WideDeepConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.wide = FirstOrder(feature_map)
        self.embed = FieldEmbedder(feature_map, embedding)
        self.deep = MLP(self.embed.num_fields * self.embed.dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm, out_dim=1)

    def forward(self, batch):
        return self.wide(batch) + self.deep(self.embed(batch).flatten(1)).squeeze(-1)
