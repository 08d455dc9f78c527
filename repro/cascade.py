"""The cascade evaluator: pre-ranking -> ranking -> slots, scored per request on a candidate log
against the ground truth.

Per request of the log (every retrieved candidate, with its bid and the world's true relevance):
1. the pre-ranker keeps its top ``K1`` candidates by its eCPM (pCTR x bid);
2. the ranker orders those by its eCPM and fills the ``slots`` positions with its top ones;
3. the truth scores the page: expected clicks sum_k rel_k * k ** -eta and expected revenue
   sum_k rel_k * k ** -eta * bid_k.

Figures, each the mean over requests (and, for the claims, paired bootstrap replicates that
resample requests with ``repro.metrics.bootstrap_group_draws``, so two runs scored on the same log
get the same draws):
- ``recall@K1``: the share of the ranker's own top ``slots`` (ranking every candidate) that the
  pre-ranker's top K1 keeps (COLD's and FSCD's Recall(K, M) with M = slots);
- ``ndcg@K1``: NDCG of the pre-ranker's top-K1 order with the ranker's eCPM as the gain;
- ``clicks@K1``, ``revenue@K1``: the true expected clicks and revenue of the page the cascade
  builds, and ``revenue_share@K1``, their share of the oracle cascade's revenue (the page built
  from the true relevance: every candidate sorted by rel x bid, which maximises expected revenue
  because examination falls with the position);
- the same for the ranker alone (``K1`` = every candidate) and the oracle, as references.

Choices the reference leaves open: revenue is charged at the bid per click (first price; a GSP
price needs the next ad's bid and changes no ordering here); a request with fewer candidates
than ``K1`` keeps them all; ties break by candidate order in the log (ad id), as a stable sort.
"""

from __future__ import annotations

import numpy as np

from repro.metrics import bootstrap_group_draws

K1_DEFAULT = (6, 8, 10, 15, 20, 30)


