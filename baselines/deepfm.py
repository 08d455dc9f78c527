"""DeepFM (Guo et al., 2017): FM and an MLP sharing one set of field embeddings."""

from dataclasses import dataclass

from repro.layers import MLP, MLPConfig, FieldEmbedder, FirstOrder, fm_interaction
from repro.model import CTRModel
from repro.registry import register_model


@dataclass
class DeepFMConfig(MLPConfig):
    pass


@register_model("deepfm", config=DeepFMConfig)
class DeepFM(CTRModel):
    def __init__(self, feature_map, cfg: DeepFMConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self.linear = FirstOrder(feature_map, embedding)
        self.embed = FieldEmbedder(feature_map, embedding)
        self.mlp = MLP.from_config(self.embed.flat_dim, cfg, out_dim=1)

    def forward(self, batch):
        emb = self.embed(batch)
        return self.linear(batch) + fm_interaction(emb) + self.mlp(emb.flatten(1)).squeeze(-1)
