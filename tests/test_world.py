"""The simulated world: deterministic, calibrated like ad data, and every knob does what it says."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from repro.errors import ConfigError
from repro.metrics import auc
from tests.conftest import world


def table(src, split="test"):
    return pa.concat_tables(list(src.chunks(split))).to_pandas()


def test_same_seed_same_rows_other_seed_other_rows():
    a, b, c = table(world()), table(world()), table(world(seed=1))
    assert a.equals(b)
    assert not a["click"].equals(c["click"]) or not a["ad_id"].equals(c["ad_id"])


def test_calibrated_like_search_ads():
    t = table(world(), "train")
    ctr = t["click"].mean()
    assert 0.01 < ctr < 0.10, ctr
    bayes = auc(t["click"], t["p_click"])
    assert 0.75 < bayes < 0.90, bayes
    # Examination decays with position, so clicks do too.
    by_pos = t.groupby("position")["click"].mean()
    assert by_pos.iloc[0] > by_pos.iloc[-1]
    # A small randomised slice exists for unbiased evaluation.
    assert 0.005 < t["is_random"].mean() < 0.05


def test_rows_per_request_and_positions():
    t = table(world())
    per_request = t.groupby("request_id")["position"].agg(["count", "min", "max"])
    assert (per_request["count"] <= 5).all() and (per_request["min"] == 1).all()
    assert not t.duplicated(["request_id", "ad_id"]).any(), "an ad shown twice in one request"
    expected = world().expected_rows("test")  # requests x slots, less requests with few candidates
    assert 0.95 * expected <= len(t) <= expected


def test_positions_knob_switches_examination_off():
    t = table(world(positions=False))
    assert np.allclose(t["examination"], 1.0)
    assert np.allclose(t["p_click"], t["relevance"])


def test_creatives_and_crosses_knobs_remove_their_effects():
    src = world(creatives=False, crosses=False)
    e = src._entities
    assert not e["creative_appeal"].any() and not e["cross_qb"].any() and not e["cross_ss"].any()
    full = world()._entities
    assert full["creative_appeal"].std() > 0.1 and (full["cross_qb"] != 0).mean() > 0.01


def test_long_tail_knob():
    def head_share(src):
        users = table(src, "train")["user_id"]
        counts = users.value_counts()
        return counts.iloc[: max(1, len(counts) // 100)].sum() / counts.sum()

    assert head_share(world()) > 2 * head_share(world(long_tail=False))


def test_unknown_scale_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown scale"):
        world(scale="huge")


# -- one knob, one effect: every table and every per-chunk effect has a random stream of its own --

# The entity tables each knob owns (everything else must be bit-identical with the knob off).
KNOB_TABLES = {
    "crosses": {"cross_qb", "cross_ss"},
    "scenes": {"scene_w", "scene_eta"},
    "creatives": {"creative_appeal", "creative_b"},
    "positions": set(),
}
REQUEST_COLUMNS = ("user", "query", "scene", "hour", "device")


def requests_of(t):
    """Per request (in order): its context columns."""
    cols = ["request_id", "user_id", "query_id", "scene", "hour", "device", "is_random"]
    return t[cols].drop_duplicates("request_id").reset_index(drop=True)


@pytest.mark.parametrize("knob", sorted(KNOB_TABLES))
def test_a_knob_off_leaves_every_other_table_and_stream_untouched(knob):
    on, off = world(), world(**{knob: False})
    e_on, e_off = on._entities, off._entities
    assert set(e_on) == set(e_off)
    for name in e_on:
        if name in KNOB_TABLES[knob]:
            assert not np.array_equal(e_on[name], e_off[name]), f"{knob}=False leaves {name} as it is"
        else:
            np.testing.assert_array_equal(e_off[name], e_on[name], err_msg=f"{knob}=False changed {name}")
    lo, hi = on._request_range("test")
    req_on, req_off = on._requests(lo, hi), off._requests(lo, hi)
    for k in REQUEST_COLUMNS:
        np.testing.assert_array_equal(req_off[k], req_on[k], err_msg=k)
    qcat = e_on["query_category"][req_on["query"]]
    cands = on._retrieve(qcat, on._rng("retrieval", lo))
    np.testing.assert_array_equal(off._retrieve(qcat, off._rng("retrieval", lo)), cands)
    assert (cands >= 0).sum(1).min() >= on.cfg.slots

    t_on, t_off = table(on), table(off)
    # The chunk itself: the same requests, contexts and randomised slice.
    pd.testing.assert_frame_equal(requests_of(t_off), requests_of(t_on))
    assert t_on["is_random"].any()
    # A randomised request shows the same ads in the same order whatever the knob.
    r_on, r_off = t_on[t_on["is_random"]], t_off[t_off["is_random"]]
    np.testing.assert_array_equal(r_off[["request_id", "position", "ad_id"]], r_on[["request_id", "position", "ad_id"]])
    # An ad shown in a request gets the same creative, under any ranking.
    both = t_on.merge(t_off, on=["request_id", "ad_id"], suffixes=("_on", "_off"))
    assert len(both) > 0.5 * len(t_on)
    np.testing.assert_array_equal(both["creative_id_off"], both["creative_id_on"])
    if knob in ("creatives", "positions"):  # the ranking does not depend on these: same rows shown
        keys = ["request_id", "position", "ad_id", "creative_id"]
        np.testing.assert_array_equal(t_off[keys], t_on[keys])
    if knob == "positions":
        # the same uniforms decide clicks: examination <= 1, so a click stays a click without it
        assert np.allclose(t_off["relevance"], t_on["relevance"])
        assert (t_off["click"] >= t_on["click"]).all() and t_off["click"].sum() > t_on["click"].sum()


def test_long_tail_off_keeps_the_tables_drawn_independently_of_popularity():
    on, off = world()._entities, world(long_tail=False)._entities
    independent = ["user_b", "query_b", "ad_b", "user_segment", "user_device", "query_category", "ad_category",
                   "ad_bid", "segment_v", "query_category_v", "ad_category_v", "brand_v", "user_v", "query_v",
                   "cross_qb", "cross_ss", "scene_w", "scene_b", "scene_eta", "scene_p", "hour_b", "device_b",
                   "content", "creative_appeal", "creative_b"]
    for name in independent:
        np.testing.assert_array_equal(off[name], on[name], err_msg=name)
    for name in ("user_pop", "ad_pop", "ad_brand"):  # what long_tail owns, by design
        assert not np.array_equal(off[name], on[name]), name
    # an ad's latent vector differs only through its brand's share
    c = world().cfg
    brand_part = np.sqrt(c.affinity_std) * np.sqrt(c.group_share) * np.sqrt(0.5)

    def own(e):
        return e["ad_v"] - brand_part * e["brand_v"][e["ad_brand"]]

    np.testing.assert_allclose(own(off), own(on), atol=1e-12)
    # scene and hour of every request are drawn independently of popularity too
    src_on, src_off = world(), world(long_tail=False)
    lo, hi = src_on._request_range("valid")
    for k in ("scene", "hour"):
        np.testing.assert_array_equal(src_off._requests(lo, hi)[k], src_on._requests(lo, hi)[k])


def test_retrieval_copes_with_categories_without_ads():
    src = world(ads=30)
    e = src._entities
    e["ad_category"] = np.arange(src.cfg.ads) % 20  # categories 20..59, the last included, have no ads
    src._index_categories(e)
    empty = e["cat_hi"] == e["cat_lo"]
    assert empty[-1] and empty[20:].all() and not empty[:20].any()

    qcat = np.tile(np.arange(src.cfg.categories), 50)
    in_cat, anywhere, from_cat = src._retrieval_draws(qcat, np.random.default_rng(0))
    none = empty[qcat]
    assert not from_cat[none].any() and (in_cat[none] == -1).all()
    assert (e["ad_category"][in_cat[~none]] == qcat[~none, None]).all()
    assert 0.6 < from_cat[~none].mean() < 0.8
    # a category without ads: every candidate is the "anywhere" draw (sorted, duplicates dropped)
    ads = src._retrieve(qcat, np.random.default_rng(0))
    for i in np.flatnonzero(none)[:50]:
        assert set(ads[i][ads[i] >= 0]) == set(anywhere[i])
    # and whole chunks come out (the old index ran past the end of the table here)
    for split in ("test", "test_random"):
        t = table(src, split)
        assert len(t) > 0 and set(t["ad_id"]) <= set(range(src.cfg.ads))


def test_randomised_test_set_has_its_own_requests_all_shown_in_random_order():
    src = world()
    assert src.splits == ("train", "valid", "test", "test_random")
    assert world(random_requests=0).splits == ("train", "valid", "test")
    t, log = table(src, "test_random"), table(src, "test")
    n, extra = src.cfg.requests, src.cfg.random_requests
    assert t["is_random"].all()
    assert t["request_id"].min() >= n and t["request_id"].max() < n + extra
    assert log["request_id"].max() < n
    assert 0.95 * src.expected_rows("test_random") <= len(t) <= src.expected_rows("test_random") == extra * 5
    # Random order: every candidate equally likely at every slot, so mean relevance is flat in
    # position; in the log it falls with position (the logging ranker puts the best ads first).
    rel = t.groupby("position")["relevance"].agg(["mean", "sem"])
    assert (abs(rel["mean"] - t["relevance"].mean()) < 4 * rel["sem"]).all(), rel
    assert rel["mean"].iloc[-1] > rel["mean"].iloc[0] - 2 * rel["sem"].iloc[0]
    logged = log[~log["is_random"]].groupby("position")["relevance"].agg(["mean", "sem"])
    first, last = logged.iloc[0], logged.iloc[-1]
    assert first["mean"] - last["mean"] > 4 * np.hypot(first["sem"], last["sem"])
    # Clicks still follow examination, and the split is the world's, not another one.
    assert t.groupby("position")["click"].mean().iloc[0] > t.groupby("position")["click"].mean().iloc[-1]
    assert 0.75 < auc(t["click"], t["p_click"]) < 0.92
