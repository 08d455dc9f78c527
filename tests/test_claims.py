"""Claims as data: schema checks, hierarchical intervals, verdicts, and the report's Claims sections.

Everything here runs on synthetic metrics dicts shaped like metrics.json (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repro.claims import (
    BAYES_ROW, compare, evaluate_claims, metric_spec, pairwise, parse_claims, row_samples,
)
from repro.errors import ConfigError

B = 500
# One shared test-set noise per replicate: every model is scored on the same request resamples, so
# their replicate-b values move together (an easy or hard resample helps or hurts all of them).
SHARED = np.random.default_rng(123).normal(0.0, 0.004, size=B)


def make_runs(auc: float, seed_offsets=(0.0, 0.0, 0.0), *, logloss: float = 0.13, own_sd: float = 0.0004,
              params: int = 1000, model_bytes: int = 4000, random: bool = True, bootstrap: bool = True,
              rng_seed: int = 0) -> list[dict]:
    """A row's metrics.json dicts, one per seed: the seed moves the point value, replicate b adds the
    shared resample effect plus a little model-specific noise."""
    rng = np.random.default_rng(rng_seed)
    runs = []
    for off in seed_offsets:
        m = {"profile": {"parameters": params, "model_bytes": model_bytes, "train_samples_per_s": 1e5}}
        for split, base in (("test", auc), ("test_random", auc - 0.02)) if random else (("test", auc),):
            point = base + off
            split_m = {"auc": point, "logloss": logloss - off, "n": 1000.0}
            if bootstrap:
                reps = point + SHARED + rng.normal(0.0, own_sd, size=B)
                split_m["bootstrap"] = {"auc": reps.tolist(), "logloss": (logloss - off - SHARED).tolist(),
                                       "n_replicates": B, "seed": 0, "unit": "request"}
            m[split] = split_m
        runs.append(m)
    return runs


def cond(rows, metric="test AUC", stat="difference", relation=">", threshold=0.0):
    return {"metric": metric, "rows": list(rows), "stat": stat, "relation": relation, "threshold": threshold}


def claim(cid, *conditions, **extra):
    entry = {"id": cid, "text": f"{cid} as the paper says", "source": "Someone et al. 2020"}
    if conditions:
        entry["conditions"] = list(conditions)
    entry.update(extra)
    return entry


def verdicts(raw, runs, labels=None):
    return {r.claim.id: r for r in evaluate_claims(parse_claims("test.yaml", raw, labels), runs)}


# --------------------------------------------------------------------------- verdicts
def test_each_verdict_kind():
    runs = {"A": make_runs(0.780, rng_seed=1), "B": make_runs(0.770, rng_seed=2), "C": make_runs(0.7801, rng_seed=3)}
    raw = [
        claim("a-beats-b", cond(["A", "B"])),
        claim("b-beats-a", cond(["B", "A"])),
        claim("c-beats-a", cond(["C", "A"])),  # +0.0001 with test noise 0.0004 per model: straddles 0
        claim("online", not_testable="needs live traffic"),
        claim("d-beats-a", cond(["D", "A"])),  # D is an experiment row without done runs
    ]
    res = verdicts(raw, runs, labels=["A", "B", "C", "D"])
    assert res["a-beats-b"].verdict == "holds"
    assert res["b-beats-a"].verdict == "does not hold"
    assert res["c-beats-a"].verdict == "inconclusive"
    assert res["online"].verdict == "not testable here" and res["online"].numbers() == "needs live traffic"
    assert res["d-beats-a"].verdict == "not testable here" and "['D']" in res["d-beats-a"].numbers()
    # The deciding numbers: point estimate, interval, seeds and replicates.
    text = res["a-beats-b"].numbers()
    assert "+0.0100 [" in text and "500 paired request replicates" in text and "3×3 seeds" in text
    iv = res["a-beats-b"].conditions[0].interval
    assert iv.lo > 0 and iv.lo < iv.estimate < iv.hi and iv.n_replicates == B


def test_compound_claim_needs_every_condition():
    runs = {"Small": make_runs(0.7795, model_bytes=1000, own_sd=0.0001, rng_seed=4),
            "Full": make_runs(0.7800, model_bytes=4000, own_sd=0.0001, rng_seed=5)}
    saving = cond(["Small", "Full"], metric="model bytes", stat="ratio", relation="<=", threshold=0.4)
    raw = [
        # "memory saving >= 60% with an AUC drop <= 0.001": both conditions hold
        claim("ok", saving, cond(["Small", "Full"], relation=">=", threshold=-0.001)),
        # ... with an AUC drop <= 0.0001 instead: the memory part holds, the AUC part fails
        claim("too-strict", saving, cond(["Small", "Full"], relation=">=", threshold=-0.0001)),
        # ... saving >= 80%: fails although the AUC part holds
        claim("too-much", {**saving, "threshold": 0.2}, cond(["Small", "Full"], relation=">=", threshold=-0.001)),
    ]
    res = verdicts(raw, runs)
    assert [c.verdict for c in res["ok"].conditions] == ["holds", "holds"] and res["ok"].verdict == "holds"
    assert res["too-strict"].verdict == "does not hold"
    assert res["too-much"].conditions[1].verdict == "holds" and res["too-much"].verdict == "does not hold"
    assert "0.2500 (exact: all 3×3 seeds agree)" in res["ok"].numbers()


def test_a_compound_claim_with_an_open_condition_is_inconclusive():
    runs = {"A": make_runs(0.780, rng_seed=1), "B": make_runs(0.770, rng_seed=2), "C": make_runs(0.7801, rng_seed=3)}
    res = verdicts([claim("mixed", cond(["A", "B"]), cond(["C", "A"]))], runs)
    assert [c.verdict for c in res["mixed"].conditions] == ["holds", "inconclusive"]
    assert res["mixed"].verdict == "inconclusive"


def test_random_split_and_bayes_row():
    runs = {"A": make_runs(0.780, rng_seed=1), "B": make_runs(0.770, rng_seed=2, random=False)}
    for m in runs["A"]:
        m["bayes"] = {"test": {**m["test"], "auc": 0.83, "bootstrap": {**m["test"]["bootstrap"],
                                                                        "auc": (0.83 + SHARED).tolist()}}}
    res = verdicts([claim("rand", cond(["A", "B"]), cond(["A", "B"], metric="random AUC")),
                    claim("below-bayes", cond([BAYES_ROW, "A"], threshold=0.04))], runs)
    assert res["rand"].verdict == "not testable here" and "random AUC not measured for ['B']" in res["rand"].numbers()
    assert "→ holds" in res["rand"].numbers()  # the testable condition still shows its numbers
    assert res["below-bayes"].verdict == "holds"


# --------------------------------------------------------------------------- intervals
def test_hierarchical_interval_widens_when_seeds_disagree():
    base = make_runs(0.770, rng_seed=2)
    agree = compare(row_samples(make_runs(0.780, rng_seed=1), "test AUC"), row_samples(base, "test AUC"))
    spread = compare(row_samples(make_runs(0.780, (-0.006, 0.0, 0.006), rng_seed=1), "test AUC"),
                     row_samples(base, "test AUC"))
    assert agree.estimate == pytest.approx(spread.estimate)
    assert (spread.hi - spread.lo) > 3 * (agree.hi - agree.lo)


def test_pairing_by_request_tightens_the_interval():
    a, b = make_runs(0.780, rng_seed=1), make_runs(0.778, rng_seed=2)
    paired = compare(row_samples(a, "test AUC"), row_samples(b, "test AUC"))
    # The same runs, but B's replicates come from other resamples: the shared noise no longer cancels.
    shuffled = json.loads(json.dumps(b))
    perm = np.random.default_rng(0).permutation(B)
    for m in shuffled:
        m["test"]["bootstrap"]["auc"] = list(np.asarray(m["test"]["bootstrap"]["auc"])[perm])
    unpaired = compare(row_samples(a, "test AUC"), row_samples(shuffled, "test AUC"))
    assert paired.lo > 0 and unpaired.lo < 0 < unpaired.hi
    assert (unpaired.hi - unpaired.lo) > 3 * (paired.hi - paired.lo)


def test_old_runs_fall_back_to_a_seed_t_interval_and_say_so():
    old = {"A": make_runs(0.780, (-0.001, 0.0, 0.001), bootstrap=False),
           "B": make_runs(0.770, (-0.001, 0.0, 0.001), bootstrap=False)}
    res = verdicts([claim("a-beats-b", cond(["A", "B"]))], old)
    iv = res["a-beats-b"].conditions[0].interval
    assert iv.method == "t-interval over seeds" and iv.n_replicates == 0
    assert "t-interval over 3×3 seeds" in res["a-beats-b"].numbers() and "older runs" in res["a-beats-b"].numbers()
    assert res["a-beats-b"].verdict == "holds"
    # Welch's interval: seed sd 0.001 per row, n = 3 each, df = 4 -> half-width t(0.975, 4) * sqrt(2 * 1e-6 / 3)
    assert iv.hi - iv.estimate == pytest.approx(2.7764451 * (2e-6 / 3) ** 0.5, rel=1e-6)
    # Replicates on one side only: also seed-only, never a half-paired interval.
    mixed = compare(row_samples(make_runs(0.78), "test AUC"), row_samples(old["B"], "test AUC"))
    assert mixed.method == "t-interval over seeds"


def test_pairwise_covers_every_pair_once():
    runs = {k: make_runs(v, rng_seed=i) for i, (k, v) in enumerate({"A": 0.78, "B": 0.77, "C": 0.76}.items())}
    table = pairwise(runs, "test AUC", ["A", "B", "C", "Missing"])
    assert set(table) == {("A", "B"), ("A", "C"), ("B", "C")}
    assert table[("A", "C")].estimate == pytest.approx(0.02)


# --------------------------------------------------------------------------- schema
@pytest.mark.parametrize("raw, needle", [
    ([claim("x", cond(["A", "B"]), sorce="typo")], r"claims\[0\] \('x'\) has unknown key\(s\) \['sorce'\]"),
    ([claim("x", {**cond(["A", "B"]), "treshold": 0.0})], r"claim 'x' conditions\[0\] has unknown key\(s\) \['treshold'\]"),
    ([claim("x", {k: v for k, v in cond(["A", "B"]).items() if k != "relation"})], r"lacks key\(s\) \['relation'\]"),
    ([claim("x", cond(["A", "B"], metric="test AUCC"))], "unknown metric 'test AUCC'"),
    ([claim("x", cond(["A", "B"], relation="=>"))], "unknown relation '=>'"),
    ([claim("x", cond(["A", "B"], stat="value"))], "stat 'value' takes 1 row"),
    ([claim("x", cond(["A", "B"], threshold="zero"))], "threshold must be a finite number"),
    ([claim("x", cond(["A", "Bee"]))], r"rows \['Bee'\] are not rows of the experiment"),
    ([claim("x")], "exactly one of `not_testable`"),
    ([claim("x", cond(["A", "B"]), not_testable="why")], "exactly one of `not_testable`"),
    ([claim("x", cond(["A", "B"])), claim("x", not_testable="why")], "claim id 'x' appears twice"),
    ([{"id": "x", "source": "s", "not_testable": "why"}], "needs a non-empty string `text`"),
    ({"id": "x"}, "claims must be a list"),
])
def test_bad_claims_are_config_errors_naming_the_key(raw, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        parse_claims("conf/experiment/demo.yaml", raw, labels=["A", "B"])
    assert str(e.value).startswith("conf/experiment/demo.yaml")


def test_declared_claims_parse():
    from repro.experiments import load_experiment
    from repro.registry import ROOT

    for name in ("baselines", "baselines_smoke"):
        spec = load_experiment(name)
        claims = parse_claims(str(ROOT / "conf/experiment" / f"{name}.yaml"), spec.get("claims"),
                              labels=[r["label"] for r in spec["runs"]])
        assert claims and any(c.not_testable for c in claims) and any(c.conditions for c in claims)
    for path in sorted((ROOT / "conf/experiment").glob("*.yaml")):  # every experiment's claims parse
        spec = load_experiment(path.stem)
        parse_claims(str(path), spec.get("claims"), labels=[r["label"] for r in spec["runs"]])


# --------------------------------------------------------------------------- report
def write_fake_runs(results, tag, rows, commits=("a" * 40,), core=None):
    """A results dir as repro.experiments and repro.run write it: index.json, manifests, metrics."""
    root = results / "runs" / tag
    rels = []
    for i, (label, runs) in enumerate(rows.items()):
        for seed, metrics in enumerate(runs):
            rel = f"{label}-0000000{i}/seed{seed}"
            (root / rel).mkdir(parents=True)
            commit = commits[(i + seed) % len(commits)]
            manifest = {
                "label": label, "seed": seed, "status": "done", "config": {"data": {"scale": "smoke"}},
                "data": {"source": "world", "rows": {"train": 10, "valid": 10, "test": 1000},
                         "split_protocol": "by request", "fingerprint": "f" * 16},
                "code": {"commit": commit, "dirty": False, "fingerprint": "c" * 16, "core": core or commit[:16]},
                "machine": {"cpu_model": "test cpu", "cores": 2, "gpu": "none"},
            }
            metrics = {**metrics, "valid": {"auc": metrics["test"]["auc"]},
                       "train": {"best_step": 5, "steps": 10, "epochs_run": 1.0},
                       "profile": {**metrics["profile"], "train_seconds": 1.0, "eval_seconds": 0.5}}
            metrics["bayes"] = {s: {**metrics[s], "auc": 0.85, "bootstrap": {**metrics[s]["bootstrap"],
                                                                           "auc": (0.85 + SHARED).tolist()}}
                                for s in ("test", "test_random") if s in metrics}
            (root / rel / "manifest.json").write_text(json.dumps(manifest))
            (root / rel / "metrics.json").write_text(json.dumps(metrics))
            rels.append(rel)
    (root / "index.json").write_text(json.dumps({"experiment": "baselines_smoke", "tag": tag,
                                                 "extra_overrides": [], "runs": rels}))


def test_report_ends_with_claims_and_builds_the_claims_index(tmp_path):
    from repro.report import write_report

    results = tmp_path / "results"
    write_fake_runs(results, "baselines_smoke", {"LR": make_runs(0.760, (0.0, 0.0), rng_seed=1),
                                                 "DeepFM": make_runs(0.780, (0.0, 0.0), rng_seed=2)})
    md, csv, png = write_report("baselines_smoke", results)
    text = md.read_text()
    claims_part = text[text.index("## Claims"):]
    assert "`deepfm-over-lr`" in claims_part and "**holds**" in claims_part
    assert "**not testable here**: needs live traffic" in claims_part
    assert "+0.0200 [" in claims_part and "2×2 seeds" in claims_part
    # Checks: paired intervals against the baseline on test and test_random, and separability.
    assert "ΔAUC DeepFM − LR (95% interval): test +0.0200 [" in text and "; test_random +0.0200 [" in text
    assert "Separable on test AUC" in text and "DeepFM > LR" in text and "Not separable: none" in text
    assert "beyond the seed spread" not in text and "mixes code versions" not in text
    assert "| AUC test_random |" in text.replace("AUC random slice | AUC test_random", "| AUC test_random |")
    assert "0.7400" in text  # the test_random column (0.760 - 0.02)
    index = (results / "claims.md").read_text()
    assert "holds: 1 · does not hold: 0 · inconclusive: 0 · not testable here: 1" in index
    assert "**holds**" in index and "`wide-deep-online-acquisitions`" in index and "[`baselines_smoke.md`]" in index


def test_report_flags_runs_from_several_code_versions(tmp_path):
    from repro.report import write_report

    results = tmp_path / "results"
    write_fake_runs(results, "baselines_smoke", {"LR": make_runs(0.760, (0.0, 0.0), rng_seed=1),
                                                 "DeepFM": make_runs(0.760, (0.0, 0.0), rng_seed=2)},
                    commits=("a" * 40, "b" * 40))
    md, _, _ = write_report("baselines_smoke", results)
    text = md.read_text()
    assert "**this table mixes code versions: its runs come from 2 git commits" in text
    assert "2 harness-core fingerprints" in text
    assert "**inconclusive**" in text  # equal AUCs: the interval of the difference straddles 0
    assert "DeepFM ≈ LR" in text or "LR ≈ DeepFM" in text


def test_report_notes_several_commits_with_one_harness_core_without_a_warning(tmp_path):
    from repro.report import write_report

    results = tmp_path / "results"
    write_fake_runs(results, "baselines_smoke", {"LR": make_runs(0.760, (0.0, 0.0), rng_seed=1),
                                                 "DeepFM": make_runs(0.780, (0.0, 0.0), rng_seed=2)},
                    commits=("a" * 40, "b" * 40), core="d" * 16)
    text = write_report("baselines_smoke", results)[0].read_text()
    assert "runs come from 2 git commits (aaaaaaaaaa, bbbbbbbbbb) with one harness core (`dddddddddddddddd`)" in text
    assert "mixes code versions" not in text


# --------------------------------------------------------------------------- measured conditions
MEASURED = [{"id": "store", "text": "t", "source": "s", "conditions": [
    {"measured": {"name": "pcf_store", "row": "PCF-GNN store", "column": "bytes / pair table"},
     "relation": "<", "threshold": 0.5, "deterministic": True}]}]


def store_result(ratio: str) -> dict:
    return {"columns": ["store", "bytes / pair table"], "rows": [["pair table", "1.000"], ["PCF-GNN store", ratio]]}


@pytest.mark.parametrize("ratio, verdict", [("0.210", "holds"), ("0.730", "does not hold")])
def test_a_deterministic_measured_condition_is_judged_on_the_exact_figure(ratio, verdict):
    claims = parse_claims("x.yaml", MEASURED)
    [result] = evaluate_claims(claims, {}, measurements={"pcf_store": store_result(ratio)})
    assert result.verdict == verdict
    assert ratio.rstrip("0") in result.numbers() and "deterministic" in result.numbers()


SPEED = [{"id": "faster", "text": "t", "source": "s", "conditions": [
    {"measured": {"name": "speed", "row": "fused", "column": "x plain"}, "relation": ">", "threshold": 1.0}]}]


def speed_result(figure: str, repeats: list[float] | None) -> dict:
    out = {"columns": ["engine", "x plain"], "rows": [["plain", "1.00"], ["fused", figure]]}
    if repeats is not None:
        out["repeats"] = {"fused": {"x plain": repeats}}
    return out


@pytest.mark.parametrize("repeats, verdict", [
    (None, "inconclusive"),                                # measured once: no interval, whatever the figure
    ([1.21, 1.25, 1.19, 1.23, 1.22], "holds"),             # five repeats all well above 1
    ([1.06, 0.81, 1.30, 0.95, 1.18], "inconclusive"),      # the same mean-ish figure, spread over 1
    ([0.71, 0.69, 0.74, 0.70, 0.72], "does not hold"),
])
def test_a_measured_speed_takes_its_repeats_interval(repeats, verdict):
    [result] = evaluate_claims(parse_claims("x.yaml", SPEED), {}, measurements={"speed": speed_result("1.06", repeats)})
    assert result.verdict == verdict
    if repeats is None:
        assert "measured once" in result.numbers()
    else:
        assert "5 interleaved repeats" in result.numbers()


def test_few_measured_repeats_are_flagged():
    [result] = evaluate_claims(parse_claims("x.yaml", SPEED), {},
                               measurements={"speed": speed_result("1.2", [1.2, 1.21, 1.19])})
    assert result.verdict == "holds" and "fewer than 5 repeats" in result.numbers()


def test_a_missing_measurement_is_not_testable_and_a_malformed_reference_is_an_error():
    [result] = evaluate_claims(parse_claims("x.yaml", MEASURED), {})
    assert result.verdict == "not testable here" and "not run yet" in result.numbers()
    bad = [{**MEASURED[0], "conditions": [{"measured": {"name": "pcf_store", "row": "x"}, "relation": "<",
                                           "threshold": 0.5}]}]
    with pytest.raises(ConfigError, match="measured"):
        parse_claims("x.yaml", bad)
    mixed = [{**MEASURED[0], "conditions": [{**MEASURED[0]["conditions"][0], "metric": "test AUC"}]}]
    with pytest.raises(ConfigError, match="metric"):
        parse_claims("x.yaml", mixed)


# --------------------------------------------------------------------------- a data set's own test split
def with_split(runs: list[dict], split: str, shift: float) -> list[dict]:
    """The runs with one more evaluated test split: ``test``'s figures moved by ``shift``."""
    out = []
    for m in runs:
        t = m["test"]
        out.append({**m, split: {**t, "auc": t["auc"] + shift,
                                 "bootstrap": {**t["bootstrap"], "auc": [a + shift for a in t["bootstrap"]["auc"]]}}})
    return out


