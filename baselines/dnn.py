"""DNN (the YoutubeDNN row of BARS): an MLP over the concatenated field embeddings."""

from dataclasses import dataclass, field

from repro.layers import MLP, FieldEmbedder
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class DNNConfig:
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@register_model("dnn", config=DNNConfig)
class DNN(CTRModel):
    def __init__(self, feature_map, cfg: DNNConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.embed = FieldEmbedder(feature_map, embedding)
        self.mlp = MLP(self.embed.num_fields * self.embed.dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm, out_dim=1)

    def forward(self, batch):
        return self.mlp(self.embed(batch).flatten(1)).squeeze(-1)
