"""Tests for repro.metrics, cross-checked against sklearn (used here only)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from repro.metrics import auc, bootstrap_group_draws, bootstrap_replicates, evaluate, gauc, logloss, pcoc, relaimpr


def _data(n: int, seed: int, *, round_to: int | None = None, weighted: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    # informative but noisy scores, strictly inside (0, 1) so clipping is moot
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + 1.2 * y - 0.8)))
    if round_to is not None:
        p = np.round(p, round_to)
    p = np.clip(p, 0.01, 0.99)
    w = rng.uniform(0.1, 3.0, size=n) if weighted else None
    return y, p, w


def _naive_gauc(y, p, groups, w=None):
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        yg = y[m]
        wg = None if w is None else w[m]
        if yg.min() == yg.max():
            continue
        gw = m.sum() if w is None else wg.sum()
        num += gw * roc_auc_score(yg, p[m], sample_weight=wg)
        den += gw
    return num / den if den else float("nan")


# --------------------------------------------------------------------------- auc / logloss vs sklearn
@pytest.mark.parametrize("round_to", [None, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_auc_logloss_match_sklearn(round_to, weighted, seed):
    y, p, w = _data(5000, seed, round_to=round_to, weighted=weighted)
    if round_to == 1:
        assert len(np.unique(p)) <= 11  # really many ties
    assert auc(y, p, weight=w) == pytest.approx(
        roc_auc_score(y, p, sample_weight=w), abs=1e-9
    )
    assert logloss(y, p, weight=w) == pytest.approx(
        log_loss(y, p, sample_weight=w), abs=1e-7
    )


def test_auc_accepts_lists_bools_and_column_vectors():
    y, p, _ = _data(500, 3, round_to=1)
    ref = roc_auc_score(y, p)
    assert auc(list(y), list(p)) == pytest.approx(ref, abs=1e-12)
    assert auc(y.astype(bool), p.reshape(-1, 1)) == pytest.approx(ref, abs=1e-12)


def test_auc_all_tied_is_half():
    assert auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_auc_zero_weight_rows_are_ignored():
    y, p, w = _data(1000, 4, weighted=True)
    w[::3] = 0.0
    keep = w > 0
    assert auc(y, p, weight=w) == pytest.approx(
        roc_auc_score(y[keep], p[keep], sample_weight=w[keep]), abs=1e-9
    )


def test_auc_single_class_is_nan():
    assert math.isnan(auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([1, 1], [0.1, 0.2]))
    # a class present only with zero weight counts as absent
    assert math.isnan(auc([0, 1, 0], [0.1, 0.2, 0.3], weight=[1.0, 0.0, 1.0]))


def test_auc_perfect_and_reversed():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auc(y, p) == 1.0
    assert auc(y, 1.0 - p) == 0.0


def test_logloss_clips():
    # p exactly 0 for a click would be inf without clipping
    val = logloss([1, 0], [0.0, 0.0], eps=1e-7)
    assert val == pytest.approx(-(math.log(1e-7) + math.log(1 - 1e-7)) / 2)
    assert math.isfinite(val)


# --------------------------------------------------------------------------- gauc
@pytest.mark.parametrize("weighted", [False, True])
def test_gauc_matches_naive_loop(weighted):
    rng = np.random.default_rng(7)
    n = 4000
    groups = rng.integers(0, 150, size=n)
    y, p, w = _data(n, 8, round_to=1, weighted=weighted)  # many ties within groups
    # force some single-class groups that must be skipped
    y[groups == 0] = 0
    y[groups == 1] = 1
    y[groups == 2] = 0
    expected = _naive_gauc(y, p, groups, w)
    assert gauc(y, p, groups, weight=w) == pytest.approx(expected, abs=1e-9)


def test_gauc_string_groups_and_unsorted_input():
    y = np.array([1, 0, 0, 1, 1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.5, 0.5, 0.2, 0.8, 0.7, 0.7])
    g = np.array(["b", "a", "b", "a", "c", "c", "d", "d"])
    assert gauc(y, p, g) == pytest.approx(_naive_gauc(y, p, g), abs=1e-12)


def test_gauc_no_qualifying_group_is_nan():
    assert math.isnan(gauc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]))


def test_gauc_single_group_equals_auc():
    y, p, w = _data(2000, 9, round_to=2, weighted=True)
    assert gauc(y, p, np.zeros(len(y)), weight=w) == pytest.approx(auc(y, p, weight=w), abs=1e-12)


def test_gauc_large_runs_and_matches_reference_on_slice():
    rng = np.random.default_rng(11)
    n, n_groups = 200_000, 20_000
    groups = rng.integers(0, n_groups, size=n)
    y, p, _ = _data(n, 12, round_to=3)
    val = gauc(y, p, groups)
    assert math.isfinite(val) and 0.5 < val < 1.0
    # exact reference on the rows of the first 300 groups
    m = groups < 300
    assert gauc(y[m], p[m], groups[m]) == pytest.approx(
        _naive_gauc(y[m], p[m], groups[m]), abs=1e-9
    )


# --------------------------------------------------------------------------- relaimpr / pcoc
def test_relaimpr_hand_values():
    assert relaimpr(0.75, 0.70) == pytest.approx(25.0)
    assert relaimpr(0.70, 0.70) == pytest.approx(0.0)
    assert relaimpr(0.65, 0.70) == pytest.approx(-25.0)
    assert math.isnan(relaimpr(0.7, 0.5))


def test_pcoc_hand_values():
    assert pcoc([1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(1.0)
    assert pcoc([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
    assert pcoc([1, 0], [0.2, 0.4], weight=[2.0, 1.0]) == pytest.approx((0.4 + 0.4) / 2.0)
    assert math.isnan(pcoc([0, 0], [0.1, 0.2]))


# --------------------------------------------------------------------------- evaluate
def test_evaluate_keys_and_values():
    rng = np.random.default_rng(5)
    y, p, _ = _data(3000, 5, round_to=2)
    users = rng.integers(0, 100, size=len(y))
    queries = rng.integers(0, 40, size=len(y))
    mask = rng.random(len(y)) < 0.4
    res = evaluate(y, p, groups={"user": users, "query": queries}, subsets={"new": mask})
    assert set(res) == {
        "auc", "logloss", "pcoc", "ctr", "pred_ctr", "n",
        "gauc_user", "gauc_query", "auc_new", "logloss_new", "n_new",
    }
    assert all(type(v) is float for v in res.values())
    json.dumps(res)
    assert res["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert res["logloss"] == pytest.approx(log_loss(y, p), abs=1e-7)
    assert res["gauc_user"] == pytest.approx(_naive_gauc(y, p, users), abs=1e-9)
    assert res["auc_new"] == pytest.approx(roc_auc_score(y[mask], p[mask]), abs=1e-9)
    assert res["logloss_new"] == pytest.approx(log_loss(y[mask], p[mask]), abs=1e-7)
    assert res["n_new"] == float(mask.sum())
    assert res["n"] == 3000.0
    assert res["ctr"] == pytest.approx(y.mean())
    assert res["pred_ctr"] == pytest.approx(p.mean())
    assert res["pcoc"] == pytest.approx(p.sum() / y.sum())


def test_evaluate_weighted():
    y, p, w = _data(2000, 6, weighted=True)
    mask = np.arange(len(y)) % 2 == 0
    res = evaluate(y, p, weight=w, subsets={"even": mask})
    assert res["auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-9)
    assert res["logloss"] == pytest.approx(log_loss(y, p, sample_weight=w), abs=1e-7)
    assert res["auc_even"] == pytest.approx(
        roc_auc_score(y[mask], p[mask], sample_weight=w[mask]), abs=1e-9
    )
    assert res["ctr"] == pytest.approx(np.average(y, weights=w))


def test_evaluate_empty_subset_is_nan_not_error():
    y, p, _ = _data(100, 1)
    res = evaluate(y, p, subsets={"none": np.zeros(100, dtype=bool)})
    assert math.isnan(res["auc_none"]) and math.isnan(res["logloss_none"])
    assert res["n_none"] == 0.0


@pytest.mark.parametrize(
    "y, p, kwargs, match",
    [
        ([0, 1, 0], [0.1, float("nan"), float("nan")], {}, "2 NaN"),
        ([0, 1, 0], [0.1, float("inf"), 0.2], {}, "infinite"),
        ([0, 1, 0], [0.1, 1.2, 0.2], {}, r"outside \[0, 1\]"),
        ([0, 1, 0], [-0.1, 0.5, 0.2], {}, r"outside \[0, 1\]"),
        ([0, 2, 0], [0.1, 0.5, 0.2], {}, "labels must be 0/1"),
        ([0, -1, 1], [0.1, 0.5, 0.2], {}, "labels must be 0/1"),
        ([0, float("nan"), 1], [0.1, 0.5, 0.2], {}, "labels must be 0/1"),
        ([0, 1, 0], [0.1, 0.5], {}, "length mismatch"),
        ([0, 1, 0], [0.1, 0.5, 0.2], {"weight": [1.0, 1.0]}, "length mismatch"),
        ([0, 1, 0], [0.1, 0.5, 0.2], {"weight": [1.0, -1.0, 1.0]}, "negative"),
        ([0, 1, 0], [0.1, 0.5, 0.2], {"groups": {"u": [1, 2]}}, "length mismatch"),
        ([0, 1, 0], [0.1, 0.5, 0.2], {"subsets": {"s": np.array([True, False])}}, "length mismatch"),
        ([0, 1, 0], [0.1, 0.5, 0.2], {"subsets": {"s": np.array([0, 1, 2])}}, "boolean mask"),
    ],
)
def test_evaluate_rejects_bad_input(y, p, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(y, p, **kwargs)


def test_standalone_functions_also_validate():
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="outside"):
        logloss([0, 1], [0.1, 1.5])
    with pytest.raises(ValueError, match="length mismatch"):
        gauc([0, 1], [0.1, 0.2], [1, 2, 3])
    # rank metrics accept logits
    assert auc([0, 1], [-3.0, 2.0]) == 1.0


# --------------------------------------------------------------------------- paired bootstrap
def _naive_bootstrap(y, p, groups, n_replicates, seed, w=None):
    """Literally rebuild each resample row by row and call auc / logloss on it."""
    keys = np.unique(groups)
    rows_of = [np.flatnonzero(groups == k) for k in keys]
    out = {"auc": [], "logloss": []}
    for b in range(n_replicates):
        rows = np.concatenate([rows_of[i] for i in bootstrap_group_draws(len(keys), seed, b)])
        wb = None if w is None else w[rows]
        out["auc"].append(auc(y[rows], p[rows], weight=wb))
        out["logloss"].append(logloss(y[rows], p[rows], weight=wb))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("round_to", [None, 1])
@pytest.mark.parametrize("weighted", [False, True])
def test_bootstrap_replicates_equal_a_naive_resample(round_to, weighted):
    y, p, w = _data(1200, 5, round_to=round_to, weighted=weighted)
    groups = np.random.default_rng(1).integers(0, 150, size=len(y)) * 7  # unsorted, non-contiguous keys
    fast = bootstrap_replicates(y, p, groups, n_replicates=40, seed=3, weight=w)
    slow = _naive_bootstrap(y, p, groups, 40, 3, w)
    for k in ("auc", "logloss"):
        assert fast[k].dtype == np.float64 and fast[k].shape == (40,)
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-12, atol=1e-12)
    assert np.std(fast["auc"]) > 0  # the resamples really differ


def test_bootstrap_resamples_depend_on_groups_not_predictions():
    y, p, _ = _data(3000, 6)
    groups = np.random.default_rng(2).integers(0, 500, size=len(y))
    q = np.clip(p + np.random.default_rng(3).normal(0, 0.05, size=len(p)), 0.001, 0.999)  # another model
    a = bootstrap_replicates(y, p, groups, n_replicates=60, seed=0)
    b = bootstrap_replicates(y, q, groups, n_replicates=60, seed=0)
    # Same resamples: each model's replicates equal its naive resample under the same draws ...
    for pred, reps in ((p, a), (q, b)):
        np.testing.assert_allclose(reps["auc"], _naive_bootstrap(y, pred, groups, 60, 0)["auc"], rtol=1e-12)
    # ... so the paired difference varies much less than either model's replicates.
    assert np.std(a["auc"] - b["auc"]) < 0.5 * min(np.std(a["auc"]), np.std(b["auc"]))
    # Row order does not matter (keys are sorted), the seed does, and replicate b does not
    # depend on how many replicates are asked for.
    perm = np.random.default_rng(4).permutation(len(y))
    c = bootstrap_replicates(y[perm], p[perm], groups[perm], n_replicates=60, seed=0)
    np.testing.assert_allclose(c["auc"], a["auc"], rtol=1e-12)
    assert not np.allclose(bootstrap_replicates(y, p, groups, n_replicates=60, seed=1)["auc"], a["auc"])
    np.testing.assert_array_equal(bootstrap_replicates(y, p, groups, n_replicates=7, seed=0)["auc"], a["auc"][:7])


def test_bootstrap_validates_and_handles_single_class():
    with pytest.raises(ValueError, match="length mismatch"):
        bootstrap_replicates([0, 1], [0.2, 0.4], [1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        bootstrap_replicates([0, 1], [0.2, 1.4], [1, 2])
    r = bootstrap_replicates([0, 0, 1], [0.1, 0.2, 0.3], [1, 1, 1], n_replicates=3)
    assert np.allclose(r["auc"], 1.0)  # one group: every resample is the data set itself
    r = bootstrap_replicates([0, 0], [0.1, 0.2], [1, 2], n_replicates=3)
    assert np.isnan(r["auc"]).all() and np.isfinite(r["logloss"]).all()


def test_bootstrap_is_fast_enough():
    import time

    rng = np.random.default_rng(0)
    n, g = 150_000, 30_000
    groups = rng.integers(0, g, size=n)
    y = (rng.random(n) < 0.035).astype(float)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + y - 3.5)))
    t = time.perf_counter()
    r = bootstrap_replicates(y, p, groups, n_replicates=500)
    took = time.perf_counter() - t
    assert r["auc"].shape == (500,) and np.isfinite(r["auc"]).all()
    assert took < 30, f"500 replicates of 150k rows took {took:.1f}s"  # ~1.5 s on one core; slack for shared CI