def test_a_data_sets_own_test_split_is_a_claim_metric_and_a_table_column(tmp_path):
    from repro.report import write_report

    assert metric_spec("AUC test_unseen_pairs") == (("test_unseen_pairs", "auc"), "test_unseen_pairs", "auc")
    assert metric_spec("AUC valid") is None and metric_spec("unseen AUC") is None
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_claims("x.yaml", [claim("c", cond(["A", "B"], metric="AUC train"))])
    runs = {"LR": with_split(make_runs(0.760, (0.0, 0.0), rng_seed=1), "test_unseen_pairs", -0.05),
            "DeepFM": with_split(make_runs(0.780, (0.0, 0.0), rng_seed=2), "test_unseen_pairs", -0.03)}
    [result] = evaluate_claims(parse_claims("x.yaml", [claim(
        "unseen", cond(["DeepFM", "LR"], metric="AUC test_unseen_pairs", threshold=0.035))]), runs)
    assert result.verdict == "holds" and "+0.0400" in result.numbers()  # 0.750 - 0.710
    results = tmp_path / "results"
    write_fake_runs(results, "baselines_smoke", runs)
    text = write_report("baselines_smoke", results)[0].read_text()
    assert "| AUC test_unseen_pairs |" in text and "0.7500" in text and "0.7100" in text
    assert "test_unseen_pairs +0.0400 [" in text  # the paired interval against the baseline


