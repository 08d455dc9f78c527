"""Pre-ranking models and RDPR, ranking-distilled pre-ranking (papers.md section 5).

Two light pre-rankers, each trainable on click loss alone or with a distillation term towards the
ranker (its frozen predictions, ``batch['teacher']``, read from the ranker's run by reference,
``data.teacher``):
- ``two_tower``: the vector-product pre-ranker (user/query/context tower x ad/creative tower, a
  dot product plus a bias), the baseline COLD and FSCD improve on;
- ``cold``: a COLD-like small cross model (Wang et al., arXiv 2007.16122): every field's embedding
  concatenated into a small MLP, so user and ad features interact, at a fraction of the ranker's
  width. COLD's SE field selection and engineering are not reproduced.

They train on the candidate log (``train.train_split=candidates_train``, ``group_by_request``):
every retrieved candidate of a request, shown or not. The loss is

    L = BCE(click, pCTR_S) over the shown candidates  +  alpha * L_distill over every candidate

with ``distill``:
- ``none``: the click loss alone (exposures only; the usual pre-ranker);
- ``pointwise``: BCE of the student's pCTR against the teacher's pCTR as a soft label (score
  distillation, the common public baseline);
- ``listwise`` (RDPR, the review's design as adrepro reconstructs it, papers.md 5.3): per request,
  the teacher's rank score r_i = pCTR_T(i) x bid_i as a distribution p_T = softmax(log r / tau)
  (tau = 1: proportional to eCPM), the student's as p_S = softmax(log pCTR_S + log bid) (the score
  it ranks by at serving), L_distill = -sum_i p_T(i) log p_S(i), averaged over requests;
- ``pairwise`` (RDPR's pairwise variant): sum over pairs with r_i > r_j of
  log(1 + exp(-(s_i - s_j))), s = log pCTR_S + log bid, weight 1 per pair (``pair_weight: ndcg``
  weights a pair by |1/log2(1+rank_i) - 1/log2(1+rank_j)| in the teacher's order), averaged
  over pairs.

Choices the review leaves open, as made here: the target is the ranker's eCPM (not its bare pCTR
nor the final order), since the pre-ranker's job is to pass on what the ranker will rank high;
the student's listwise and pairwise scores include the bid, because the pre-ranker ranks by eCPM
too; the click term stays as the calibration safeguard (papers.md 5.3 pitfall 1: pure softmax
distillation leaves pCTR free up to a per-request constant); alpha = 1 and tau = 1 by default. The
teacher is frozen (never co-trained) and scores every candidate of the log, exposed or not
(pitfall 2); ground truth never enters: the teacher's predictions come from its run, and clicks
exist only where the log showed the ad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from repro.data.featuremap import FeatureMap
from repro.errors import ConfigError
from repro.layers import MLP, FieldEmbedder
from repro.model import CTRModel, logit_of
from repro.registry import register_model

DISTILL = ("none", "pointwise", "listwise", "pairwise")


@dataclass
class PreRankConfig:
    distill: str = "none"  # none | pointwise | listwise | pairwise
    alpha: float = 1.0  # weight of the distillation term
    tau: float = 1.0  # listwise: temperature of the teacher's distribution
    pair_weight: str = "uniform"  # pairwise: uniform | ndcg


@dataclass
class TwoTowerConfig(PreRankConfig):
    # The user/query/context tower's fields; every other input field goes to the ad tower.
    user_fields: list[str] = field(default_factory=lambda: ["user_id", "user_segment", "query_id", "query_category",
                                                            "scene", "hour", "device"])
    hidden_units: list[int] = field(default_factory=lambda: [64])
    out_dim: int = 32


@dataclass
class ColdConfig(PreRankConfig):
    hidden_units: list[int] = field(default_factory=lambda: [64, 32])


def segments(request: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Request index of each row (rows of a request are contiguous in a grouped batch)."""
    change = torch.ones_like(request, dtype=torch.bool)
    change[1:] = request[1:] != request[:-1]
    return torch.cumsum(change.long(), 0) - 1, int(change.sum())


