"""The pre-registration: every claim's condition, threshold, metric and analysis, with a power estimate.

``python -m repro.preregister`` writes ``results/preregistration.md`` and
``results/preregistration.json`` from the claims in ``conf/experiment/*.yaml`` and the committed runs
under ``results/runs`` (report side: nothing here trains, and ``repro.run`` never imports this).
After the file is committed a change to a claim is logged with its reason: the tool refuses to
rewrite a pre-registration whose claims differ from the yaml's unless ``--reason`` says why, and
appends the reason to ``results/preregistration_log.md`` (a file it never rewrites).
``tests/test_preregistration.py`` fails while the committed JSON and the yaml disagree.

Choices, per condition, judged with ``repro.claims``' own machinery (``report.experiment_claims``):

- **Standard error (SE).** A paired request x seed bootstrap interval: its half-width / z_0.975
  (``(hi - lo) / 2 / 1.96``; a normal reading of the percentile interval). A t-interval (seed-only
  figures, measured repeats): its own ``se`` and degrees of freedom; a ratio's t-interval is built on
  the log, so its SE is carried to the ratio's scale by the delta method (estimate x se). An exact
  figure (sizes every seed agrees on, a deterministic measurement): SE 0. A figure measured once,
  a t-interval with one seed, or a condition not testable here: **no estimate**.
  Calibration judged per seed (PCOC): a deployed model is one seed and every seed must pass, so the
  SE is one seed's spread, the seeds' sample standard deviation (t with n - 1 df); more seeds do not
  shrink it.
- **Minimum detectable effect (MDE)** at 80% power and the claims' 95% two-sided level:
  MDE = (z_0.975 + z_0.8) x SE = 2.80 x SE for bootstrap intervals; (t_0.975,df + t_0.8,df) x SE for
  t-intervals at their df.
- **Distance to detect** = |paper_effect - threshold|: how far beyond the threshold the paper's
  figure lies. A condition is **underpowered** when that distance is below its MDE; a paper figure on
  the threshold (distance 0) is underpowered whenever its figure is noisy, even with no SE estimate
  (measured once), since no sample size separates an effect from its own threshold; **powered** otherwise; **not assessed** without
  a paper effect (``paper_effect`` in the yaml: the paper's own number, none invented) or without an
  SE estimate. A claim is underpowered when any condition is.
- **Seeds for power.** SE^2 = V_test + V_seed x n0 / n with n0 the seeds per row now: V_test, the
  test-set part, is the variance over the bootstrap replicates of the combination of the plain seed
  means (every seed kept, no seed draw), which more seeds do not shrink (every row is scored on the
  same test set); the rest is the seed part, taken to scale as 1/n. The seeds needed make
  (z_0.975 + z_0.8) x SE <= distance; where V_test alone is too large the answer is "more test
  rows", with the factor that would do at the current seeds (V_test taken to scale as 1/test rows).
  A paper figure on the threshold needs no count: none suffices. t-intervals over seeds are all seed part (their test-set noise is not covered: a floor);
  measured repeats count repeats instead of seeds. Assumes the seed spread of the committed runs
  is the seed spread at n seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import norm as normal, t as student_t

from repro import claims as claims_mod
from repro.claims import BOOTSTRAP, MEASURED_ONCE, MEASURED_REPEATS, T_INTERVAL, Claim, Condition, ConditionResult
from repro.errors import ConfigError, DataError
from repro.io import atomic_write_text
from repro.registry import ROOT

__all__ = ["POWER", "LEVEL_Z", "ConditionPower", "condition_power", "claim_status", "declared_claims",
           "claim_record", "build", "main"]

POWER = 0.8
ALPHA = 1 - claims_mod.LEVEL
LEVEL_Z = float(normal.ppf(1 - ALPHA / 2))  # 1.96
POWER_Z = float(normal.ppf(POWER))  # 0.84
MAX_SEEDS = 100  # beyond this, "more than 100 seeds"
LABEL = "from the committed runs' spread, before the regeneration"
LOG_NAME = "preregistration_log.md"
LOG_HEADER = ("# Pre-registration change log\n\nAfter `results/preregistration.md` is committed, a change to a "
              "claim (its condition, threshold, metric, analysis or paper effect) is logged here with its reason "
              "(`python -m repro.preregister --reason \"...\"`). This file is only ever appended to.\n")


@dataclass
class ConditionPower:
    """One condition's power estimate (see the module docstring for each choice)."""

    se: float | None
    mde: float | None
    se_method: str  # how the SE was read, or why there is none
    distance: float | None  # |paper_effect - threshold|
    power: str  # "powered", "underpowered", "not assessed"
    why: str  # the reason for "not assessed", or a note
    seeds_needed: str  # seeds (or repeats) for adequate power, "more test rows", or ""


