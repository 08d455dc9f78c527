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

Random streams: one knob, one effect. Everything is drawn from ``seed`` with numpy, vectorised
per chunk of requests, but never from one shared generator: every entity table (``ad_category``,
``ad_bid``, each latent table, each cross table, each popularity permutation...) has a stream of
its own, ``SeedSequence([seed, *sha256(name)])``, and so has every per-chunk effect, keyed by
(name, chunk start): the user, query, scene, hour and device draws, retrieval, bid noise, logging
noise, the random-exposure flag, the random-order noise, the creative choice and the click
uniforms. Switching a knob off therefore changes only what that knob owns: with ``crosses=False``
every other table and every request's candidate list are the same; with ``creatives=False`` the
same creatives are shown (their appeal and bias are zero); with ``positions=False`` the same
uniforms decide the clicks; with ``scenes=False`` every request keeps its scene. ``long_tail``
changes popularity by design, hence which users, queries and ads are drawn and the brand, shop
and campaign of each ad, but no table drawn independently of popularity (categories, bids, main
effects, the latent group and individual tables, crosses, creatives). The creative choice and the
click uniform are drawn per (request, candidate), so an ad shown in a request under two rankings
gets the same creative and the same uniform. A chunk's draws depend only on (seed, chunk start),
so the two preparation passes see identical rows (and ``chunk_requests`` is part of the world).

The cascade (issue 7). ``candidate_share`` > 0 adds the candidate log: for that share of the
requests (drawn from a stream of its own), every retrieved candidate as a row of the splits
``candidates_train``, ``candidates_valid`` and ``candidates_test`` (the requests of the split of the
same name), with the shown rows' fields (``position`` 0 where not shown, so a position-aware model
can be served a default), the click where shown and no label elsewhere; its truth table adds
``shown``, the logging ranker's ``logging_score``, ``eta`` (p_click at position k is k ** -eta times
``relevance``) and ``relevance_creative_<k>``, the relevance the request would have had with each
of the ad's creatives (the creative-selection oracle). Each chunk is simulated once for its shown
rows and its candidate log, so the log's shown rows are the training rows exactly; the shown rows
do not depend on ``candidate_share``. ``creative_share`` > 0 adds the creative log
(``creatives_<split>``): for that share of the requests (a stream of its own), every shown ad once
per creative of the ad alive at the request, with that creative's id and content, the click only on
the creative shown and, in the truth, the relevance each creative would have had there, ``shown``
and the creative's birth (``creative_born``). ``cold_creatives`` > 0 makes each creative but an ad's first
cold with that probability: born at a request drawn uniformly between the valid split's start and
the end of ``test_random``, shown only from then on (a creative drawn before its birth is replaced
by one drawn uniformly among the ad's alive creatives, from a stream of its own), so it is first
seen in valid or test, as a new creative of a running campaign is.

Splits: ``train``, ``valid`` and ``test`` are the log, by request time (the first 80% of
``requests`` train, 10% valid, 10% test); the log's own randomised slice (``random_exposure`` of
its requests) is part of the logging policy and stays in it. ``test_random`` is a test set of its
own requests, ``requests .. requests + random_requests - 1`` (so its streams never overlap the
log's), every one of them shown in a uniformly random order of its valid candidates, exactly as
the log's random slice is: an unbiased, large enough evaluation set (``is_random`` is True on all
its rows). ``random_requests=0`` drops the split.

Choices the reference leaves open, and what was chosen:
- the logging ranker is the true position-free relevance (without the creative term) plus
  Gaussian logit noise ``logging_noise`` -- an imperfect teacher, so exposure is biased but not
  oracle-perfect;
- the shown creative is drawn uniformly among the ad's creatives (the log then supports creative
  selection studies without a second logging policy);
- retrieval takes 70% of the candidates from the query's category and 30% from all ads (all of
  them when the category has no ads), popularity weighted, duplicates dropped;
