"""PCF-GNN's cross features on the simulated world: the pre-training window, the frozen store and
the explicit pair table, applied as a data source (``data=world_pcf``) so that any CTR model of
the zoo (DeepFM, DCNv2, ...) takes the predicted pair statistic as an extra input.

Why a source and not a model: what PCF-GNN hands the CTR model at training and serving is a
feature (``p_uv`` of each chosen field pair, looked up in the frozen store without propagation),
and its pre-training must see only a window strictly before the CTR training rows. A source is
the one place of the data flow (raw -> columnar cache -> batches -> model) that can hold the
window back from the training split and add a column computed from it; the prepared cache is
fingerprinted by the source's config and code, so the three seeds of a row reuse one
pre-training and any change to the window, the pairs, the GNN or this code rebuilds it. The
pre-training itself lives in ``methods/model_deepening/pcf_gnn.py``.

The splits (the world's, with the window removed from train):
- ``train``: the world's training requests after the window (the first ``window`` share of the
  training requests, in request-time order); with ``train_on_window`` (only allowed without
  cross features, whose statistics are fitted on the window) the window's rows are kept, which is
  what a user without PCF-GNN would train on;
- ``valid``, ``test``, ``test_random``: the world's, unchanged;
- ``test_unseen_pairs``: the ``test`` rows in which at least one chosen pair of raw values never
  occurred in the window: where the explicit table can only answer with the window's CTR and any
  gain must come from the node embeddings' generalisation (the paper's claim). It is defined by
  the window alone, so every row of an experiment, with or without cross features, is evaluated
  on the same rows.

The features (``cross_features``): ``none``; ``pair_table``, the explicit statistic (SESCF: the
smoothed pair CTR of the window, the window's CTR for a pair never seen); ``pcf``, the frozen
PCF-GNN's prediction; ``both``. Each is one dense column per pair holding the log-odds relative
to the window's CTR, logit(p) - logit(ctr0), so that "no information" is 0.

Choices the paper leaves open, besides those of ``pcf_gnn.py``:
- the nodes of a field are its raw values seen at least ``node_min_count`` times in the window;
  rarer and unseen values share one node (index 0), which the window does see (pooled rare
  values), as a CTR model's OOV embedding would; the pair table is keyed by the same node ids, so
  both stores answer for the same pairs;
- the window's rows are never trained on by a row with cross features (target leakage: the
  feature would have been fitted on the row's own label).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from methods.model_deepening.pcf_gnn import (
    CrossFeatureStore,
    PairTable,
    PCFGNNConfig,
    build_graph,
    pretrain,
    relation_name,
)
from repro.data.source import RawField
from repro.errors import ConfigError
from repro.io import stable_hash
from repro.registry import ROOT, register_source

WORLD_FILE = ROOT / "datasets" / "world.py"


def _world_module() -> ModuleType:
    """datasets/world.py under the name the plugin loader gives it (``datasets`` is not a package:
    the name would clash with Hugging Face's), loaded here first when this module comes first."""
    name = "adrepro_datasets.world"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WORLD_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_world = _world_module()
SimulatedSearchAdsWorld, WorldConfig = _world.SimulatedSearchAdsWorld, _world.WorldConfig

CROSS_FEATURES = ("none", "pair_table", "pcf", "both")
UNSEEN_SPLIT = "test_unseen_pairs"


@dataclass
class WorldPCFConfig(WorldConfig):
    """The world's knobs, plus the window and the cross features."""

    cross_features: str = "pcf"  # none | pair_table | pcf | both
    pairs: list[list[str]] = field(default_factory=lambda: [["query_category", "brand_id"], ["user_segment", "shop_id"]])
    window: float = 0.25  # the first share of the training requests that the graph is built from
    train_on_window: bool = False  # keep the window's rows in train (cross_features=none only)
    node_min_count: int = 2
    prior_strength: float = 20.0
    gnn_dim: int = 16
    gnn_layers: int = 2
    gnn_epochs: int = 300
    gnn_lr: float = 0.01
    gnn_seed: int = 0

    def world(self) -> WorldConfig:
        names = {f.name for f in dataclasses.fields(WorldConfig)}
        return WorldConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def gnn(self) -> PCFGNNConfig:
        return PCFGNNConfig(pairs=[list(p) for p in self.pairs], window=self.window, prior_strength=self.prior_strength,
                            dim=self.gnn_dim, layers=self.gnn_layers, epochs=self.gnn_epochs, lr=self.gnn_lr,
                            seed=self.gnn_seed)


@dataclass
class CrossFeatures:
    """Everything built from the window: node ids per field, both stores, the raw pairs seen."""

    nodes: dict[str, np.ndarray]  # field -> sorted raw values that own a node (index = position + 1)
    table: PairTable
    store: CrossFeatureStore | None
    seen_pairs: dict[str, np.ndarray]  # relation -> sorted raw-pair keys seen in the window
    raw_width: dict[str, int]  # relation -> the multiplier of the raw pair key
    prior: float
    window_rows: int
    pretrain_loss: list[float]

    def node_ids(self, name: str, raw: np.ndarray) -> np.ndarray:
        values = self.nodes[name]
        pos = np.searchsorted(values, raw).clip(max=max(len(values) - 1, 0))
        hit = values[pos] == raw if len(values) else np.zeros(len(raw), dtype=bool)
        return np.where(hit, pos + 1, 0).astype(np.int64)

    def unseen(self, rel: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        b = b.astype(np.int64)
        outside = b >= self.raw_width[rel]  # a value larger than any of the window: never seen
        key = a.astype(np.int64) * self.raw_width[rel] + np.where(outside, 0, b)
        seen = self.seen_pairs[rel]
        pos = np.searchsorted(seen, key).clip(max=len(seen) - 1)
        return outside | (seen[pos] != key)


def window_end(world: SimulatedSearchAdsWorld, window: float) -> int:
    """The first request id after the window: the first ``window`` share of the training requests."""
    lo, hi = world._request_range("train")
    return lo + int(round(window * (hi - lo)))


def build_cross_features(world: SimulatedSearchAdsWorld, cfg: WorldPCFConfig, with_gnn: bool,
                         verbose: bool = False) -> CrossFeatures:
    """Read the window's rows (the first ``cfg.window`` of the training requests, and nothing
    after them), build the graph and the pair table, and pre-train the GNN when ``with_gnn``."""
    gcfg = cfg.gnn()
    fields = sorted({f for p in gcfg.pairs for f in p})
    end = window_end(world, cfg.window)
    raw: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    labels = []
    for chunk in world.chunks("train"):
        rid = chunk.column("request_id").to_numpy()
        keep = rid < end
        if not keep.any():
            break
        for f in fields:
            raw[f].append(chunk.column(f).to_numpy()[keep])
        labels.append(chunk.column(world.label).to_numpy()[keep])
    window = {f: np.concatenate(v) for f, v in raw.items()}
    label = np.concatenate(labels).astype(np.float32)
    if not len(label):
        raise ConfigError(f"world_pcf: window={cfg.window} holds no training request")
    nodes = {}
    for f in fields:
        values, counts = np.unique(window[f], return_counts=True)
        nodes[f] = values[counts >= cfg.node_min_count]
    cf = CrossFeatures(nodes, None, None, {}, {}, float(label.mean()), len(label), [])  # type: ignore[arg-type]
    ids = {f: cf.node_ids(f, window[f]) for f in fields}
    vocab = {f: len(nodes[f]) + 1 for f in fields}
    graph, stats = build_graph(ids, label, vocab, gcfg)
    cf.table = PairTable(stats, gcfg.pairs, vocab)
    for a, b in gcfg.pairs:
        rel = relation_name(a, b)
        width = int(max(window[b].max(), 0)) + 1
        cf.raw_width[rel] = width
        cf.seen_pairs[rel] = np.unique(window[a].astype(np.int64) * width + window[b].astype(np.int64))
    if with_gnn:
        def progress(step: int, loss: float) -> None:
            if verbose and (step + 1) % 100 == 0:
                print(f"[world_pcf] pre-training step {step + 1}/{gcfg.epochs}: loss {loss:.3e}", flush=True)

        gnn, cf.pretrain_loss = pretrain(graph, gcfg, progress)
        cf.store = CrossFeatureStore(gnn, graph, oov={f: 0 for f in fields})
    return cf


@register_source("world_pcf", config=WorldPCFConfig)
class WorldWithCrossFeatures:
    """Source plugin: the simulated world with the window held out of train and PCF-GNN's (or the
    explicit table's) pair statistic as dense columns (see the module docstring)."""

    name = "world_pcf"
    label = SimulatedSearchAdsWorld.label
    weight = None
    truth_columns = SimulatedSearchAdsWorld.truth_columns

    def __init__(self, cfg: WorldPCFConfig) -> None:
        if cfg.cross_features not in CROSS_FEATURES:
            raise ConfigError(f"world_pcf: cross_features={cfg.cross_features!r}; expected one of {CROSS_FEATURES}")
        if not 0 < cfg.window < 1:
            raise ConfigError(f"world_pcf: window={cfg.window} must lie in (0, 1)")
        if cfg.train_on_window and cfg.cross_features != "none":
            raise ConfigError("world_pcf: train_on_window=true needs cross_features=none: the cross features are "
                              "fitted on the window's labels, so training on its rows would leak them")
        if not cfg.pairs or any(len(p) != 2 for p in cfg.pairs):
            raise ConfigError(f"world_pcf: pairs={cfg.pairs} must be a non-empty list of [field, field] pairs")
        self.world = SimulatedSearchAdsWorld(cfg.world())
        known = {f.name for f in self.world.fields() if f.kind == "categorical"}
        for f in {f for p in cfg.pairs for f in p}:
            if f not in known:
                raise ConfigError(f"world_pcf: pair field {f!r} is not a categorical field of the world "
                                  f"(known: {sorted(known)})")
        self.cfg = cfg
        self.split_protocol = (self.world.split_protocol + f"; train without its first {cfg.window:.0%} of requests "
                               f"(the cross-feature window){' (kept here)' if cfg.train_on_window else ''}; "
                               f"{UNSEEN_SPLIT}: test rows with a pair never seen in the window")

    @property
    def splits(self) -> tuple[str, ...]:
        return (*self.world.splits, UNSEEN_SPLIT)

    @property
    def relations(self) -> list[str]:
        return [relation_name(a, b) for a, b in self.cfg.pairs]

    def feature_kinds(self) -> list[tuple[str, int]]:
        """(store kind, relation index) of each added column, in column order."""
        kinds = {"none": [], "pair_table": ["pair_ctr"], "pcf": ["pcf"], "both": ["pair_ctr", "pcf"]}
        return [(k, r) for k in kinds[self.cfg.cross_features] for r in range(len(self.relations))]

    def feature_columns(self) -> list[str]:
        return [f"{kind}_{self.relations[r]}" for kind, r in self.feature_kinds()]

    def fields(self) -> list[RawField]:
        return [*self.world.fields(), *(RawField(c, "dense") for c in self.feature_columns())]

    def fingerprint(self) -> str:
        # This file, the world's and what they reach (the GNN, the layers), comments and docstrings
        # dropped: a change to any of them rebuilds the prepared data, hence the pre-training. Not
        # the harness's code identity, whose bookkeeping (run.resolve, say) cannot change a feature.
        from repro import identity

        files = tuple(str(p.resolve().relative_to(ROOT.resolve())) for p in (Path(__file__), WORLD_FILE))
        return stable_hash({"config": dataclasses.asdict(self.cfg),
                            "code": identity.files_identity(files, identity.disk_reader(ROOT))})

    def describe(self) -> dict:
        return {**self.world.describe(), **{k: v for k, v in dataclasses.asdict(self.cfg).items()
                                            if k not in self.world.describe()}}

    def expected_rows(self, split: str) -> int | None:
        if split == UNSEEN_SPLIT:
            return None
        rows = self.world.expected_rows(split)
        if split == "train" and not self.cfg.train_on_window:
            rows = int(rows * (1 - self.cfg.window))
        return rows

    @cached_property
    def cross(self) -> CrossFeatures:
        return build_cross_features(self.world, self.cfg, with_gnn=self.cfg.cross_features in ("pcf", "both"),
                                    verbose=True)

    def chunks(self, split: str) -> Iterator[pa.Table]:
        if split not in self.splits:
            raise KeyError(f"world_pcf: unknown split {split!r}; expected one of {self.splits}")
        end = window_end(self.world, self.cfg.window)
        for chunk in self.world.chunks("test" if split == UNSEEN_SPLIT else split):
            if split == "train" and not self.cfg.train_on_window:
                chunk = chunk.filter(pa.array(chunk.column("request_id").to_numpy() >= end))
            if split == UNSEEN_SPLIT:
                unseen = np.zeros(chunk.num_rows, dtype=bool)
                for (a, b), rel in zip(self.cfg.pairs, self.relations):
                    unseen |= self.cross.unseen(rel, chunk.column(a).to_numpy(), chunk.column(b).to_numpy())
                chunk = chunk.filter(pa.array(unseen))
            if chunk.num_rows:
                yield self._with_features(chunk)

    def _with_features(self, chunk: pa.Table) -> pa.Table:
        if self.cfg.cross_features == "none":
            return chunk
        cf = self.cross
        ids = {f: torch.from_numpy(cf.node_ids(f, chunk.column(f).to_numpy()))
               for f in {f for p in self.cfg.pairs for f in p}}
        prior_logit = float(np.log(cf.prior / (1 - cf.prior)))
        stores = {"pair_ctr": cf.table, "pcf": cf.store}
        predicted = {kind: stores[kind](ids).double().clamp(1e-6, 1 - 1e-6).numpy()
                     for kind in {k for k, _ in self.feature_kinds()}}
        for col, (kind, r) in zip(self.feature_columns(), self.feature_kinds()):
            p = predicted[kind][:, r]
            chunk = chunk.append_column(col, pa.array((np.log(p / (1 - p)) - prior_logit).astype(np.float32)))
        return chunk