def _t_mde_factor(df: float) -> float:
    return float(student_t.ppf(1 - ALPHA / 2, df) + student_t.ppf(POWER, df))


def _test_set_variance(cond: Condition, runs: dict, inputs) -> float | None:
    """V_test: the variance over the bootstrap replicates of the combination of plain seed means."""
    samples = [claims_mod._samples(r, cond, runs, inputs) for r in cond.rows]
    if any(s is None or s.replicates is None for s in samples):
        return None
    means = [s.replicates.mean(axis=0) for s in samples]
    values = claims_mod._combine_means(means, cond.stat)
    values = values[np.isfinite(values)]
    return float(np.var(values, ddof=1)) if len(values) > 1 else None


def _seeds_for(target_se: float, se: float, v_test: float, n0: int) -> str:
    v_seed = max(se * se - v_test, 0.0)
    if v_test >= target_se * target_se:
        # test-set variance taken to scale as 1/test rows, the seeds kept at n0
        parts = (f"test-set SE {math.sqrt(v_test):.2e}, seed SE at {n0} seeds {math.sqrt(v_seed):.2e}, "
                 f"SE needed {target_se:.2e}")
        if target_se ** 2 > v_seed:
            return f"more test rows (about {v_test / (target_se ** 2 - v_seed):.1f}x at {n0} seeds; {parts})"
        return f"more test rows and more seeds (each part alone exceeds the SE needed: {parts})"
    if v_seed == 0:
        return f"{n0} (the seed part is nil)"
    n = math.ceil(v_seed * n0 / (target_se * target_se - v_test))
    return f"{max(n, n0)} seeds" if n <= MAX_SEEDS else f"more than {MAX_SEEDS} seeds"


def _assess(cond: Condition, se: float | None, mde: float | None) -> tuple[float | None, str, str]:
    if cond.paper_effect is None:
        return None, "not assessed", "no paper effect: power not assessed"
    distance = abs(cond.paper_effect - cond.threshold)
    if distance == 0 and mde != 0 and not cond.deterministic:
        # the paper's figure on the threshold: a noisy estimate of it straddles the threshold at any
        # sample size, so it is underpowered even where the SE cannot be estimated (measured once)
        return distance, "underpowered", "the paper's figure is on the threshold"
    if mde is None:
        return distance, "not assessed", "no SE estimate: power not assessed"
    if distance < mde:
        return distance, "underpowered", ""
    return distance, "powered", "exact figure" if mde == 0 else ""


