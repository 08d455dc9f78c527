"""The pre-registration (repro.preregister): its power rule, and the committed file against the yaml.

No training: the committed ``results/preregistration.json`` is compared with the claims the yaml
declares, so a claim changed without regenerating the pre-registration (and logging why) fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import norm, t as student_t

from repro import preregister
from repro.claims import BOOTSTRAP, MEASURED_ONCE, T_INTERVAL, Claim, Condition, ConditionResult, Interval
from repro.registry import ROOT

COMMITTED = ROOT / "results" / "preregistration.json"


def _yaml_claims() -> dict[str, list[Claim]]:
    out = {}
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        declared = preregister.declared_claims(path.stem)
        if declared:
            out[path.stem] = declared
    return out


def test_the_committed_preregistration_matches_the_declared_claims():
    document = json.loads(COMMITTED.read_text())
    declared = _yaml_claims()
    committed = {}
    for entry in document["experiments"]:
        committed.setdefault(entry["experiment"], []).append(entry)
    assert sorted(committed) == sorted(declared), "experiments with claims differ from the pre-registration"
    hint = "a claim changed: rerun `python -m repro.preregister --reason \"why\"` and commit it with the log"
    for name, claims in declared.items():
        for entry in committed[name]:
            assert [c["id"] for c in entry["claims"]] == [c.id for c in claims], f"{name}: {hint}"
            for record, claim in zip(entry["claims"], claims):
                assert record["kind"] == claim.kind and record["not_testable"] == claim.not_testable, \
                    f"{name}/{claim.id}: {hint}"
                specs = [preregister._condition_spec(c, role) for role, conds in
                         (("requires", claim.requires), ("condition", claim.conditions)) for c in conds]
                keys = list(specs[0]) if specs else []
                assert [{k: d[k] for k in keys} for d in record["conditions"]] == \
                    json.loads(json.dumps(specs)), f"{name}/{claim.id}: {hint}"


def _cond(threshold=0.0, paper_effect=None, **kw) -> Condition:
    return Condition("test AUC", ("A", "B"), "difference", ">", threshold, paper_effect=paper_effect, **kw)


def _bootstrap_result(cond: Condition, half_width: float) -> ConditionResult:
    iv = Interval(0.001, 0.001 - half_width, 0.001 + half_width, (3, 3), 500, BOOTSTRAP)
    return ConditionResult(cond, "inconclusive", iv.text(), iv)


def test_bootstrap_mde_is_2_8_standard_errors_and_decides_the_power():
    se = 0.001
    power = preregister.condition_power(_bootstrap_result(_cond(paper_effect=0.002), se * norm.ppf(0.975)))
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert power.se == pytest.approx(se) and power.mde == pytest.approx(z * se)
    assert power.power == "underpowered"  # distance 0.002 < MDE 0.0028
    assert preregister.condition_power(_bootstrap_result(_cond(paper_effect=0.003), se * 1.96)).power == "powered"
    # the distance is to the threshold, not to zero
    assert preregister.condition_power(
        _bootstrap_result(_cond(threshold=-0.001, paper_effect=0.0), se * 1.96)).distance == pytest.approx(0.001)
    unassessed = preregister.condition_power(_bootstrap_result(_cond(), se * 1.96))
    assert unassessed.power == "not assessed" and "no paper effect" in unassessed.why and unassessed.mde > 0


def test_a_t_interval_uses_its_own_se_and_t_quantiles():
    iv = Interval(0.01, 0.0, 0.02, (3, 3), 0, T_INTERVAL, se=0.002, df=2.0)
    power = preregister.condition_power(ConditionResult(_cond(paper_effect=0.01), "holds", "", iv))
    assert power.mde == pytest.approx((student_t.ppf(0.975, 2) + student_t.ppf(0.8, 2)) * 0.002)
    assert power.power == "underpowered" and power.seeds_needed.endswith("seeds")


def test_a_figure_measured_once_has_no_estimate_unless_the_paper_sits_on_the_threshold():
    measured = dict(measured=("m", "r", "c"))
    iv = Interval(31.0, float("nan"), float("nan"), (), 0, MEASURED_ONCE)
    off = Condition("measured", (), "value", ">=", 30.0, paper_effect=40.0, **measured)
    on = Condition("measured", (), "value", ">=", 30.0, paper_effect=30.0, **measured)
    assert preregister.condition_power(ConditionResult(off, "inconclusive", "", iv)).power == "not assessed"
    assert preregister.condition_power(ConditionResult(on, "inconclusive", "", iv)).power == "underpowered"


def test_a_claim_is_underpowered_when_any_condition_is():
    claim = Claim("x", "t", "s", (_cond(paper_effect=0.01), _cond(paper_effect=0.0001)))
    powers = [preregister.condition_power(_bootstrap_result(c, 0.00196)) for c in claim.conditions]
    assert [p.power for p in powers] == ["powered", "underpowered"]
    assert preregister.claim_status(claim, powers) == "underpowered"
    assert preregister.claim_status(claim, powers[:1]) == "powered"
    assert preregister.claim_status(Claim("y", "t", "adrepro check", (_cond(),), kind="check"), []) == "suite check"


def test_a_changed_claim_is_refused_without_a_reason_and_logged_with_one(tmp_path):
    assert preregister.main(["--results-dir", str(tmp_path)]) == 0
    written = tmp_path / "preregistration.json"
    document = json.loads(written.read_text())
    claim = next(c for e in document["experiments"] for c in e["claims"] if c["conditions"])
    claim["conditions"][0]["threshold"] += 1.0  # the committed file now declares another threshold
    written.write_text(json.dumps(document))
    assert preregister.main(["--results-dir", str(tmp_path)]) == 2
    assert preregister.main(["--results-dir", str(tmp_path), "--reason", "threshold set on validation"]) == 0
    log = (tmp_path / preregister.LOG_NAME).read_text()
    assert "threshold set on validation" in log and claim["id"] in log
    assert preregister.main(["--results-dir", str(tmp_path)]) == 0  # unchanged now: nothing to log


def test_the_run_path_does_not_import_the_preregistration():
    code = "import sys, repro.run; print('repro.preregister' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
