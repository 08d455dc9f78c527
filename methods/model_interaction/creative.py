"""Creative selection as a cascade stage before ranking, with the Adaptive DropNet (papers.md 7.1).

CACS (Alimama; the review puts a creative-ranking stage before ranking) scores every creative of
each ad with a cheap dual tower, the user/query/context tower x the creative tower, trained with the
click loss on the creatives that were shown and a listwise distillation over one ad's creatives from
a strong ranking teacher; its Adaptive DropNet drops the creative's ID features in training so the
tower learns the content, which is all a new creative has.

``creative_tower``: a dot product of the two towers plus a bias. The creative tower reads the
creative ID's embedding (``inputs`` id or both) and its content vector (content or both; the
world's 8-dim content, role ``content``). It trains on a creative log (``creatives_train``: every
alive creative of each shown ad; ``train.group_by_request``), with

    L = BCE(click, p) over the shown creatives + alpha * L_KD,
    L_KD = mean over ads of -sum_c softmax_c(z_T(c) / tau) log softmax_c(z_S(c)),

z_T the teacher's logit (its frozen predictions, ``data.teacher``), the ads being the (request,
position) groups of the log. ``alpha = 0`` trains on clicks alone.

The Adaptive DropNet zeroes a row's ID embedding in training with probability p(n), n the ID's
training frequency (the feature map's train-only counts), by the rule ``dropnet`` names:
- ``none``: never;
- ``fixed``: p = p_max (plain DropoutNet-style input dropout, the baseline);
- ``frequency`` (papers.md rule A): p = p_max * (1 - min(1, log(1 + n) / log(1 + n_ref))): rare
  IDs, whose embeddings are noisy, are dropped more, and an ID never seen (n = 0) always;
- ``inverse`` (rule B): p = p_max * min(1, log(1 + n) / log(1 + n_ref)): frequent IDs are dropped
  more, so the content is learnt where the ID would otherwise dominate.
The learned rule C (FSCD-like concrete keep-probabilities) is not built. At prediction time
nothing is dropped, except an ID the training split never saw as itself (its out-of-vocabulary or
missing index): a cold creative's ID carries no information, and a zero ID is the input the DropNet
trained the tower to read the content from. Choices the reference leaves open: the dot-product
tower (no cross tower), one ID field (the creative's; the ad's ID is in the user-independent part
of every creative of the ad alike and cannot change the choice), p_max = 0.5, n_ref = 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from repro.data.featuremap import FeatureMap
from repro.embeddings import build_embedding
from repro.errors import ConfigError
from repro.layers import MLP
from repro.model import CTRModel, logit_of
from repro.registry import register_model

from methods.model_interaction.prerank import listwise_loss, segments

INPUTS = ("id", "content", "both")
DROPNET = ("none", "fixed", "frequency", "inverse")


@dataclass
class CreativeTowerConfig:
    inputs: str = "both"  # id | content | both
    dropnet: str = "none"  # none | fixed | frequency | inverse
    p_max: float = 0.5
    n_ref: float = 100.0
    alpha: float = 0.0  # weight of the listwise distillation from the teacher (0: clicks alone)
    tau: float = 1.0
    user_fields: list[str] = field(default_factory=lambda: ["user_id", "user_segment", "query_id", "query_category",
                                                            "scene", "hour", "device"])
    hidden_units: list[int] = field(default_factory=lambda: [64])
    out_dim: int = 32


def drop_probability(counts: np.ndarray, rule: str, p_max: float, n_ref: float) -> np.ndarray:
    """The DropNet's drop probability of an ID from its training frequency (see the module docstring)."""
    share = np.minimum(1.0, np.log1p(np.asarray(counts, dtype=np.float64)) / math.log1p(n_ref))
    if rule == "none":
        return np.zeros_like(share)
    if rule == "fixed":
        return np.full_like(share, p_max)
    if rule == "frequency":
        return p_max * (1.0 - share)
    if rule == "inverse":
        return p_max * share
    raise ConfigError(f"creative_tower: dropnet={rule!r}; expected one of {DROPNET}")


