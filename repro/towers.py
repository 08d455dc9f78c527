"""Conditioned deep towers: DNN, DeepFM or DCN-V2 whose MLP takes a condition beside its input.

Methods that change how the hidden layers are parameterised (APG's generated weights, STAR's
shared-and-specific weights, MMoE-style gating) all plug into the same three base models; this
module builds those bases once, with the deep tower left to the subclass:

- ``dnn``:    logit = tower(x)
- ``deepfm``: logit = first-order + FM(emb) + tower(x)
- ``dcnv2``:  logit = Linear([CrossNetV2(x), tower(x)])

where x is the flattened field embeddings. Every other block is the registered base model's
(``repro.layers``), so a conditioned model differs from its static base only in the tower.

The condition of a row is given by ``condition_fields``: each entry a role (``scene``) or a
categorical field name (``user_segment``). The tower receives both the condition fields'
embeddings (from the shared embedding layer, [B, C * dim]) and their encoded indices ([B, C]),
since some towers embed a condition (APG's group-wise hypernet) and others index by it (STAR's
domain-specific weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.errors import ConfigError
from repro.layers import CrossNetV2, FieldEmbedder, FirstOrder, MLPConfig, fm_interaction
from repro.model import CTRModel

BASES = ("dnn", "deepfm", "dcnv2")


@dataclass
class ConditionedConfig(MLPConfig):
    base: str = "deepfm"  # dnn | deepfm | dcnv2
    cross_layers: int = 3  # dcnv2 only
    condition_fields: list[str] = field(default_factory=lambda: ["scene"])


def condition_indices(feature_map: FeatureMap, names: list[str]) -> list[int]:
    """Columns of ``batch['cat']`` for each condition entry (a role or a categorical field name)."""
    categorical = [f.name for f in feature_map.categorical]
    out = []
    for name in names:
        spec = feature_map.by_role(name)
        column = spec.name if spec is not None and spec.kind == "categorical" else name
        if column not in categorical:
            raise ConfigError(f"condition field {name!r} is neither a role nor a categorical field of "
                              f"{feature_map.dataset!r}; categorical fields: {categorical}")
        out.append(categorical.index(column))
    return out


class ConditionedTowerModel(CTRModel):
    """A base model (``cfg.base``) whose deep tower is ``build_tower(...)``; see the module docstring.

    ``build_tower(in_dim, cfg, condition_dim, condition_vocab, out_dim)`` returns a module with
    ``out_dim`` (its output width) whose ``forward(x, condition_emb, condition_ids)`` maps [B, in_dim]
    to [B, out_dim].
    """

    def __init__(self, feature_map: FeatureMap, cfg: ConditionedConfig, embedding=None) -> None:
        super().__init__(feature_map)
        if cfg.base not in BASES:
            raise ConfigError(f"{type(self).__name__}: unknown base {cfg.base!r}; expected one of {BASES}")
        self.base = cfg.base
        self.linear = FirstOrder(feature_map, embedding) if cfg.base == "deepfm" else None
        self.embed = FieldEmbedder(feature_map, embedding)
        width = self.embed.flat_dim
        self.cross = CrossNetV2(width, cfg.cross_layers) if cfg.base == "dcnv2" else None
        self.condition_idx = condition_indices(feature_map, cfg.condition_fields)
        vocab = [feature_map.categorical[i].vocab_size for i in self.condition_idx]
        self.tower = self.build_tower(width, cfg, len(self.condition_idx) * self.embed.dim, vocab,
                                      None if cfg.base == "dcnv2" else 1)
        self.out = nn.Linear(width + self.tower.out_dim, 1) if cfg.base == "dcnv2" else None

    def build_tower(self, in_dim: int, cfg: ConditionedConfig, condition_dim: int, condition_vocab: list[int],
                    out_dim: int | None) -> nn.Module:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embed(batch)
        x = emb.flatten(1)
        deep = self.tower(x, emb[:, self.condition_idx].flatten(1), batch["cat"][:, self.condition_idx])
        if self.base == "dcnv2":
            return self.out(torch.cat([self.cross(x), deep], dim=1)).squeeze(-1)
        logit = deep.squeeze(-1)
        if self.base == "deepfm":
            logit = logit + self.linear(batch) + fm_interaction(emb)
        return logit