- the randomised test set is sized so the Bayes-optimal AUC on it has a bootstrap standard error
  (by request) of at most 0.005 at the default scale (see ``SCALES``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Iterator

import numpy as np
import pyarrow as pa

from repro.data.prepare import code_digest
from repro.data.source import RawField
from repro.errors import ConfigError
from repro.io import stable_hash
from repro.registry import register_source

# Sizes per scale. `default` is the main job's data; `large` proves the pipeline streams.
# `random_requests` sizes the randomised test set `test_random` (see the module docstring):
# - default: 40k requests (200k rows), chosen so that the Bayes-optimal AUC there has a bootstrap
#   standard error (200 replicates resampling requests) of at most 0.005. Measured, seed 0: 3,781
#   clicks, Bayes AUC 0.850, SE 0.0033 (seeds 1-3: SE 0.0038, 0.0030, 0.0032). At 25k requests
#   seed 1 already missed (SE 0.0053). The log's own 2% random slice of the test split has ~3k rows
#   and ~50 clicks (SE ~0.03).
# - smoke: 2k requests (10k rows, 163 clicks at seed 0): enough to exercise the split, and fast.
# - large: 200k requests, SE well under 0.005.
SCALES: dict[str, dict[str, int]] = {
    "smoke": dict(requests=25_000, users=3_000, queries=600, ads=2_000, brands=150, shops=300, campaigns=500,
                  random_requests=2_000),
    "default": dict(requests=300_000, users=60_000, queries=8_000, ads=20_000, brands=1_000, shops=3_000,
                    campaigns=6_000, random_requests=40_000),
    "large": dict(requests=6_000_000, users=1_500_000, queries=150_000, ads=400_000, brands=20_000, shops=60_000,
                  campaigns=120_000, random_requests=200_000),
}
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}
SPLITS = ("train", "valid", "test", "test_random")
CANDIDATE_SPLITS = ("candidates_train", "candidates_valid", "candidates_test")
CREATIVE_SPLITS = ("creatives_train", "creatives_valid", "creatives_test")
LOG_SPLITS = CANDIDATE_SPLITS + CREATIVE_SPLITS