# --------------------------------------------------------------------------- difference of differences
def knob_runs(on_gain: float, off_gain: float, *, sd: float = 0.0003) -> dict[str, list[dict]]:
    """A method and its baseline with a world structure on, and both with it off."""
    return {"M": make_runs(0.780 + on_gain, own_sd=sd, rng_seed=1), "Base": make_runs(0.780, own_sd=sd, rng_seed=2),
            "M · off": make_runs(0.770 + off_gain, own_sd=sd, rng_seed=3),
            "Base · off": make_runs(0.770, own_sd=sd, rng_seed=4)}


VANISH = claim("gain-needs-knob", cond(["M", "Base", "M · off", "Base · off"], stat="difference_of_differences"),
               requires=[cond(["M", "Base"])])


def test_a_vanishing_gain_is_a_difference_of_differences():
    res = verdicts([VANISH], knob_runs(0.004, 0.0))
    r = res["gain-needs-knob"]
    assert r.verdict == "holds"
    assert r.conditions[0].interval.estimate == pytest.approx(0.004)
    assert "requires" in r.numbers() and "(M − Base) − (M · off − Base · off)" in r.numbers()
    # the gain grows with the knob off: it did not come from the knob
    assert verdicts([VANISH], knob_runs(0.004, 0.008))["gain-needs-knob"].verdict == "does not hold"
    # as large with the knob off: no evidence either way
    assert verdicts([VANISH], knob_runs(0.004, 0.004))["gain-needs-knob"].verdict == "inconclusive"


