"""The cascade evaluator (repro/cascade.py) and ranking-distilled pre-ranking
(methods/model_interaction/prerank.py): a teacher by reference, the losses, the cascade's cuts."""

from __future__ import annotations

import json
import shutil
import math

import numpy as np
import pandas as pd
import pytest
import torch

from methods.model_interaction.prerank import listwise_loss, pairwise_loss, segments
from repro.cascade import _page, _top, evaluate_cascade, padded
from repro.errors import ConfigError, DataError
from repro.registry import MODELS
from repro.run import PREDICTIONS, execute, load_predictions, open_data, resolve, staleness

SLOTS = 2


def log(n_requests=50, per=12, seed=0):
    rng = np.random.default_rng(seed)
    request = np.repeat(np.arange(n_requests), per)
    rel = rng.uniform(0.01, 0.3, len(request))
    bid = rng.lognormal(0, 0.5, len(request))
    eta = np.repeat(rng.uniform(0.3, 1.0, n_requests), per)
    return request, bid, rel, eta


def test_the_cascade_keeps_k1_then_the_slots_per_request():
    request, bid, rel, eta = log(per=7)
    request = np.r_[request, [99, 99]]  # a request with fewer candidates than K1 keeps them all
    bid, rel, eta = np.r_[bid, [1.0, 2.0]], np.r_[rel, [0.1, 0.1]], np.r_[eta, [0.5, 0.5]]
    mask, (score,) = padded(request, rel * bid)
    kept = _top(score, mask, 4)
    assert kept.shape == (51, 4)
    assert np.take_along_axis(mask, kept, 1)[:-1].all()  # K1 real candidates where a request has them
    assert np.take_along_axis(mask, kept, 1)[-1].sum() == 2
    page = _page(score, kept, mask, SLOTS)
    assert page.shape == (51, SLOTS) and (page[:-1] >= 0).all()
    # the page is the ranker's best among the kept, in its order
    for r in range(50):
        best = sorted(kept[r], key=lambda i: -score[r, i])[:SLOTS]
        assert list(page[r]) == best


def test_a_perfect_pre_ranker_recalls_everything_and_the_truth_reaches_the_oracle():
    request, bid, rel, eta = log()
    out = evaluate_cascade(request, bid, rel, rel, rel, eta, SLOTS, k1s=(2, 4, 12))
    for k in (2, 4, 12):
        assert out[f"recall@{k}"] == 1.0 and out[f"ndcg@{k}"] == pytest.approx(1.0)
        assert out[f"revenue_share@{k}"] == pytest.approx(1.0)
    noisy = rel * np.exp(np.random.default_rng(1).normal(0, 1.0, len(rel)))
    out = evaluate_cascade(request, bid, noisy, rel, rel, eta, SLOTS, k1s=(2, 12))
    assert out["recall@2"] < out["recall@12"] == 1.0
    assert out["revenue@2"] <= out["revenue@12"] + 1e-12
    # the oracle bounds every page: no ranker beats the true eCPM order
    out = evaluate_cascade(request, bid, noisy, noisy, rel, eta, SLOTS, k1s=(4,))
    assert out["revenue_share@ranker"] < 1.0 and out["revenue_share@4"] <= 1.0 + 1e-12


def test_expected_clicks_and_revenue_follow_the_examination_of_each_slot():
    request = np.array([0, 0, 0])
    rel, bid, eta = np.array([0.1, 0.3, 0.2]), np.array([1.0, 1.0, 4.0]), np.full(3, 1.0)
    out = evaluate_cascade(request, bid, rel, rel, rel, eta, 2, k1s=(3,))
    # true eCPM: 0.1, 0.3, 0.8 -> page [2, 1]: clicks 0.2/1 + 0.3/2, revenue 0.8/1 + 0.3/2
    assert out["clicks@3"] == pytest.approx(0.2 + 0.15)
    assert out["revenue@3"] == pytest.approx(0.8 + 0.15)
    # a pre-ranker keeping one candidate (by its own pCTR x bid) hands the ranker one ad
    out = evaluate_cascade(request, bid, np.array([0.9, 0.1, 0.01]), rel, rel, eta, 2, k1s=(1,))
    assert out["revenue@1"] == pytest.approx(0.1) and out["recall@1"] == 0.0


def test_bootstrap_replicates_are_paired_across_runs():
    request, bid, rel, eta = log()
    a = evaluate_cascade(request, bid, rel, rel, rel, eta, SLOTS, k1s=(4,), n_replicates=20)
    b = evaluate_cascade(request, bid, rel[::-1].copy(), rel, rel, eta, SLOTS, k1s=(4,), n_replicates=20)
    assert a["bootstrap"]["revenue_oracle"] == b["bootstrap"]["revenue_oracle"]  # same resamples
    assert len(a["bootstrap"]["recall@4"]) == 20 and a["bootstrap"]["unit"] == "request"


