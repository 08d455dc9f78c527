"""Measurement ``pcf_store``: what a server would hold for the cross features of the default
``world_pcf`` data, the explicit pair table (SESCF) against PCF-GNN's frozen store, both built from
the same window, with their lookup latency and the share of test rows whose pairs the window
never saw. Apart from ``pcf_features.py`` so that the data source's code (and so its prepared
cache and pre-training) does not depend on the measurement harness."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from methods.model_deepening.pcf_features import UNSEEN_SPLIT, WorldPCFConfig, WorldWithCrossFeatures
from repro.measurements import median_ms, register_measurement


@dataclass
class PCFStoreConfig:
    """The default world_pcf data (its window, pairs and GNN); what a server would hold."""

    scale: str = "default"
    crosses: bool = True
    lookup_batch: int = 4096
    rounds: int = 50
    threads: int = 2


@register_measurement("pcf_store", config=PCFStoreConfig)
def pcf_store(cfg: PCFStoreConfig) -> dict:
    """Bytes and lookup latency of the explicit pair table (SESCF) against PCF-GNN's serving store
    (node tables + CrossNet), both built from the same window; the share of test rows whose pairs
    the window never saw."""
    torch.set_num_threads(cfg.threads)
    source = WorldWithCrossFeatures(WorldPCFConfig(scale=cfg.scale, crosses=cfg.crosses, cross_features="both"))
    started = time.perf_counter()
    cf = source.cross
    build_s = time.perf_counter() - started
    pairs = [tuple(p) for p in source.cfg.pairs]
    fields = sorted({f for p in pairs for f in p})
    test = pa.concat_tables(list(source.world.chunks("test")))
    raw = {f: test.column(f).to_numpy() for f in fields}
    unseen = {rel: cf.unseen(rel, raw[a], raw[b]) for (a, b), rel in zip(pairs, source.relations)}
    any_unseen = np.logical_or.reduce(list(unseen.values()))
    ids = {f: torch.from_numpy(cf.node_ids(f, raw[f][: cfg.lookup_batch])) for f in fields}
    table_ms = median_ms(lambda: cf.table(ids), cfg.rounds)
    store_ms = median_ms(lambda: cf.store(ids), cfg.rounds)
    table_bytes, store_bytes = cf.table.stored_bytes(), cf.store.stored_bytes()
    seen = sum(len(getattr(cf.table, f"key_{rel}")) for rel in source.relations)
    nodes = sum(len(cf.nodes[f]) + 1 for f in fields)
    rows = [
        ["pair table (SESCF)", f"{seen:,} pairs", f"{table_bytes:,}", "1.000", f"{table_ms:.3f}"],
        ["PCF-GNN store", f"{nodes:,} nodes x {source.cfg.gnn_dim}", f"{store_bytes:,}",
         f"{store_bytes / table_bytes:.3f}", f"{store_ms:.3f}"],
    ]
    notes = [
        f"window: the first {source.cfg.window:.0%} of the training requests, {cf.window_rows:,} rows, CTR {cf.prior:.4f}; "
        f"pairs {', '.join(' x '.join(p) for p in pairs)}",
        f"pair table: 8-byte key + 4-byte smoothed CTR per seen pair; store: one {source.cfg.gnn_dim}-dim fp32 row per "
        f"node (values seen >= {source.cfg.node_min_count} times in the window, plus one shared rare/unseen node) "
        f"and the CrossNets' weights",
        f"pre-training ({source.cfg.gnn_epochs} full-batch steps) with the window's read: {build_s:.1f} s; "
        f"weighted squared error {cf.pretrain_loss[0]:.3e} -> {cf.pretrain_loss[-1]:.3e}",
        "test rows with a pair never seen in the window: "
        + ", ".join(f"{rel} {u.mean():.1%}" for rel, u in unseen.items())
        + f"; either: {any_unseen.mean():.1%} ({int(any_unseen.sum()):,} of {len(any_unseen):,} rows, the "
        f"`{UNSEEN_SPLIT}` split)",
        f"lookup: {cfg.lookup_batch} test rows, every pair, median of {cfg.rounds} calls (binary search in the "
        "sorted keys vs two row lookups and the CrossNet MLP)",
    ]
    return {"columns": ["store", "entries", "bytes", "bytes / pair table", f"lookup ms ({cfg.lookup_batch} rows)"],
            "rows": rows, "notes": notes}
