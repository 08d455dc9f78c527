"""PCF-GNN: pre-trained cross-feature GNN (Li et al., SIGIR 2021, arXiv 2105.07752), the graph,
its pre-training and the frozen cross-feature store; and the explicit pair-statistic table it
replaces (SESCF, the baseline).

Mechanism (notes ``papers.md`` sec. 4):
1. Graph: nodes are the values of chosen fields; for each chosen field pair (a relation r), an
   edge joins two values that co-occur in a pre-training window of the log, carrying the pair's
   statistic a_uv (its smoothed CTR) and a weight w_uv that grows with the co-occurrence count.
2. Encoder: K layers of relation-aware message passing over learnable h0,
   h_i^k = relu(sum_r [W_r^k h_i^{k-1} + U_r^k mean_{j in N_r(i)} h_j^{k-1}])
   (torch-geometric ``HeteroConv`` of ``SAGEConv`` per relation, summed over relations: the
   GraphSAGE / R-GCN form of the notes, with the self term per relation).
3. Pre-training: p_uv = sigmoid(CrossNet_r([h_u, h_v, h_u * h_v])) regressed on a_uv by the
   co-occurrence-weighted squared error  sum_uv w_uv (p_uv - a_uv)^2 / sum_uv w_uv.
4. Serving: the encoder is dropped; the node states h^K are exported as one table per field
   (``CrossFeatureStore``) and p_uv = CrossNet_r(lookup u, lookup v), with no propagation, for
   any pair, seen in the window or not.

Choices where the paper (as far as the notes recover it) is silent:
- the window: the first ``window`` share of the training split (rows are in request-time order),
  so every edge lies strictly before the CTR training rows that follow it; the rows of the window
  are the only ones ``build_graph`` is given (``window_rows``), so nothing later can leak in;
- a_uv = (clicks + ``prior_strength`` * ctr0) / (impressions + ``prior_strength``), ctr0 the
  window's CTR (Bayesian smoothing against 1/1 = 1.0 pairs, the notes' pitfall 3); w_uv =
  log1p(impressions);
- nodes: every index of a chosen field's encoding (``pcf_features.py`` gives a node to each value
  seen at least twice in the window and one shared node to the rest); a node with no edge in the
  window has an untrained state, so lookups send it to its field's OOV node (rare values pooled,
  which the window does see), as the CTR model's own embedding would;
- CrossNet: one small MLP per relation on [h_u, h_v, h_u * h_v] (the notes allow a dot product
  or an MLP); the explicit statistic is regressed in probability space, as the paper's loss reads;
- full-batch training with Adam (the graphs of the chosen pairs have thousands of nodes and
  tens of thousands of edges), on one thread under ``torch.use_deterministic_algorithms``: the
  scatter-sums of message passing otherwise add in thread order, and two pre-trainings of one
  window drifted apart from step 2 (node tables up to 2.9 apart after 300 steps); and the matrix
  products round differently with the thread count, so it is pinned (to one, so that a machine
  of any size gives the same tables). Cost measured on the default window: 8.6 s against 7.5 s;
- the pair table (SESCF) stores, per seen pair, its smoothed CTR (4 bytes) and the pair's key
  (8 bytes): what a server would hold; unseen pairs get ctr0.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import HeteroConv, SAGEConv

from repro.errors import ConfigError
from repro.layers import MLP


@dataclass
class PCFGNNConfig:
    """What the pre-training depends on (any change rebuilds it)."""

    pairs: list[list[str]] = field(default_factory=lambda: [["query_category", "brand_id"], ["user_segment", "shop_id"]])
    window: float = 0.25  # the first share of the training split that the graph is built from
    prior_strength: float = 20.0  # pseudo-impressions at the window's CTR in the smoothed pair CTR
    dim: int = 16
    layers: int = 2
    crossnet_units: list[int] = field(default_factory=lambda: [32])
    epochs: int = 300  # full-batch steps
    lr: float = 0.01
    seed: int = 0


def relation_name(a: str, b: str) -> str:
    return f"{a}_with_{b}"  # torch-geometric reserves "__" in type names


# --------------------------------------------------------------------------- pair statistics
@dataclass
class PairStatistics:
    """One relation's co-occurring pairs in the window, with their counts and smoothed CTR."""

    a: np.ndarray  # encoded index of the first field's value, per pair
    b: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    ctr: np.ndarray  # smoothed
    prior: float  # the window's CTR (what an unseen pair gets)

    @property
    def weight(self) -> np.ndarray:
        return np.log1p(self.impressions)