def condition_power(result: ConditionResult, runs: dict | None = None, inputs=None) -> ConditionPower:
    """SE, MDE and power of one judged condition; ``runs``/``inputs`` (the table's runs and
    ``report.row_inputs``) let a bootstrap condition split its SE into test-set and seed parts."""
    cond, iv = result.condition, result.interval
    factor_z = LEVEL_Z + POWER_Z
    if result.per_seed is not None:
        found = claims_mod._samples(cond.rows[0], cond, runs or {}, inputs)
        points = found.points if found is not None else np.array([])
        if len(points) < 2:
            return _finish(cond, None, None, "per-seed calibration with one seed: no estimate", "")
        se = float(np.std(points, ddof=1))
        return _finish(cond, se, _t_mde_factor(len(points) - 1) * se,
                       f"per-seed calibration: one seed's spread (sd of {len(points)} seeds, t df {len(points) - 1})",
                       "more seeds do not help: every seed must pass")
    if result.verdict == "not testable here" or iv is None:
        return _finish(cond, None, None, f"no estimate ({result.numbers})", "")
    if iv.method in ("exact", "measured"):
        return _finish(cond, 0.0, 0.0, "exact figure (no sampling noise)", "")
    if iv.method == MEASURED_ONCE:
        return _finish(cond, None, None, "measured once: no estimate (needs interleaved repeats)",
                       f"at least {claims_mod.MIN_REPEATS} repeats to estimate")
    if iv.method == BOOTSTRAP:
        if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
            return _finish(cond, None, None, "bootstrap with no finite replicate: no estimate", "")
        se = (iv.hi - iv.lo) / 2 / LEVEL_Z
        mde = factor_z * se
        n0 = min(iv.seeds) if iv.seeds else 1
        v_test = _test_set_variance(cond, runs, inputs) if runs is not None else None
        one_seed = " (one seed per row: seed noise is not in this SE, a floor)" if n0 < 2 else ""
        power = _finish(cond, se, mde, f"bootstrap: 95% half-width / {LEVEL_Z:.2f}{one_seed}", "")
        if power.power == "underpowered" and n0 < 2 and power.distance:
            power.seeds_needed = "unknown: one seed gives no seed spread (run 3 seeds to estimate)"
        elif power.power == "underpowered" and v_test is not None and power.distance:
            power.seeds_needed = _seeds_for(power.distance / factor_z, se, v_test, n0)
        elif power.power == "underpowered" and not power.distance:
            power.seeds_needed = "none: the paper's figure is on the threshold"
        return power
    if iv.method in (T_INTERVAL, MEASURED_REPEATS) and iv.se is not None and iv.df:
        se = iv.se * abs(iv.estimate) if iv.log_scale else iv.se
        mde = _t_mde_factor(iv.df) * se
        unit = "repeats" if iv.method == MEASURED_REPEATS else "seeds"
        how = (f"t-interval se{' (log scale x estimate)' if iv.log_scale else ''}, df {iv.df:.1f}"
               + ("; test-set noise not covered" if iv.method == T_INTERVAL else ""))
        power = _finish(cond, se, mde, how, "")
        if power.power == "underpowered" and power.distance:
            n0 = min(iv.seeds) if iv.seeds else iv.n_replicates
            n = n0
            while n <= MAX_SEEDS and _t_mde_factor(max(iv.df * (n - 1) / max(n0 - 1, 1), 1.0)) * se * math.sqrt(n0 / n) > power.distance:
                n += 1
            power.seeds_needed = f"{n} {unit}" if n <= MAX_SEEDS else f"more than {MAX_SEEDS} {unit}"
        elif power.power == "underpowered":
            power.seeds_needed = "none: the paper's figure is on the threshold"
        return power
    return _finish(cond, None, None, f"{iv.method} with no spread: no estimate", "")


def _finish(cond: Condition, se: float | None, mde: float | None, method: str, seeds: str) -> ConditionPower:
    distance, power, why = _assess(cond, se, mde)
    if power == "underpowered" and distance == 0:
        seeds = "none: the paper's figure is on the threshold"
    return ConditionPower(se, mde, method, distance, power, why, seeds)


def claim_status(claim: Claim, powers: Sequence[ConditionPower]) -> str:
    """A claim's power: ``underpowered`` when any condition is; ``powered`` when every condition is;
    ``powered where assessed`` when some are and the rest are not assessed; ``no paper effect`` when
    none has one; ``no estimate`` when those with one have no SE; suite checks are ``suite check``."""
    if claim.not_testable:
        return "not testable here"
    if claim.kind != "paper":
        return "suite check"
    states = [p.power for p in powers]
    if "underpowered" in states:
        return "underpowered"
    if states and all(s == "powered" for s in states):
        return "powered"
    if "powered" in states:
        return "powered where assessed"
    if any(c.paper_effect is not None for c in claim.conditions):
        return "no estimate"
    return "no paper effect"


