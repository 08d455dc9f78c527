"""Position bias in the ranker: PAL, position as a feature served at a default position, and
privileged-feature distillation (papers.md section 6; the review's "oracle" for position bias).

Every model here is DeepFM (the suite's reference ranker) plus one way of handling position; they
are compared on what serving needs, a score that does not depend on where the ad was shown: AUC
against the world's position-free relevance, per-position AUC (PAUC) and calibration, and AUC on
the randomised-exposure split.

- ``position_default`` (the common baseline): DeepFM with the position among its inputs, trained on
  the logged positions; at prediction time every row is given one default position, the
  position field's most frequent training value (encoded index 1, the vocabulary being in
  descending frequency; position 1 in the world), as a server must (it scores before positions
  exist). Different defaults give different rankings (PAL's observation), which is the defect.
- ``pal`` (Guo et al., RecSys 2019): p(click | x, pos) = p(seen | pos, ctx) * p(click | seen, x).
  The CTR tower f is DeepFM over the inputs without position (run it with
  ``data.drop_roles=[position]``); the ProbSeen tower g is an embedding of the position, and, with
  ``seen_context``, of the position crossed with those context fields (the world's position decay
  differs by scene), summed into one logit. Trained jointly with BCE(y, sigmoid(f) * sigmoid(g));
  served: sigmoid(f) alone.
- ``pfd`` (privileged-feature distillation, Xu et al., arXiv 1907.05171; JD's position
  distillation, arXiv 2204.00270): a position-free DeepFM student trained on the clicks and on a
  teacher that saw the position (a finished run, read by reference with ``data.teacher``, whose
  predictions on the training split were kept with ``train.keep_predictions=[train]``):
  L = BCE(y, f) + lambda * BCE(sigmoid(f), p_teacher). The teacher is frozen (PFD trains both
  synchronously; reading a finished teacher keeps every row's protocol the same and the teacher
  out of the student's budget).

Choices the references leave open, as made here: PAL's ProbSeen has no tower beyond the
embeddings (position x context is a small table); PFD's lambda = 1 without warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from baselines.deepfm import DeepFM, DeepFMConfig
from repro.data.featuremap import FeatureMap
from repro.errors import ConfigError
from repro.model import CTRModel, logit_of
from repro.registry import register_model


def _position_field(feature_map: FeatureMap, model: str):
    f = feature_map.by_role("position")
    if f is None or f.kind != "categorical":
        raise ConfigError(f"{model}: the data set {feature_map.dataset!r} has no categorical field with role 'position'")
    return f


@dataclass
class PositionDefaultConfig(DeepFMConfig):
    pass


@register_model("position_default", config=PositionDefaultConfig)
class PositionDefault(DeepFM):
    """DeepFM with position as a feature, served at the most frequent training position."""

    DEFAULT_INDEX = 1  # the vocabulary is in descending training frequency: index 1 is the commonest value

    def __init__(self, feature_map: FeatureMap, cfg: PositionDefaultConfig, embedding=None) -> None:
        super().__init__(feature_map, cfg, embedding)
        f = _position_field(feature_map, "position_default")
        if f not in feature_map.categorical:
            raise ConfigError("position_default: the position field is left out of the inputs (data.drop_roles); "
                              "this model takes it as a feature")
        self.position_column = feature_map.categorical_index(f.name)

    def forward(self, batch):
        if not self.training:
            cat = batch["cat"].clone()
            cat[:, self.position_column] = self.DEFAULT_INDEX
            batch = {**batch, "cat": cat}
        return super().forward(batch)


@dataclass
class PALConfig(DeepFMConfig):
    # Context fields (by name) whose values cross with the position in the ProbSeen tower.
    seen_context: list[str] = field(default_factory=list)


@register_model("pal", config=PALConfig)
class PAL(CTRModel):
    def __init__(self, feature_map: FeatureMap, cfg: PALConfig, embedding=None) -> None:
        super().__init__(feature_map)
        pos = _position_field(feature_map, "pal")
        if pos in feature_map.categorical:
            raise ConfigError("pal: the CTR tower must not see the position: run it with data.drop_roles=[position]")
        self.ctr = DeepFM(feature_map, cfg, embedding)
        self.position_vocab = pos.vocab_size
        self.seen = nn.Embedding(pos.vocab_size, 1)
        nn.init.zeros_(self.seen.weight)
        self.context = []
        tables = []
        for name in cfg.seen_context:
            try:
                f = feature_map.field(name)
            except KeyError as e:
                raise ConfigError(f"pal: seen_context field {name!r} is not an input field") from e
            if f.kind != "categorical":
                raise ConfigError(f"pal: seen_context field {name!r} must be categorical")
            self.context.append(feature_map.categorical_index(name))
            tables.append(nn.Embedding(pos.vocab_size * f.vocab_size, 1))
            nn.init.zeros_(tables[-1].weight)
        self.crossed = nn.ModuleList(tables)
        self.seen_bias = nn.Parameter(torch.tensor(2.0))  # sigmoid(2) ~ 0.88: starts near "seen"

    def seen_logit(self, batch) -> torch.Tensor:
        pos = batch["position"]
        g = self.seen_bias + self.seen(pos).squeeze(-1)
        for col, table in zip(self.context, self.crossed):
            g = g + table(pos * table.num_embeddings // self.position_vocab + batch["cat"][:, col]).squeeze(-1)
        return g

    def forward(self, batch):
        out = {"logit": self.ctr(batch)}  # served: p(click | seen, x)
        if self.training:
            out["seen_logit"] = self.seen_logit(batch)
        return out

    def loss(self, batch, output) -> torch.Tensor:
        # log p = log sigmoid(f) + log sigmoid(g); log(1 - p) computed stably from it.
        log_p = F.logsigmoid(output["logit"]) + F.logsigmoid(output["seen_logit"])
        log_not_p = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-7))
        y = batch["label"]
        per_row = -(y * log_p + (1 - y) * log_not_p)
        weight = batch.get("weight")
        return per_row.mean() if weight is None else (per_row * weight).sum() / weight.sum().clamp_min(1e-12)


@dataclass
class PFDConfig(DeepFMConfig):
    distill_weight: float = 1.0  # lambda


@register_model("pfd", config=PFDConfig)
class PFD(DeepFM):
    """A DeepFM student distilled from a teacher that saw privileged features (the position)."""

    def __init__(self, feature_map: FeatureMap, cfg: PFDConfig, embedding=None) -> None:
        super().__init__(feature_map, cfg, embedding)
        if cfg.distill_weight < 0:
            raise ConfigError(f"pfd: distill_weight must be >= 0 (got {cfg.distill_weight})")
        self.distill_weight = cfg.distill_weight

    def loss(self, batch, output) -> torch.Tensor:
        if "teacher" not in batch:
            raise ConfigError("pfd: needs a teacher's predictions on the training split (data.teacher=<label> of a "
                              "run with train.keep_predictions=[train])")
        logit = logit_of(output)
        teacher = batch["teacher"].clamp(1e-6, 1 - 1e-6)
        return super().loss(batch, output) + self.distill_weight * F.binary_cross_entropy_with_logits(logit, teacher)
