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

Intervals (``compare``): each run of a test split stores B paired bootstrap replicates
(``repro.metrics.bootstrap_replicates``: requests resampled with replacement; replicate b is the
same resample for every model scored on that split). For replicate b we also draw the seeds of
each row with replacement (a seeded RNG), average the chosen seeds' replicate-b values and take
the difference (or ratio) of the two row means. The spread of these B values therefore carries

- test-set noise: replicate b is one plausible other test set; because both rows are evaluated on
  the *same* resample, the part of the noise they share (easy or hard requests) cancels in the
  difference -- the interval is paired by request, much tighter than two separate intervals;
- seed noise: redrawing the seeds makes the row mean move as it would with other initialisations
  and data orders (coarse with 3 seeds: a bootstrap over 3 values understates the seed variance
  by a factor 2/3 and takes few distinct values, so the interval is a floor, not a guarantee).

The point estimate is the difference of the plain seed means on the full test set; the interval
is the 2.5/97.5 percentiles. Figures without a test-set bootstrap (params, model bytes,
throughput) and runs written before replicates were stored get a seed-only interval (seeds drawn
with replacement, B times), said so in the deciding numbers; when every seed agrees the figure is
exact. A verdict is ``holds`` when the whole interval satisfies the relation, ``does not hold``
when the whole interval violates it, ``inconclusive`` when it straddles the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from repro.errors import ConfigError