def test_no_gain_with_the_knob_on_is_not_a_gain_that_vanished():
    """The old rule ("off gain < threshold") held when there was no gain at all; now it is not testable."""
    for on_gain in (0.0, -0.004):
        r = verdicts([VANISH], knob_runs(on_gain, 0.0))["gain-needs-knob"]
        assert r.verdict == "not testable here"
        assert r.numbers().startswith("no gain to vanish") and not r.conditions
    old_rule = claim("old", cond(["M · off", "Base · off"], relation="<", threshold=0.001))
    assert verdicts([old_rule], knob_runs(-0.004, 0.0))["old"].verdict == "holds"  # what it used to say


def test_the_difference_of_differences_needs_four_rows_and_requires_conditions():
    with pytest.raises(ConfigError, match="takes 4 row"):
        parse_claims("x.yaml", [claim("x", cond(["A", "B"], stat="difference_of_differences"))])
    with pytest.raises(ConfigError, match="requires"):
        parse_claims("x.yaml", [claim("x", cond(["A", "B"]), requires=[])])
    with pytest.raises(ConfigError, match=r"requires\[0\].*rows"):
        parse_claims("x.yaml", [claim("x", cond(["A", "B"]), requires=[cond(["A", "Typo"])])], labels=["A", "B"])


# --------------------------------------------------------------------------- seed pairing
def teacher_runs(shift_by_seed: tuple[float, ...], gain: float) -> dict[str, list[dict]]:
    """Two students of one teacher whose per-seed quality moves both (a shared ranker at seed k)."""
    return {"S1": make_runs(0.78 + gain, shift_by_seed, rng_seed=1, own_sd=0.0001),
            "S2": make_runs(0.78, shift_by_seed, rng_seed=2, own_sd=0.0001),
            "T": make_runs(0.80, shift_by_seed, rng_seed=3, own_sd=0.0001)}


