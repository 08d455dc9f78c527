"""PCF-GNN on the world (data=world_pcf): the window is read alone and held out of train, the
unseen-pair split holds exactly the test rows with a pair the window never saw, the explicit
feature is the window's smoothed pair CTR, and a run reports the unseen-pair AUC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from methods.model_deepening.pcf_features import UNSEEN_SPLIT, WorldWithCrossFeatures, build_cross_features
from repro.errors import ConfigError
from repro.registry import SOURCES
from repro.run import execute, resolve

SMOKE = {"scale": "smoke", "seed": 0, "gnn_epochs": 30}


def source(**overrides) -> WorldWithCrossFeatures:
    return SOURCES.get("world_pcf").factory(SOURCES.config("world_pcf", {**SMOKE, **overrides}))


def window_end(s: WorldWithCrossFeatures) -> int:
    lo, hi = s.world._request_range("train")
    return lo + int(round(s.cfg.window * (hi - lo)))


@pytest.fixture(scope="module")
def table_source():
    return source(cross_features="pair_table")


def table(chunks) -> pd.DataFrame:
    return pa.concat_tables(list(chunks)).to_pandas()


def test_the_window_is_read_alone_and_never_trained_on(table_source, monkeypatch):
    s = source(cross_features="pair_table")
    read = []
    original = s.world.chunks

    def spy(split):
        for chunk in original(split):
            read.append((split, int(chunk.column("request_id").to_numpy().min())))
            yield chunk

    monkeypatch.setattr(s.world, "chunks", spy)
    cf = build_cross_features(s.world, s.cfg, with_gnn=False)
    end = window_end(s)
    # only train chunks, and none that starts after the window (the reader stops at the first one past it)
    assert {split for split, _ in read} == {"train"}
    assert sum(start >= end for _, start in read) <= 1
    train = table(table_source.chunks("train"))
    full = table(table_source.world.chunks("train"))
    assert train["request_id"].min() >= end
    assert len(train) == (full["request_id"] >= end).sum()
    assert cf.window_rows == (full["request_id"] < end).sum()


def test_the_explicit_feature_is_the_windows_smoothed_pair_ctr(table_source):
    s = table_source
    full = table(s.world.chunks("train"))
    window = full[full["request_id"] < window_end(s)]
    prior = window["click"].mean()
    k = s.cfg.prior_strength
    g = window.groupby(["query_category", "brand_id"])["click"].agg(["count", "sum"])
    valid = table(s.chunks("valid"))
    col = "pair_ctr_query_category_with_brand_id"
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    # values seen >= node_min_count times keep their own node: pairs of such values match the groupby
    counts = {f: window[f].value_counts() for f in ("query_category", "brand_id")}
    own = valid.apply(lambda r: counts["query_category"].get(r["query_category"], 0) >= 2
                      and counts["brand_id"].get(r["brand_id"], 0) >= 2, axis=1)
    checked = 0
    for _, r in valid[own].head(300).iterrows():
        key = (r["query_category"], r["brand_id"])
        p = (g.loc[key, "sum"] + k * prior) / (g.loc[key, "count"] + k) if key in g.index else prior
        assert r[col] == pytest.approx(logit(p) - logit(prior), abs=1e-4)
        checked += 1
    assert checked == 300


def test_the_unseen_pair_split_is_the_test_rows_with_a_pair_the_window_never_saw(table_source):
    s = table_source
    full = table(s.world.chunks("train"))
    window = full[full["request_id"] < window_end(s)]
    seen = [set(zip(window[a], window[b])) for a, b in s.cfg.pairs]
    test = table(s.world.chunks("test"))
    unseen = np.array([any((r[a], r[b]) not in st for (a, b), st in zip(s.cfg.pairs, seen))
                       for _, r in test.iterrows()])
    split = table(s.chunks(UNSEEN_SPLIT))
    assert 0 < len(split) < len(test)
    assert split["request_id"].tolist() == test.loc[unseen, "request_id"].tolist()
    assert s.splits[-1] == UNSEEN_SPLIT and "test_random" in s.splits


@pytest.mark.parametrize("overrides, words", [
    ({"cross_features": "pcf", "train_on_window": True}, "leak"),
    ({"cross_features": "hashed"}, "cross_features"),
    ({"pairs": [["query_category", "no_such_field"]]}, "no_such_field"),
    ({"window": 1.0}, "window"),
])
def test_bad_settings_are_named(overrides, words):
    with pytest.raises(ConfigError, match=words):
        source(**overrides)


def test_a_pcf_run_reports_the_unseen_pair_auc_and_takes_the_pcf_columns(run_config):
    cfg = run_config()
    cfg["data"] = {**cfg["data"], "name": "world_pcf", "cross_features": "pcf", "gnn_epochs": 30}
    manifest = execute(cfg)
    assert manifest["status"] == "done", manifest.get("error")
    metrics = json.loads((resolve(cfg).run_dir / "metrics.json").read_text())
    assert 0.5 < metrics[UNSEEN_SPLIT]["auc"] < 1
    assert "bootstrap" in metrics[UNSEEN_SPLIT]
    fm = json.loads((Path(cfg["data"]["cache_root"]) / manifest["data"]["root"] / "feature_map.json").read_text())
    dense = [f["name"] for f in fm["fields"] if f["kind"] == "dense"]
    assert "pcf_query_category_with_brand_id" in dense and "pcf_user_segment_with_shop_id" in dense

