"""A paper's claims, declared as data in its experiment's yaml, and their verdicts on our runs.

Schema (``claims:`` in ``conf/experiment/<name>.yaml``; every key is checked, a misspelt key is a
``ConfigError`` naming the file, the claim and the key)::

    claims:
      - id: deepfm-over-fm                 # unique within the experiment
        text: DeepFM ranks better than FM  # the claim, as the paper states it (own words or a short quote)
        source: Guo et al., IJCAI 2017, arXiv:1703.04247
        conditions:                        # all must hold
          - {metric: test AUC, rows: [DeepFM, FM], stat: difference, relation: ">", threshold: 0.0}
      - id: online-gain
        text: ...
        source: ...
        not_testable: needs live traffic   # instead of conditions

``stat`` is ``difference`` (rows[0] - rows[1]), ``ratio`` (rows[0] / rows[1]) or ``value`` (one
row); ``AUC <split>`` names the AUC of a test split a data set adds (``AUC test_unseen_pairs``).
A figure measured beside the runs (``repro.measurements``: a size, a latency ratio) is judged
by ``{measured: {name: <measurement>, row: <its first cell>, column: <column>}, relation, threshold}``
in place of ``metric``/``rows``/``stat``: one exact number, so the verdict is ``holds`` or ``does
not hold`` (``not testable here`` while the measurement is missing). ``metric`` is one of ``METRICS``. A row may also be ``Bayes-optimal``: the true click
probability scored on the same data as the condition's other row.

A condition may also carry ``paper_effect``: the effect the paper reports for *that* condition, in
the condition's own units (an AUC difference, a ratio, a speed-up), so that the pre-registration
(``repro.preregister``) can say whether our runs could detect it. A relative figure is converted
where the yaml says how (its comment cites papers.md); a condition the paper gives no number for has
none. It never enters a verdict.

Two more forms:

- ``stat: difference_of_differences`` takes four rows ``[a, b, c, d]`` and judges
  ``(a - b) - (c - d)``: a method's gain over its baseline with a structure of the world switched on
  (a, b) against the same gain with it switched off (c, d). A claim that a gain "vanishes" without
  its structure is this difference of differences, and it is judged only where the knob-on gain
  exists: ``requires:`` lists conditions (the knob-on gain) that must **hold** before the claim is
  judged; otherwise the verdict is ``not testable here: no gain to vanish``.
- ``kind: paper | check`` (optional): a claim a paper makes, or one of the suite's own checks of its
  premises. Without it, a ``source`` that starts with "adrepro check" makes a check. The two are
  counted apart, and only paper claims enter the multiplicity correction.

Intervals (``compare``). Each run of a test split stores B paired bootstrap replicates
(``repro.metrics.bootstrap_replicates``: requests resampled with replacement; replicate b is the
same resample for every model scored on that split). For replicate b we also draw each row's seeds
with replacement (a seeded RNG), average the chosen seeds' replicate-b values and combine the row
means (difference, ratio, difference of differences). The spread of these B values carries

- test-set noise: replicate b is one plausible other test set; because every row is evaluated on the
  *same* resample, the part of the noise they share cancels in the difference -- the interval is
  paired by request, much tighter than two separate intervals. (The two differences of a difference
  of differences may be scored on other test sets, a world with a knob off: each difference is paired
  within itself and the two are combined as independent resamples.)
- seed noise: redrawing the seeds moves the row mean as other initialisations and data orders would
  (coarse with 3 seeds: a floor, not a guarantee).

**Seed pairing.** Rows that share a per-seed input are not independent across seeds: a student and
the teacher run it distils (``data.teacher``), or two students of the same teacher, read the same
teacher run at seed k (a cascade's ranker, for one). The rule: two rows are *seed-paired* when they
ran the same seeds and share such an input (``row_inputs``: one names the other as its teacher, or
both name the same teacher). Seed-paired rows draw their seeds together (the same seed k for both in
a draw), so the seed-to-seed movement they share cancels in their difference, as the request
pairing does for the test set. Rows without a shared per-seed input are drawn independently.

**Seed-only intervals** (figures with no test-set bootstrap -- params, bytes, throughput, PCOC,
GAUC -- and runs written before replicates were stored) are Student t-intervals of the same
combination of row means, said so in the numbers: Welch's, with Welch-Satterthwaite degrees of
freedom, for independent rows; a paired t on the per-seed combination for seed-paired rows; a ratio
by the delta method on its logarithm. A row with one seed has no seed variance, so such an interval
is undefined (inconclusive), unless every row's seeds agree on a figure that has no test-set noise
(sizes), which is then exact.

**Calibration is judged per seed** (``PER_SEED_METRICS``: PCOC): a deployed model is one seed, so a
calibration claim must hold for each seed, not for the mean of seeds that err both ways. A claim
whose conditions are all per-seed conditions of one row holds when every seed satisfies all of
them, does not hold when most seeds fail, and is inconclusive otherwise.

**Measured conditions** read the measurement's interleaved repeats, where it stored them
(``result["repeats"][row][column]``: one value per repeat): a t-interval of their mean, so a
measured speed can be inconclusive. A figure measured once is ``inconclusive`` (no interval: the
same code moved by up to 25% between runs here), unless the condition declares it
``deterministic: true`` (a size or a count, identical at every repeat), when the one value is exact.

The point estimate is the combination of the plain seed means on the full test set; the interval is
the 2.5/97.5 percentiles. A verdict is ``holds`` when the whole interval satisfies the relation,
``does not hold`` when the whole interval violates it, ``inconclusive`` when it straddles the
threshold.

**Multiplicity.** About 40 paper claims are judged at once, so some 95% verdicts are wrong by chance.
Each condition also gets two one-sided p-values (that the relation fails, that it holds: from the
bootstrap draws' normal approximation, or the t distribution); a claim's are the largest of its conditions' (it holds only
if all do) and the smallest (it fails if one does). ``adjust_verdicts`` applies Benjamini-Hochberg
to each direction over the judged paper claims at a false discovery rate of 2.5% per direction
(matching the two 2.5% tails of the 95% intervals), and ``results/claims.md`` shows the adjusted
verdict beside the raw one. Suite checks are not in that family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import norm as normal, t as student_t

from repro.errors import ConfigError

__all__ = [
    "METRICS", "BAYES_ROW", "VERDICTS", "Condition", "Claim", "Interval", "ConditionResult", "ClaimResult",
    "parse_claims", "row_samples", "metric_spec", "compare", "combine", "evaluate_condition", "evaluate_claims",
    "pairwise", "RowInputs", "adjust_verdicts", "benjamini_hochberg", "seed_paired",
]

# metric name -> (path to the point value in metrics.json, split whose "bootstrap" block has replicates, key there)
METRICS: dict[str, tuple[tuple[str, ...], str | None, str | None]] = {
    "test AUC": (("test", "auc"), "test", "auc"),
    "test logloss": (("test", "logloss"), "test", "logloss"),
    "random AUC": (("test_random", "auc"), "test_random", "auc"),
    "random logloss": (("test_random", "logloss"), "test_random", "logloss"),
    "test PCOC": (("test", "pcoc"), None, None),  # predicted / observed clicks on the test split
    "relevance AUC": (("test", "auc_relevance"), None, None),  # against the world's position-free relevance
    "random relevance AUC": (("test_random", "auc_relevance"), None, None),
    "PAUC": (("test", "pauc"), None, None),  # impression-weighted per-position AUC (DPIN)
    "GAUC user": (("test", "gauc_user"), None, None),
    "GAUC request": (("test", "gauc_request"), None, None),
    "params": (("profile", "parameters"), None, None),
    "model bytes": (("profile", "model_bytes"), None, None),
    "embedding bytes": (("profile", "embedding_bytes"), None, None),  # stored bytes of every embedding layer
    "tail AUC": (("test", "auc_tail"), None, None),  # rows whose IDs are in the bottom frequency decile
    "train samples/s": (("profile", "train_samples_per_s"), None, None),
}
CASCADE_PREFIX = "cascade "  # "cascade <figure>": a figure of the run's cascade evaluation (repro.cascade)
CREATIVES_PREFIX = "creatives "  # "creatives <figure>": of its creative-selection evaluation
SPLIT_AUC_PREFIX = "AUC "  # "AUC <split>": the AUC of any test split a data set adds (AUC test_unseen_pairs)


def metric_spec(metric: str) -> tuple[tuple[str, ...], str | None, str | None] | None:
    """Where ``metric`` lives in metrics.json (see ``METRICS``); None for an unknown name."""
    if metric in METRICS:
        return METRICS[metric]
    for prefix, block in ((CASCADE_PREFIX, "cascade"), (CREATIVES_PREFIX, "creatives")):
        if metric.startswith(prefix):  # "cascade recall@10", "creatives ctr_chosen": repro.cascade's figures
            figure = metric[len(prefix):]
            return (block, figure), block, figure
    split = metric[len(SPLIT_AUC_PREFIX):] if metric.startswith(SPLIT_AUC_PREFIX) else ""
    if split.startswith("test") and split.replace("_", "").isalnum():
        return (split, "auc"), split, "auc"
    return None
BAYES_ROW = "Bayes-optimal"
STATS = ("difference", "ratio", "value", "difference_of_differences")
ROWS_PER_STAT = {"value": 1, "difference": 2, "ratio": 2, "difference_of_differences": 4}
RELATIONS = (">=", ">", "<=", "<")
VERDICTS = ("holds", "does not hold", "inconclusive", "not testable here")
CLAIM_KEYS = {"id", "text", "source", "not_testable", "conditions", "requires", "kind"}
CLAIM_KINDS = ("paper", "check")
CHECK_SOURCE_PREFIX = "adrepro check"  # a claim of the suite itself, unless `kind` says otherwise
CONDITION_KEYS = {"metric", "rows", "stat", "relation", "threshold"}
# paper_effect: the effect the paper reports for this condition, in the condition's own units (see
# the module docstring); read by the pre-registration's power estimate (repro.preregister), never by
# a verdict.
CONDITION_OPTIONAL_KEYS = {"paper_effect"}
MEASURED_KEYS = {"measured", "relation", "threshold"}
MEASURED_OPTIONAL_KEYS = {"deterministic", "paper_effect"}  # deterministic: a size or count, the same at every repeat
MEASURED_REF_KEYS = {"name", "row", "column"}
LEVEL = 0.95
FDR = 0.025  # Benjamini-Hochberg rate per direction: the 2.5% tail of each side of a 95% interval
MIN_REPEATS = 5  # a measured figure with fewer interleaved repeats gets an interval, flagged as short
# Figures judged seed by seed, never on the seed mean (see the module docstring).
PER_SEED_METRICS = {"test PCOC"}


# --------------------------------------------------------------------------- #
# schema
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Condition:
    metric: str
    rows: tuple[str, ...]
    stat: str
    relation: str
    threshold: float
    measured: tuple[str, str, str] | None = None  # (measurement, row, column) instead of metric/rows
    deterministic: bool = False  # measured: a size or count, exact without repeats
    paper_effect: float | None = None  # the paper's own figure for this condition, in its units; None: none given

    def describe(self) -> str:
        if self.measured:
            name, row, column = self.measured
            what = f"{column} of {row} (measurement `{name}`)"
        elif self.stat == "value":
            what = f"{self.metric} of {self.rows[0]}"
        elif self.stat == "difference":
            what = f"{self.metric} {self.rows[0]} − {self.rows[1]}"
        elif self.stat == "difference_of_differences":
            a, b, c, d = self.rows
            what = f"{self.metric} ({a} − {b}) − ({c} − {d})"
        else:
            what = f"{self.metric} {self.rows[0]} / {self.rows[1]}"
        return f"{what} {self.relation} {self.threshold:g}"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    conditions: tuple[Condition, ...] = ()
    not_testable: str | None = None
    requires: tuple[Condition, ...] = ()  # must hold before the claim is judged (a knob-on gain)
    kind: str = "paper"  # "paper": a paper's claim; "check": one of the suite's own checks


def parse_claims(where: str, raw: list | None, labels: Iterable[str] | None = None) -> list[Claim]:
    """Validate an experiment's ``claims:`` list; ``where`` (the file) starts every error message.

    With ``labels`` (the experiment's row labels) a row that is not one of them (nor
    ``Bayes-optimal``) is an error too: a typo must not turn into "not testable here"."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: claims must be a list, got {type(raw).__name__}")
    known_rows = None if labels is None else set(labels) | {BAYES_ROW}
    out, seen = [], set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: claims[{i}] must be a mapping, got {type(entry).__name__}")
        name = f"claims[{i}]" + (f" ({entry['id']!r})" if "id" in entry else "")
        unknown = sorted(set(entry) - CLAIM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: {name} has unknown key(s) {unknown}; known: {sorted(CLAIM_KEYS)}")
        for key in ("id", "text", "source"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConfigError(f"{where}: {name} needs a non-empty string `{key}`")
        cid = entry["id"]
        if cid in seen:
            raise ConfigError(f"{where}: claim id {cid!r} appears twice")
        seen.add(cid)
        kind = entry.get("kind", "check" if entry["source"].startswith(CHECK_SOURCE_PREFIX) else "paper")
        if kind not in CLAIM_KINDS:
            raise ConfigError(f"{where}: claim {cid!r}: unknown kind {kind!r}; known: {list(CLAIM_KINDS)}")
        has_nt, has_cond = "not_testable" in entry, "conditions" in entry
        if has_nt == has_cond:
            raise ConfigError(f"{where}: claim {cid!r} needs exactly one of `not_testable` (a reason) or `conditions`")
        if has_nt:
            if not isinstance(entry["not_testable"], str) or not entry["not_testable"].strip():
                raise ConfigError(f"{where}: claim {cid!r}: `not_testable` must be a non-empty reason")
            if "requires" in entry:
                raise ConfigError(f"{where}: claim {cid!r}: `requires` needs `conditions`, not `not_testable`")
            out.append(Claim(cid, entry["text"], entry["source"], (), entry["not_testable"], kind=kind))
            continue
        conds = entry["conditions"]
        if not isinstance(conds, list) or not conds:
            raise ConfigError(f"{where}: claim {cid!r}: `conditions` must be a non-empty list")
        required = entry.get("requires", [])
        if not isinstance(required, list) or ("requires" in entry and not required):
            raise ConfigError(f"{where}: claim {cid!r}: `requires` must be a non-empty list of conditions")
        out.append(Claim(cid, entry["text"], entry["source"],
                         tuple(_parse_condition(where, cid, j, c, known_rows) for j, c in enumerate(conds)),
                         requires=tuple(_parse_condition(where, cid, j, c, known_rows, "requires")
                                        for j, c in enumerate(required)),
                         kind=kind))
    return out


def _parse_condition(where: str, cid: str, j: int, c: Any, known_rows: set[str] | None,
                     block: str = "conditions") -> Condition:
    name = f"claim {cid!r} {block}[{j}]"
    if not isinstance(c, Mapping):
        raise ConfigError(f"{where}: {name} must be a mapping, got {type(c).__name__}")
    if "measured" in c:
        return _parse_measured(where, name, c)
    unknown = sorted(set(c) - CONDITION_KEYS - CONDITION_OPTIONAL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: {name} has unknown key(s) {unknown}; known: "
                          f"{sorted(CONDITION_KEYS | CONDITION_OPTIONAL_KEYS)}")
    missing = sorted(CONDITION_KEYS - set(c))
    if missing:
        raise ConfigError(f"{where}: {name} lacks key(s) {missing}")
    if not isinstance(c["metric"], str) or metric_spec(c["metric"]) is None:
        raise ConfigError(f"{where}: {name}: unknown metric {c['metric']!r}; known: {sorted(METRICS)} "
                          f"and '{SPLIT_AUC_PREFIX}<test split>'")
    if c["stat"] not in STATS:
        raise ConfigError(f"{where}: {name}: unknown stat {c['stat']!r}; known: {list(STATS)}")
    if c["relation"] not in RELATIONS:
        raise ConfigError(f"{where}: {name}: unknown relation {c['relation']!r}; known: {list(RELATIONS)}")
    thr = _threshold(where, name, c["threshold"])
    rows = c["rows"]
    if isinstance(rows, str) or not isinstance(rows, (list, tuple)) or not all(isinstance(r, str) for r in rows):
        raise ConfigError(f"{where}: {name}: rows must be a list of row labels, got {rows!r}")
    need = ROWS_PER_STAT[c["stat"]]
    if len(rows) != need:
        raise ConfigError(f"{where}: {name}: stat {c['stat']!r} takes {need} row(s), got {list(rows)}")
    if known_rows is not None:
        bad = [r for r in rows if r not in known_rows]
        if bad:
            raise ConfigError(f"{where}: {name}: rows {bad} are not rows of the experiment; known: {sorted(known_rows)}")
    return Condition(c["metric"], tuple(rows), c["stat"], c["relation"], thr,
                     paper_effect=_paper_effect(where, name, c))


def _paper_effect(where: str, name: str, c: Mapping) -> float | None:
    if "paper_effect" not in c:
        return None
    value = c["paper_effect"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name}: paper_effect must be a finite number (the paper's figure in the "
                          f"condition's units), got {value!r}")
    return float(value)


def _threshold(where: str, name: str, thr: Any) -> float:
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
        raise ConfigError(f"{where}: {name}: threshold must be a finite number, got {thr!r}")
    return float(thr)


def _parse_measured(where: str, name: str, c: Mapping) -> Condition:
    unknown = sorted(set(c) - MEASURED_KEYS - MEASURED_OPTIONAL_KEYS)
    missing = sorted(MEASURED_KEYS - set(c))
    if unknown or missing:
        raise ConfigError(f"{where}: {name}: a measured condition takes {sorted(MEASURED_KEYS)} and optionally "
                          f"{sorted(MEASURED_OPTIONAL_KEYS)}; unknown {unknown}, missing {missing}")
    if not isinstance(c.get("deterministic", False), bool):
        raise ConfigError(f"{where}: {name}: `deterministic` must be true or false, got {c['deterministic']!r}")
    ref = c["measured"]
    if not isinstance(ref, Mapping) or set(ref) != MEASURED_REF_KEYS or \
            not all(isinstance(v, str) and v for v in ref.values()):
        raise ConfigError(f"{where}: {name}: `measured` must map exactly {sorted(MEASURED_REF_KEYS)} to "
                          f"non-empty strings, got {ref!r}")
    if c["relation"] not in RELATIONS:
        raise ConfigError(f"{where}: {name}: unknown relation {c['relation']!r}; known: {list(RELATIONS)}")
    return Condition("measured", (), "value", c["relation"], _threshold(where, name, c["threshold"]),
                     (ref["name"], ref["row"], ref["column"]), bool(c.get("deterministic", False)),
                     _paper_effect(where, name, c))


# --------------------------------------------------------------------------- #
# intervals
# --------------------------------------------------------------------------- #
@dataclass
class RowSamples:
    """One table row's figures for one metric: a point value per seed and, where stored, the
    seeds' paired bootstrap replicates (seeds x B) with their bootstrap settings; ``seeds`` (the
    seed of each point, in order) and ``shared`` (the per-seed inputs the row reads, e.g. the run it
    distils) decide seed pairing."""

    points: np.ndarray
    replicates: np.ndarray | None
    setup: tuple | None  # (n_replicates, seed, unit, n rows) of the bootstrap, for pairing
    seeds: tuple[int, ...] | None = None
    shared: frozenset = frozenset()


@dataclass
class Interval:
    estimate: float
    lo: float
    hi: float
    seeds: tuple[int, ...]  # seeds per row
    n_replicates: int  # 0: no test-set bootstrap
    method: str  # BOOTSTRAP, T_INTERVAL, "exact", MEASURED_ONCE, MEASURED_REPEATS, "measured"
    note: str = ""
    draws: np.ndarray | None = field(default=None, repr=False)  # the bootstrap's combined draws
    se: float | None = None  # t-intervals: standard error (of the log for a ratio) ...
    df: float | None = None  # ... and degrees of freedom
    seed_paired: bool = False
    log_scale: bool = False  # a ratio's t-interval, built on its logarithm

    def text(self, fmt: str = "+.4f") -> str:
        seeds = "×".join(str(s) for s in self.seeds)
        note = f"; {self.note}" if self.note else ""
        if self.method == "exact":
            return f"{format(self.estimate, fmt)} (exact: all {seeds} seeds agree)"
        if self.method == "measured":
            return f"{self.estimate:.4g} (measured; deterministic: the same at every repeat)"
        if self.method == MEASURED_ONCE:
            return f"{self.estimate:.4g} (measured once: no interval; a verdict needs >= {MIN_REPEATS} interleaved repeats)"
        if self.method == MEASURED_REPEATS:
            return (f"{self.estimate:.4g} [{self.lo:.4g}, {self.hi:.4g}] (mean of {self.n_replicates} interleaved "
                    f"repeats, t-interval{note})")
        paired = ", seeds paired (a shared per-seed input)" if self.seed_paired else ""
        if self.method == BOOTSTRAP:
            how = f"{self.n_replicates} paired request replicates, {seeds} seeds{paired}"
        else:
            how = f"t-interval over {seeds} seeds{paired}, test-set noise not covered"
        return f"{format(self.estimate, fmt)} [{format(self.lo, fmt)}, {format(self.hi, fmt)}] ({how}{note})"

    def p_values(self, relation: str, threshold: float) -> tuple[float, float]:
        """One-sided p-values (p_holds, p_fails): small ``p_holds`` is evidence that the relation
        holds (its null: it fails), small ``p_fails`` that it fails. (1, 1) where there is no interval."""
        sat = _satisfies(relation, threshold)
        if self.method in ("exact", "measured"):
            return (0.0, 1.0) if sat(self.estimate) else (1.0, 0.0)
        if self.draws is not None and len(self.draws) > 1:
            # A normal approximation of the bootstrap draws: B = 500 draws cannot resolve a p-value
            # under 1/501, which Benjamini-Hochberg over ~40 claims needs.
            spread = float(np.std(self.draws, ddof=1))
            gap = self.estimate - threshold
            z = gap / spread if spread > 0 else (math.copysign(math.inf, gap) if gap else 0.0)
            above, below = float(normal.sf(z)), float(normal.cdf(z))
            return (above, below) if relation in (">", ">=") else (below, above)
        if self.se is None or self.df is None or not math.isfinite(self.estimate):
            return 1.0, 1.0
        if self.log_scale:
            if threshold <= 0 or self.estimate <= 0:
                return 1.0, 1.0
            gap = math.log(self.estimate) - math.log(threshold)
        else:
            gap = self.estimate - threshold
        if self.se == 0:
            z = math.copysign(math.inf, gap) if gap else 0.0
        else:
            z = gap / self.se
        above, below = float(student_t.sf(z, self.df)), float(student_t.cdf(z, self.df))
        return (above, below) if relation in (">", ">=") else (below, above)


BOOTSTRAP = "paired bootstrap (requests x seeds)"
T_INTERVAL = "t-interval over seeds"
MEASURED_ONCE = "measured once"
MEASURED_REPEATS = "measured repeats"


def _get(d: Any, path: Sequence[str]):
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def row_samples(runs: Sequence[Mapping], metric: str, seeds: Sequence[int] | None = None,
                shared: Iterable[str] = ()) -> RowSamples | None:
    """The metric across a row's runs (one metrics.json dict per seed, ``seeds`` their seeds in the
    same order); None when no run has it. Points come out in seed order."""
    path, split, key = metric_spec(metric)
    if seeds is not None and len(seeds) != len(runs):
        raise ValueError(f"claims: {len(seeds)} seeds for {len(runs)} runs")
    order = sorted(range(len(runs)), key=lambda i: seeds[i]) if seeds is not None else range(len(runs))
    points, reps, setups, kept = [], [], [], []
    for i in order:
        m = runs[i]
        v = _get(m, path)
        if v is None or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        points.append(float(v))
        kept.append(seeds[i] if seeds is not None else None)
        boot = _get(m, (split, "bootstrap")) if split else None
        if isinstance(boot, Mapping) and key in boot:
            reps.append(np.asarray(boot[key], dtype=np.float64))
            setups.append((boot.get("n_replicates", len(boot[key])), boot.get("seed"), boot.get("unit"),
                           _get(m, (split, "n"))))
        else:
            reps.append(None)
            setups.append(None)
    if not points:
        return None
    ok = all(r is not None for r in reps) and len(set(setups)) == 1
    ok = ok and len({r.shape for r in reps}) == 1 and all(np.isfinite(r).all() for r in reps)
    return RowSamples(np.array(points), np.vstack(reps) if ok else None, setups[0] if ok else None,
                      tuple(kept) if seeds is not None else None, frozenset(shared))


def seed_paired(a: RowSamples, b: RowSamples) -> bool:
    """The seed-pairing rule: the same seeds, and a per-seed input in common."""
    return a.seeds is not None and a.seeds == b.seeds and bool(a.shared & b.shared)


def _seed_groups(rows: Sequence[RowSamples]) -> list[list[int]]:
    """Rows drawn together: connected by the seed-pairing rule (each row alone otherwise)."""
    group = list(range(len(rows)))

    def find(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if seed_paired(rows[i], rows[j]):
                group[find(j)] = find(i)
    out: dict[int, list[int]] = {}
    for i in range(len(rows)):
        out.setdefault(find(i), []).append(i)
    return list(out.values())


COEFFICIENTS = {"value": (1.0,), "difference": (1.0, -1.0), "difference_of_differences": (1.0, -1.0, -1.0, 1.0)}


def _combine_means(means: Sequence[np.ndarray], stat: str) -> np.ndarray:
    if stat == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return means[0] / means[1]
    return sum(c * m for c, m in zip(COEFFICIENTS[stat], means))


def _request_paired(rows: Sequence[RowSamples], stat: str) -> tuple[bool, str]:
    """Whether the rows' replicates can be combined replicate by replicate, and a note if so only
    within each difference (a difference of differences over two test sets)."""
    if not all(r.replicates is not None for r in rows) or len({r.replicates.shape[1] for r in rows}) != 1:
        return False, ""
    if len({r.setup for r in rows}) == 1:
        return True, ""
    if stat == "difference_of_differences" and rows[0].setup == rows[1].setup and rows[2].setup == rows[3].setup:
        return True, "each difference paired by request on its own test set, the two resampled independently"
    return False, ""


def combine(rows: Sequence[RowSamples], stat: str, *, seed: int = 0, level: float = LEVEL,
            expect_replicates: bool = True) -> Interval:
    """The interval of ``stat`` over the row means of ``rows`` (see the module docstring): the
    request x seed bootstrap where every row has compatible replicates, else a t-interval."""
    if len(rows) != ROWS_PER_STAT[stat]:
        raise ValueError(f"claims: stat {stat!r} takes {ROWS_PER_STAT[stat]} row(s), got {len(rows)}")
    counts = tuple(len(r.points) for r in rows)
    estimate = float(_combine_means([np.array([r.points.mean()]) for r in rows], stat)[0])
    groups = _seed_groups(rows)
    paired_seeds = any(len(g) > 1 for g in groups)
    paired, note = _request_paired(rows, stat)
    tail = (1.0 - level) / 2 * 100
    if paired:
        rng = np.random.default_rng(seed)
        n_rep = rows[0].replicates.shape[1]
        means: list[np.ndarray | None] = [None] * len(rows)
        for g in groups:  # in row order: unpaired rows draw exactly as they always have
            pick = rng.integers(0, len(rows[g[0]].points), size=(n_rep, len(rows[g[0]].points)))
            for i in g:
                means[i] = rows[i].replicates[pick, np.arange(n_rep)[:, None]].mean(axis=1)
        vals = _combine_means(means, stat)
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            return Interval(estimate, math.nan, math.nan, counts, n_rep, BOOTSTRAP, "no finite replicate")
        lo, hi = np.percentile(vals, [tail, 100 - tail])
        # The point estimate is the full-test-set figure; keep it inside the reported interval.
        return Interval(estimate, float(min(lo, estimate)), float(max(hi, estimate)), counts, n_rep, BOOTSTRAP,
                        note, draws=vals, seed_paired=paired_seeds)
    if not expect_replicates and all(np.ptp(r.points) == 0 for r in rows):
        return Interval(estimate, estimate, estimate, counts, 0, "exact")
    missing = [r for r in rows if r.replicates is None]
    if missing and expect_replicates:
        note = "no stored test-set replicates (a figure stored without them, or older runs)"
    elif not missing:
        note = "rows' replicates are not the same resamples"
    se, df, log_scale = _t_spread(rows, stat, groups, estimate)
    if se is None:
        return Interval(estimate, math.nan, math.nan, counts, 0, T_INTERVAL,
                        "; ".join(filter(None, [note, "a row has one seed: no seed variance to estimate"])),
                        seed_paired=paired_seeds)
    q = float(student_t.ppf(1 - tail / 100, df)) if df > 0 else math.inf
    if log_scale:
        lo, hi = estimate * math.exp(-q * se), estimate * math.exp(q * se)
    else:
        lo, hi = estimate - q * se, estimate + q * se
    return Interval(estimate, lo, hi, counts, 0, T_INTERVAL, note, se=se, df=df, seed_paired=paired_seeds,
                    log_scale=log_scale)


def _t_spread(rows: Sequence[RowSamples], stat: str, groups: list[list[int]],
              estimate: float) -> tuple[float | None, float, bool]:
    """(standard error, degrees of freedom, on the log scale) of the combination of row means:
    seed-paired rows contribute their per-seed combination (a paired t), the others their own seed
    variance (Welch-Satterthwaite). None when a part has a single seed."""
    if stat == "ratio":
        means = [r.points.mean() for r in rows]
        if min(means) <= 0 or not math.isfinite(estimate):
            return None, 0.0, True
        # delta method on log(mean_a) - log(mean_b): each seed's relative deviation from its row mean
        parts = [[(1.0 if i == 0 else -1.0) * rows[i].points / means[i] for i in g] for g in groups]
    else:
        coef = COEFFICIENTS[stat]
        parts = [[coef[i] * rows[i].points for i in g] for g in groups]
    terms = []
    for part in parts:
        values = np.sum(part, axis=0)  # the group's per-seed combination (seeds aligned by the pairing rule)
        if len(values) < 2:
            return None, 0.0, stat == "ratio"
        terms.append((float(np.var(values, ddof=1)) / len(values), len(values) - 1))
    var = sum(v for v, _ in terms)
    denominator = sum(v * v / d for v, d in terms)
    df = var * var / denominator if denominator > 0 else float(sum(d for _, d in terms))
    return math.sqrt(var), df, stat == "ratio"


def compare(a: RowSamples, b: RowSamples | None = None, stat: str = "difference", *,
            seed: int = 0, level: float = LEVEL, expect_replicates: bool = True) -> Interval:
    """``combine`` for one row (``stat="value"``) or two (difference or ratio, a then b)."""
    if (b is None) != (stat == "value"):
        raise ValueError(f"claims: stat {stat!r} takes {'one row' if stat == 'value' else 'two rows'}")
    return combine([a] if b is None else [a, b], stat, seed=seed, level=level, expect_replicates=expect_replicates)


# --------------------------------------------------------------------------- #
# verdicts
# --------------------------------------------------------------------------- #
@dataclass
class ConditionResult:
    condition: Condition
    verdict: str
    numbers: str
    interval: Interval | None = None
    per_seed: tuple[bool, ...] | None = None  # PER_SEED_METRICS: whether each seed satisfies it
    seeds: tuple[int, ...] | None = None

    def p_values(self) -> tuple[float, float] | None:
        """(p_holds, p_fails), None where the verdict rests on no interval (not testable, per seed)."""
        if self.interval is None or self.per_seed is not None or self.verdict == "not testable here":
            return None
        return self.interval.p_values(self.condition.relation, self.condition.threshold)


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str
    reason: str = ""  # for "not testable here"
    conditions: list[ConditionResult] = field(default_factory=list)
    requirements: list[ConditionResult] = field(default_factory=list)
    adjusted: str | None = None  # the Benjamini-Hochberg verdict (``adjust_verdicts``); None: not in the family
    stale: str | None = None  # which of its rows or measurements are stale against the code (``repro.freshness``)

    def numbers(self) -> str:
        """The deciding numbers: per condition its interval and verdict (or why it is not testable)."""
        def line(results: list[ConditionResult]) -> str:
            return "; ".join(f"{c.condition.describe()}: {c.numbers} → {c.verdict}" for c in results)

        if self.requirements and not self.conditions:
            return f"{self.reason}: {line(self.requirements)}"
        if not self.conditions:
            return self.reason
        body = line(self.conditions)
        if self.requirements:
            body = f"requires {line(self.requirements)}; then {body}"
        if self.verdict == "not testable here" and self.reason and self.reason not in body:
            body = f"{self.reason}; {body}"
        return body

    def p_values(self) -> tuple[float, float] | None:
        """The claim's (p_holds, p_fails): it holds only if every condition (and requirement) does,
        so the largest p_holds; it fails if any condition does, so the smallest p_fails."""
        if self.verdict == "not testable here" or not self.conditions:
            return None
        ps = [c.p_values() for c in [*self.requirements, *self.conditions]]
        if any(p is None for p in ps):
            return None
        return max(p[0] for p in ps), min(p[1] for p in ps[len(self.requirements):])


def _satisfies(relation: str, t: float):
    return {">": lambda x: x > t, ">=": lambda x: x >= t, "<": lambda x: x < t, "<=": lambda x: x <= t}[relation]


def _verdict(iv: Interval, relation: str, t: float) -> str:
    lo, hi = iv.lo, iv.hi
    if math.isnan(lo) or math.isnan(hi) or iv.method == MEASURED_ONCE:
        return "inconclusive"
    sat = _satisfies(relation, t)
    if sat(lo) and sat(hi):
        return "holds"
    if not sat(lo) and not sat(hi):
        return "does not hold"
    return "inconclusive"


def _per_seed_verdict(ok: Sequence[bool]) -> str:
    """Every seed satisfies it: holds; most seeds fail it: does not hold; else inconclusive."""
    if all(ok):
        return "holds"
    if sum(not x for x in ok) * 2 > len(ok):
        return "does not hold"
    return "inconclusive"


def _runs_of(row: str, cond: Condition, runs: Mapping[str, Sequence[Mapping]]) -> Sequence[Mapping] | None:
    if row != BAYES_ROW:
        return runs.get(row) or None
    if row in runs:
        return runs[row] or None
    partners = [r for r in cond.rows if r != BAYES_ROW]
    source = [m for p in partners for m in runs.get(p, [])] if partners else [m for rs in runs.values() for m in rs]
    bayes = [m["bayes"] for m in source if isinstance(m.get("bayes"), Mapping)]
    return bayes or None


@dataclass(frozen=True)
class RowInputs:
    """What the seed-pairing rule reads about the rows of a table: each row's seeds, in the order of
    its runs, and the row it distils (``data.teacher``; "" for none)."""

    seeds: Mapping[str, Sequence[int]]
    teachers: Mapping[str, str]

    def shared(self, label: str) -> frozenset:
        """The per-seed inputs ``label`` reads: its teacher run, or itself as somebody's teacher."""
        out = set()
        if self.teachers.get(label):
            out.add(f"run:{self.teachers[label]}")
        if label in self.teachers.values():
            out.add(f"run:{label}")
        return frozenset(out)


def _samples(row: str, cond: Condition, runs: Mapping[str, Sequence[Mapping]],
             row_inputs: RowInputs | None) -> RowSamples | None:
    found = _runs_of(row, cond, runs)
    if row_inputs is None or row == BAYES_ROW or row not in row_inputs.seeds:
        return row_samples(found, cond.metric)
    return row_samples(found, cond.metric, row_inputs.seeds[row], row_inputs.shared(row))


def measured_value(cond: Condition, measurements: Mapping[str, Mapping] | None) -> float | str:
    """The condition's measured figure, or why there is none (a string)."""
    found = measured_figure(cond, measurements)
    return found if isinstance(found, str) else found[0]


def measured_figure(cond: Condition, measurements: Mapping[str, Mapping] | None) -> tuple[float, list[float]] | str:
    """(the table's figure, its interleaved repeats, possibly none), or why there is none (a string)."""
    name, row, column = cond.measured
    result = (measurements or {}).get(name)
    if result is None:
        return f"measurement {name!r} not run yet"
    if column not in result["columns"]:
        return f"measurement {name!r} has no column {column!r} (columns: {result['columns']})"
    hits = [r for r in result["rows"] if str(r[0]) == row]
    if len(hits) != 1:
        return f"measurement {name!r} has {len(hits)} rows named {row!r}"
    value = hits[0][result["columns"].index(column)]
    try:
        figure = float(str(value).replace(",", ""))
    except ValueError:
        return f"measurement {name!r}: {column} of {row} is not a number ({value!r})"
    repeats = ((result.get("repeats") or {}).get(row) or {}).get(column) or []
    return figure, [float(v) for v in repeats if v is not None and math.isfinite(float(v))]


def _measured_interval(figure: float, repeats: list[float], deterministic: bool,
                       level: float = LEVEL) -> Interval:
    if len(repeats) >= 2:
        values = np.asarray(repeats)
        mean, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
        q = float(student_t.ppf(1 - (1 - level) / 2, len(values) - 1))
        note = f"fewer than {MIN_REPEATS} repeats" if len(values) < MIN_REPEATS else ""
        return Interval(mean, mean - q * se, mean + q * se, (), len(values), MEASURED_REPEATS, note,
                        se=se, df=len(values) - 1)
    if deterministic:
        return Interval(figure, figure, figure, (), 0, "measured")
    return Interval(figure, math.nan, math.nan, (), 0, MEASURED_ONCE)


def evaluate_condition(cond: Condition, runs: Mapping[str, Sequence[Mapping]], *, seed: int = 0,
                       measurements: Mapping[str, Mapping] | None = None,
                       row_inputs: RowInputs | None = None) -> ConditionResult:
    """``runs``: row label -> that row's metrics.json dicts, one per seed; ``measurements``:
    measurement name -> its result (``columns``, ``rows``, optional ``repeats``), for measured
    conditions; ``row_inputs``: the rows' seeds and teachers, for seed pairing (without it no row is
    seed-paired)."""
    if cond.measured:
        found = measured_figure(cond, measurements)
        if isinstance(found, str):
            return ConditionResult(cond, "not testable here", found)
        iv = _measured_interval(*found, cond.deterministic)
        return ConditionResult(cond, _verdict(iv, cond.relation, cond.threshold), iv.text(), iv)
    missing = [r for r in cond.rows if not _runs_of(r, cond, runs)]
    if missing:
        return ConditionResult(cond, "not testable here", f"row(s) {missing} have no done runs in this table")
    samples = [_samples(r, cond, runs, row_inputs) for r in cond.rows]
    absent = [r for r, s in zip(cond.rows, samples) if s is None]
    if absent:
        return ConditionResult(cond, "not testable here", f"{cond.metric} not measured for {absent}")
    fmt = _fmt(cond)
    if cond.metric in PER_SEED_METRICS and cond.stat == "value":
        points = samples[0].points
        ok = tuple(bool(_satisfies(cond.relation, cond.threshold)(v)) for v in points)
        text = (f"per seed {', '.join(format(v, fmt) for v in points)}: {sum(ok)} of {len(ok)} satisfy it "
                f"(calibration is judged seed by seed)")
        return ConditionResult(cond, _per_seed_verdict(ok), text, None, ok, samples[0].seeds)
    iv = combine(samples, cond.stat, seed=seed, expect_replicates=metric_spec(cond.metric)[1] is not None)
    return ConditionResult(cond, _verdict(iv, cond.relation, cond.threshold), iv.text(fmt), iv)


def _fmt(cond: Condition) -> str:
    if cond.stat == "ratio":
        return ".4f"
    sign = "+" if cond.stat in ("difference", "difference_of_differences") else ""
    if cond.metric in ("params", "model bytes", "train samples/s"):
        return sign + ",.0f"
    return sign + ".4f"


def _combined_verdict(claim: Claim, results: list[ConditionResult],
                      requirements: list[ConditionResult]) -> ClaimResult:
    untestable = [r for r in results if r.verdict == "not testable here"]
    rows_missing = [r for r in untestable if "no done runs" in r.numbers]
    if rows_missing:
        return ClaimResult(claim, "not testable here", "; ".join(r.numbers for r in rows_missing), results, requirements)
    per_seed = [r.per_seed for r in results]
    if all(p is not None for p in per_seed) and len({(r.condition.rows, r.seeds) for r in results}) == 1:
        # every condition judges the same row seed by seed: a seed satisfies the claim when it
        # satisfies all of them (a PCOC inside both bounds), and the claim is judged over seeds
        ok = [all(p[i] for p in per_seed) for i in range(len(per_seed[0]))]
        return ClaimResult(claim, _per_seed_verdict(ok), "", results, requirements)
    if any(r.verdict == "does not hold" for r in results):
        return ClaimResult(claim, "does not hold", "", results, requirements)
    if untestable:
        return ClaimResult(claim, "not testable here", "; ".join(r.numbers for r in untestable), results, requirements)
    if all(r.verdict == "holds" for r in results):
        return ClaimResult(claim, "holds", "", results, requirements)
    return ClaimResult(claim, "inconclusive", "", results, requirements)


def evaluate_claims(claims: Sequence[Claim], runs: Mapping[str, Sequence[Mapping]], *, seed: int = 0,
                    measurements: Mapping[str, Mapping] | None = None,
                    row_inputs: RowInputs | None = None) -> list[ClaimResult]:
    """A verdict per claim: declared not testable -> ``not testable here``; a named row absent ->
    ``not testable here``; a requirement (``requires``) that does not hold -> ``not testable here:
    no gain to vanish``; any condition does not hold -> ``does not hold``; a metric not measured ->
    ``not testable here``; all hold -> ``holds``; else ``inconclusive``. Conditions judged seed by
    seed (``PER_SEED_METRICS``) on one row combine per seed."""
    out = []
    for claim in claims:
        if claim.not_testable:
            out.append(ClaimResult(claim, "not testable here", claim.not_testable))
            continue
        judge = dict(seed=seed, measurements=measurements, row_inputs=row_inputs)
        requirements = [evaluate_condition(c, runs, **judge) for c in claim.requires]
        if any(r.verdict != "holds" for r in requirements):
            missing = [r for r in requirements if "no done runs" in r.numbers]
            reason = "; ".join(r.numbers for r in missing) if missing else "no gain to vanish"
            out.append(ClaimResult(claim, "not testable here", reason, [], requirements))
            continue
        results = [evaluate_condition(c, runs, **judge) for c in claim.conditions]
        out.append(_combined_verdict(claim, results, requirements))
    return out


def benjamini_hochberg(p: Sequence[float], rate: float) -> list[bool]:
    """Which hypotheses Benjamini-Hochberg rejects at false discovery rate ``rate``."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    cutoff = 0
    for rank, i in enumerate(order, 1):
        if p[i] <= rank / m * rate:
            cutoff = rank
    rejected = set(order[:cutoff])
    return [i in rejected for i in range(m)]


def adjust_verdicts(results: Sequence[ClaimResult], kinds: Sequence[str] = ("paper",),
                    rate: float = FDR) -> int:
    """Set ``adjusted`` on every judged claim of ``kinds``: Benjamini-Hochberg over the family, each
    direction at ``rate``. An adjusted verdict keeps the raw one where its direction survives the
    correction and is ``inconclusive`` otherwise (it never strengthens a verdict); a claim judged
    seed by seed keeps its raw verdict. Returns the family's size."""
    family = [r for r in results if r.claim.kind in kinds and r.verdict != "not testable here"]
    with_p = [(r, r.p_values()) for r in family]
    for r, p in with_p:
        if p is None:
            r.adjusted = r.verdict
    tested = [(r, p) for r, p in with_p if p is not None]
    holds = benjamini_hochberg([p[0] for _, p in tested], rate)
    fails = benjamini_hochberg([p[1] for _, p in tested], rate)
    for (r, _), h, f in zip(tested, holds, fails):
        keep = (r.verdict == "holds" and h) or (r.verdict == "does not hold" and f)
        r.adjusted = r.verdict if keep else "inconclusive"
    return len(family)


def pairwise(runs: Mapping[str, Sequence[Mapping]], metric: str, order: Sequence[str], *,
             seed: int = 0, row_inputs: RowInputs | None = None) -> dict[tuple[str, str], Interval]:
    """The difference interval of ``metric`` for every ordered pair (a, b), a before b in ``order``."""
    def samples_of(label: str) -> RowSamples | None:
        if row_inputs is None or label not in row_inputs.seeds:
            return row_samples(runs[label], metric)
        return row_samples(runs[label], metric, row_inputs.seeds[label], row_inputs.shared(label))

    samples = {r: samples_of(r) for r in order if runs.get(r)}
    samples = {r: s for r, s in samples.items() if s is not None}
    labels = [r for r in order if r in samples]
    return {(a, b): compare(samples[a], samples[b], "difference", seed=seed,
                            expect_replicates=metric_spec(metric)[1] is not None)
            for i, a in enumerate(labels) for b in labels[i + 1:]}