def test_rows_sharing_a_teacher_are_seed_paired():
    from repro.claims import RowInputs

    runs = teacher_runs((-0.004, 0.0, 0.004), gain=0.001)  # the teacher's seed moves both students by +-0.004
    seeds = {k: [0, 1, 2] for k in runs}
    shared = RowInputs(seeds, {"S1": "T", "S2": "T", "T": ""})
    raw = [claim("s1-beats-s2", cond(["S1", "S2"]))]
    unpaired = verdicts(raw, runs)["s1-beats-s2"]
    paired = {r.claim.id: r for r in evaluate_claims(parse_claims("x", raw), runs, row_inputs=shared)}["s1-beats-s2"]
    assert unpaired.verdict == "inconclusive" and paired.verdict == "holds"
    assert "seeds paired" in paired.numbers() and "seeds paired" not in unpaired.numbers()
    # no shared per-seed input: not paired, even with the same seeds
    alone = RowInputs(seeds, {"S1": "", "S2": "", "T": ""})
    assert evaluate_claims(parse_claims("x", raw), runs, row_inputs=alone)[0].verdict == "inconclusive"
    # other seeds: never paired (the rule pairs seed k with seed k)
    other = RowInputs({"S1": [0, 1, 2], "S2": [3, 4, 5], "T": [0, 1, 2]}, {"S1": "T", "S2": "T", "T": ""})
    assert evaluate_claims(parse_claims("x", raw), runs, row_inputs=other)[0].verdict == "inconclusive"


