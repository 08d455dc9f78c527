"""Evaluation metrics for CTR prediction: AUC, GAUC, logloss, RelaImpr, PCOC.

Everything is implemented with numpy/pandas (no sklearn) so that the numbers
reported in ``results/`` do not depend on the sklearn version, and so GAUC can
be computed in one vectorised pass over millions of impressions instead of a
Python loop over ~100k users.

Rank metrics (``auc``, ``gauc``) only need finite scores, so they also accept
logits; probability metrics (``logloss``, ``pcoc``, ``evaluate``) insist on
values in [0, 1].
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["auc", "logloss", "gauc", "relaimpr", "pcoc", "evaluate"]

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
