"""The ranker's "oracle": a head that predicts the position re-ranking will give an ad, so that the
ranker can hand re-ranking a click estimate for the context the ad will actually be shown in
(the review's design; no paper describes it; reconstruction in papers.md 6.4).

A ranker scores ads before re-ranking has placed them. To rank, it needs a position-free score
(PAL's CTR tower, ``methods/model_interaction/position.py``); to price and to mix ads with the rest
of the page, re-ranking needs p(click) *where the ad will be*, which depends on a position nobody
knows yet. The oracle ranker is PAL plus an auxiliary head:

- CTR tower f(x): DeepFM without the position (``data.drop_roles=[position]``);
- ProbSeen tower g(position [x seen_context]): as in PAL;
- position head h(x): an MLP over the CTR tower's field embeddings giving a distribution over the
  position field's values; trained with cross-entropy against the logged position (a log fact,
  not ground truth);
- loss: PAL's BCE(y, sigmoid(f) * sigmoid(g(pos))) + ``position_weight`` * CE(h(x), pos).

``serve`` picks what the model hands on (one trained model, three readings; each row of an
experiment is its own run, so early stopping selects on the score that row serves):

- ``ranking``: sigmoid(f), PAL's served score (the order re-ranking starts from);
- ``top``: sigmoid(f) * sigmoid(g(commonest position)), the estimate a ranker without the head can
  give before placement: every ad as if at the commonest training position (index 1, position 1
  in the world), as ``position_default`` is served. Without ``seen_context`` it orders ads as
  ``ranking`` does;
- ``context``: sigmoid(f) * sum_k h_k(x) * sigmoid(g(k)): the oracle's estimate at the position it
  predicts re-ranking will give the ad, which is what re-ranking consumes.

Choices the review leaves open, as made here: the head sees the ad's own inputs only (the
competing candidates are not in a row), shares the CTR tower's embeddings (it trains them too:
a multi-task ranker, not a separate model), and predicts the position only. The review's other
context head (mean pCTR of the neighbouring ads, "external context") is left out: the simulated
world's click depends on an ad's own position and relevance and on no neighbour, so there is
nothing for it to learn; and the world's examination is separable (p = exam(position) x
relevance), so the predicted position cannot change the order that maximises clicks or revenue:
its value here is calibration, measured as logloss and PCOC on the logged traffic. The PFD
teacher of the reconstruction is the separate ``pfd`` row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from repro.data.featuremap import FeatureMap
from repro.errors import ConfigError
from repro.layers import fm_interaction
from repro.registry import register_model

from methods.model_interaction.position import PAL, PALConfig, PositionDefault

SERVE = ("ranking", "top", "context")


@dataclass
class OracleConfig(PALConfig):
    position_weight: float = 1.0  # weight of the position head's cross-entropy
    head_units: int = 64  # the position head: embeddings -> head_units -> one logit per position value
    serve: str = "context"  # ranking | top | context (see the module docstring)


@register_model("oracle", config=OracleConfig)
class OracleRanker(PAL):
    TOP_INDEX = PositionDefault.DEFAULT_INDEX  # the commonest training position, as position_default serves

    def __init__(self, feature_map: FeatureMap, cfg: OracleConfig, embedding=None) -> None:
        super().__init__(feature_map, cfg, embedding)
        if cfg.serve not in SERVE:
            raise ConfigError(f"oracle: serve must be one of {list(SERVE)} (got {cfg.serve!r})")
        if cfg.position_weight < 0:
            raise ConfigError(f"oracle: position_weight must be >= 0 (got {cfg.position_weight})")
        if cfg.head_units < 1:
            raise ConfigError(f"oracle: head_units must be >= 1 (got {cfg.head_units})")
        self.serve = cfg.serve
        self.position_weight = cfg.position_weight
        self.position_head = nn.Sequential(nn.Linear(self.ctr.embed.flat_dim, cfg.head_units), nn.ReLU(),
                                           nn.Linear(cfg.head_units, self.position_vocab))

    def seen_logit_at(self, batch, k: int) -> torch.Tensor:
        """PAL's g(k [, context]): every row as if at the position field's value index ``k``."""
        return self.seen_logit({**batch, "position": torch.full_like(batch["position"], k)})

    def seen_logits_all(self, batch) -> torch.Tensor:
        """g(k [, context]) for every value k of the position field: [B, vocab]."""
        return torch.stack([self.seen_logit_at(batch, k) for k in range(self.position_vocab)], -1)

    def forward(self, batch):
        emb = self.ctr.embed(batch)
        # DeepFM's own forward, kept open here so the head reads the same embeddings (one lookup)
        f = self.ctr.linear(batch) + fm_interaction(emb) + self.ctr.mlp(emb.flatten(1)).squeeze(-1)
        if self.training:
            out = {"logit": f, "seen_logit": self.seen_logit(batch)}
            if self.position_weight > 0:
                out["position_logits"] = self.position_head(emb.flatten(1))
            return out
        if self.serve == "ranking":
            return {"logit": f}
        if self.serve == "top":
            seen = F.logsigmoid(self.seen_logit_at(batch, self.TOP_INDEX))
        else:  # log sum_k h_k * sigmoid(g_k)
            h = F.log_softmax(self.position_head(emb.flatten(1)), -1)
            seen = torch.logsumexp(h + F.logsigmoid(self.seen_logits_all(batch)), -1)
        log_p = F.logsigmoid(f) + seen
        return {"logit": log_p - torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-7))}

    def loss(self, batch, output) -> torch.Tensor:
        click = super().loss(batch, output)
        if "position_logits" not in output:  # position_weight 0: the head is not trained
            return click
        per_row = F.cross_entropy(output["position_logits"], batch["position"], reduction="none")
        weight = batch.get("weight")
        position = per_row.mean() if weight is None else (per_row * weight).sum() / weight.sum().clamp_min(1e-12)
        return click + self.position_weight * position
