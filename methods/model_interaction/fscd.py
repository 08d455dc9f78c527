"""FSCD: learnable field selection for pre-ranking (Ma et al., SIGIR 2021, arXiv 2105.07706;
papers.md 5.2, claim C5), on the COLD-like cross pre-ranker of ``prerank.py``.

An interaction-based pre-ranker (every kept field's embedding into one small MLP) whose fields are
chosen by learning: field j has a keep probability theta_j = sigmoid(a_j) and, while searching, its
embedding is scaled by a concrete (relaxed Bernoulli) mask

    z_j = sigmoid((a_j + log u - log(1 - u)) / t),   u ~ U(0, 1) per row and field,

with the loss L = (the pre-ranker's loss: click, plus distillation if asked) + sum_j lambda_j theta_j,
lambda_j = ``penalty`` x c_j growing with the field's complexity c_j. After ``search_steps``
training steps the ``keep_fields`` fields of largest theta are frozen in (a hard 0/1 mask) and the
same weights train on (the paper's fine-tuning from the FSCD weights). Evaluation always uses the
hard mask of the current top ``keep_fields``, so what is scored is what would be served, even for
weights restored from the search phase.

Choices the paper leaves open or this world forces, as made here:
- complexity c_j: every field here has the same embedding width, so c_j is the field's vocabulary
  size on a log scale, log(1 + vocab_j), divided by its mean over fields (dense fields count as a
  vocabulary of 1); the paper also counts online compute cost, which is the same for every
  embedding lookup here;
- the mask is drawn per row (not per batch), t = 0.5 by default, theta_j starts at sigmoid(2);
- the selection is frozen inside one run after ``search_steps`` steps, rather than as a second run,
  so FSCD gets the same training budget as every other pre-ranker of the table;
- at serving the dropped fields are still looked up and multiplied by zero (the MLP keeps its full
  input width); the latency saving of the paper is not claimed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from methods.model_interaction.prerank import Cold, ColdConfig, _input_names
from repro.data.featuremap import FeatureMap
from repro.errors import ConfigError
from repro.registry import register_model


@dataclass
class FSCDConfig(ColdConfig):
    keep_fields: int = 6  # fields kept after the search
    search_steps: int = 500  # training steps with relaxed masks before the selection is frozen
    temperature: float = 0.5  # t of the concrete relaxation
    penalty: float = 1e-3  # lambda's base; lambda_j = penalty * c_j


@register_model("fscd", config=FSCDConfig)
class FSCD(Cold):
    def __init__(self, feature_map: FeatureMap, cfg: FSCDConfig, embedding=None) -> None:
        super().__init__(feature_map, cfg, embedding)
        names = _input_names(feature_map)
        if not 1 <= cfg.keep_fields <= len(names):
            raise ConfigError(f"fscd: keep_fields must be in 1..{len(names)} (the input fields), got {cfg.keep_fields}")
        if cfg.search_steps < 0 or cfg.temperature <= 0 or cfg.penalty < 0:
            raise ConfigError("fscd: search_steps >= 0, temperature > 0 and penalty >= 0 are required (got "
                              f"{cfg.search_steps}, {cfg.temperature}, {cfg.penalty})")
        self.field_names = names
        vocab = {f.name: f.vocab_size for f in feature_map.categorical}
        complexity = torch.tensor([math.log1p(vocab.get(n, 1)) for n in names])
        self.register_buffer("complexity", complexity / complexity.mean(), persistent=False)
        self.keep_logit = nn.Parameter(torch.full((len(names),), 2.0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def selected(self) -> torch.Tensor:
        """The hard 0/1 mask of the ``keep_fields`` fields of largest keep probability."""
        mask = torch.zeros_like(self.keep_logit)
        mask[torch.topk(self.keep_logit.detach(), self.cfg.keep_fields).indices] = 1.0
        return mask

    def searching(self) -> bool:
        return int(self.steps) < self.cfg.search_steps

    def forward(self, batch):
        emb = self.embed(batch)
        if self.training and self.searching():
            self.steps += 1
            u = torch.rand(emb.shape[0], emb.shape[1]).clamp(1e-6, 1 - 1e-6)
            mask = torch.sigmoid((self.keep_logit + torch.log(u) - torch.log1p(-u)) / self.cfg.temperature)
            logit = self.mlp((emb * mask[:, :, None]).flatten(1)).squeeze(-1)
            return {"logit": logit, "keep_probability": torch.sigmoid(self.keep_logit)}  # the penalty's input
        # After the search (and at evaluation) the hard mask of the chosen fields. Once the search
        # ends keep_logit gets no gradient, so the choice stays the one the search ended with.
        return self.mlp((emb * self.selected()[None, :, None]).flatten(1)).squeeze(-1)

    def loss(self, batch, output) -> torch.Tensor:
        loss = super().loss(batch, output)
        if isinstance(output, dict) and "keep_probability" in output:  # a search step
            loss = loss + self.cfg.penalty * (self.complexity * output["keep_probability"]).sum()
        return loss

    def kept_fields(self) -> list[str]:
        return [n for n, m in zip(self.field_names, self.selected().tolist()) if m]
