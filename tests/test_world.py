"""The simulated world: deterministic, calibrated like ad data, and every knob does what it says."""

import numpy as np
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