def _condition_spec(cond: Condition, role: str) -> dict[str, Any]:
    """What a condition declares (compared with the yaml by the pre-registration test)."""
    return {"role": role, "describe": cond.describe(), "metric": cond.metric, "rows": list(cond.rows),
            "stat": cond.stat, "relation": cond.relation, "threshold": cond.threshold,
            "measured": list(cond.measured) if cond.measured else None, "deterministic": cond.deterministic,
            "paper_effect": cond.paper_effect}


def _analysis(cond: Condition, result: ConditionResult | None) -> dict[str, Any]:
    if cond.measured:
        method = "measured, deterministic (exact)" if cond.deterministic else \
            f"measured: t-interval over interleaved repeats (>= {claims_mod.MIN_REPEATS})"
    elif cond.metric in claims_mod.PER_SEED_METRICS and cond.stat == "value":
        method = "per seed (every seed must satisfy it)"
    elif claims_mod.metric_spec(cond.metric)[1] is not None:
        method = BOOTSTRAP
    else:
        method = T_INTERVAL
    iv = result.interval if result else None
    out = {"method": method, "level": claims_mod.LEVEL}
    if iv is not None:
        out.update(as_judged=iv.method, seeds=list(iv.seeds), replicates=iv.n_replicates, seed_paired=iv.seed_paired)
    elif result is not None and result.seeds:
        out.update(as_judged="per seed", seeds=[len(result.seeds)], replicates=0, seed_paired=False)
    return out


def claim_record(claim: Claim, result: claims_mod.ClaimResult | None, runs: dict | None, inputs) -> dict[str, Any]:
    """The pre-registration entry of one claim: what it declares and, from ``result`` (its verdict on
    the committed runs; None without runs), each condition's power."""
    judged = {}
    if result is not None:
        for r in [*result.requirements, *result.conditions]:
            judged.setdefault(r.condition, r)
    conditions, powers = [], []
    for role, conds in (("requires", claim.requires), ("condition", claim.conditions)):
        for cond in conds:
            res = judged.get(cond)
            if res is None and result is not None and role == "condition" and result.requirements:
                # not judged: a requirement did not hold; judge it alone for its spread
                res = claims_mod.evaluate_condition(cond, runs or {}, row_inputs=inputs)
            power = condition_power(res, runs, inputs) if res is not None else \
                _finish(cond, None, None, "no committed runs: no estimate", "")
            if role == "condition":
                powers.append(power)
            conditions.append({**_condition_spec(cond, role), "analysis": _analysis(cond, res),
                               "estimate_now": res.interval.estimate if res is not None and res.interval else None,
                               **asdict(power)})
    return {"id": claim.id, "kind": claim.kind, "text": claim.text, "source": claim.source,
            "not_testable": claim.not_testable, "conditions": conditions,
            "verdict_now": result.verdict if result is not None else None,
            "power": claim_status(claim, powers)}


def declared_claims(experiment: str) -> list[Claim]:
    """The claims ``conf/experiment/<experiment>.yaml`` declares (validated as the report does)."""
    from repro.experiments import load_experiment

    spec = load_experiment(experiment)
    where = str(ROOT / "conf" / "experiment" / f"{experiment}.yaml")
    return claims_mod.parse_claims(where, spec.get("claims"), labels=[r["label"] for r in spec["runs"]])


