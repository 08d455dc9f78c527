"""DNN (the YoutubeDNN row of BARS): an MLP over the concatenated field embeddings."""

from dataclasses import dataclass

from repro.layers import MLP, MLPConfig, FieldEmbedder
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class DNNConfig(MLPConfig):
    pass


@register_model("dnn", config=DNNConfig)
class DNN(CTRModel):
    def __init__(self, feature_map, cfg: DNNConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.embed = FieldEmbedder(feature_map, embedding)
        self.mlp = MLP.from_config(self.embed.flat_dim, cfg, out_dim=1)

    def forward(self, batch):
        return self.mlp(self.embed(batch).flatten(1)).squeeze(-1)
