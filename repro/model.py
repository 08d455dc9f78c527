"""The model contract.

A model is an ``nn.Module`` registered with ``@register_model(name, config=Cfg)`` and built as
``Model(feature_map, cfg, embedding=<embedding config block>)``. ``forward(batch)`` returns the
click logit [B], or a dict holding ``logit`` and auxiliary outputs. A model with its own objective
(distillation, two-factor position models, pre-training) overrides ``loss``; the default is
(weighted) binary cross-entropy on the logit.

Regularisation of embeddings is not part of ``loss``: the trainer adds ``train.embedding_l2 *
model.embedding_penalty()``, the penalty of every embedding layer on the vectors it looked up in
this batch (see ``repro.embeddings.EmbeddingLayer``), so that a model with its own ``loss`` gets it
too. A model that builds embedding tables outside an ``EmbeddingLayer`` gets neither the penalty
nor sparse updates for them (they are then dense parameters, under ``train.weight_decay``).
"""

from __future__ import annotations

import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.embeddings import EmbeddingLayer, embedding_layers

Batch = dict[str, torch.Tensor]


def logit_of(output: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return output["logit"] if isinstance(output, dict) else output


class CTRModel(nn.Module):
    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__()
        self.feature_map = feature_map

    def loss(self, batch: Batch, output: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy: the mean over rows, or with row weights (a KDD Cup 2012 row stands
        for its count of impressions) the weighted mean, sum(w * l) / sum(w), which equals the
        mean over the expanded rows and keeps the step size independent of a batch's weight sum."""
        weight = batch.get("weight")
        if weight is None:
            return nn.functional.binary_cross_entropy_with_logits(logit_of(output), batch["label"])
        per_row = nn.functional.binary_cross_entropy_with_logits(logit_of(output), batch["label"], reduction="none")
        return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)

    def embedding_layers(self) -> list[EmbeddingLayer]:
        """Every embedding layer of the model, the first-order (dim-1) tables included."""
        return embedding_layers(self)

    def embedding_penalty(self) -> torch.Tensor:
        """Sum of every embedding layer's ``penalty()`` for the last forward pass in training mode."""
        layers = self.embedding_layers()
        if not layers:
            return torch.zeros(())
        return sum(layer.penalty() for layer in layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stored_bytes(self) -> int:
        """Bytes a server would hold: embedding layers report their own, the rest is dense."""
        embeddings = [m for m in self.modules() if isinstance(m, EmbeddingLayer)]
        counted = {id(p) for m in embeddings for p in m.parameters()}
        dense = sum(p.numel() * p.element_size() for p in self.parameters() if id(p) not in counted)
        return dense + sum(m.stored_bytes() for m in embeddings)
