"""The data the cascade work needs (issue 7): the world's candidate log, cold creatives, unlabelled
splits through preparation, fields a model leaves out by role, predictions kept for a teacher,
and the position-free metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score

from repro import metrics
from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import DataError
from repro.registry import MODELS
from repro.run import execute, load_predictions, resolve
from tests.conftest import world

CASCADE = {"candidate_share": 0.1}


def split_frames(source, splits=None) -> dict[str, pd.DataFrame]:
    parts: dict[str, list[pa.Table]] = {}
    for split, chunk in source.split_chunks(tuple(splits or source.splits)):
        parts.setdefault(split, []).append(chunk)
    return {s: pa.concat_tables(v).to_pandas() for s, v in parts.items()}


@pytest.fixture(scope="module")
def logged():
    return split_frames(world(**CASCADE))


def test_the_candidate_log_leaves_the_shown_rows_as_they_were(logged):
    plain = split_frames(world(), ("train", "test"))
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(logged[split], plain[split])


def test_the_candidate_logs_shown_rows_are_the_training_rows(logged):
    cands, train = logged["candidates_train"], logged["train"]
    shown = cands[cands["shown"]].sort_values(["request_id", "position"]).reset_index(drop=True)
    rows = train[train["request_id"].isin(cands["request_id"])].reset_index(drop=True)
    assert len(shown) == len(rows) > 1000
    for col in train.columns:
        expected = rows[col].to_numpy()
        got = shown[col].to_numpy().astype(expected.dtype)
        np.testing.assert_array_equal(got, expected, err_msg=col)


def test_every_retrieved_candidate_is_logged_once_and_only_shown_ones_carry_a_label(logged):
    cands = logged["candidates_train"]
    w = world(**CASCADE)
    per_request = cands.groupby("request_id")
    assert per_request["ad_id"].nunique().equals(per_request.size())  # no duplicate ad in a request
    # the logged count equals the distinct ads retrieval drew for that request
    distinct = w._simulate(0, w.cfg.chunk_requests)["valid"].sum(1)
    logged_ids = per_request.size()
    first_chunk = logged_ids[logged_ids.index < w.cfg.chunk_requests]
    np.testing.assert_array_equal(first_chunk.to_numpy(), distinct[first_chunk.index.to_numpy()])
    assert cands.loc[~cands["shown"], "click"].isna().all()
    assert cands.loc[cands["shown"], "click"].notna().all()
    assert (cands.loc[~cands["shown"], "position"] == 0).all()
    assert per_request["shown"].sum().max() == w.cfg.slots
    # a tenth of the requests are logged, drawn from a stream of their own
    share = cands["request_id"].nunique() / logged["train"]["request_id"].nunique()
    assert 0.08 < share < 0.12
    # p_click at the shown position is the examination times the position-free relevance
    shown = cands[cands["shown"]]
    np.testing.assert_allclose(shown["p_click"], shown["position"] ** -shown["eta"] * shown["relevance"])


def test_cold_creatives_are_born_in_valid_or_test_and_never_shown_before_birth():
    cold, warm = world(cold_creatives=0.5), world()
    frames, plain = split_frames(cold, ("train", "valid", "test")), split_frames(warm, ("train", "valid", "test"))
    birth = cold._entities["creative_birth"]
    valid_start = cold._request_range("valid")[0]
    assert (birth[:: cold.cfg.creatives_per_ad] == -1).all()  # an ad's first creative is never cold
    born = birth[birth >= 0]
    assert len(born) > 0 and born.min() >= valid_start
    first_seen = {}
    for split in ("train", "valid", "test"):
        t = frames[split]
        assert (birth[t["creative_id"]] <= t["request_id"]).all(), f"{split}: a creative shown before its birth"
        for c in t["creative_id"].unique():
            first_seen.setdefault(c, split)
    assert sum(s != "train" for s in first_seen.values()) > 100
    # one knob, one effect: the same requests, ads and positions; only creatives (and what follows) move
    for split in ("train", "test"):
        keys = ["request_id", "user_id", "query_id", "ad_id", "position", "log_bid", "is_random"]
        pd.testing.assert_frame_equal(frames[split][keys], plain[split][keys])
        changed = (frames[split]["creative_id"] != plain[split]["creative_id"]).mean()
        assert 0.05 < changed < 0.6
    # without cold creatives, the replacement stream is never consulted
    assert (warm._entities["creative_birth"] == -1).all()


def test_knob_values_outside_their_range_are_config_errors():
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="candidate_share"):
        world(candidate_share=1.5)
    with pytest.raises(ConfigError, match="cold_creatives"):
        world(cold_creatives=-0.1)


@pytest.fixture(scope="module")
def cascade_data(tmp_path_factory) -> PreparedDataset:
    root = prepare(world(**CASCADE), PrepareConfig(min_count=2, cache_root=str(tmp_path_factory.mktemp("c"))),
                   verbose=False)
    return PreparedDataset(root)


def test_unlabelled_splits_keep_their_unlabelled_rows_as_nan(cascade_data, logged):
    data = cascade_data
    assert data.unlabelled_splits == ("candidates_train", "candidates_valid", "candidates_test")
    for split in data.unlabelled_splits:
        assert data.num_rows(split) == len(logged[split])
        y = data.column(split, "label")
        truth = data.truth(split)
        assert np.isnan(y[~truth["shown"].to_numpy()]).all()
        np.testing.assert_array_equal(y[truth["shown"].to_numpy()],
                                      logged[split].loc[logged[split]["shown"], "click"].to_numpy())
        assert {"relevance_creative_0", "logging_score", "eta"} <= set(truth.columns)
    assert "shown" not in data.truth("train").columns
    assert data.provenance["rejected_rows"]["candidates_train"] == 0
    # vocabularies come from the shown training rows only
    assert data.feature_map.train_rows == len(logged["train"])


def test_a_label_outside_0_1_is_rejected_even_in_an_unlabelled_split():
    from repro.data.prepare import _valid_rows

    chunk = pa.table({"click": pa.array([0, 1, None, 2, None], pa.int8())})
    kept, dropped = _valid_rows(chunk, "click", "candidates_train", unlabelled=True)
    assert dropped == 1 and kept.num_rows == 4
    kept, dropped = _valid_rows(chunk, "click", "train")
    assert dropped == 3 and kept.num_rows == 2


def test_a_run_keeps_its_predictions_on_unlabelled_splits_and_scores_only_labelled_ones(run_config, cascade_data):
    cfg = run_config()
    cfg["data"].update(CASCADE)
    manifest = execute(cfg)
    run = resolve(cfg)
    scored = json.loads((run.run_dir / "metrics.json").read_text())
    assert not set(scored) & set(cascade_data.unlabelled_splits)
    assert {"valid", "test", "test_random"} <= set(scored)
    for split in cascade_data.unlabelled_splits:
        p = load_predictions(run.run_dir, split)
        assert p.dtype == np.float32 and len(p) == cascade_data.num_rows(split)
        assert np.isfinite(p).all() and 0 < p.min() and p.max() < 1
    with pytest.raises(DataError, match="no predictions"):
        load_predictions(run.run_dir, "test")
    assert manifest["status"] == "done"


def test_position_free_and_per_position_metrics_are_reported(run_config):
    run = resolve(run_config())
    execute(run_config())
    scored = json.loads((run.run_dir / "metrics.json").read_text())
    for split in ("test", "test_random"):
        m = scored[split]
        assert 0.5 < m["auc_relevance"] < 1
        assert set(m["by_position"]) == {"1", "2", "3", "4", "5"}
        weights = np.array([v["n"] for v in m["by_position"].values()])
        aucs = np.array([v["auc"] for v in m["by_position"].values()])
        assert m["pauc"] == pytest.approx(float((aucs * weights).sum() / weights.sum()))


def test_a_dropped_role_never_reaches_the_model_but_stays_in_the_batch(cascade_data):
    data = PreparedDataset(cascade_data.root, drop_roles=("position",))
    fm = data.feature_map
    assert "position" not in [f.name for f in fm.categorical]
    assert fm.by_role("position").name == "position"  # still known, as a side field
    batch = next(data.batches("test", 512))
    assert batch["cat"].shape[1] == len(cascade_data.feature_map.categorical) - 1
    full = next(cascade_data.batches("test", 512))
    torch.testing.assert_close(batch["position"], full["position"])
    torch.manual_seed(0)
    model = MODELS.build("deepfm", {"hidden_units": [16]}, fm, embedding={"name": "full", "dim": 4}).eval()
    moved = dict(batch, position=torch.flip(batch["position"], [0]))
    moved["side:position"] = moved["position"]
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(moved))
    with pytest.raises(DataError, match="no input field with role"):
        fm.without_roles(("position",))
    with pytest.raises(DataError, match="unknown roles"):
        cascade_data.feature_map.without_roles(("nonsense",))


def test_drop_roles_is_part_of_the_run_config(run_config):
    plain, dropped = run_config(), run_config()
    dropped["data"]["drop_roles"] = ["position"]
    assert resolve(plain).config["data"]["drop_roles"] == []
    assert resolve(dropped).config["data"]["drop_roles"] == ["position"]
    assert resolve(plain).config_hash != resolve(dropped).config_hash


def test_relevance_auc_is_the_auc_of_soft_labels():
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 0.3, 2000)
    p = q + rng.normal(0, 0.05, 2000)
    expected = roc_auc_score(np.r_[np.ones(2000), np.zeros(2000)], np.r_[p, p], sample_weight=np.r_[q, 1 - q])
    assert metrics.relevance_auc(q, p) == pytest.approx(expected, abs=1e-12)
    assert metrics.relevance_auc(q, q) > metrics.relevance_auc(q, p) > 0.5
    with pytest.raises(ValueError, match="relevance"):
        metrics.relevance_auc(q + 1, p)


def test_pauc_weights_each_positions_auc_by_its_impressions():
    rng = np.random.default_rng(1)
    pos = rng.integers(1, 4, 3000)
    y = (rng.random(3000) < 0.2 / pos).astype(float)
    p = np.clip(0.2 / pos + rng.normal(0, 0.05, 3000), 0.001, 0.999)
    out = metrics.by_position(y, p, pos)
    per = [(roc_auc_score(y[pos == k], p[pos == k]), (pos == k).sum()) for k in (1, 2, 3)]
    assert out["pauc"] == pytest.approx(sum(a * n for a, n in per) / sum(n for _, n in per))
    assert out["by_position"]["2"]["pcoc"] == pytest.approx(p[pos == 2].sum() / y[pos == 2].sum())
    # a score that only knows the position ranks well overall but not within a position
    position_only = 0.2 / pos
    assert metrics.auc(y, position_only) > 0.6
    assert metrics.by_position(y, position_only, pos)["pauc"] == pytest.approx(0.5)


def test_the_creative_log_lists_every_alive_creative_of_each_shown_ad():
    w = world(creative_share=0.2, cold_creatives=0.5)
    frames = split_frames(w, ("train", "creatives_train", "test", "creatives_test"))
    plain = split_frames(world(cold_creatives=0.5), ("train", "test"))
    for split in ("train", "test"):  # the log leaves the shown rows as they were
        pd.testing.assert_frame_equal(frames[split], plain[split])
    log, shown_rows = frames["creatives_test"], frames["test"]
    birth = w._entities["creative_birth"]
    assert (birth[log["creative_id"]] <= log["request_id"]).all()  # only creatives alive at the request
    per_ad = log.groupby(["request_id", "position"])
    assert (per_ad["ad_id"].nunique() == 1).all() and (per_ad["shown"].sum() == 1).all()
    k = w.cfg.creatives_per_ad
    alive = (birth[log["ad_id"].to_numpy()[:, None] * k + np.arange(k)] <= log["request_id"].to_numpy()[:, None]).sum(1)
    first = per_ad.head(1)  # in (request, position) order, as the groups are
    np.testing.assert_array_equal(per_ad.size().to_numpy(), alive[first.index])
    # the shown creative's row is the shown row, click and truth included
    shown = log[log["shown"]].sort_values(["request_id", "position"]).reset_index(drop=True)
    rows = shown_rows[shown_rows["request_id"].isin(shown["request_id"])].reset_index(drop=True)
    for col in rows.columns:
        np.testing.assert_array_equal(shown[col].to_numpy().astype(rows[col].dtype), rows[col].to_numpy(), err_msg=col)
    assert log.loc[~log["shown"], "click"].isna().all()
    # the other creatives differ in content and relevance, not in the request or the ad
    assert log.groupby(["request_id", "position"])["relevance"].nunique().max() > 1
    assert (log["creative_born"] >= 0).any()
    share = log["request_id"].nunique() / shown_rows["request_id"].nunique()
    assert 0.15 < share < 0.25