def padded(request: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows grouped by request (a request's rows are contiguous in a log) into [requests, longest]
    arrays, NaN-padded; returns (mask of real entries, the padded columns)."""
    change = np.r_[True, request[1:] != request[:-1]]
    starts = np.flatnonzero(change)
    if len(np.unique(request)) != len(starts):
        raise ValueError("cascade: a request's candidates must be contiguous in the log")
    lengths = np.diff(np.r_[starts, len(request)])
    row = np.repeat(np.arange(len(starts)), lengths)
    col = np.arange(len(request)) - np.repeat(starts, lengths)
    mask = np.zeros((len(starts), lengths.max()), dtype=bool)
    mask[row, col] = True
    out = []
    for c in columns:
        a = np.full(mask.shape, np.nan)
        a[row, col] = c
        out.append(a)
    return mask, out


def _top(score: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Indices of each request's top ``k`` by ``score`` (stable: the earlier candidate first on a
    tie); padding sorts last. [requests, min(k, longest)]."""
    s = np.where(mask, score, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _page(rank: np.ndarray, kept: np.ndarray, mask: np.ndarray, slots: int) -> np.ndarray:
    """The ``slots`` candidates the ranker shows among ``kept`` ([requests, K1] indices), in order;
    -1 where a request has fewer real candidates."""
    r = np.take_along_axis(np.where(mask, rank, -np.inf), kept, 1)
    order = np.argsort(-r, axis=1, kind="stable")[:, :slots]
    page = np.take_along_axis(kept, order, 1)
    real = np.take_along_axis(mask, page, 1)
    return np.where(real, page, -1)


def _page_value(page: np.ndarray, relevance: np.ndarray, eta: np.ndarray, bid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per request: true expected clicks and revenue of ``page`` (slot k examined k ** -eta)."""
    ok = page >= 0
    idx = np.where(ok, page, 0)
    rel = np.where(ok, np.take_along_axis(relevance, idx, 1), 0.0)
    b = np.where(ok, np.take_along_axis(bid, idx, 1), 0.0)
    exam = np.arange(1, page.shape[1] + 1)[None, :] ** -eta[:, :1]
    clicks = (rel * exam).sum(1)
    return clicks, (rel * exam * b).sum(1)


def _ndcg(pre: np.ndarray, gain: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    g = np.where(mask, gain, 0.0)
    discount = 1 / np.log2(np.arange(2, min(k, g.shape[1]) + 2))
    got = (np.take_along_axis(g, _top(pre, mask, k), 1) * discount).sum(1)
    ideal = (np.take_along_axis(g, _top(gain, mask, k), 1) * discount).sum(1)
    return np.where(ideal > 0, got / np.where(ideal > 0, ideal, 1), 1.0)


def evaluate_cascade(request: np.ndarray, bid: np.ndarray, pre: np.ndarray, rank: np.ndarray, relevance: np.ndarray,
                     eta: np.ndarray, slots: int, k1s: tuple[int, ...] = K1_DEFAULT, n_replicates: int = 0,
                     seed: int = 0) -> dict:
    """Cascade figures for one pre-ranker (``pre``) and one ranker (``rank``), both click
    probabilities of the log's rows (see the module docstring). ``eta``: the request's examination
    exponent per row. With ``n_replicates``, paired bootstrap replicates of every figure under
    ``bootstrap``."""
    for name, a in (("bid", bid), ("pre", pre), ("rank", rank), ("relevance", relevance), ("eta", eta)):
        if len(a) != len(request) or not np.isfinite(a).all():
            raise ValueError(f"cascade: {name} must be finite, one value per candidate ({len(a)} vs {len(request)})")
    mask, (b, p, r, rel, e) = padded(np.asarray(request), bid, pre, rank, relevance, eta)
    p_ecpm, r_ecpm, true_ecpm = p * b, r * b, rel * b
    per_request: dict[str, np.ndarray] = {}
    oracle = _page(true_ecpm, _top(true_ecpm, mask, mask.shape[1]), mask, slots)
    oracle_clicks, oracle_revenue = _page_value(oracle, rel, e, b)
    per_request["clicks_oracle"], per_request["revenue_oracle"] = oracle_clicks, oracle_revenue
    everything = _top(r_ecpm, mask, mask.shape[1])
    ranker_page = _page(r_ecpm, everything, mask, slots)
    per_request["clicks_ranker"], per_request["revenue_ranker"] = _page_value(ranker_page, rel, e, b)
    ranker_top = np.where(ranker_page >= 0, ranker_page, -2)
    for k in k1s:
        kept = _top(p_ecpm, mask, k)
        page = _page(r_ecpm, kept, mask, slots)
        clicks, revenue = _page_value(page, rel, e, b)
        found = (ranker_top[:, :, None] == kept[:, None, :]).any(2).sum(1)
        per_request[f"recall@{k}"] = found / np.maximum((ranker_page >= 0).sum(1), 1)
        per_request[f"ndcg@{k}"] = _ndcg(p_ecpm, r_ecpm, mask, k)
        per_request[f"clicks@{k}"], per_request[f"revenue@{k}"] = clicks, revenue
    out: dict = {"requests": int(mask.shape[0]), "n": float(mask.shape[0]), "candidates_per_request": float(mask.sum(1).mean()),
                 "slots": slots, "k1": list(k1s)}
    means = {k: float(v.mean()) for k, v in per_request.items()}
    oracle_total = means["revenue_oracle"]
    for k in [*k1s, "ranker"]:
        key = f"revenue@{k}" if k != "ranker" else "revenue_ranker"
        means[f"revenue_share@{k}"] = means[key] / oracle_total if oracle_total > 0 else float("nan")
    out.update(means)
    if n_replicates:
        draws = np.stack([bootstrap_group_draws(mask.shape[0], seed, b) for b in range(n_replicates)])
        reps = {name: v[draws].mean(1).tolist() for name, v in per_request.items()}
        oracle_reps = np.asarray(reps["revenue_oracle"])
        for k in k1s:
            reps[f"revenue_share@{k}"] = (np.asarray(reps[f"revenue@{k}"]) / oracle_reps).tolist()
        out["bootstrap"] = {**reps, "n_replicates": n_replicates, "seed": seed, "unit": "request"}
    return out


def evaluate_creatives(group: np.ndarray, p: np.ndarray, relevance: np.ndarray, label: np.ndarray, cold: np.ndarray,
                       n_replicates: int = 0, seed: int = 0, request: np.ndarray | None = None) -> dict:
    """Creative selection on a creative log: per group (one shown ad in one request: every creative
    of the ad alive then), the creative with the highest score ``p`` is chosen (the first on a
    tie). Figures, means over groups: the true relevance of the chosen creative (``ctr_chosen``),
    of the ad's best (``ctr_best``) and of a uniform choice (``ctr_random``), the share of the
    best-over-random gap the choice closes (``gap_closed``), how often it picks the best
    (``top1``); the same over the groups holding a ``cold`` creative (``*_cold``); and the AUC of
    ``p`` on the labelled rows (the creatives shown), overall and on the cold creatives. With
    ``n_replicates``, paired bootstrap replicates resampling ``request`` (else groups)."""
    from repro.metrics import auc

    for name, a in (("p", p), ("relevance", relevance), ("cold", cold), ("label", label)):
        if len(a) != len(group):
            raise ValueError(f"creatives: {name} must have one value per row ({len(a)} vs {len(group)})")
    mask, (score, rel, is_cold) = padded(np.asarray(group), p, relevance, cold.astype(np.float64))
    chosen = np.argmax(np.where(mask, score, -np.inf), axis=1)
    rel0 = np.where(mask, rel, np.nan)
    per_group = {
        "ctr_chosen": np.take_along_axis(rel0, chosen[:, None], 1)[:, 0],
        "ctr_best": np.nanmax(rel0, axis=1),
        "ctr_random": np.nanmean(rel0, axis=1),
    }
    per_group["top1"] = (per_group["ctr_chosen"] == per_group["ctr_best"]).astype(np.float64)
    has_cold = np.nanmax(np.where(mask, is_cold, 0.0), axis=1) > 0
    out: dict = {"groups": int(mask.shape[0]), "n": float(mask.shape[0]), "cold_groups": int(has_cold.sum()),
                 "creatives_per_group": float(mask.sum(1).mean())}
    for k, v in per_group.items():
        out[k] = float(v.mean())
        out[f"{k}_cold"] = float(v[has_cold].mean()) if has_cold.any() else float("nan")

    def closed(chosen_, best, random_):
        gap = best - random_
        return (chosen_ - random_) / gap if gap > 0 else float("nan")

    out["gap_closed"] = closed(out["ctr_chosen"], out["ctr_best"], out["ctr_random"])
    out["gap_closed_cold"] = closed(out["ctr_chosen_cold"], out["ctr_best_cold"], out["ctr_random_cold"])
    shown = ~np.isnan(label)
    out["auc"] = auc(label[shown], p[shown]) if shown.any() else float("nan")
    cold_shown = shown & cold.astype(bool)
    out["auc_cold"] = auc(label[cold_shown], p[cold_shown]) if cold_shown.any() else float("nan")
    out["n_cold_shown"] = int(cold_shown.sum())
    if n_replicates:
        # resample whole requests (a request's groups together), as every other replicate does
        if request is None:
            unit = np.arange(mask.shape[0])
        else:
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            unit = _first_appearance_codes(np.asarray(request)[starts])
        n_units = int(unit.max()) + 1 if len(unit) else 0
        reps: dict[str, list[float]] = {k: [] for k in ("ctr_chosen", "top1")}
        for b in range(n_replicates):
            weight = np.bincount(bootstrap_group_draws(n_units, seed, b), minlength=n_units)[unit]
            for k in reps:  # the mean over the resampled requests' groups
                reps[k].append(float((per_group[k] * weight).sum() / max(weight.sum(), 1)))
        out["bootstrap"] = {**reps, "n_replicates": n_replicates, "seed": seed,
                            "unit": "request" if request is not None else "group"}
    return out


def _first_appearance_codes(values: np.ndarray) -> np.ndarray:
    """Codes 0..k-1 of ``values`` in order of first appearance."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]
