"""APG: adaptive parameter generation (Yan et al., NeurIPS 2022, arXiv 2203.16218; "AdaptPGM" in
the review), in the hidden layers of DNN, DeepFM or DCN-V2 (``base``).

Mechanism (notes ``papers.md`` sec. 3). A hidden layer y = relu(x W + b) gets per-row weights
W_i generated from a condition z_i. The efficient form used here never builds W_i:

    W_i = U S_i V,   U: [N, K], S_i: [K, K], V: [K, M]      (K = ``rank`` of the layer, K << N, M)
    y_i = relu(((x_i U) S_i) V + b_i)                        evaluated from the input side
    S_i, b_i = reshape(G(z_i))                               G: the hypernet, an MLP

U and V are shared by every row; only S_i (K^2 numbers) and, with ``generate_bias``, b_i (M) are
generated. Over-parameterisation (``overparam`` = P > K) trains U = U_l U_r ([N, P] x [P, K]) and
V = V_l V_r ([K, P] x [P, M]); the products are merged once for evaluation (cached while the
module is in eval mode, dropped by ``train()``) and for export (``merge_()``), so inference pays
for U and V only. ``rank = 0`` is *basic* APG: W_i = reshape(G(z_i)) in full ([N, M] per row),
kept for the efficiency comparison only (it costs O(B N M) memory).

Condition modes (``condition``):
- ``group``: z_i = the embeddings of ``condition_fields`` (the shared field embeddings of, e.g.,
  the scene or the user segment), the same for every layer;
- ``self``: z_i = the layer's own input x_i (what the public reproductions use);
- ``mix``: z_i = [group condition || x_i], concatenated on the input side of the hypernet.

Choices where the paper (as far as the notes recover it) is silent:
- only the deep tower's hidden layers are generated; its output layer, the FM and the cross
  network stay static (as in FuxiCTR's port: the review's AdaptPGM adapts "the hidden layers");
- one hypernet per layer, ``hypernet_units`` wide with ReLU, fed the condition as it is (no
  stop-gradient: the condition embeddings are shared with the rest of the model and trained by it);
- U, V (or their factors) xavier-normal, as in FuxiCTR's port; the hypernet as ``nn.Linear``;
- mix-wise aggregates on the input side (concatenation); the output-side variant is not built;
- ``rank`` is per hidden layer and must be <= min(in, out) of that layer (the notes' pitfall 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from repro.errors import ConfigError
from repro.layers import MLP
from repro.registry import register_model
from repro.towers import ConditionedConfig, ConditionedTowerModel

CONDITIONS = ("group", "self", "mix")


@dataclass
class APGConfig(ConditionedConfig):
    condition: str = "group"  # group | self | mix
    rank: list[int] = field(default_factory=lambda: [32, 16, 8])  # K per hidden layer; 0 = basic APG
    overparam: int = 0  # P > K trains U = U_l U_r and V = V_l V_r; 0 = off
    hypernet_units: list[int] = field(default_factory=lambda: [64])
    generate_bias: bool = True


def _xavier(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_normal_(torch.empty(*shape)))


class APGLinear(nn.Module):
    """One APG layer: [B, N] x condition [B, C] -> [B, M] (before the activation)."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, condition_dim: int, hypernet_units: list[int],
                 overparam: int = 0, generate_bias: bool = True) -> None:
        super().__init__()
        if rank < 0 or rank > min(in_dim, out_dim):
            raise ConfigError(f"APG: rank {rank} must be within 0..min(in, out) = {min(in_dim, out_dim)} "
                              f"for a {in_dim} -> {out_dim} layer")
        if overparam and overparam <= rank:
            raise ConfigError(f"APG: overparam ({overparam}) must exceed the rank ({rank}) or be 0")
        if overparam and rank == 0:
            raise ConfigError("APG: over-parameterisation needs the low-rank form (rank > 0)")
        self.in_dim, self.out_dim, self.rank, self.overparam = in_dim, out_dim, rank, overparam
        self.generate_bias = generate_bias
        if rank == 0:
            generated = in_dim * out_dim
        else:
            generated = rank * rank
            if overparam:
                self.U_l, self.U_r = _xavier(in_dim, overparam), _xavier(overparam, rank)
                self.V_l, self.V_r = _xavier(rank, overparam), _xavier(overparam, out_dim)
            else:
                self.U, self.V = _xavier(in_dim, rank), _xavier(rank, out_dim)
        self.hypernet = MLP(condition_dim, hypernet_units, out_dim=generated + (out_dim if generate_bias else 0))
        self.bias = None if generate_bias else nn.Parameter(torch.zeros(out_dim))
        self._merged: tuple[torch.Tensor, torch.Tensor] | None = None

    def train(self, mode: bool = True) -> "APGLinear":
        self._merged = None  # merged factors are valid for one stretch of eval mode only
        return super().train(mode)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """U [N, K] and V [K, M]: the products of the over-parameterised factors, merged once per
        stretch of eval mode (and recomputed every step in training, where they change)."""
        if not self.overparam:
            return self.U, self.V
        if self.training:
            return self.U_l @ self.U_r, self.V_l @ self.V_r
        if self._merged is None:
            with torch.no_grad():
                self._merged = (self.U_l @ self.U_r, self.V_l @ self.V_r)
        return self._merged

    @torch.no_grad()
    def merge_(self) -> "APGLinear":
        """Export form: replace U_l U_r and V_l V_r by their products for good (same outputs)."""
        if self.overparam:
            U, V = self.U_l @ self.U_r, self.V_l @ self.V_r
            del self.U_l, self.U_r, self.V_l, self.V_r
            self.U, self.V = nn.Parameter(U), nn.Parameter(V)
            self.overparam, self._merged = 0, None
        return self

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        g = self.hypernet(condition)
        if self.rank == 0:  # basic APG: the full W_i per row
            W = g[:, : self.in_dim * self.out_dim].view(-1, self.in_dim, self.out_dim)
            y = torch.bmm(x.unsqueeze(1), W).squeeze(1)
            rest = g[:, self.in_dim * self.out_dim:]
        else:
            k = self.rank
            U, V = self.factors()
            S = g[:, : k * k].view(-1, k, k)
            y = torch.bmm((x @ U).unsqueeze(1), S).squeeze(1) @ V
            rest = g[:, k * k:]
        return y + (rest if self.generate_bias else self.bias)


