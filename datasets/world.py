"""The simulated search-ads world: adrepro's embedded default data set.

A request is a user issuing a query in a scene (traffic condition) at an hour on a device. For
each request, ``candidates`` ads are retrieved (mostly from the query's category, popularity
weighted), a logging ranker orders them by its own noisy eCPM estimate and shows the top
``slots`` at positions 1..slots, each with one of the ad's creatives. A small slice of requests
is shown in random order, for unbiased evaluation.

The hidden click model (every term can be switched off by a knob, so a test can show that a
method's gain disappears when the structure it exploits is absent)::

    relevance = sigmoid( bias + b_user + b_query + b_ad + b_creative              main effects
                         + w_scene[s] * (<u_user, a_ad> + <q_query, a_ad>)           latent affinity,
                         + match * [query_category == ad_category]                    scene-scaled
                         + X_qb[query_category, brand] + X_ss[user_segment, shop]     explicit crosses
                         + appeal(content vector of the shown creative)               creatives
                         + scene, hour and device effects )
    p_click   = examination(position, scene) * relevance,  examination = (1 + pos - 1)^(-eta_s)

``long_tail`` toggles Zipf popularity (off: uniform). ``crosses`` toggles the sparse explicit
cross tables (only ``cross_density`` of the value pairs carry an effect, as with real semantic
crosses). ``scenes`` toggles the scene scaling of the affinities and scene-specific position
decay. ``creatives`` toggles the creative appeal. ``positions`` toggles examination (off: 1).

Ground truth per shown row (true ``p_click``, position-free ``relevance``, ``examination`` and the
``is_random`` flag of the randomised slice) is written to the truth table, which no model reads.

Everything is drawn from ``seed`` with numpy, vectorised per chunk of requests; a chunk's draws
depend only on (seed, split, chunk index), so the two preparation passes see identical rows.

Choices the reference leaves open, and what was chosen:
- the logging ranker is the true position-free relevance (without the creative term) plus
  Gaussian logit noise ``logging_noise`` -- an imperfect teacher, so exposure is biased but not
  oracle-perfect;
- the shown creative is drawn uniformly among the ad's creatives (the log then supports creative
  selection studies without a second logging policy);
- splits are by request time: the first 80% of requests train, 10% valid, 10% test.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from repro.data.source import RawField
from repro.errors import ConfigError
from repro.io import stable_hash
from repro.registry import register_source

# Sizes per scale. `default` is the main job's data; `large` proves the pipeline streams.
SCALES: dict[str, dict[str, int]] = {
    "smoke": dict(requests=25_000, users=3_000, queries=600, ads=2_000, brands=150, shops=300, campaigns=500),
    "default": dict(requests=300_000, users=60_000, queries=8_000, ads=20_000, brands=1_000, shops=3_000, campaigns=6_000),
    "large": dict(requests=6_000_000, users=1_500_000, queries=150_000, ads=400_000, brands=20_000, shops=60_000, campaigns=120_000),
}
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


@dataclass
class WorldConfig:
    seed: int = 0
    scale: str = "default"
    # Sizes: None takes the scale's preset.
    requests: int | None = None
    users: int | None = None
    queries: int | None = None
    ads: int | None = None
    brands: int | None = None
    shops: int | None = None
    campaigns: int | None = None
    categories: int = 60
    user_segments: int = 30
    scenes_count: int = 6
    devices: int = 3
    creatives_per_ad: int = 4
    content_dim: int = 8
    latent_dim: int = 8
    candidates: int = 100
    slots: int = 5
    chunk_requests: int = 20_000
    # Structure knobs.
    long_tail: bool = True
    crosses: bool = True
    scenes: bool = True
    creatives: bool = True
    positions: bool = True
    random_exposure: float = 0.02
    # Calibration (chosen so exposure CTR is a few percent and the Bayes-optimal AUC ~0.80).
    zipf: float = 1.05
    bias: float = -4.6
    main_effect_std: float = 0.2
    affinity_std: float = 0.7
    group_share: float = 0.9
    match_effect: float = 0.8
    cross_density: float = 0.05
    cross_std: float = 0.8
    appeal_std: float = 0.35
    context_std: float = 0.2
    eta: float = 0.6
    logging_noise: float = 2.0
    bid_sigma: float = 0.6

    def resolved(self) -> "WorldConfig":
        if self.scale not in SCALES:
            raise ConfigError(f"world: unknown scale {self.scale!r}; expected one of {sorted(SCALES)}")
        preset = SCALES[self.scale]
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})


@register_source("world", config=WorldConfig)
class SimulatedSearchAdsWorld:
    """Source plugin: yields raw chunks of the simulated world (see the module docstring)."""

    name = "world"
    split_protocol = "sequential by request: 80/10/10 of request time"
    label = "click"
    weight = None
    truth_columns = ("p_click", "relevance", "examination", "is_random")

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg.resolved()
        if not 1 <= self.cfg.slots <= self.cfg.candidates:
            raise ConfigError(f"world: slots ({self.cfg.slots}) must be within 1..candidates ({self.cfg.candidates})")

    # -- Source protocol ---------------------------------------------------------------------
    def fields(self) -> list[RawField]:
        return [
            RawField("request_id", "key", ("request",)),
            RawField("user_id", "categorical", ("user",)),
            RawField("user_key", "key", ("user",)),  # raw id, for GAUC by user (rare ids share OOV)
            RawField("user_segment", "categorical"),
            RawField("query_id", "categorical", ("query",)),
            RawField("query_category", "categorical"),
            RawField("scene", "categorical", ("scene",)),
            RawField("hour", "categorical"),
            RawField("device", "categorical"),
            RawField("ad_id", "categorical", ("ad",)),
            RawField("campaign_id", "categorical"),
            RawField("shop_id", "categorical"),
            RawField("brand_id", "categorical"),
            RawField("ad_category", "categorical"),
            RawField("creative_id", "categorical", ("creative",)),
            RawField("position", "categorical", ("position",)),
            RawField("log_bid", "dense", ("bid",)),
            RawField("content", "vector", ("content",), dim=self.cfg.content_dim),
        ]

    def fingerprint(self) -> str:
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
        return stable_hash({"config": asdict(self.cfg), "code": code})

    def describe(self) -> dict:
        return asdict(self.cfg)

    def expected_rows(self, split: str) -> int:
        lo, hi = self._request_range(split)
        return (hi - lo) * self.cfg.slots

    def chunks(self, split: str) -> Iterator[pa.Table]:
        lo, hi = self._request_range(split)
        step = self.cfg.chunk_requests
        for i, start in enumerate(range(lo, hi, step)):
            yield self._chunk(start, min(start + step, hi), i, split)

    # -- the world's fixed entities (drawn once from the seed) --------------------------------
    def _request_range(self, split: str) -> tuple[int, int]:
        a, b = SPLIT_FRACTIONS[split]
        n = self.cfg.requests
        return int(round(a * n)), int(round(b * n))

    @cached_property
    def _entities(self) -> dict[str, np.ndarray]:
        c = self.cfg
        rng = np.random.default_rng([c.seed, 7919])
        d = c.latent_dim
        e: dict[str, np.ndarray] = {}
        e["user_pop"] = self._popularity(c.users, rng)
        e["query_pop"] = self._popularity(c.queries, rng)
        e["ad_pop"] = self._popularity(c.ads, rng)
        e["user_b"] = rng.normal(0, c.main_effect_std, c.users)
        e["query_b"] = rng.normal(0, c.main_effect_std, c.queries)
        e["ad_b"] = rng.normal(0, c.main_effect_std, c.ads)
        e["user_segment"] = rng.integers(0, c.user_segments, c.users)
        e["user_device"] = rng.integers(0, c.devices, c.users)
        e["query_category"] = self._zipf_draw(self._popularity(c.categories, rng, tail=True), c.queries, rng)
        e["ad_category"] = self._zipf_draw(self._popularity(c.categories, rng, tail=True), c.ads, rng)
        e["ad_brand"] = self._zipf_draw(self._popularity(c.brands, rng), c.ads, rng)
        e["ad_shop"] = self._zipf_draw(self._popularity(c.shops, rng), c.ads, rng)
        e["ad_campaign"] = self._zipf_draw(self._popularity(c.campaigns, rng), c.ads, rng)
        # Latent factors are shared within groups (segment, category, brand) plus an individual
        # part: tastes generalise across a segment, so they are learnable from a log, as in
        # real data; `group_share` sets how much of each vector is the group's.
        g, own = np.sqrt(c.group_share), np.sqrt(1 - c.group_share)
        scale = np.sqrt(c.affinity_std)

        def latent(n: int, std: float) -> np.ndarray:
            return rng.normal(0, std, (n, d))

        e["user_v"] = scale * (g * latent(c.user_segments, d**-0.5)[e["user_segment"]] + own * latent(c.users, d**-0.5))
        e["query_v"] = scale * (g * latent(c.categories, d**-0.5)[e["query_category"]] + own * latent(c.queries, d**-0.5))
        e["ad_v"] = scale * (
            g * np.sqrt(0.5) * (latent(c.categories, 1.0)[e["ad_category"]] + latent(c.brands, 1.0)[e["ad_brand"]])
            + own * latent(c.ads, 1.0)
        )
        e["ad_bid"] = rng.lognormal(0.0, c.bid_sigma, c.ads)
        # Sparse explicit crosses: most value pairs carry nothing, a few carry a lot.
        e["cross_qb"] = self._sparse_table(c.categories, c.brands, rng)
        e["cross_ss"] = self._sparse_table(c.user_segments, c.shops, rng)
        e["scene_w"] = rng.uniform(0.2, 1.8, c.scenes_count) if c.scenes else np.ones(c.scenes_count)
        e["scene_b"] = rng.normal(0, c.context_std, c.scenes_count)
        e["scene_eta"] = c.eta * (rng.uniform(0.6, 1.6, c.scenes_count) if c.scenes else np.ones(c.scenes_count))
        e["scene_p"] = rng.dirichlet(np.full(c.scenes_count, 2.0))
        e["hour_b"] = c.context_std * np.sin(np.arange(24) / 24 * 2 * np.pi + rng.uniform(0, 6.3))
        e["hour_p"] = 1.2 + np.sin(np.arange(24) / 24 * 2 * np.pi - 1.8)
        e["hour_p"] /= e["hour_p"].sum()
        e["device_b"] = rng.normal(0, c.context_std, c.devices)
        n_cr = c.ads * c.creatives_per_ad
        e["content"] = rng.normal(0, 1, (n_cr, c.content_dim)).astype(np.float32)
        w1 = rng.normal(0, 1 / np.sqrt(c.content_dim), c.content_dim)
        w2 = rng.normal(0, 1 / np.sqrt(c.content_dim), (c.content_dim, 4))
        raw_appeal = e["content"] @ w1 + np.tanh(e["content"] @ w2).sum(1) * 0.5
        e["creative_appeal"] = c.appeal_std * raw_appeal / raw_appeal.std() if c.creatives else np.zeros(n_cr)
        e["creative_b"] = rng.normal(0, 0.15, n_cr) if c.creatives else np.zeros(n_cr)
        # Retrieval index: ads sorted by category, with popularity-weighted cumulative sums.
        order = np.argsort(e["ad_category"], kind="stable")
        e["ads_by_cat"] = order
        e["ads_cat_cum"] = np.cumsum(e["ad_pop"][order])
        bounds = np.searchsorted(e["ad_category"][order], np.arange(c.categories + 1))
        e["cat_lo"], e["cat_hi"] = bounds[:-1], bounds[1:]
        return e

    def _popularity(self, n: int, rng: np.random.Generator, tail: bool | None = None) -> np.ndarray:
        tail = self.cfg.long_tail if tail is None else tail
        w = 1.0 / np.arange(1, n + 1) ** self.cfg.zipf if tail else np.ones(n)
        w = w[rng.permutation(n)]  # ids carry no popularity order
        return w / w.sum()

    @staticmethod
    def _zipf_draw(p: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(np.searchsorted(np.cumsum(p), rng.random(size)), len(p) - 1)

    def _sparse_table(self, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
        if not self.cfg.crosses:
            return np.zeros((rows, cols), dtype=np.float32)
        mask = rng.random((rows, cols)) < self.cfg.cross_density
        return (mask * rng.normal(0, self.cfg.cross_std, (rows, cols))).astype(np.float32)

    # -- one chunk of requests ----------------------------------------------------------------
    def _chunk(self, start: int, stop: int, index: int, split: str) -> pa.Table:
        c, e = self.cfg, self._entities
        rng = np.random.default_rng([c.seed, start])  # depends on the chunk's first request only
        r = stop - start
        user = self._zipf_draw(e["user_pop"], r, rng)
        query = self._zipf_draw(e["query_pop"], r, rng)
        scene = self._zipf_draw(e["scene_p"], r, rng)
        hour = self._zipf_draw(e["hour_p"], r, rng)
        device = np.where(rng.random(r) < 0.8, e["user_device"][user], rng.integers(0, c.devices, r))
        qcat = e["query_category"][query]

        ads = self._retrieve(qcat, rng)  # [r, candidates], sorted, duplicates marked -1
        valid = ads >= 0
        ads_safe = np.where(valid, ads, 0)
        bid = e["ad_bid"][ads_safe] * rng.lognormal(0.0, 0.1, ads.shape)
        z_ad = self._ad_logit(user[:, None], query[:, None], scene[:, None], hour[:, None], device[:, None], ads_safe)
        logged = bid / (1 + np.exp(-(z_ad + rng.normal(0, c.logging_noise, ads.shape))))
        logged = np.where(valid, logged, -np.inf)

        is_random = rng.random(r) < c.random_exposure
        noise_rank = np.where(valid, rng.random(ads.shape), -np.inf)
        score = np.where(is_random[:, None], noise_rank, logged)
        top = np.argsort(-score, axis=1, kind="stable")[:, : c.slots]  # [r, slots] in shown order
        # Requests with fewer distinct candidates than slots are trimmed, not padded.
        shown_ok = np.take_along_axis(valid, top, 1)

        rows = np.repeat(np.arange(r), c.slots)[shown_ok.ravel()]
        pos = np.tile(np.arange(1, c.slots + 1), r)[shown_ok.ravel()]
        ad = np.take_along_axis(ads_safe, top, 1).ravel()[shown_ok.ravel()]
        z = np.take_along_axis(z_ad, top, 1).ravel()[shown_ok.ravel()]
        ad_bid = np.take_along_axis(bid, top, 1).ravel()[shown_ok.ravel()]
        creative = ad * c.creatives_per_ad + rng.integers(0, c.creatives_per_ad, len(ad))
        z = z + e["creative_appeal"][creative] + e["creative_b"][creative]
        relevance = 1 / (1 + np.exp(-z))
        exam = (1.0 / pos ** e["scene_eta"][scene[rows]]) if c.positions else np.ones(len(pos))
        p_click = exam * relevance
        click = (rng.random(len(p_click)) < p_click).astype(np.int8)

        cols = {
            "request_id": (start + rows).astype(np.int64),
            "user_id": user[rows],
            "user_key": user[rows].astype(np.int64),
            "user_segment": e["user_segment"][user[rows]],
            "query_id": query[rows],
            "query_category": qcat[rows],
            "scene": scene[rows],
            "hour": hour[rows],
            "device": device[rows],
            "ad_id": ad,
            "campaign_id": e["ad_campaign"][ad],
            "shop_id": e["ad_shop"][ad],
            "brand_id": e["ad_brand"][ad],
            "ad_category": e["ad_category"][ad],
            "creative_id": creative,
            "position": pos,
            "log_bid": np.log(ad_bid).astype(np.float32),
        }
        content = e["content"][creative]
        for i in range(c.content_dim):
            cols[f"content_{i}"] = content[:, i]
        cols.update(click=click, p_click=p_click, relevance=relevance, examination=exam, is_random=is_random[rows])
        return pa.table({k: pa.array(v) for k, v in cols.items()})

    def _retrieve(self, qcat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Candidates per request: 70% from the query's category, 30% from all ads, by popularity."""
        c, e = self.cfg, self._entities
        shape = (len(qcat), c.candidates)
        cum = e["ads_cat_cum"]
        lo, hi = e["cat_lo"][qcat][:, None], e["cat_hi"][qcat][:, None]
        has = hi > lo
        base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        top = cum[np.maximum(hi - 1, 0)]
        u = base + rng.random(shape) * (top - base)
        in_cat = e["ads_by_cat"][np.clip(np.searchsorted(cum, u), lo, np.maximum(hi - 1, lo))]
        anywhere = self._zipf_draw(e["ad_pop"], shape[0] * shape[1], rng).reshape(shape)
        ads = np.where((rng.random(shape) < 0.7) & has, in_cat, anywhere)
        ads.sort(axis=1)
        dup = np.zeros(shape, dtype=bool)
        dup[:, 1:] = ads[:, 1:] == ads[:, :-1]
        return np.where(dup, -1, ads)

    def _ad_logit(self, user, query, scene, hour, device, ad) -> np.ndarray:
        """Position-free relevance logit of (request, ad), before the creative's appeal."""
        c, e = self.cfg, self._entities
        affinity = np.einsum("rd,rkd->rk", e["user_v"][user[:, 0]] + e["query_v"][query[:, 0]], e["ad_v"][ad])
        qcat, acat = e["query_category"][query], e["ad_category"][ad]
        z = (
            c.bias
            + e["user_b"][user] + e["query_b"][query] + e["ad_b"][ad]
            + e["scene_w"][scene] * affinity
            + c.match_effect * (qcat == acat)
            + e["cross_qb"][qcat, e["ad_brand"][ad]]
            + e["cross_ss"][e["user_segment"][user], e["ad_shop"][ad]]
            + e["scene_b"][scene] + e["hour_b"][hour] + e["device_b"][device]
        )
        return z