def pair_statistics(a: np.ndarray, b: np.ndarray, label: np.ndarray, prior_strength: float,
                    prior: float | None = None) -> PairStatistics:
    """Counts and smoothed CTR of every distinct (a, b) pair among the given rows."""
    if not (len(a) == len(b) == len(label)):
        raise ValueError(f"pair_statistics: columns of unequal length {len(a)}, {len(b)}, {len(label)}")
    if len(a) == 0:
        raise ConfigError("PCF-GNN: the pre-training window holds no rows")
    prior = float(label.mean()) if prior is None else prior
    key = a.astype(np.int64) * (int(b.max()) + 1) + b.astype(np.int64)
    uniq, inverse, impressions = np.unique(key, return_inverse=True, return_counts=True)
    clicks = np.bincount(inverse, weights=label.astype(np.float64), minlength=len(uniq))
    ctr = (clicks + prior_strength * prior) / (impressions + prior_strength)
    width = int(b.max()) + 1
    return PairStatistics(uniq // width, uniq % width, impressions, clicks, ctr.astype(np.float32), prior)


# --------------------------------------------------------------------------- the graph
def build_graph(window_rows: dict[str, np.ndarray], label: np.ndarray, vocab: dict[str, int],
                cfg: PCFGNNConfig) -> tuple[HeteroData, dict[str, PairStatistics]]:
    """The heterogeneous co-occurrence graph of the window's rows (and only of them).

    ``window_rows`` maps each chosen field to its encoded column over the window; ``vocab`` gives
    each field's vocabulary size (its node count). Edges go both ways (``rev_<relation>``) so that
    every node type receives messages.
    """
    graph = HeteroData()
    stats: dict[str, PairStatistics] = {}
    prior = float(label.mean()) if len(label) else 0.0
    graph.prior = prior
    for a, b in cfg.pairs:
        for f in (a, b):
            if f not in window_rows or f not in vocab:
                raise ConfigError(f"PCF-GNN: pair field {f!r} is not a categorical field of the data "
                                  f"(known: {sorted(vocab)})")
            graph[f].num_nodes = vocab[f]
        st = pair_statistics(window_rows[a], window_rows[b], label, cfg.prior_strength, prior)
        rel = relation_name(a, b)
        stats[rel] = st
        edge = torch.from_numpy(np.stack([st.a, st.b])).long()
        graph[a, rel, b].edge_index = edge
        graph[a, rel, b].edge_ctr = torch.from_numpy(st.ctr)
        graph[a, rel, b].edge_weight = torch.from_numpy(st.weight.astype(np.float32))
        graph[b, "rev_" + rel, a].edge_index = edge.flip(0)
    return graph, stats


# --------------------------------------------------------------------------- the GNN
class CrossNet(nn.Module):
    """p_uv from two node states: an MLP on [h_u, h_v, h_u * h_v], one per relation."""

    def __init__(self, dim: int, units: list[int], prior: float = 0.5) -> None:
        super().__init__()
        self.mlp = MLP(3 * dim, units, out_dim=1)
        with torch.no_grad():  # start at the window's CTR, not at 0.5 (the regression is on a_uv ~ 0.03)
            self.mlp[-1].bias.fill_(float(np.log(prior / (1 - prior))))

    def forward(self, hu: torch.Tensor, hv: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([hu, hv, hu * hv], dim=1)).squeeze(-1)  # a logit


class CrossFeatureGNN(nn.Module):
    def __init__(self, graph: HeteroData, cfg: PCFGNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.node_types = list(graph.node_types)
        self.relations = [relation_name(a, b) for a, b in cfg.pairs]
        self.h0 = nn.ParameterDict({t: nn.Parameter(torch.randn(graph[t].num_nodes, cfg.dim) * 0.1)
                                    for t in self.node_types})
        self.convs = nn.ModuleList(
            HeteroConv({et: SAGEConv((cfg.dim, cfg.dim), cfg.dim) for et in graph.edge_types}, aggr="sum")
            for _ in range(cfg.layers))
        self.cross = nn.ModuleDict({r: CrossNet(cfg.dim, cfg.crossnet_units, graph.prior) for r in self.relations})

    def encode(self, graph: HeteroData) -> dict[str, torch.Tensor]:
        h = {t: self.h0[t] for t in self.node_types}
        for i, conv in enumerate(self.convs):
            out = conv(h, graph.edge_index_dict)
            h = {t: out.get(t, h[t]) for t in self.node_types}
            if i < len(self.convs) - 1:
                h = {t: torch.relu(v) for t, v in h.items()}
        return h

    def edge_logits(self, graph: HeteroData, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for (a, b), rel in zip(self.cfg.pairs, self.relations):
            u, v = graph[a, rel, b].edge_index
            out[rel] = self.cross[rel](h[a][u], h[b][v])
        return out


def pretraining_loss(graph: HeteroData, logits: dict[str, torch.Tensor], cfg: PCFGNNConfig) -> torch.Tensor:
    """sum_r sum_uv w_uv (sigmoid(logit_uv) - a_uv)^2 / sum w: the co-occurrence-weighted squared error."""
    num, den = 0.0, 0.0
    for (a, b) in cfg.pairs:
        rel = relation_name(a, b)
        store = graph[a, rel, b]
        w = store.edge_weight
        num = num + (w * (torch.sigmoid(logits[rel]) - store.edge_ctr) ** 2).sum()
        den = den + w.sum()
    return num / den


PRETRAIN_THREADS = 1  # pinned: floating-point sums round with the thread count


@contextmanager
def reproducible_kernels(threads: int = PRETRAIN_THREADS) -> Iterator[None]:
    """Deterministic kernels on a fixed thread count for the block; the caller's settings are
    restored after it."""
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    before_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.set_num_threads(before_threads)


def pretrain(graph: HeteroData, cfg: PCFGNNConfig, progress=None) -> tuple[CrossFeatureGNN, list[float]]:
    """Full-batch pre-training; returns the trained GNN and its loss per step. Bit-reproducible:
    the same graph and config give the same weights on any machine and whatever the caller's
    thread count."""
    with reproducible_kernels():
        torch.manual_seed(cfg.seed)
        gnn = CrossFeatureGNN(graph, cfg)
        opt = torch.optim.Adam(gnn.parameters(), lr=cfg.lr)
        history = []
        for step in range(cfg.epochs):
            opt.zero_grad(set_to_none=True)
            loss = pretraining_loss(graph, gnn.edge_logits(graph, gnn.encode(graph)), cfg)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"PCF-GNN pre-training: loss is {loss.item()} at step {step}")
            loss.backward()
            opt.step()
            history.append(loss.item())
            if progress is not None:
                progress(step, loss.item())
    return gnn, history


# --------------------------------------------------------------------------- serving stores
class CrossFeatureStore(nn.Module):
    """The frozen serving form: h^K per field as a table, one CrossNet per relation; p_uv for any
    pair by two lookups and one small MLP (no graph, no propagation). Values without an edge in
    the window are looked up as their field's OOV value."""

    def __init__(self, gnn: CrossFeatureGNN, graph: HeteroData, oov: dict[str, int]) -> None:
        super().__init__()
        self.pairs = [tuple(p) for p in gnn.cfg.pairs]
        self.relations = list(gnn.relations)
        with torch.no_grad():
            h = gnn.encode(graph)
        seen = {t: torch.zeros(graph[t].num_nodes, dtype=torch.bool) for t in gnn.node_types}
        for et in graph.edge_types:
            src, _, dst = et
            seen[src][graph[et].edge_index[0]] = True
            seen[dst][graph[et].edge_index[1]] = True
        for t in gnn.node_types:
            self.register_buffer(f"table_{t}", h[t].detach().clone())
            remap = torch.arange(graph[t].num_nodes)
            remap[~seen[t]] = oov[t]
            self.register_buffer(f"remap_{t}", remap)
        self.cross = gnn.cross
        for p in self.cross.parameters():
            p.requires_grad_(False)

    def table(self, field: str) -> torch.Tensor:
        return getattr(self, f"table_{field}")

    @torch.no_grad()
    def forward(self, ids: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predicted pair CTR of every relation: [B, R]."""
        out = []
        for (a, b), rel in zip(self.pairs, self.relations):
            u = getattr(self, f"remap_{a}")[ids[a]]
            v = getattr(self, f"remap_{b}")[ids[b]]
            out.append(torch.sigmoid(self.cross[rel](self.table(a)[u], self.table(b)[v])))
        return torch.stack(out, dim=1)

    def stored_bytes(self) -> int:
        tables = sum(self.table(t).numel() * self.table(t).element_size() for t in {f for p in self.pairs for f in p})
        return tables + sum(p.numel() * p.element_size() for p in self.cross.parameters())


class PairTable(nn.Module):
    """SESCF: the explicit statistic per seen pair (sorted keys, binary search); the window's CTR
    for a pair never seen."""

    def __init__(self, stats: dict[str, PairStatistics], pairs: list[list[str]], vocab: dict[str, int]) -> None:
        super().__init__()
        self.pairs = [tuple(p) for p in pairs]
        self.width = {}
        for a, b in self.pairs:
            rel = relation_name(a, b)
            st = stats[rel]
            self.width[rel] = vocab[b]
            key = torch.from_numpy(st.a * vocab[b] + st.b).long()  # sorted: np.unique's order
            self.register_buffer(f"key_{rel}", key)
            self.register_buffer(f"ctr_{rel}", torch.from_numpy(st.ctr))
            self.register_buffer(f"prior_{rel}", torch.tensor(st.prior, dtype=torch.float32))

    @torch.no_grad()
    def forward(self, ids: dict[str, torch.Tensor]) -> torch.Tensor:
        out = []
        for a, b in self.pairs:
            rel = relation_name(a, b)
            keys, ctr = getattr(self, f"key_{rel}"), getattr(self, f"ctr_{rel}")
            q = ids[a].long() * self.width[rel] + ids[b].long()
            pos = torch.searchsorted(keys, q).clamp(max=len(keys) - 1)
            hit = keys[pos] == q
            out.append(torch.where(hit, ctr[pos], getattr(self, f"prior_{rel}")))
        return torch.stack(out, dim=1)

    def stored_bytes(self) -> int:
        return sum(getattr(self, f"key_{relation_name(a, b)}").numel() * 8 +
                   getattr(self, f"ctr_{relation_name(a, b)}").numel() * 4 for a, b in self.pairs)