def test_seed_pairing_aligns_seeds_not_run_order():
    from repro.claims import RowInputs

    runs = teacher_runs((-0.004, 0.0, 0.004), gain=0.001)
    runs["S2"] = runs["S2"][::-1]  # its runs listed in another order than S1's
    shared = RowInputs({"S1": [0, 1, 2], "S2": [2, 1, 0], "T": [0, 1, 2]}, {"S1": "T", "S2": "T", "T": ""})
    r = evaluate_claims(parse_claims("x", [claim("c", cond(["S1", "S2"]))]), runs, row_inputs=shared)[0]
    assert r.verdict == "holds" and r.conditions[0].interval.hi - r.conditions[0].interval.lo < 0.002


def test_a_seed_paired_t_interval_is_a_paired_t():
    from repro.claims import RowInputs

    runs = {k: make_runs(v, (-0.004, 0.0, 0.005), bootstrap=False, rng_seed=i)
            for i, (k, v) in enumerate({"S1": 0.781, "S2": 0.780, "T": 0.8}.items())}
    runs["S1"][2]["test"]["auc"] += 0.0003  # per-seed differences 0.001, 0.001, 0.0013
    shared = RowInputs({k: [0, 1, 2] for k in runs}, {"S1": "T", "S2": "T", "T": ""})
    iv = evaluate_claims(parse_claims("x", [claim("c", cond(["S1", "S2"]))]), runs, row_inputs=shared)[0].conditions[0].interval
    d = np.array([0.001, 0.001, 0.0013])
    assert iv.estimate == pytest.approx(d.mean())
    assert iv.hi - iv.estimate == pytest.approx(4.3026527 * d.std(ddof=1) / 3 ** 0.5, rel=1e-5)