def build(results_dir: Path | None = None) -> dict[str, Any]:
    """The pre-registration of every experiment with claims: judged on the committed runs where the
    experiment has a run index under ``results_dir/runs`` (one entry per tag), else declared only."""
    from repro import report
    from repro.experiments import load_experiment

    results_dir = Path(results_dir or ROOT / "results")
    tags: dict[str, list[str]] = {}
    for index_path in sorted(results_dir.glob("runs/*/index.json")):
        index = json.loads(index_path.read_text())
        tags.setdefault(index.get("experiment"), []).append(index.get("tag", index_path.parent.name))
    entries = []
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        name = path.stem
        declared = declared_claims(name)
        if not declared:
            continue
        for tag in tags.get(name) or [None]:
            results, runs, inputs, n_runs, note = None, None, None, 0, "no committed runs"
            if tag is not None:
                try:
                    loaded = report.load_runs(tag, results_dir)
                    runs, inputs = report.runs_by_label(loaded), report.row_inputs(loaded)
                    spec = {**load_experiment(name), "source_name": name, "name": tag}
                    results = report.experiment_claims(spec, runs, results_dir, inputs)
                    n_runs, note = len(loaded), ""
                except (ConfigError, DataError) as e:
                    note = f"not judged: {e}"
            by_id = {r.claim.id: r for r in results or []}
            entries.append({"experiment": name, "tag": tag or name, "done_runs": n_runs, "note": note,
                            "claims": [claim_record(c, by_id.get(c.id), runs, inputs) for c in declared]})
    # the headline counts the tables judged on committed runs (as results/claims.md does), each table apart
    paper = [c for e in entries if e["done_runs"] for c in e["claims"] if c["kind"] == "paper"]
    unjudged = sorted({e["experiment"] for e in entries if not e["done_runs"]})
    headline = {s: sum(c["power"] == s for c in paper) for s in
                ("powered", "powered where assessed", "underpowered", "no paper effect", "no estimate",
                 "not testable here")}
    return {"label": LABEL, "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "rule": {"level": claims_mod.LEVEL, "power": POWER, "z_level": LEVEL_Z, "z_power": POWER_Z,
                     "mde": "(z_0.975 + z_0.8) x SE; t quantiles at the t-interval's df",
                     "underpowered": "|paper_effect - threshold| < MDE"},
            "headline": {"paper_claims": len(paper), **headline}, "without_committed_runs": unjudged,
            "experiments": entries}