class APGTower(nn.Module):
    """The deep tower with APG hidden layers and a static output layer (``out_dim``)."""

    def __init__(self, in_dim: int, cfg: APGConfig, condition_dim: int, out_dim: int | None) -> None:
        super().__init__()
        if cfg.condition not in CONDITIONS:
            raise ConfigError(f"APG: unknown condition {cfg.condition!r}; expected one of {CONDITIONS}")
        if len(cfg.rank) != len(cfg.hidden_units):
            raise ConfigError(f"APG: rank {cfg.rank} needs one entry per hidden layer {cfg.hidden_units}")
        self.condition = cfg.condition
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_dim
        for h, k in zip(cfg.hidden_units, cfg.rank):
            z = {"group": condition_dim, "self": width, "mix": condition_dim + width}[cfg.condition]
            self.layers.append(APGLinear(width, h, k, z, cfg.hypernet_units, cfg.overparam, cfg.generate_bias))
            self.norms.append(nn.BatchNorm1d(h) if cfg.batch_norm else nn.Identity())
            width = h
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else width

    def forward(self, x: torch.Tensor, condition_emb: torch.Tensor, condition_ids: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, norm in zip(self.layers, self.norms):
            z = {"group": condition_emb, "self": h}.get(self.condition)
            if z is None:
                z = torch.cat([condition_emb, h], dim=1)
            h = self.dropout(torch.relu(norm(layer(h, z))))
        return self.head(h) if self.head is not None else h


@register_model("apg", config=APGConfig)
class APG(ConditionedTowerModel):
    """DNN / DeepFM / DCN-V2 (``base``) with APG hidden layers; see the module docstring."""

    def build_tower(self, in_dim, cfg, condition_dim, condition_vocab, out_dim):
        if cfg.condition in ("group", "mix") and not cfg.condition_fields:
            raise ConfigError(f"APG: condition {cfg.condition!r} needs condition_fields")
        return APGTower(in_dim, cfg, condition_dim, out_dim)

    def merge_(self) -> "APG":
        """Merge every over-parameterised layer for export (outputs unchanged)."""
        for m in self.modules():
            if isinstance(m, APGLinear):
                m.merge_()
        return self