# --------------------------------------------------------------------------- calibration per seed
def pcoc_runs(values) -> list[dict]:
    return [{"test": {"pcoc": v, "auc": 0.78}} for v in values]


@pytest.mark.parametrize("values, verdict", [
    ((1.02, 0.97, 1.05), "holds"),
    ((1.036, 0.86, 1.18), "does not hold"),   # a mean of 1.03 inside the band, 2 of 3 seeds outside it
    ((1.02, 0.97, 1.18), "inconclusive"),     # one seed of three outside
])
def test_calibration_is_judged_per_seed(values, verdict):
    band = claim("calibrated", cond(["A"], metric="test PCOC", stat="value", relation=">", threshold=0.9),
                 cond(["A"], metric="test PCOC", stat="value", relation="<", threshold=1.1))
    r = verdicts([band], {"A": pcoc_runs(values)})["calibrated"]
    assert r.verdict == verdict
    assert "seed by seed" in r.numbers()


# --------------------------------------------------------------------------- kinds and multiplicity
def test_paper_claims_and_suite_checks_are_told_apart():
    parsed = parse_claims("x", [claim("p", cond(["A", "B"])),
                                claim("c", cond(["A", "B"]), source="adrepro check (issue 7): a premise"),
                                claim("k", cond(["A", "B"]), source="adrepro check", kind="paper")])
    assert [c.kind for c in parsed] == ["paper", "check", "paper"]
    with pytest.raises(ConfigError, match="kind"):
        parse_claims("x", [claim("p", cond(["A", "B"]), kind="opinion")])