def declared_fingerprint(document: dict[str, Any]) -> dict[tuple[str, str], list]:
    """(tag, claim id) -> what the claim declares: kind, not_testable and each condition's spec (no
    power figures); what the test and the change log compare."""
    keys = ("role", "describe", "metric", "rows", "stat", "relation", "threshold", "measured",
            "deterministic", "paper_effect")
    return {(e["tag"], c["id"]): [c["kind"], c["not_testable"], [{k: d[k] for k in keys} for d in c["conditions"]]]
            for e in document["experiments"] for c in e["claims"]}


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def markdown(document: dict[str, Any]) -> str:
    h = document["headline"]
    lines = [
        "# Pre-registration",
        "",
        f"Every claim declared in `conf/experiment/*.yaml`: its conditions (as `repro.claims` states them), metric, "
        f"threshold and analysis, with a power estimate **{document['label']}** ({document['generated']}; "
        f"`python -m repro.preregister`, rules in `repro/preregister.py`). Machine-readable: "
        f"[`preregistration.json`](preregistration.json). Changes after commit: "
        f"[`{LOG_NAME}`]({LOG_NAME}).",
        "",
        f"**Rule.** SE: the condition's interval half-width / {LEVEL_Z:.2f} for the paired bootstrap, the "
        f"t-interval's own SE otherwise (no estimate for a figure measured once). MDE at {POWER:.0%} power and "
        f"the claims' {claims_mod.LEVEL:.0%} two-sided level = (z_0.975 + z_0.8) x SE = "
        f"{LEVEL_Z + POWER_Z:.2f} x SE (t quantiles at the t-interval's df). Distance = |paper effect − "
        f"threshold|; a condition is **underpowered** when its distance is below its MDE (a paper figure on the "
        f"threshold is underpowered wherever the figure is noisy, measured once included), and a claim when any "
        f"condition is; a condition without a paper effect in the yaml is not assessed (its MDE still shown). Seeds needed: the test-set part of the SE held fixed, the seed part scaled by 1/seeds.",
        "",
        f"**Headline** ({h['paper_claims']} paper claims, counted per experiment table): "
        f"adequately powered: {h['powered']} (and {h['powered where assessed']} powered where a paper "
        f"effect exists, other conditions not assessed) · underpowered: {h['underpowered']} · no paper "
        f"effect: {h['no paper effect']} · paper effect but no SE estimate: {h['no estimate']} · "
        f"not testable here: {h['not testable here']}. Experiments with claims but no committed runs (declared "
        f"only, not counted): {', '.join(f'`{n}`' for n in document['without_committed_runs']) or 'none'}.",
        "",
    ]
    for e in document["experiments"]:
        title = e["experiment"] + (f" (`{e['tag']}`)" if e["tag"] != e["experiment"] else "")
        lines += [f"## {title}", "", f"{e['done_runs']} committed done runs" + (f"; {e['note']}" if e["note"] else "") + ".", ""]
        for c in e["claims"]:
            lines.append(f"### `{c['id']}` [{c['kind']}]: **{c['power']}**")
            lines += ["", f"{c['text']} ({c['source']}).", ""]
            if c["not_testable"]:
                lines += [f"Not testable here: {c['not_testable']}", ""]
                continue
            lines += ["| role | condition | analysis | paper effect | SE | MDE | distance | power | for power |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for d in c["conditions"]:
                a = d["analysis"]
                seeds = "×".join(str(s) for s in a.get("seeds", [])) or "—"
                how = f"{a.get('as_judged', a['method'])}; seeds {seeds}" + \
                    (f"; {a['replicates']} replicates" if a.get("replicates") else "") + \
                    ("; seed-paired" if a.get("seed_paired") else "")
                power = d["power"] + (f" ({d['why']})" if d["why"] else "")
                lines.append(f"| {d['role']} | {d['describe']} | {how}; SE: {d['se_method']} | {_fmt(d['paper_effect'])} "
                             f"| {_fmt(d['se'])} | {_fmt(d['mde'])} | {_fmt(d['distance'])} | {power} "
                             f"| {d['seeds_needed'] or '—'} |")
            lines.append("")
    lines += ["## Change log", "",
              f"After this file is committed, a change to a claim is logged in [`{LOG_NAME}`]({LOG_NAME}) with its "
              "reason; `python -m repro.preregister` refuses to rewrite this file over a changed claim without "
              "`--reason`.", ""]
    return "\n".join(lines)


def changed_claims(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Claim keys (tag/id) added, removed or declared differently between two pre-registrations."""
    a, b = declared_fingerprint(old), declared_fingerprint(new)
    return sorted(f"{t}/{i}" for t, i in set(a) | set(b) if a.get((t, i)) != b.get((t, i)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.preregister", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results")
    parser.add_argument("--reason", default="", help="why a claim changed (logged; required once committed)")
    args = parser.parse_args(argv)
    out_json = args.results_dir / "preregistration.json"
    document = build(args.results_dir)
    log = args.results_dir / LOG_NAME
    if out_json.exists():
        changed = changed_claims(json.loads(out_json.read_text()), document)
        if changed and not args.reason.strip():
            print(f"preregister: claims changed since the pre-registration ({', '.join(changed)}); "
                  f"rerun with --reason \"why\" to log the change", file=sys.stderr)
            return 2
        if changed:
            entry = (f"\n## {document['generated']}\n\nChanged: {', '.join(f'`{c}`' for c in changed)}.\n\n"
                     f"Reason: {args.reason.strip()}\n")
            atomic_write_text(log, (log.read_text() if log.exists() else LOG_HEADER) + entry)
    if not log.exists():
        atomic_write_text(log, LOG_HEADER)
    atomic_write_text(out_json, json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(args.results_dir / "preregistration.md", markdown(document))
    h = document["headline"]
    print(f"preregister: wrote {out_json} and preregistration.md: {h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