__all__ = [
    "METRICS", "BAYES_ROW", "VERDICTS", "Condition", "Claim", "Interval", "ConditionResult", "ClaimResult",
    "parse_claims", "row_samples", "metric_spec", "compare", "evaluate_condition", "evaluate_claims", "pairwise",
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
STATS = ("difference", "ratio", "value")
RELATIONS = (">=", ">", "<=", "<")
VERDICTS = ("holds", "does not hold", "inconclusive", "not testable here")
CLAIM_KEYS = {"id", "text", "source", "not_testable", "conditions"}
CONDITION_KEYS = {"metric", "rows", "stat", "relation", "threshold"}
MEASURED_KEYS = {"measured", "relation", "threshold"}
MEASURED_REF_KEYS = {"name", "row", "column"}
N_SEED_DRAWS = 1000  # seed-only intervals: draws of the seeds
LEVEL = 0.95


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

    def describe(self) -> str:
        if self.measured:
            name, row, column = self.measured
            what = f"{column} of {row} (measurement `{name}`)"
        elif self.stat == "value":
            what = f"{self.metric} of {self.rows[0]}"
        elif self.stat == "difference":
            what = f"{self.metric} {self.rows[0]} − {self.rows[1]}"
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
        has_nt, has_cond = "not_testable" in entry, "conditions" in entry
        if has_nt == has_cond:
            raise ConfigError(f"{where}: claim {cid!r} needs exactly one of `not_testable` (a reason) or `conditions`")
        if has_nt:
            if not isinstance(entry["not_testable"], str) or not entry["not_testable"].strip():
                raise ConfigError(f"{where}: claim {cid!r}: `not_testable` must be a non-empty reason")
            out.append(Claim(cid, entry["text"], entry["source"], (), entry["not_testable"]))
            continue
        conds = entry["conditions"]
        if not isinstance(conds, list) or not conds:
            raise ConfigError(f"{where}: claim {cid!r}: `conditions` must be a non-empty list")
        out.append(Claim(cid, entry["text"], entry["source"],
                         tuple(_parse_condition(where, cid, j, c, known_rows) for j, c in enumerate(conds))))
    return out


def _parse_condition(where: str, cid: str, j: int, c: Any, known_rows: set[str] | None) -> Condition:
    name = f"claim {cid!r} conditions[{j}]"
    if not isinstance(c, Mapping):
        raise ConfigError(f"{where}: {name} must be a mapping, got {type(c).__name__}")
    if "measured" in c:
        return _parse_measured(where, name, c)
    unknown = sorted(set(c) - CONDITION_KEYS)
    if unknown:
        raise ConfigError(f"{where}: {name} has unknown key(s) {unknown}; known: {sorted(CONDITION_KEYS)}")
    missing = sorted(CONDITION_KEYS - set(c))
    if missing:
        raise ConfigError(f"{where}: {name} lacks key(s) {missing}")
    if metric_spec(c["metric"]) is None:
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
    need = 1 if c["stat"] == "value" else 2
    if len(rows) != need:
        raise ConfigError(f"{where}: {name}: stat {c['stat']!r} takes {need} row(s), got {list(rows)}")
    if known_rows is not None:
        bad = [r for r in rows if r not in known_rows]
        if bad:
            raise ConfigError(f"{where}: {name}: rows {bad} are not rows of the experiment; known: {sorted(known_rows)}")
    return Condition(c["metric"], tuple(rows), c["stat"], c["relation"], thr)


def _threshold(where: str, name: str, thr: Any) -> float:
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
        raise ConfigError(f"{where}: {name}: threshold must be a finite number, got {thr!r}")
    return float(thr)


def _parse_measured(where: str, name: str, c: Mapping) -> Condition:
    unknown, missing = sorted(set(c) - MEASURED_KEYS), sorted(MEASURED_KEYS - set(c))
    if unknown or missing:
        raise ConfigError(f"{where}: {name}: a measured condition takes exactly {sorted(MEASURED_KEYS)}; "
                          f"unknown {unknown}, missing {missing}")
    ref = c["measured"]
    if not isinstance(ref, Mapping) or set(ref) != MEASURED_REF_KEYS or \
            not all(isinstance(v, str) and v for v in ref.values()):
        raise ConfigError(f"{where}: {name}: `measured` must map exactly {sorted(MEASURED_REF_KEYS)} to "
                          f"non-empty strings, got {ref!r}")
    if c["relation"] not in RELATIONS:
        raise ConfigError(f"{where}: {name}: unknown relation {c['relation']!r}; known: {list(RELATIONS)}")
    return Condition("measured", (), "value", c["relation"], _threshold(where, name, c["threshold"]),
                     (ref["name"], ref["row"], ref["column"]))


# --------------------------------------------------------------------------- #
# intervals
# --------------------------------------------------------------------------- #
@dataclass
class RowSamples:
    """One table row's figures for one metric: a point value per seed and, where stored, the
    seeds' paired bootstrap replicates (seeds x B) with their bootstrap settings."""

    points: np.ndarray
    replicates: np.ndarray | None
    setup: tuple | None  # (n_replicates, seed, unit, n rows) of the bootstrap, for pairing


@dataclass
class Interval:
    estimate: float
    lo: float
    hi: float
    seeds: tuple[int, ...]
    n_replicates: int  # 0: no test-set bootstrap
    method: str  # "paired bootstrap (requests x seeds)", "seed-only bootstrap", "exact"
    note: str = ""

    def text(self, fmt: str = "+.4f") -> str:
        seeds = "×".join(str(s) for s in self.seeds)
        if self.method == "exact":
            return f"{format(self.estimate, fmt)} (exact: all {seeds} seeds agree)"
        how = (f"{self.n_replicates} paired request replicates, {seeds} seeds" if self.n_replicates
               else f"seed-only interval over {seeds} seeds")
        note = f"; {self.note}" if self.note else ""
        return f"{format(self.estimate, fmt)} [{format(self.lo, fmt)}, {format(self.hi, fmt)}] ({how}{note})"


def _get(d: Any, path: Sequence[str]):
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def row_samples(runs: Sequence[Mapping], metric: str) -> RowSamples | None:
    """The metric across a row's runs (one metrics.json dict per seed); None when no run has it."""
    path, split, key = metric_spec(metric)
    points, reps, setups = [], [], []
    for m in runs:
        v = _get(m, path)
        if v is None or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        points.append(float(v))
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
    return RowSamples(np.array(points), np.vstack(reps) if ok else None, setups[0] if ok else None)


def _combine(a: np.ndarray, b: np.ndarray | None, stat: str) -> np.ndarray:
    if stat == "value" or b is None:
        return a
    if stat == "difference":
        return a - b
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


def compare(a: RowSamples, b: RowSamples | None = None, stat: str = "difference", *,
            seed: int = 0, level: float = LEVEL, expect_replicates: bool = True) -> Interval:
    """The hierarchical-bootstrap interval of ``stat`` of the row means (a - b, a / b, or a alone).

    For replicate b: draw each row's seeds with replacement, average their replicate-b values,
    combine. Falls back to a seed-only bootstrap when either row lacks replicates or the two
    rows' replicates are not the same resamples (other bootstrap seed, unit or test size)."""
    if (b is None) != (stat == "value"):
        raise ValueError(f"claims: stat {stat!r} takes {'one row' if stat == 'value' else 'two rows'}")
    rows = [a] if b is None else [a, b]
    seeds = tuple(len(r.points) for r in rows)
    estimate = float(_combine(np.array([a.points.mean()]), None if b is None else np.array([b.points.mean()]), stat)[0])
    rng = np.random.default_rng(seed)
    paired = all(r.replicates is not None for r in rows) and len({r.setup for r in rows}) == 1
    note = ""
    if paired:
        n_rep = rows[0].replicates.shape[1]
        means = []
        for r in rows:
            pick = rng.integers(0, r.replicates.shape[0], size=(n_rep, r.replicates.shape[0]))
            means.append(r.replicates[pick, np.arange(n_rep)[:, None]].mean(axis=1))
        method = "paired bootstrap (requests x seeds)"
    else:
        if not expect_replicates and all(np.ptp(r.points) == 0 for r in rows):
            return Interval(estimate, estimate, estimate, seeds, 0, "exact")
        missing = [r for r in rows if r.replicates is None]
        if missing and expect_replicates:
            note = "no stored test-set replicates (a figure stored without them, or older runs): test-set noise not covered"
        elif not missing:
            note = "rows' replicates are not the same resamples: test-set noise not covered"
        n_rep = 0
        means = [r.points[rng.integers(0, len(r.points), size=(N_SEED_DRAWS, len(r.points)))].mean(axis=1)
                 for r in rows]
        method = "seed-only bootstrap"
    vals = _combine(means[0], None if b is None else means[1], stat)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return Interval(estimate, float("nan"), float("nan"), seeds, n_rep, method, "no finite replicate")
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    # The point estimate is the full-test-set figure; keep it inside the reported interval.
    return Interval(estimate, float(min(lo, estimate)), float(max(hi, estimate)), seeds, n_rep, method, note)


# --------------------------------------------------------------------------- #
# verdicts
# --------------------------------------------------------------------------- #
@dataclass
class ConditionResult:
    condition: Condition
    verdict: str
    numbers: str
    interval: Interval | None = None


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str
    reason: str = ""  # for "not testable here"
    conditions: list[ConditionResult] = field(default_factory=list)

    def numbers(self) -> str:
        """The deciding numbers: per condition its interval and verdict (or why it is not testable)."""
        if not self.conditions:
            return self.reason
        return "; ".join(f"{c.condition.describe()}: {c.numbers} → {c.verdict}" for c in self.conditions)


def _verdict(iv: Interval, relation: str, t: float) -> str:
    lo, hi = iv.lo, iv.hi
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    sat = {">": lambda x: x > t, ">=": lambda x: x >= t, "<": lambda x: x < t, "<=": lambda x: x <= t}[relation]
    if sat(lo) and sat(hi):
        return "holds"
    if not sat(lo) and not sat(hi):
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


def measured_value(cond: Condition, measurements: Mapping[str, Mapping] | None) -> float | str:
    """The condition's measured figure, or why there is none (a string)."""
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
        return float(str(value).replace(",", ""))
    except ValueError:
        return f"measurement {name!r}: {column} of {row} is not a number ({value!r})"


def evaluate_condition(cond: Condition, runs: Mapping[str, Sequence[Mapping]], *, seed: int = 0,
                       measurements: Mapping[str, Mapping] | None = None) -> ConditionResult:
    """``runs``: row label -> that row's metrics.json dicts, one per seed; ``measurements``:
    measurement name -> its result (``columns``, ``rows``), for measured conditions."""
    if cond.measured:
        value = measured_value(cond, measurements)
        if isinstance(value, str):
            return ConditionResult(cond, "not testable here", value)
        iv = Interval(value, value, value, (), 0, "measured")
        return ConditionResult(cond, _verdict(iv, cond.relation, cond.threshold), f"{value:.4g} (measured)", iv)
    missing = [r for r in cond.rows if not _runs_of(r, cond, runs)]
    if missing:
        return ConditionResult(cond, "not testable here", f"row(s) {missing} have no done runs in this table")
    samples = [row_samples(_runs_of(r, cond, runs), cond.metric) for r in cond.rows]
    absent = [r for r, s in zip(cond.rows, samples) if s is None]
    if absent:
        return ConditionResult(cond, "not testable here", f"{cond.metric} not measured for {absent}")
    iv = compare(samples[0], samples[1] if len(samples) > 1 else None, cond.stat, seed=seed,
                 expect_replicates=metric_spec(cond.metric)[1] is not None)
    fmt = _fmt(cond)
    return ConditionResult(cond, _verdict(iv, cond.relation, cond.threshold), iv.text(fmt), iv)


def _fmt(cond: Condition) -> str:
    if cond.stat == "ratio":
        return ".4f"
    sign = "+" if cond.stat == "difference" else ""
    if cond.metric in ("params", "model bytes", "train samples/s"):
        return sign + ",.0f"
    return sign + ".4f"


def evaluate_claims(claims: Sequence[Claim], runs: Mapping[str, Sequence[Mapping]], *, seed: int = 0,
                    measurements: Mapping[str, Mapping] | None = None) -> list[ClaimResult]:
    """A verdict per claim: declared not testable -> ``not testable here``; a named row absent ->
    ``not testable here``; any condition does not hold -> ``does not hold``; a metric not measured
    -> ``not testable here``; all hold -> ``holds``; else ``inconclusive``."""
    out = []
    for claim in claims:
        if claim.not_testable:
            out.append(ClaimResult(claim, "not testable here", claim.not_testable))
            continue
        results = [evaluate_condition(c, runs, seed=seed, measurements=measurements) for c in claim.conditions]
        untestable = [r for r in results if r.verdict == "not testable here"]
        rows_missing = [r for r in untestable if "no done runs" in r.numbers]
        if rows_missing:
            out.append(ClaimResult(claim, "not testable here", "; ".join(r.numbers for r in rows_missing), results))
        elif any(r.verdict == "does not hold" for r in results):
            out.append(ClaimResult(claim, "does not hold", "", results))
        elif untestable:
            out.append(ClaimResult(claim, "not testable here", "; ".join(r.numbers for r in untestable), results))
        elif all(r.verdict == "holds" for r in results):
            out.append(ClaimResult(claim, "holds", "", results))
        else:
            out.append(ClaimResult(claim, "inconclusive", "", results))
    return out


def pairwise(runs: Mapping[str, Sequence[Mapping]], metric: str, order: Sequence[str], *,
             seed: int = 0) -> dict[tuple[str, str], Interval]:
    """The difference interval of ``metric`` for every ordered pair (a, b), a before b in ``order``."""
    samples = {r: row_samples(runs[r], metric) for r in order if runs.get(r)}
    samples = {r: s for r, s in samples.items() if s is not None}
    labels = [r for r in order if r in samples]
    return {(a, b): compare(samples[a], samples[b], "difference", seed=seed,
                            expect_replicates=metric_spec(metric)[1] is not None)
            for i, a in enumerate(labels) for b in labels[i + 1:]}