def test_benjamini_hochberg_rejects_the_smallest_p_values_up_to_the_cutoff():
    from repro.claims import benjamini_hochberg

    # m = 4, rate 0.05: the k-th smallest p is compared with k/4 * 0.05 = 0.0125, 0.025, 0.0375, 0.05;
    # the largest k under its bound is 3 (0.03 <= 0.0375), so the three smallest are rejected
    assert benjamini_hochberg([0.01, 0.02, 0.03, 0.5], 0.05) == [True, True, True, False]
    assert benjamini_hochberg([0.02, 0.03, 0.04, 0.5], 0.05) == [False, False, False, False]
    assert benjamini_hochberg([0.5, 0.001], 0.05) == [False, True]


def test_adjusted_verdicts_never_strengthen_and_weaken_marginal_ones_in_a_large_family():
    from repro.claims import adjust_verdicts

    runs = {"A": make_runs(0.780, rng_seed=1), "B": make_runs(0.770, rng_seed=2)}
    # one clear claim among many marginal ones: p just under 0.025 each, raw "holds"
    margin = {}
    for i in range(30):
        margin[f"M{i}"] = make_runs(0.770 + 0.00072, rng_seed=10 + i, own_sd=0.0004)
    runs.update(margin)
    raw = [claim("clear", cond(["A", "B"]))] + [claim(f"m{i}", cond([f"M{i}", "B"])) for i in range(30)]
    res = evaluate_claims(parse_claims("x", raw), runs)
    n = adjust_verdicts(res)
    assert n == 31
    by = {r.claim.id: r for r in res}
    assert by["clear"].adjusted == "holds"
    marginal = [by[f"m{i}"] for i in range(30) if by[f"m{i}"].verdict == "holds"]
    assert marginal, "the setup should give some raw 'holds' near the threshold"
    assert any(r.adjusted == "inconclusive" for r in marginal)
    for r in res:  # the adjusted verdict is the raw one or inconclusive
        assert r.adjusted in (r.verdict, "inconclusive")
    # suite checks are outside the family
    checks = evaluate_claims(parse_claims("x", [claim("c", cond(["A", "B"]), source="adrepro check")]), runs)
    assert adjust_verdicts(checks) == 0 and checks[0].adjusted is None


def test_a_paper_effect_is_parsed_and_a_misspelt_one_stays_an_error():
    cond = {"metric": "test AUC", "rows": ["A", "B"], "stat": "difference", "relation": ">", "threshold": 0.0}
    measured = {"measured": {"name": "m", "row": "r", "column": "c"}, "relation": ">=", "threshold": 30}
    claim = lambda c: [{"id": "x", "text": "t", "source": "s", "conditions": [c]}]
    assert parse_claims("f.yaml", claim(cond))[0].conditions[0].paper_effect is None
    assert parse_claims("f.yaml", claim({**cond, "paper_effect": 0.002}))[0].conditions[0].paper_effect == 0.002
    assert parse_claims("f.yaml", claim({**measured, "paper_effect": 30}))[0].conditions[0].paper_effect == 30.0
    with pytest.raises(ConfigError, match="paper_efect"):
        parse_claims("f.yaml", claim({**cond, "paper_efect": 0.002}))
    with pytest.raises(ConfigError, match="paper_efect"):
        parse_claims("f.yaml", claim({**measured, "paper_efect": 30}))
    with pytest.raises(ConfigError, match="paper_effect must be a finite number"):
        parse_claims("f.yaml", claim({**cond, "paper_effect": "+0.2%"}))