def shown_click_loss(logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE over the rows with a label (a log's shown rows; the others carry NaN)."""
    shown = ~torch.isnan(label)
    return (F.binary_cross_entropy_with_logits(logit[shown], label[shown], reduction="sum")
            / shown.sum().clamp_min(1))


@register_model("creative_tower", config=CreativeTowerConfig)
class CreativeTower(CTRModel):
    def __init__(self, feature_map: FeatureMap, cfg: CreativeTowerConfig, embedding=None) -> None:
        super().__init__(feature_map)
        if cfg.inputs not in INPUTS or cfg.dropnet not in DROPNET:
            raise ConfigError(f"creative_tower: inputs={cfg.inputs!r} (one of {INPUTS}), dropnet={cfg.dropnet!r} "
                              f"(one of {DROPNET})")
        if not 0 <= cfg.p_max <= 1 or cfg.n_ref <= 0 or cfg.alpha < 0 or cfg.tau <= 0:
            raise ConfigError("creative_tower: p_max must be in [0, 1], n_ref > 0, alpha >= 0, tau > 0")
        self.cfg = cfg
        creative, content = feature_map.by_role("creative"), feature_map.by_role("content")
        if creative is None or creative not in feature_map.categorical:
            raise ConfigError("creative_tower: needs a categorical input field with role 'creative'")
        if cfg.inputs != "id" and (content is None or content.kind != "vector" or content not in feature_map.dense):
            raise ConfigError("creative_tower: inputs with content need a vector input field with role 'content'")
        names = [f.name for f in feature_map.categorical]
        unknown = sorted(set(cfg.user_fields) - set(names))
        if unknown:
            raise ConfigError(f"creative_tower: user_fields {unknown} are not categorical input fields ({names})")
        self.user_cols = [names.index(n) for n in cfg.user_fields]
        self.creative_col = names.index(creative.name)
        self.embedding = build_embedding(feature_map, embedding)  # every categorical field's table
        d = self.embedding.dim
        self.content_slice = feature_map.dense_slice(content.name) if cfg.inputs != "id" else None
        self.content = nn.Linear(content.dim, d, bias=False) if cfg.inputs != "id" else None
        creative_in = d * ((cfg.inputs in ("id", "both")) + (cfg.inputs in ("content", "both")))
        self.user_tower = MLP(len(self.user_cols) * d, cfg.hidden_units, out_dim=cfg.out_dim)
        self.creative_tower = MLP(creative_in, cfg.hidden_units, out_dim=cfg.out_dim)
        self.bias = nn.Parameter(torch.zeros(()))
        counts = np.asarray(feature_map.field_frequencies(creative.name), dtype=np.float64)
        self.register_buffer("p_drop", torch.tensor(drop_probability(counts, cfg.dropnet, cfg.p_max, cfg.n_ref),
                                                    dtype=torch.float32), persistent=False)
        unseen = torch.zeros(len(counts), dtype=torch.bool)
        unseen[0] = True  # missing
        unseen[creative.oov_index] = True  # never trained on as itself
        self.register_buffer("unseen", unseen, persistent=False)

    def id_keep(self, ids: torch.Tensor) -> torch.Tensor:
        """1 where a row keeps its creative-ID embedding: a DropNet draw in training, unseen IDs off
        at prediction."""
        if self.training:
            return (torch.rand(ids.shape, device=ids.device) >= self.p_drop[ids]).float()
        return (~self.unseen[ids]).float()

    def forward(self, batch):
        cat_emb = self.embedding(batch["cat"], batch.get("raw"))  # [B, F_cat, d]
        u = self.user_tower(cat_emb[:, self.user_cols].flatten(1))
        parts = []
        if self.cfg.inputs in ("id", "both"):
            ids = batch["cat"][:, self.creative_col]
            parts.append(cat_emb[:, self.creative_col] * self.id_keep(ids)[:, None])
        if self.content is not None:
            parts.append(self.content(batch["dense"][:, self.content_slice]))
        c = self.creative_tower(torch.cat(parts, dim=1))
        return (u * c).sum(-1) + self.bias

    def loss(self, batch, output) -> torch.Tensor:
        logit = logit_of(output)
        click = shown_click_loss(logit, batch["label"])
        if self.cfg.alpha == 0:
            return click
        if "teacher" not in batch:
            raise ConfigError("creative_tower: alpha > 0 distils the teacher's predictions on the creative log "
                              "(data.teacher=<ranker label>, train.train_split=creatives_train)")
        teacher = torch.logit(batch["teacher"].clamp(1e-6, 1 - 1e-6))
        # one ad's creatives = one (request, position) group, contiguous in the log
        seg, n = segments(batch["request"] * 1024 + batch["position"])
        return click + self.cfg.alpha * listwise_loss(logit, teacher, seg, n, self.cfg.tau)