def test_listwise_loss_is_the_cross_entropy_of_the_two_softmaxes_per_request():
    student = torch.tensor([0.0, 1.0, 2.0, 0.5, -0.5])
    target = torch.tensor([2.0, 0.0, 1.0, 1.0, 3.0])
    seg, n = segments(torch.tensor([7, 7, 7, 9, 9]))
    assert n == 2 and seg.tolist() == [0, 0, 0, 1, 1]
    expected = 0.0
    for idx in ([0, 1, 2], [3, 4]):
        p_t = torch.softmax(target[idx] / 2.0, 0)
        expected += -(p_t * torch.log_softmax(student[idx], 0)).sum() / 2
    assert listwise_loss(student, target, seg, n, tau=2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    # the student that copies the teacher's order minimises it
    assert listwise_loss(target, target, seg, n, 1.0) < listwise_loss(student, target, seg, n, 1.0)


def test_pairwise_loss_counts_only_pairs_the_teacher_orders_within_a_request():
    student = torch.tensor([0.0, 1.0, 3.0, 0.0])
    target = torch.tensor([1.0, 0.0, 5.0, 5.0])  # request 0: one pair (0 over 1); request 1: a tie, no pair
    seg, n = segments(torch.tensor([1, 1, 2, 2]))
    got = pairwise_loss(student, target, seg, n)
    assert got.item() == pytest.approx(math.log1p(math.exp(1.0)))


@pytest.fixture
def cascade_config(run_config):
    def make(label, model, teacher=None, **train):
        cfg = run_config(**train)
        cfg["data"].update(candidate_share=1.0, candidates=30, requests=6000, random_requests=1000,
                           drop_roles=["position", "bid"])
        if teacher:
            cfg["data"]["teacher"] = teacher
        cfg["model"], cfg["label"] = model, label
        return cfg

    return make


STUDENT = dict(train_split="candidates_train", group_by_request=True)


def test_a_student_reads_its_teachers_frozen_predictions_and_never_the_truth(cascade_config, monkeypatch):
    ranker = cascade_config("ranker", {"name": "deepfm", "hidden_units": [16]})
    with pytest.raises(DataError, match="no finished run labelled"):
        execute(cascade_config("student", {"name": "two_tower", "distill": "listwise"}, teacher="ranker", **STUDENT))
    execute(ranker)
    teacher_dir = resolve(ranker).run_dir
    expected = load_predictions(teacher_dir, "candidates_train")

    seen = []
    from methods.model_interaction import prerank

    real_loss = prerank.DistilledPreRanker.loss

    def spy(self, batch, output):
        seen.append({k: v.clone() for k, v in batch.items() if k in ("teacher", "key:request_id")})
        assert not {"relevance", "p_click", "examination", "shown"} & set(batch)
        return real_loss(self, batch, output)

    monkeypatch.setattr(prerank.DistilledPreRanker, "loss", spy)
    student = cascade_config("student", {"name": "two_tower", "distill": "listwise"}, teacher="ranker", **STUDENT)
    manifest = execute(student)
    assert seen and manifest["inputs"]["teacher"]["predictions"]
    # every teacher value a step saw is the ranker's saved prediction of that row
    from repro.run import open_data

    data = open_data(resolve(student).config, verbose=False)
    request = data.column("candidates_train", "request_id")
    first = seen[0]
    rows = np.flatnonzero(np.isin(request, first["key:request_id"].numpy()))
    assert sorted(first["teacher"].numpy().tolist()) == sorted(expected[rows].tolist())
    metrics = json.loads((resolve(student).run_dir / "metrics.json").read_text())
    assert metrics["cascade"]["ranker"] == "teacher" and 0 < metrics["cascade"]["recall@10"] <= 1
    # the teacher reruns with other predictions: its students are stale
    run = resolve(student)
    assert staleness(run) == []
    p = teacher_dir / PREDICTIONS / "candidates_train.npy"
    saved = np.load(p)
    np.save(p, saved * 0.5)
    assert any("teacher" in r for r in staleness(run))
    from repro.freshness import classify
    from repro.run import LocalArtefact

    assert classify(staleness(run)).state == "stale"
    # a fresh clone: the teacher's predictions are git-ignored, so they are absent, not changed
    shutil.rmtree(teacher_dir / PREDICTIONS)
    reasons = staleness(run)
    assert reasons and all(isinstance(r, LocalArtefact) for r in reasons), reasons
    assert classify(reasons).state == "waiting" and "teacher's predictions are not here" in reasons[0]


def test_distillation_without_a_teacher_and_unknown_tower_fields_are_clear_errors(cascade_config):
    with pytest.raises(ConfigError, match="needs the teacher's predictions"):
        execute(cascade_config("kd", {"name": "two_tower", "distill": "pointwise"}, **STUDENT))
    with pytest.raises(ConfigError, match="not input fields"):
        execute(cascade_config("tt", {"name": "two_tower", "user_fields": ["nope"]}, **STUDENT))
    with pytest.raises(ConfigError, match="distill"):
        execute(cascade_config("tt", {"name": "cold", "distill": "magic"}, **STUDENT))


def test_a_click_only_pre_ranker_ignores_unlabelled_rows(cascade_config):
    execute(cascade_config("tt", {"name": "two_tower"}, **STUDENT))  # NaN labels never reach the loss
    metrics = json.loads((resolve(cascade_config("tt", {"name": "two_tower"}, **STUDENT)).run_dir
                          / "metrics.json").read_text())
    assert metrics["cascade"]["ranker"] == "self" and metrics["test"]["auc"] > 0.55


def test_the_rdpr_experiment_runs_end_to_end_into_the_cascade_table(tmp_path, cache_root):
    from repro.experiments import execute_plan, finish_experiment, load_experiment, plan
    from repro.report import write_report

    results = tmp_path / "results"
    extra = ["data.scale=smoke", "++data.requests=6000", "++data.random_requests=1000", "++data.candidates=30",
             "train.epochs=1", "train.lr=0.01", "train.progress=false", "model.hidden_units=[32,16]",
             f"data.cache_root={cache_root}"]
    rows = ("Ranker (DeepFM)", "Two-tower", "Two-tower + RDPR listwise")
    jobs = [j for j in plan(["cascade_rdpr"], extra=extra, results_dir=str(results)) if j.seed == 0 and j.label in rows]
    execute_plan(jobs)
    finish_experiment(load_experiment("cascade_rdpr"), jobs, extra, 0.0)
    tag = jobs[0].run_dir.parents[1].name
    md, csv, png = write_report("cascade_rdpr", results, tag=tag)
    text = md.read_text()
    assert "| row | seeds | ranked by | test AUC | relevance AUC |" in text and "## Claims" in text
    assert "`rdpr-aligns-pre-ranking-with-ranking`" in text
    table = pd.read_csv(csv, index_col=0)
    assert table.loc["Ranker (DeepFM)", "ranker"] == "self" and table.loc["Two-tower", "ranker"] == "teacher"
    assert table.loc["Ranker (DeepFM)", "recall@10"] == 1.0  # the ranker keeps its own choices
    # every pre-ranker is scored against the same ranker: the same "ranker alone" revenue
    assert table.loc["Two-tower", "ranker share"] == pytest.approx(table.loc["Two-tower + RDPR listwise", "ranker share"])
    assert png.stat().st_size > 10_000
    # the test ran three of the experiment's rows: those are current, the others are missing
    assert "freshness: 3 runs: 3 current, 0 waiting for local artefacts, 0 stale" in text
    assert "**missing run** COLD-like seed 0: no run yet" in text
    # a fresh clone: predictions are git-ignored; the students wait for their teacher, they are not stale
    for kept in (results / "runs" / tag).glob("*/seed*/predictions"):
        shutil.rmtree(kept)
    import repro.freshness as freshness

    freshness._MEMO.clear()
    text = write_report("cascade_rdpr", results, tag=tag)[0].read_text()
    assert "waiting (not stale) Two-tower" in text and "⚠ stale" not in text
    # a changed input: the row is flagged in the table and the claims resting on it say so
    index = json.loads((results / "runs" / tag / "index.json").read_text())
    for rel in index["runs"]:
        path = results / "runs" / tag / rel / "manifest.json"
        manifest = json.loads(path.read_text())
        if manifest["label"] == "Two-tower":
            manifest["inputs"]["code"] = "0" * 16
            path.write_text(json.dumps(manifest))
    freshness._MEMO.clear()
    text = write_report("cascade_rdpr", results, tag=tag)[0].read_text()
    assert "**stale row** Two-tower: the code it executes changed" in text
    assert "| Two-tower ⚠ stale |" in text
    rdpr = next(line for line in text.splitlines() if line.startswith("- `rdpr-aligns-pre-ranking-with-ranking`"))
    assert "⚠ **stale**: rests on stale rows Two-tower" in rdpr


def test_creative_selection_is_scored_against_each_ads_best_creative():
    from repro.cascade import evaluate_creatives

    rng = np.random.default_rng(0)
    sizes = rng.integers(2, 5, 400)
    group = np.repeat(np.arange(400), sizes)
    rel = rng.uniform(0.01, 0.2, len(group))
    label = np.where(rng.random(len(group)) < 0.3, (rng.random(len(group)) < rel).astype(float), np.nan)
    cold = rng.random(len(group)) < 0.2
    best = evaluate_creatives(group, rel, rel, label, cold, n_replicates=10, request=group // 2)
    assert best["top1"] == 1.0 and best["gap_closed"] == pytest.approx(1.0) and best["ctr_chosen"] == best["ctr_best"]
    worst = evaluate_creatives(group, -rel, rel, label, cold)
    assert worst["gap_closed"] < 0 and worst["ctr_chosen"] < worst["ctr_random"]
    blind = evaluate_creatives(group, np.zeros(len(group)), rel, label, cold)  # ties: the first creative
    assert abs(blind["gap_closed"]) < 0.2
    # expected CTR of a uniform choice is the group's mean relevance
    means = [rel[group == g].mean() for g in range(400)]
    assert best["ctr_random"] == pytest.approx(np.mean(means))
    assert len(best["bootstrap"]["ctr_chosen"]) == 10 and best["bootstrap"]["unit"] == "request"
    assert best["cold_groups"] == len(np.unique(group[cold]))


def test_a_run_on_a_world_with_a_creative_log_reports_creative_selection(run_config):
    cfg = run_config()
    cfg["data"].update(creative_share=0.3, cold_creatives=0.3, requests=8000, random_requests=1000)
    execute(cfg)
    scored = json.loads((resolve(cfg).run_dir / "metrics.json").read_text())["creatives"]
    assert scored["ctr_random"] <= scored["ctr_best"] and scored["ctr_chosen"] <= scored["ctr_best"]
    assert scored["cold_groups"] > 0 and scored["n_cold_shown"] > 0 and 0 < scored["auc"] < 1


def test_the_group_page_gathers_each_members_table_and_claims_in_order(tmp_path):
    from repro.report import write_group_page

    for name in ("cascade_oracle", "cascade_rdpr"):  # cascade_creative not built yet
        (tmp_path / f"{name}.md").write_text(f"# {name}\n\n| row | x |\n|---|---|\n| A{name} | 1 |\n\n## Checks\n\n- c\n\n"
                                              f"## Claims\n\n- `claim-{name}`: **holds**\n\nPlot: `{name}.png`.\n")
    text = write_group_page("cascade", tmp_path).read_text()
    assert text.index("Acascade_rdpr") < text.index("Acascade_oracle")  # group_order: pre-ranking first
    assert "`claim-cascade_rdpr`" in text and "- c" not in text and "Plot:" not in text
    assert "Not run yet: `python -m repro.experiments cascade_creative`" in text


def test_cascade_latency_times_each_stage_one_request_at_a_time(cache_root):
    from methods.model_interaction.latency import CascadeLatencyConfig, _scorer, cascade_latency

    common = ["data=world", "data.scale=smoke", f"data.cache_root={cache_root}", "++data.candidate_share=1.0",
              "++data.candidates=30", "++data.requests=6000", "++data.random_requests=1000",
              "++data.drop_roles=[position,bid]", "embedding.dim=8"]
    stages = [{"label": "two-tower", "overrides": ["model=two_tower"]},
              {"label": "two-tower cached", "overrides": ["model=two_tower"], "served": "cached_ads"},
              {"label": "ranker top 10", "overrides": ["model=deepfm", "model.hidden_units=[16]"], "keep": 10}]
    out = cascade_latency(CascadeLatencyConfig(overrides=common, stages=stages, requests=30, warmup=2,
                                               reference="ranker top 10"))
    rows = {r[0]: r for r in out["rows"]}
    assert list(rows) == ["two-tower", "two-tower cached", "ranker top 10"]
    assert float(rows["ranker top 10"][1]) <= 10 < float(rows["two-tower"][1])  # keep: the survivors only
    assert rows["ranker top 10"][4] == "1.00"
    assert all(float(r[2]) > 0 and float(r[3]) >= float(r[2]) for r in out["rows"])
    with pytest.raises(ConfigError, match="unknown keys"):
        cascade_latency(CascadeLatencyConfig(overrides=common, stages=[{"label": "x", "kep": 10}]))
    with pytest.raises(ConfigError, match="reference"):
        cascade_latency(CascadeLatencyConfig(overrides=common, stages=stages[:1], reference="nope"))

    # the served two-tower (ad vectors cached, one user-tower call) scores as the whole forward does
    from methods.model_interaction.latency import _compose, _requests

    cfg = resolve(_compose(common + ["model=two_tower"])).config
    data = open_data(cfg, verbose=False)
    model = MODELS.build("two_tower", cfg["model"], data.feature_map, embedding=cfg["embedding"]).eval()
    batch = _requests(data, "candidates_test", 1)[0]
    with torch.no_grad():
        torch.testing.assert_close(_scorer(model, "cached_ads", batch)(), model(batch))
