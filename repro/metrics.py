"""Evaluation metrics for CTR prediction: AUC, GAUC, logloss, RelaImpr, PCOC.

Everything is implemented with numpy/pandas (no sklearn) so that the numbers
reported in ``results/`` do not depend on the sklearn version, and so GAUC can
be computed in one vectorised pass over millions of impressions instead of a
Python loop over ~100k users.

Rank metrics (``auc``, ``gauc``) only need finite scores, so they also accept
logits; probability metrics (``logloss``, ``pcoc``, ``evaluate``,
``bootstrap_replicates``) insist on values in [0, 1].

``bootstrap_replicates`` gives paired test-set replicates of AUC and logloss:
whole groups (requests) are resampled, and replicate b's resample depends only
on (seed, b, the set of group keys), so two models scored on the same split get
the same resamples and their replicate-b values can be differenced
(``repro.claims`` builds intervals from them).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["auc", "logloss", "gauc", "relaimpr", "pcoc", "evaluate", "bootstrap_replicates", "bootstrap_group_draws",
           "relevance_auc", "by_position"]

ArrayLike = Any  # anything np.asarray accepts


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #
def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    """Coerce to a 1-D float64 array; a column vector (n, 1) is flattened
    because models often emit that shape, anything else is a caller bug."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metrics: {name} cannot be converted to float ({exc})") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"metrics: {name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_labels(y: np.ndarray) -> None:
    bad = ~((y == 0.0) | (y == 1.0))  # NaN counts as bad
    n_bad = int(bad.sum())
    if n_bad:
        example = y[np.flatnonzero(bad)[0]]
        raise ValueError(
            f"metrics: labels must be 0/1; found {n_bad} other values (e.g. {example!r})"
        )


def _check_scores(p: np.ndarray, *, probabilities: bool) -> None:
    n_nan = int(np.isnan(p).sum())
    if n_nan:
        raise ValueError(f"metrics: predictions contain {n_nan} NaN values")
    n_inf = int(np.isinf(p).sum())
    if n_inf:
        raise ValueError(f"metrics: predictions contain {n_inf} infinite values")
    if probabilities:
        out = (p < 0.0) | (p > 1.0)
        n_out = int(out.sum())
        if n_out:
            raise ValueError(
                f"metrics: {n_out} predictions outside [0, 1] "
                f"(min={p.min():.6g}, max={p.max():.6g})"
            )