@dataclass
class WorldConfig:
    seed: int = 0
    scale: str = "default"
    # Sizes: None takes the scale's preset.
    requests: int | None = None
    random_requests: int | None = None  # the `test_random` split's own requests (0: no such split)
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
    # Cascade knobs (issue 7). `cold_creatives`: the probability that each creative of an ad but
    # its first is born during the log, at a request drawn uniformly from the valid split's start
    # to the end of `test_random`, so it is first seen in valid or test. `candidate_share`: the
    # share of requests whose whole candidate list is logged as the `candidates_<split>` splits.
    cold_creatives: float = 0.0
    candidate_share: float = 0.0
    # `creative_share`: the share of requests whose shown ads are logged once per creative of the
    # ad alive at the request, as the `creatives_<split>` splits (creative selection).
    creative_share: float = 0.0
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
    split_protocol = ("sequential by request: 80/10/10 of request time; test_random: requests after the log, "
                      "all shown in random order")
    label = "click"
    weight = None
    truth_columns = ("p_click", "relevance", "examination", "is_random")

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg.resolved()
        if not 1 <= self.cfg.slots <= self.cfg.candidates:
            raise ConfigError(f"world: slots ({self.cfg.slots}) must be within 1..candidates ({self.cfg.candidates})")
        if self.cfg.random_requests < 0:
            raise ConfigError(f"world: random_requests ({self.cfg.random_requests}) must be >= 0")
        for knob in ("cold_creatives", "candidate_share", "creative_share", "random_exposure"):
            if not 0.0 <= getattr(self.cfg, knob) <= 1.0:
                raise ConfigError(f"world: {knob} ({getattr(self.cfg, knob)}) must be within [0, 1]")

    # -- Source protocol ---------------------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:
        splits = SPLITS if self.cfg.random_requests else SPLITS[:3]
        return splits + self.unlabelled_splits

    @property
    def unlabelled_splits(self) -> tuple[str, ...]:
        """The candidate and creative logs: a row has a label only where it was shown."""
        return ((CANDIDATE_SPLITS if self.cfg.candidate_share > 0 else ())
                + (CREATIVE_SPLITS if self.cfg.creative_share > 0 else ()))

    def split_truth_columns(self, split: str) -> tuple[str, ...]:
        if split in CANDIDATE_SPLITS:
            return self.truth_columns + ("shown", "logging_score", "eta") + tuple(
                f"relevance_creative_{k}" for k in range(self.cfg.creatives_per_ad))
        if split in CREATIVE_SPLITS:
            return self.truth_columns + ("shown", "creative_born")
        return self.truth_columns

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
        # The generator's code by its normalised digest: a comment or docstring edit keeps every cache.
        code = code_digest(__file__)[:12]
        return stable_hash({"config": asdict(self.cfg), "code": code})

    def describe(self) -> dict:
        return asdict(self.cfg)

    def expected_rows(self, split: str) -> int | None:
        if split in LOG_SPLITS:
            return None  # the share of requests kept is drawn, and duplicates are dropped
        lo, hi = self._request_range(split)
        return (hi - lo) * self.cfg.slots

    def chunks(self, split: str) -> Iterator[pa.Table]:
        for s, table in self.split_chunks((split,)):
            yield table

    def split_chunks(self, splits: tuple[str, ...]) -> Iterator[tuple[str, pa.Table]]:
        """(split, chunk) pairs; a chunk of requests is simulated once for its shown rows and its
        candidate and creative logs."""
        for split in splits:
            if split not in self.splits:
                raise KeyError(f"world: unknown split {split!r}; expected one of {self.splits}")
        logs = {"candidates_": self._candidate_chunk, "creatives_": self._creative_chunk}
        for split in (s for s in self.splits if s not in LOG_SPLITS):
            wanted = [p for p in logs if p + split in splits]
            if split not in splits and not wanted:
                continue
            lo, hi = self._request_range(split)
            for start in range(lo, hi, self.cfg.chunk_requests):
                stop = min(start + self.cfg.chunk_requests, hi)
                sim = self._simulate(start, stop, all_random=split == "test_random")
                if split in splits:
                    yield split, self._chunk(start, stop, sim=sim)
                for prefix in wanted:
                    yield prefix + split, logs[prefix](start, stop, sim=sim)

    # -- random streams -----------------------------------------------------------------------
    def _rng(self, name: str, *key: int) -> np.random.Generator:
        """The random stream ``name`` (of one chunk when ``key`` is its start): shares no draws
        with any other stream, so switching one effect off never shifts another."""
        words = np.frombuffer(hashlib.sha256(name.encode()).digest()[:8], dtype="<u4").tolist()
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, *words, *key]))

    # -- the world's fixed entities (drawn once from the seed) --------------------------------
    def _request_range(self, split: str) -> tuple[int, int]:
        n = self.cfg.requests
        if split == "test_random":
            return n, n + self.cfg.random_requests
        split = split.removeprefix("candidates_").removeprefix("creatives_")
        if split not in SPLIT_FRACTIONS:
            raise KeyError(f"world: unknown split {split!r}; expected one of {self.splits}")
        a, b = SPLIT_FRACTIONS[split]
        return int(round(a * n)), int(round(b * n))

    @cached_property
    def _entities(self) -> dict[str, np.ndarray]:
        c, rng = self.cfg, self._rng
        d = c.latent_dim
        e: dict[str, np.ndarray] = {}
        e["user_pop"] = self._popularity(c.users, "user_pop")
        e["query_pop"] = self._popularity(c.queries, "query_pop")
        e["ad_pop"] = self._popularity(c.ads, "ad_pop")
        e["user_b"] = rng("user_b").normal(0, c.main_effect_std, c.users)
        e["query_b"] = rng("query_b").normal(0, c.main_effect_std, c.queries)
        e["ad_b"] = rng("ad_b").normal(0, c.main_effect_std, c.ads)
        e["user_segment"] = rng("user_segment").integers(0, c.user_segments, c.users)
        e["user_device"] = rng("user_device").integers(0, c.devices, c.users)
        # Category shares are Zipf whatever `long_tail` says (a property of the catalogue, not of
        # traffic); brand, shop and campaign sizes follow `long_tail`.
        e["query_category"] = self._zipf_draw(self._popularity(c.categories, "query_category_pop", tail=True),
                                              c.queries, rng("query_category"))
        e["ad_category"] = self._zipf_draw(self._popularity(c.categories, "ad_category_pop", tail=True),
                                           c.ads, rng("ad_category"))
        e["ad_brand"] = self._zipf_draw(self._popularity(c.brands, "brand_pop"), c.ads, rng("ad_brand"))
        e["ad_shop"] = self._zipf_draw(self._popularity(c.shops, "shop_pop"), c.ads, rng("ad_shop"))
        e["ad_campaign"] = self._zipf_draw(self._popularity(c.campaigns, "campaign_pop"), c.ads, rng("ad_campaign"))
        # Latent factors are shared within groups (segment, category, brand) plus an individual
        # part: tastes generalise across a segment, so they are learnable from a log, as in
        # real data; `group_share` sets how much of each vector is the group's.
        g, own = np.sqrt(c.group_share), np.sqrt(1 - c.group_share)
        scale = np.sqrt(c.affinity_std)

        def latent(name: str, n: int, std: float) -> np.ndarray:
            return rng(name).normal(0, std, (n, d))

        e["segment_v"] = latent("segment_v", c.user_segments, d**-0.5)
        e["query_category_v"] = latent("query_category_v", c.categories, d**-0.5)
        e["ad_category_v"] = latent("ad_category_v", c.categories, 1.0)
        e["brand_v"] = latent("brand_v", c.brands, 1.0)
        e["user_v"] = scale * (g * e["segment_v"][e["user_segment"]] + own * latent("user_own_v", c.users, d**-0.5))
        e["query_v"] = scale * (
            g * e["query_category_v"][e["query_category"]] + own * latent("query_own_v", c.queries, d**-0.5)
        )
        e["ad_v"] = scale * (
            g * np.sqrt(0.5) * (e["ad_category_v"][e["ad_category"]] + e["brand_v"][e["ad_brand"]])
            + own * latent("ad_own_v", c.ads, 1.0)
        )
        e["ad_bid"] = rng("ad_bid").lognormal(0.0, c.bid_sigma, c.ads)
        # Sparse explicit crosses: most value pairs carry nothing, a few carry a lot.
        e["cross_qb"] = self._sparse_table(c.categories, c.brands, "cross_qb")
        e["cross_ss"] = self._sparse_table(c.user_segments, c.shops, "cross_ss")
        ones = np.ones(c.scenes_count)
        e["scene_w"] = rng("scene_w").uniform(0.2, 1.8, c.scenes_count) if c.scenes else ones
        e["scene_b"] = rng("scene_b").normal(0, c.context_std, c.scenes_count)
        e["scene_eta"] = c.eta * (rng("scene_eta").uniform(0.6, 1.6, c.scenes_count) if c.scenes else ones)
        e["scene_p"] = rng("scene_p").dirichlet(np.full(c.scenes_count, 2.0))
        e["hour_b"] = c.context_std * np.sin(np.arange(24) / 24 * 2 * np.pi + rng("hour_b").uniform(0, 6.3))
        e["hour_p"] = 1.2 + np.sin(np.arange(24) / 24 * 2 * np.pi - 1.8)
        e["hour_p"] /= e["hour_p"].sum()
        e["device_b"] = rng("device_b").normal(0, c.context_std, c.devices)
        n_cr = c.ads * c.creatives_per_ad
        e["content"] = rng("content").normal(0, 1, (n_cr, c.content_dim)).astype(np.float32)
        if c.creatives:
            w = rng("appeal_w")
            w1 = w.normal(0, 1 / np.sqrt(c.content_dim), c.content_dim)
            w2 = w.normal(0, 1 / np.sqrt(c.content_dim), (c.content_dim, 4))
            raw_appeal = e["content"] @ w1 + np.tanh(e["content"] @ w2).sum(1) * 0.5
            e["creative_appeal"] = c.appeal_std * raw_appeal / raw_appeal.std()
            e["creative_b"] = rng("creative_b").normal(0, 0.15, n_cr)
        else:
            e["creative_appeal"], e["creative_b"] = np.zeros(n_cr), np.zeros(n_cr)
        # Birth request of each creative (-1: before the log); an ad's first creative is never cold.
        e["creative_birth"] = np.full(n_cr, -1, dtype=np.int64)
        if c.cold_creatives > 0:
            cold = rng("creative_cold").random(n_cr) < c.cold_creatives
            cold[:: c.creatives_per_ad] = False
            lo = self._request_range("valid")[0]
            born = rng("creative_birth").integers(lo, c.requests + c.random_requests, n_cr)
            e["creative_birth"] = np.where(cold, born, -1)
        self._index_categories(e)
        return e

    def _index_categories(self, e: dict[str, np.ndarray]) -> None:
        """Retrieval index: ads sorted by category, popularity-weighted cumulative sums, and each
        category's block [cat_lo, cat_hi) (empty for a category without ads)."""
        order = np.argsort(e["ad_category"], kind="stable")
        e["ads_by_cat"] = order
        e["ads_cat_cum"] = np.cumsum(e["ad_pop"][order])
        bounds = np.searchsorted(e["ad_category"][order], np.arange(self.cfg.categories + 1))
        e["cat_lo"], e["cat_hi"] = bounds[:-1], bounds[1:]

    def _popularity(self, n: int, name: str, tail: bool | None = None) -> np.ndarray:
        tail = self.cfg.long_tail if tail is None else tail
        w = 1.0 / np.arange(1, n + 1) ** self.cfg.zipf if tail else np.ones(n)
        w = w[self._rng(name).permutation(n)]  # ids carry no popularity order
        return w / w.sum()

    @staticmethod
    def _zipf_draw(p: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(np.searchsorted(np.cumsum(p), rng.random(size)), len(p) - 1)

    def _sparse_table(self, rows: int, cols: int, name: str) -> np.ndarray:
        if not self.cfg.crosses:
            return np.zeros((rows, cols), dtype=np.float32)
        rng = self._rng(name)
        mask = rng.random((rows, cols)) < self.cfg.cross_density
        return (mask * rng.normal(0, self.cfg.cross_std, (rows, cols))).astype(np.float32)

    # -- one chunk of requests ----------------------------------------------------------------
    def _requests(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The context of requests start..stop-1: user, query, scene, hour, device (own streams)."""
        c, e = self.cfg, self._entities
        r = stop - start
        user = self._zipf_draw(e["user_pop"], r, self._rng("user", start))
        query = self._zipf_draw(e["query_pop"], r, self._rng("query", start))
        scene = self._zipf_draw(e["scene_p"], r, self._rng("scene", start))
        hour = self._zipf_draw(e["hour_p"], r, self._rng("hour", start))
        rng = self._rng("device", start)
        device = np.where(rng.random(r) < 0.8, e["user_device"][user], rng.integers(0, c.devices, r))
        return dict(user=user, query=query, scene=scene, hour=hour, device=device)

    def _simulate(self, start: int, stop: int, all_random: bool = False) -> dict[str, np.ndarray]:
        """Everything that happens in requests start..stop-1, per request and per retrieved
        candidate ([r, candidates] arrays): retrieval, bids, the logging ranker's score, the shown
        order, each candidate's creative and click uniform. Shown rows and the candidate log are
        both cut from this, so they cannot disagree. Every draw comes from a stream keyed by
        (name, start)."""
        c, e = self.cfg, self._entities

        def rng(name: str) -> np.random.Generator:
            return self._rng(name, start)

        r = stop - start
        sim = self._requests(start, stop)
        sim["qcat"] = e["query_category"][sim["query"]]
        ads = self._retrieve(sim["qcat"], rng("retrieval"))  # [r, candidates], sorted, duplicates marked -1
        valid = ads >= 0
        ads_safe = np.where(valid, ads, 0)
        bid = e["ad_bid"][ads_safe] * rng("bid_noise").lognormal(0.0, 0.1, ads.shape)
        col = {k: sim[k][:, None] for k in ("user", "query", "scene", "hour", "device")}
        z_ad = self._ad_logit(col["user"], col["query"], col["scene"], col["hour"], col["device"], ads_safe)
        logged = bid / (1 + np.exp(-(z_ad + rng("logging_noise").normal(0, c.logging_noise, ads.shape))))
        logged = np.where(valid, logged, -np.inf)

        is_random = rng("random_exposure").random(r) < c.random_exposure
        if all_random:  # the randomised test set: every request, drawn as the log's random slice is
            is_random = np.ones(r, dtype=bool)
        noise_rank = np.where(valid, rng("random_order").random(ads.shape), -np.inf)
        score = np.where(is_random[:, None], noise_rank, logged)
        top = np.argsort(-score, axis=1, kind="stable")[:, : c.slots]  # [r, slots] in shown order
        # Creative choice and click uniform per (request, candidate): independent of the ranking.
        sim.update(ads=ads_safe, valid=valid, bid=bid, z_ad=z_ad, logged=logged, is_random=is_random, top=top,
                   creative=self._creatives(start, ads_safe, rng("creative")), click_u=rng("click").random(ads.shape))
        return sim

    def _creatives(self, start: int, ads: np.ndarray, draw: np.random.Generator) -> np.ndarray:
        """The creative of each (request, candidate): uniform among the ad's creatives alive at the
        request (all of them unless ``cold_creatives`` > 0); a creative drawn before its birth is
        replaced by a uniform draw among the alive ones, from a stream of its own, so with no cold
        creatives the choice is exactly the uniform draw."""
        c, e = self.cfg, self._entities
        k = draw.integers(0, c.creatives_per_ad, ads.shape)
        if c.cold_creatives > 0:
            request = np.arange(start, start + ads.shape[0])[:, None, None]
            alive = e["creative_birth"][ads[..., None] * c.creatives_per_ad + np.arange(c.creatives_per_ad)] <= request
            n_alive = alive.sum(axis=2)  # >= 1: an ad's first creative is never cold
            j = np.floor(self._rng("creative_alive", start).random(ads.shape) * n_alive)
            replacement = np.argmax(np.cumsum(alive, axis=2) > j[..., None], axis=2)
            k = np.where(np.take_along_axis(alive, k[..., None], 2)[..., 0], k, replacement)
        return ads * c.creatives_per_ad + k

    def _rows(self, sim: dict[str, np.ndarray], rows: np.ndarray, cand: np.ndarray,
              pos: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Feature columns of the (request ``rows``, candidate ``cand``) pairs shown at ``pos``
        (0: not shown), and each pair's position-free relevance."""
        c, e = self.cfg, self._entities
        user, query = sim["user"][rows], sim["query"][rows]
        ad, creative = sim["ads"][rows, cand], sim["creative"][rows, cand]
        z = sim["z_ad"][rows, cand] + e["creative_appeal"][creative] + e["creative_b"][creative]
        cols = {
            "request_id": (sim["start"] + rows).astype(np.int64),
            "user_id": user,
            "user_key": user.astype(np.int64),
            "user_segment": e["user_segment"][user],
            "query_id": query,
            "query_category": sim["qcat"][rows],
            "scene": sim["scene"][rows],
            "hour": sim["hour"][rows],
            "device": sim["device"][rows],
            "ad_id": ad,
            "campaign_id": e["ad_campaign"][ad],
            "shop_id": e["ad_shop"][ad],
            "brand_id": e["ad_brand"][ad],
            "ad_category": e["ad_category"][ad],
            "creative_id": creative,
            "position": pos,
            "log_bid": np.log(sim["bid"][rows, cand]).astype(np.float32),
        }
        content = e["content"][creative]
        for i in range(c.content_dim):
            cols[f"content_{i}"] = content[:, i]
        return cols, 1 / (1 + np.exp(-z))

    def _eta(self, scene: np.ndarray) -> np.ndarray:
        """Each row's examination exponent: examination at position k is k ** -eta (0: no decay)."""
        return self._entities["scene_eta"][scene] if self.cfg.positions else np.zeros(len(scene))

    def _chunk(self, start: int, stop: int, all_random: bool = False, sim: dict | None = None) -> pa.Table:
        """The shown rows of requests start..stop-1, in request then position order."""
        c = self.cfg
        sim = sim if sim is not None else self._simulate(start, stop, all_random)
        sim["start"] = start
        r, top = stop - start, sim["top"]
        # Requests with fewer distinct candidates than slots are trimmed, not padded.
        shown_ok = np.take_along_axis(sim["valid"], top, 1).ravel()
        rows = np.repeat(np.arange(r), c.slots)[shown_ok]
        pos = np.tile(np.arange(1, c.slots + 1), r)[shown_ok]
        cols, relevance = self._rows(sim, rows, top.ravel()[shown_ok], pos)
        exam = (1.0 / pos ** self._entities["scene_eta"][sim["scene"][rows]]) if c.positions else np.ones(len(pos))
        p_click = exam * relevance
        click = (sim["click_u"][rows, top.ravel()[shown_ok]] < p_click).astype(np.int8)
        cols.update(click=click, p_click=p_click, relevance=relevance, examination=exam, is_random=sim["is_random"][rows])
        return pa.table({k: pa.array(v) for k, v in cols.items()})

    def _candidate_chunk(self, start: int, stop: int, sim: dict | None = None) -> pa.Table:
        """The candidate log of the requests in start..stop-1 that the log keeps
        (``candidate_share`` of them, an own stream): every retrieved candidate, in ad-id order,
        as a row with the shown rows' fields (``position`` 0: not shown), the click where shown
        (null elsewhere) and the truth: ``shown``, the logging ranker's ``logging_score``,
        position-free ``relevance`` of the drawn creative and of each creative of the ad
        (``relevance_creative_<k>``, NaN before its birth), ``eta`` (p_click at position k is
        k ** -eta * relevance), ``p_click`` and ``examination`` at the shown position (NaN if not shown)."""
        c, e = self.cfg, self._entities
        sim = sim if sim is not None else self._simulate(start, stop)
        sim["start"] = start
        r = stop - start
        kept = self._rng("candidate_log", start).random(r) < c.candidate_share
        position = np.zeros(sim["ads"].shape, dtype=np.int64)
        np.put_along_axis(position, sim["top"], np.arange(1, c.slots + 1)[None, :], axis=1)
        position = np.where(sim["valid"], position, 0)
        rows, cand = np.nonzero(sim["valid"] & kept[:, None])
        pos = position[rows, cand]
        cols, relevance = self._rows(sim, rows, cand, pos)
        shown = pos > 0
        eta = self._eta(sim["scene"][rows])
        exam = np.where(shown, 1.0 / np.maximum(pos, 1) ** eta, np.nan)  # the shown rows' formula
        p_click = exam * relevance
        click = np.where(shown, sim["click_u"][rows, cand] < p_click, False).astype(np.int8)
        cols["click"] = pa.array(click, mask=~shown)
        cols.update(p_click=p_click, relevance=relevance, examination=exam, is_random=sim["is_random"][rows],
                    shown=shown, logging_score=sim["logged"][rows, cand], eta=eta)
        ad = cols["ad_id"]
        z = sim["z_ad"][rows, cand]
        for k in range(c.creatives_per_ad):
            cr = ad * c.creatives_per_ad + k
            rel = 1 / (1 + np.exp(-(z + e["creative_appeal"][cr] + e["creative_b"][cr])))
            cols[f"relevance_creative_{k}"] = np.where(e["creative_birth"][cr] <= sim["start"] + rows, rel, np.nan)
        return pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in cols.items()})

    def _creative_chunk(self, start: int, stop: int, sim: dict | None = None) -> pa.Table:
        """The creative log of the requests in start..stop-1 that it keeps (``creative_share`` of
        them, an own stream): every shown ad once per creative alive at the request (in request,
        position, creative order), with the shown rows' fields and that creative's id and content;
        the click only on the creative that was shown (null on the others). Truth: ``relevance`` and
        ``p_click`` with that creative at the ad's position, ``shown``, ``creative_born`` (the
        creative's birth request, -1 before the log: a cold creative has one >= the valid start)."""
        c, e = self.cfg, self._entities
        sim = sim if sim is not None else self._simulate(start, stop)
        sim["start"] = start
        r, k_all = stop - start, c.creatives_per_ad
        shown_rows = self._chunk(start, stop, sim=sim)
        kept = self._rng("creative_log", start).random(r) < c.creative_share
        base = shown_rows.filter(pa.array(kept[shown_rows.column("request_id").to_numpy() - start]))
        ad = base.column("ad_id").to_numpy()
        request = base.column("request_id").to_numpy()
        creative = ad[:, None] * k_all + np.arange(k_all)[None, :]
        alive = e["creative_birth"][creative] <= request[:, None]
        row, k = np.nonzero(alive)
        cr = creative[row, k]
        cols = {name: base.column(name).to_numpy()[row] for name in base.column_names
                if name not in ("click", "p_click", "relevance", "examination", "is_random")
                and not name.startswith("content_")}
        cols["creative_id"] = cr
        content = e["content"][cr]
        for i in range(c.content_dim):
            cols[f"content_{i}"] = content[:, i]
        shown = cr == base.column("creative_id").to_numpy()[row]
        cand = np.argmax(sim["ads"][request[row] - start] == ad[row, None], axis=1)  # the ad's candidate slot
        z = sim["z_ad"][request[row] - start, cand] + e["creative_appeal"][cr] + e["creative_b"][cr]
        relevance = 1 / (1 + np.exp(-z))
        exam = base.column("examination").to_numpy()[row]
        click = base.column("click").to_numpy()[row]
        cols["click"] = pa.array(np.where(shown, click, 0).astype(np.int8), mask=~shown)
        cols.update(p_click=exam * relevance, relevance=relevance, examination=exam,
                    is_random=base.column("is_random").to_numpy()[row], shown=shown,
                    creative_born=e["creative_birth"][cr])
        return pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in cols.items()})

    def _retrieval_draws(self, qcat: np.ndarray, rng: np.random.Generator):
        """The draws behind each candidate slot, [r, candidates] each: a popularity-weighted ad of
        the query's category (-1 where the category has no ads), one of all ads, and whether the
        slot takes the in-category draw (70% of slots, none when the category has no ads)."""
        c, e = self.cfg, self._entities
        shape = (len(qcat), c.candidates)
        cum = e["ads_cat_cum"]
        lo, hi = e["cat_lo"][qcat][:, None], e["cat_hi"][qcat][:, None]
        has = hi > lo
        base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        top = np.where(has, cum[np.maximum(hi - 1, 0)], base)
        u = base + rng.random(shape) * (top - base)
        # First ad whose cumulative weight exceeds u, kept inside the category's block.
        idx = np.clip(np.searchsorted(cum, u, side="right"), lo, np.maximum(hi - 1, lo))
        in_cat = np.where(has, e["ads_by_cat"][np.where(has, idx, 0)], -1)
        anywhere = self._zipf_draw(e["ad_pop"], shape[0] * shape[1], rng).reshape(shape)
        from_cat = (rng.random(shape) < 0.7) & has
        return in_cat, anywhere, from_cat

    def _retrieve(self, qcat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Candidates per request: 70% from the query's category, 30% from all ads, by popularity;
        sorted by ad id, duplicates marked -1."""
        in_cat, anywhere, from_cat = self._retrieval_draws(qcat, rng)
        ads = np.where(from_cat, in_cat, anywhere)
        ads.sort(axis=1)
        dup = np.zeros(ads.shape, dtype=bool)
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
