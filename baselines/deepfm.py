"""DeepFM (Guo et al., 2017): FM and an MLP sharing one set of field embeddings."""

from dataclasses import dataclass, field

from repro.layers import MLP, FieldEmbedder, FirstOrder, fm_interaction
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class DeepFMConfig:
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@register_model("deepfm", config=DeepFMConfig)
class DeepFM(CTRModel):
    def __init__(self, feature_map, cfg: DeepFMConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.linear = FirstOrder(feature_map)
        self.embed = FieldEmbedder(feature_map, embedding)
        self.mlp = MLP(self.embed.num_fields * self.embed.dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm, out_dim=1)

    def forward(self, batch):
        emb = self.embed(batch)
        return self.linear(batch) + fm_interaction(emb) + self.mlp(emb.flatten(1)).squeeze(-1)