def _check_weight(weight: ArrayLike | None, n: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = _as_1d(weight, "weight")
    if w.shape[0] != n:
        raise ValueError(f"metrics: length mismatch: {n} labels vs {w.shape[0]} weights")
    n_bad = int((~np.isfinite(w)).sum())
    if n_bad:
        raise ValueError(f"metrics: weight contains {n_bad} non-finite values")
    n_neg = int((w < 0).sum())
    if n_neg:
        raise ValueError(f"metrics: weight contains {n_neg} negative values")
    return w


def _prepare(
    y: ArrayLike, p: ArrayLike, weight: ArrayLike | None, *, probabilities: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate once up front: silently broadcasting or NaN-propagating
    metrics is how wrong numbers end up in a results table."""
    y_arr = _as_1d(y, "labels")
    p_arr = _as_1d(p, "predictions")
    if y_arr.shape[0] != p_arr.shape[0]:
        raise ValueError(
            f"metrics: length mismatch: {y_arr.shape[0]} labels vs {p_arr.shape[0]} predictions"
        )
    _check_labels(y_arr)
    _check_scores(p_arr, probabilities=probabilities)
    w = _check_weight(weight, y_arr.shape[0])
    return y_arr, p_arr, w


def _class_weights(y: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row positive / negative mass; unweighted rows count as 1 so
    integer counts stay exact in float64."""
    if w is None:
        return y, 1.0 - y
    return y * w, (1.0 - y) * w


# --------------------------------------------------------------------------- #
# rank core shared by auc and gauc
# --------------------------------------------------------------------------- #
def _grouped_auc_parts(
    codes: np.ndarray | None, s: np.ndarray, wpos: np.ndarray, wneg: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group (numerator, P, N) with AUC_g = numerator / (P * N).

    After sorting by (group, score), rows with equal (group, score) form a tie
    block.  Each block contributes pos_mass * (neg mass strictly below it in
    the same group + half its own neg mass) -- the exact tie-averaged
    Mann-Whitney statistic, in O(n log n) with no Python loop.
    """
    n = s.shape[0]
    new_block = np.empty(n, dtype=bool)
    new_block[0] = True
    new_group = np.zeros(n, dtype=bool)
    new_group[0] = True
    if codes is None:
        order = np.argsort(s, kind="stable")
        s_o = s[order]
        np.not_equal(s_o[1:], s_o[:-1], out=new_block[1:])
    else:
        order = np.lexsort((s, codes))
        s_o = s[order]
        g_o = codes[order]
        np.not_equal(g_o[1:], g_o[:-1], out=new_group[1:])
        new_block[1:] = new_group[1:] | (s_o[1:] != s_o[:-1])

    starts = np.flatnonzero(new_block)
    bpos = np.add.reduceat(wpos[order], starts)
    bneg = np.add.reduceat(wneg[order], starts)

    block_is_gstart = new_group[starts]
    gstarts = np.flatnonzero(block_is_gstart)
    block_group = np.cumsum(block_is_gstart) - 1

    cneg = np.cumsum(bneg) - bneg  # exclusive running neg mass, global
    below = cneg - cneg[gstarts][block_group]  # ... restricted to own group
    contrib = bpos * (below + 0.5 * bneg)

    num = np.add.reduceat(contrib, gstarts)
    pos_tot = np.add.reduceat(bpos, gstarts)
    neg_tot = np.add.reduceat(bneg, gstarts)
    return num, pos_tot, neg_tot


def _auc_core(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    if y.shape[0] == 0:
        return float("nan")
    wpos, wneg = _class_weights(y, w)
    num, P, N = _grouped_auc_parts(None, p, wpos, wneg)
    if not (P[0] > 0 and N[0] > 0):
        return float("nan")
    return float(num[0] / (P[0] * N[0]))


def _logloss_core(y: np.ndarray, p: np.ndarray, w: np.ndarray | None, eps: float) -> float:
    if y.shape[0] == 0:
        return float("nan")
    pc = np.clip(p, eps, 1.0 - eps)
    # log(pc) where y==1 else log(1-pc): avoids computing both terms fully.
    ll = -np.log(np.where(y == 1.0, pc, 1.0 - pc))
    if w is None:
        return float(ll.mean())
    wsum = w.sum()
    if wsum <= 0:
        return float("nan")
    return float(np.dot(ll, w) / wsum)


def _pcoc_core(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    clicks = y.sum() if w is None else np.dot(y, w)
    if clicks <= 0:
        return float("nan")
    pred = p.sum() if w is None else np.dot(p, w)
    return float(pred / clicks)


def _gauc_core(
    y: np.ndarray, p: np.ndarray, groups: ArrayLike, w: np.ndarray | None
) -> float:
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != y.shape[0]:
        raise ValueError(
            f"metrics: length mismatch: {y.shape[0]} labels vs groups of shape {g.shape}"
        )
    if y.shape[0] == 0:
        return float("nan")
    # factorize handles ints, strings and objects alike; -1 marks missing keys.
    codes, _ = pd.factorize(g, use_na_sentinel=True)
    n_missing = int((codes < 0).sum())
    if n_missing:
        raise ValueError(f"metrics: groups contain {n_missing} missing values")
    wpos, wneg = _class_weights(y, w)
    num, P, N = _grouped_auc_parts(codes.astype(np.int64, copy=False), p, wpos, wneg)
    ok = (P > 0) & (N > 0)
    if not ok.any():
        return float("nan")
    # Group weight = impressions (or weight mass) of the group = P + N.
    gw = (P + N)[ok]
    return float(np.dot(num[ok] / (P[ok] * N[ok]), gw) / gw.sum())


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def auc(y: ArrayLike, p: ArrayLike, weight: ArrayLike | None = None) -> float:
    """ROC AUC = P(s+ > s-) + 0.5 P(tie), exact under ties and weights.

    Returns NaN (not an exception) for a single class so per-day/per-slice
    evaluations with a click-less slice don't abort a whole run.
    """
    y_, p_, w_ = _prepare(y, p, weight, probabilities=False)
    return _auc_core(y_, p_, w_)


def logloss(
    y: ArrayLike, p: ArrayLike, weight: ArrayLike | None = None, eps: float = 1e-7
) -> float:
    """Mean binary cross-entropy; clipping keeps one confident miss from
    turning the whole score into inf."""
    y_, p_, w_ = _prepare(y, p, weight, probabilities=True)
    return _logloss_core(y_, p_, w_, eps)


def gauc(
    y: ArrayLike, p: ArrayLike, groups: ArrayLike, weight: ArrayLike | None = None
) -> float:
    """Impression-weighted mean of per-group AUC (groups with one class skipped).

    Per-user AUC is what matters for ranking ads within a user's page view;
    global AUC is dominated by between-user CTR differences.
    """
    y_, p_, w_ = _prepare(y, p, weight, probabilities=False)
    return _gauc_core(y_, p_, groups, w_)


def relaimpr(auc_model: float, auc_base: float) -> float:
    """Relative improvement over a baseline in percent (DIN paper); measured
    against 0.5 because a random guesser already gets AUC 0.5."""
    denom = auc_base - 0.5
    if denom == 0:
        return float("nan")
    return float(((auc_model - 0.5) / denom - 1.0) * 100.0)


def pcoc(y: ArrayLike, p: ArrayLike, weight: ArrayLike | None = None) -> float:
    """Predicted / observed clicks; AUC is blind to calibration, bidding isn't."""
    y_, p_, w_ = _prepare(y, p, weight, probabilities=True)
    return _pcoc_core(y_, p_, w_)


def relevance_auc(relevance: ArrayLike, p: ArrayLike) -> float:
    """AUC against position-free relevance: the AUC of labels drawn from ``relevance`` (each row a
    positive with probability q, a negative with 1 - q), in expectation over the draws (as a ratio
    of expectations: a row counts as a positive of weight q and a negative of weight 1 - q).

    A position-biased log scores a model on where ads were shown as much as on what they are;
    this scores it on the world's true relevance, which no position enters."""
    q = _as_1d(relevance, "relevance").astype(np.float64)
    p_ = _as_1d(p, "p").astype(np.float64)
    if q.shape != p_.shape:
        raise ValueError(f"metrics: length mismatch: {q.shape[0]} relevances vs {p_.shape[0]} scores")
    if q.size and (not np.isfinite(q).all() or q.min() < 0 or q.max() > 1):
        raise ValueError("metrics: relevance must be probabilities in [0, 1]")
    _check_scores(p_, probabilities=False)
    if q.size == 0:
        return float("nan")
    num, P, N = _grouped_auc_parts(None, p_, q, 1.0 - q)
    return float(num[0] / (P[0] * N[0])) if P[0] > 0 and N[0] > 0 else float("nan")


def by_position(y: ArrayLike, p: ArrayLike, position: ArrayLike) -> dict[str, Any]:
    """Per-position AUC and calibration, and PAUC (DPIN, Huang et al. 2021): the impression-
    weighted mean of the per-position AUCs, positions with one class skipped. A model that has
    learnt position bias as relevance ranks well overall but not within a position, and its
    calibration (PCOC) drifts with the position."""
    y_, p_, _ = _prepare(y, p, None, probabilities=True)
    pos = np.asarray(position).ravel()
    if pos.shape != y_.shape:
        raise ValueError(f"metrics: length mismatch: {y_.shape[0]} labels vs {pos.shape[0]} positions")
    per: dict[str, dict[str, float]] = {}
    weighted, total = 0.0, 0.0
    for k in np.unique(pos):
        m = pos == k
        a = _auc_core(y_[m], p_[m], None)
        per[str(k.item())] = {"auc": a, "pcoc": _pcoc_core(y_[m], p_[m], None),
                                                           "ctr": float(y_[m].mean()), "n": float(m.sum())}
        if np.isfinite(a):
            weighted, total = weighted + a * m.sum(), total + m.sum()
    return {"pauc": float(weighted / total) if total else float("nan"), "by_position": per}


def evaluate(
    y: ArrayLike,
    p: ArrayLike,
    *,
    groups: Mapping[str, ArrayLike] | None = None,
    weight: ArrayLike | None = None,
    subsets: Mapping[str, ArrayLike] | None = None,
) -> dict[str, float]:
    """All headline metrics as plain floats, ready for json.dump.

    Validates once and fails loudly, because a NaN prediction or a stray
    label of 2 would otherwise yield a plausible-looking but wrong table row.
    """
    y_, p_, w_ = _prepare(y, p, weight, probabilities=True)
    n = y_.shape[0]
    if w_ is None:
        ctr = float(y_.mean()) if n else float("nan")
        pred_ctr = float(p_.mean()) if n else float("nan")
    else:
        wsum = w_.sum()
        ctr = float(np.dot(y_, w_) / wsum) if wsum > 0 else float("nan")
        pred_ctr = float(np.dot(p_, w_) / wsum) if wsum > 0 else float("nan")

    out: dict[str, float] = {
        "auc": _auc_core(y_, p_, w_),
        "logloss": _logloss_core(y_, p_, w_, 1e-7),
        "pcoc": _pcoc_core(y_, p_, w_),
        "ctr": ctr,
        "pred_ctr": pred_ctr,
        "n": float(n),
    }

    for name, g in (groups or {}).items():
        out[f"gauc_{name}"] = _gauc_core(y_, p_, g, w_)

    for name, mask in (subsets or {}).items():
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise ValueError(f"metrics: subset {name!r} must be a boolean mask, got dtype {m.dtype}")
        if m.shape != (n,):
            raise ValueError(
                f"metrics: length mismatch: {n} labels vs subset {name!r} of shape {m.shape}"
            )
        ys, ps = y_[m], p_[m]
        ws = None if w_ is None else w_[m]
        out[f"auc_{name}"] = _auc_core(ys, ps, ws)
        out[f"logloss_{name}"] = _logloss_core(ys, ps, ws, 1e-7)
        out[f"n_{name}"] = float(ys.shape[0])

    return out


# --------------------------------------------------------------------------- #
# paired bootstrap over groups
# --------------------------------------------------------------------------- #
def bootstrap_group_draws(n_groups: int, seed: int, b: int) -> np.ndarray:
    """The groups drawn by replicate ``b``: ``n_groups`` indices into the sorted unique group keys,
    drawn uniformly with replacement (so their counts are Multinomial(n_groups, 1/n_groups)).

    A function of (seed, b, n_groups) only -- never of the predictions -- and independent of how
    many replicates are asked for, so replicate b is the same resample for every model."""
    rng = np.random.default_rng([int(seed), int(b), 0x6A7])
    return rng.integers(0, n_groups, size=n_groups) if n_groups else np.zeros(0, dtype=np.int64)


def bootstrap_replicates(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    *,
    n_replicates: int = 500,
    seed: int = 0,
    weight: ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """Per-replicate ``auc`` and ``logloss`` (float64 arrays of length ``n_replicates``) of the
    nonparametric bootstrap that resamples whole groups (requests) with replacement.

    Replicate b draws G groups out of the G distinct keys (``bootstrap_group_draws``; keys are
    sorted, so the row order does not matter) and is exactly ``auc``/``logloss`` of the data set
    made of the drawn groups' rows (a group drawn k times contributes its rows k times).
    Computed without materialising the resample: rows are sorted by score once, and each
    replicate is a weighted AUC whose row weights are the multiplicity of the row's group
    (times ``weight``); ties between scores are averaged exactly as in ``auc``. Replicates are
    vectorised in blocks, so 500 replicates of 150k rows take a few seconds on one core.
    A replicate with a single class has AUC NaN, as ``auc`` would give.
    """
    y_, p_, w_ = _prepare(y, p, weight, probabilities=True)
    n = y_.shape[0]
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"metrics: length mismatch: {n} labels vs groups of shape {g.shape}")
    n_replicates = int(n_replicates)
    if n_replicates < 1:
        raise ValueError(f"metrics: n_replicates must be >= 1, got {n_replicates}")
    if n == 0:
        nan = np.full(n_replicates, np.nan)
        return {"auc": nan, "logloss": nan.copy()}
    codes, _ = pd.factorize(g, sort=True, use_na_sentinel=True)
    n_missing = int((codes < 0).sum())
    if n_missing:
        raise ValueError(f"metrics: groups contain {n_missing} missing values")
    codes = codes.astype(np.int64, copy=False)
    n_groups = int(codes.max()) + 1

    wpos, wneg = _class_weights(y_, w_)
    wrow = np.ones(n) if w_ is None else w_
    # Group totals: positive mass, negative mass, weight mass and weighted log-loss per group;
    # replicate totals are then count-weighted sums (a matrix product over groups).
    pc = np.clip(p_, 1e-7, 1.0 - 1e-7)
    ll = -np.log(np.where(y_ == 1.0, pc, 1.0 - pc))
    g_pos = np.bincount(codes, weights=wpos, minlength=n_groups)
    g_neg = np.bincount(codes, weights=wneg, minlength=n_groups)
    g_w = np.bincount(codes, weights=wrow, minlength=n_groups)
    g_ll = np.bincount(codes, weights=ll * wrow, minlength=n_groups)

    # Rank structure, computed once: sort by score, tie blocks as in _grouped_auc_parts.
    order = np.argsort(p_, kind="stable")
    s_o = p_[order]
    new_block = np.empty(n, dtype=bool)
    new_block[0] = True
    np.not_equal(s_o[1:], s_o[:-1], out=new_block[1:])
    block_id = np.cumsum(new_block) - 1
    starts = np.flatnonzero(new_block)
    ends = np.append(starts[1:], n)  # exclusive
    is_neg = wneg[order] > 0
    is_pos = wpos[order] > 0
    # Negatives in sorted order; neg_before[k] = number of such rows before sorted position k.
    neg_rows = order[is_neg]
    neg_before = np.concatenate([[0], np.cumsum(is_neg)])
    pos_rows = order[is_pos]
    pos_block = block_id[is_pos]
    # A positive's negatives strictly below = neg rows before its block start; the tie block adds
    # half of the neg rows up to its block end: numerator = sum_pos w+ * (C[start] + C[end]) / 2.
    lo_idx = neg_before[starts[pos_block]]
    hi_idx = neg_before[ends[pos_block]]
    neg_codes, neg_w = codes[neg_rows], wneg[neg_rows]
    pos_codes, pos_w = codes[pos_rows], wpos[pos_rows]
    unit_neg = bool(np.all(neg_w == 1.0))

    auc_out = np.empty(n_replicates)
    ll_out = np.empty(n_replicates)
    block = max(1, min(n_replicates, int(4_000_000 // max(n, 1))))
    cum = None
    for b0 in range(0, n_replicates, block):
        k = min(block, n_replicates - b0)
        counts = np.empty((k, n_groups))
        for j in range(k):
            counts[j] = np.bincount(bootstrap_group_draws(n_groups, seed, b0 + j), minlength=n_groups)
        P = counts @ g_pos
        N = counts @ g_neg
        with np.errstate(invalid="ignore", divide="ignore"):
            ll_out[b0:b0 + k] = (counts @ g_ll) / (counts @ g_w)
        if cum is None or cum.shape[0] != k:
            cum = np.zeros((k, neg_rows.shape[0] + 1))
        wn = counts[:, neg_codes]
        if not unit_neg:
            wn *= neg_w
        np.cumsum(wn, axis=1, out=cum[:, 1:])
        half = 0.5 * (cum[:, lo_idx] + cum[:, hi_idx])
        half *= counts[:, pos_codes]
        num = half @ pos_w
        with np.errstate(invalid="ignore", divide="ignore"):
            auc_out[b0:b0 + k] = np.where((P > 0) & (N > 0), num / (P * N), np.nan)
    return {"auc": auc_out, "logloss": ll_out}