def padded(values: torch.Tensor, seg: torch.Tensor, n: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows] -> [requests, longest] (``fill`` where a request is shorter) and the mask."""
    counts = torch.bincount(seg, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    col = torch.arange(len(seg)) - starts[seg]
    out = torch.full((n, int(counts.max())), fill, dtype=values.dtype)
    mask = torch.zeros(out.shape, dtype=torch.bool)
    out = out.index_put((seg, col), values)
    mask[seg, col] = True
    return out, mask


def listwise_loss(student: torch.Tensor, target: torch.Tensor, seg: torch.Tensor, n: int, tau: float) -> torch.Tensor:
    """Mean over requests of the cross-entropy between softmax(target / tau) and softmax(student)."""
    s, mask = padded(student, seg, n, float("-inf"))
    t, _ = padded(target / tau, seg, n, float("-inf"))
    p_t = torch.softmax(t, dim=1)
    log_p_s = torch.log_softmax(s, dim=1)
    return -(p_t * torch.where(mask, log_p_s, torch.zeros_like(log_p_s))).sum(1).mean()


def pairwise_loss(student: torch.Tensor, target: torch.Tensor, seg: torch.Tensor, n: int,
                  weight: str = "uniform") -> torch.Tensor:
    """Mean over within-request pairs with target_i > target_j of w_ij * log(1 + exp(-(s_i - s_j)))."""
    s, mask = padded(student, seg, n, 0.0)
    t, _ = padded(target, seg, n, float("-inf"))
    better = (t[:, :, None] > t[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    diff = s[:, :, None] - s[:, None, :]
    loss = F.softplus(-diff)
    if weight == "ndcg":
        rank = torch.argsort(torch.argsort(-t, dim=1), dim=1).float() + 1  # 1 = the teacher's best
        gain = 1 / torch.log2(1 + rank)
        loss = loss * (gain[:, :, None] - gain[:, None, :]).abs()
    pairs = better.sum().clamp_min(1)
    return torch.where(better, loss, torch.zeros_like(loss)).sum() / pairs


class DistilledPreRanker(CTRModel):
    """The RDPR loss around a pre-ranker's click logit (see the module docstring)."""

    cfg: PreRankConfig

    def _check(self, cfg: PreRankConfig, feature_map: FeatureMap) -> None:
        if cfg.distill not in DISTILL:
            raise ConfigError(f"{type(self).__name__}: distill={cfg.distill!r}; expected one of {DISTILL}")
        if cfg.pair_weight not in ("uniform", "ndcg"):
            raise ConfigError(f"{type(self).__name__}: pair_weight={cfg.pair_weight!r}; expected uniform or ndcg")
        if cfg.tau <= 0 or cfg.alpha < 0:
            raise ConfigError(f"{type(self).__name__}: tau must be > 0 and alpha >= 0 (got {cfg.tau}, {cfg.alpha})")
        if cfg.distill in ("listwise", "pairwise") and feature_map.by_role("bid") is None:
            raise ConfigError(f"{type(self).__name__}: {cfg.distill} distillation ranks by eCPM and needs a field "
                              "with role 'bid'")

    def loss(self, batch, output) -> torch.Tensor:
        logit = logit_of(output)
        y = batch["label"]
        shown = ~torch.isnan(y)
        click = (F.binary_cross_entropy_with_logits(logit[shown], y[shown], reduction="sum")
                 / shown.sum().clamp_min(1))
        if self.cfg.distill == "none" or self.cfg.alpha == 0:
            return click
        if "teacher" not in batch:
            raise ConfigError(f"{type(self).__name__}: distill={self.cfg.distill} needs the teacher's predictions on "
                              "the split trained on (data.teacher=<ranker label>, train.train_split=candidates_train)")
        teacher = batch["teacher"].clamp(1e-6, 1 - 1e-6)
        if self.cfg.distill == "pointwise":
            return click + self.cfg.alpha * F.binary_cross_entropy_with_logits(logit, teacher)
        seg, n = segments(batch["request"])
        log_bid = batch["bid"]  # the world's bid field holds log(bid)
        student = F.logsigmoid(logit) + log_bid
        target = torch.log(teacher) + log_bid
        if self.cfg.distill == "listwise":
            distill = listwise_loss(student, target, seg, n, self.cfg.tau)
        else:
            distill = pairwise_loss(student, target, seg, n, self.cfg.pair_weight)
        return click + self.cfg.alpha * distill


def _input_names(fm: FeatureMap) -> list[str]:
    """The fields in FieldEmbedder's output order."""
    return ([f.name for f in fm.categorical] + [f.name for f in fm.dense if f.kind == "dense"]
            + [f.name for f in fm.dense if f.kind == "vector"])


@register_model("two_tower", config=TwoTowerConfig)
class TwoTower(DistilledPreRanker):
    def __init__(self, feature_map: FeatureMap, cfg: TwoTowerConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self._check(cfg, feature_map)
        self.cfg = cfg
        names = _input_names(feature_map)
        unknown = sorted(set(cfg.user_fields) - set(names))
        if unknown:
            raise ConfigError(f"two_tower: user_fields {unknown} are not input fields of {feature_map.dataset!r} "
                              f"(inputs: {names})")
        user = [i for i, n in enumerate(names) if n in cfg.user_fields]
        ad = [i for i, n in enumerate(names) if n not in cfg.user_fields]
        if not ad:
            raise ConfigError("two_tower: every input field is in user_fields; the ad tower would be empty")
        self.register_buffer("user_idx", torch.tensor(user), persistent=False)
        self.register_buffer("ad_idx", torch.tensor(ad), persistent=False)
        self.embed = FieldEmbedder(feature_map, embedding)
        d = self.embed.dim
        self.user_tower = MLP(len(user) * d, cfg.hidden_units, out_dim=cfg.out_dim)
        self.ad_tower = MLP(len(ad) * d, cfg.hidden_units, out_dim=cfg.out_dim)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        emb = self.embed(batch)
        u = self.user_tower(emb[:, self.user_idx].flatten(1))
        a = self.ad_tower(emb[:, self.ad_idx].flatten(1))
        return (u * a).sum(-1) + self.bias


@register_model("cold", config=ColdConfig)
class Cold(DistilledPreRanker):
    def __init__(self, feature_map: FeatureMap, cfg: ColdConfig, embedding=None) -> None:
        super().__init__(feature_map)
        self._check(cfg, feature_map)
        self.cfg = cfg
        self.embed = FieldEmbedder(feature_map, embedding)
        self.mlp = MLP(self.embed.flat_dim, cfg.hidden_units, out_dim=1)

    def forward(self, batch):
        return self.mlp(self.embed(batch).flatten(1)).squeeze(-1)
