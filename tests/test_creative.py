"""Creative selection before ranking (methods/model_interaction/creative.py): the Adaptive DropNet's
rules, what each tower variant reads, and distillation over one ad's creatives from a ranker read
by reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from methods.model_interaction.creative import drop_probability
from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.errors import ConfigError
from repro.registry import MODELS
from repro.run import execute, resolve
from tests.conftest import world

EMB = {"name": "full", "dim": 4}
LOGGED = dict(creative_share=0.5, cold_creatives=0.3, requests=8000, random_requests=1000)


@pytest.fixture(scope="module")
def creative_data(tmp_path_factory) -> PreparedDataset:
    root = prepare(world(**LOGGED), PrepareConfig(min_count=2, cache_root=str(tmp_path_factory.mktemp("cr"))),
                   verbose=False)
    return PreparedDataset(root, drop_roles=("position", "bid"))


def test_each_dropnet_rule_maps_a_frequency_to_its_drop_probability():
    n = np.array([0, 1, 10, 100, 1000])
    share = np.minimum(1, np.log1p(n) / np.log1p(100))
    np.testing.assert_allclose(drop_probability(n, "frequency", 0.5, 100), 0.5 * (1 - share))
    np.testing.assert_allclose(drop_probability(n, "inverse", 0.5, 100), 0.5 * share)
    np.testing.assert_allclose(drop_probability(n, "fixed", 0.5, 100), 0.5)
    np.testing.assert_allclose(drop_probability(n, "none", 0.5, 100), 0.0)
    a = drop_probability(n, "frequency", 0.5, 100)
    assert a[0] == 0.5 and a[-1] == 0 and np.all(np.diff(a) <= 0)  # an unseen ID always dropped at p_max
    with pytest.raises(ConfigError, match="dropnet"):
        drop_probability(n, "learned", 0.5, 100)


@pytest.mark.parametrize("rule", ["frequency", "inverse", "fixed"])
def test_the_dropnet_drops_each_id_at_its_rules_rate_in_training_and_never_a_seen_one_at_serving(creative_data, rule):
    torch.manual_seed(0)
    fm = creative_data.feature_map
    model = MODELS.build("creative_tower", {"dropnet": rule}, fm, embedding=EMB)
    counts = fm.field_frequencies("creative_id")
    oov = fm.field("creative_id").oov_index
    vocab = counts[1:oov]  # the creatives with an index of their own
    picks = [1 + int(np.argmax(vocab)), 1 + int(np.argmin(vocab)), oov]  # the commonest, the rarest, the OOV
    ids = torch.tensor(picks).repeat_interleave(20_000)
    model.train()
    kept = model.id_keep(ids).reshape(len(picks), -1).mean(1).numpy()
    expected = 1 - drop_probability(counts[picks], rule, 0.5, 100.0)
    np.testing.assert_allclose(kept, expected, atol=0.015)  # 20k draws: SE <= 0.0036
    model.eval()
    served = model.id_keep(ids).reshape(len(picks), -1)[:, 0].tolist()
    assert served == [1.0, 1.0, 0.0]  # seen IDs kept, the OOV (cold creatives) read as dropped


def test_each_tower_variant_reads_only_its_inputs(creative_data):
    torch.manual_seed(0)
    fm = creative_data.feature_map
    batch = next(creative_data.batches("creatives_test", 256))
    content = fm.dense_slice(fm.by_role("content").name)
    other_content = dict(batch, dense=batch["dense"].clone())
    other_content["dense"][:, content] = torch.randn_like(batch["dense"][:, content])
    col = fm.categorical_index(fm.by_role("creative").name)
    other_id = dict(batch, cat=batch["cat"].clone())
    other_id["cat"][:, col] = torch.flip(batch["cat"][:, col], [0])
    for inputs, reads_id, reads_content in (("id", True, False), ("content", False, True), ("both", True, True)):
        model = MODELS.build("creative_tower", {"inputs": inputs}, fm, embedding=EMB).eval()
        with torch.no_grad():
            base = model(batch)
            assert (not torch.allclose(base, model(other_id))) == reads_id, inputs
            assert (not torch.allclose(base, model(other_content))) == reads_content, inputs


def test_the_creative_tower_distils_the_rankers_choice_over_one_ads_creatives(run_config):
    def config(label, model, teacher=None, **train):
        cfg = run_config(**train)
        cfg["data"].update(LOGGED, drop_roles=["position", "bid"])
        if teacher:
            cfg["data"]["teacher"] = teacher
        cfg["model"], cfg["label"] = model, label
        return cfg

    student = dict(train_split="creatives_train", group_by_request=True)
    with pytest.raises(ConfigError, match="distils the teacher"):
        execute(config("alone", {"name": "creative_tower", "alpha": 1.0}, **student))
    execute(config("ranker", {"name": "deepfm", "hidden_units": [16]}))
    execute(config("cacs", {"name": "creative_tower", "alpha": 1.0, "dropnet": "frequency"}, teacher="ranker",
                   **student))
    runs = resolve(config("ranker", {"name": "deepfm", "hidden_units": [16]})).run_dir.parents[1]
    for label in ("ranker", "cacs"):
        scored = json.loads(next(runs.glob(f"{label}-*/seed0/metrics.json")).read_text())["creatives"]
        assert scored["ctr_random"] <= scored["ctr_best"] and scored["groups"] > 100


def test_the_creative_experiment_runs_end_to_end_into_the_creative_table(tmp_path, cache_root):
    import pandas as pd

    from repro.experiments import execute_plan, finish_experiment, load_experiment, plan
    from repro.report import write_report

    results = tmp_path / "results"
    extra = ["data.scale=smoke", "++data.requests=6000", "++data.random_requests=1000", "train.epochs=1",
             "train.lr=0.01", "train.progress=false", "model.hidden_units=[32,16]", f"data.cache_root={cache_root}"]
    rows = ("Ranker (DeepFM)", "Tower · content", "CACS (Adaptive DropNet + KD)")
    jobs = [j for j in plan(["cascade_creative"], extra=extra, results_dir=str(results)) if j.seed == 0 and j.label in rows]
    execute_plan(jobs)
    finish_experiment(load_experiment("cascade_creative"), jobs, extra, 0.0)
    md, csv, png = write_report("cascade_creative", results, tag=jobs[0].run_dir.parents[1].name)
    text = md.read_text()
    assert "| row | seeds | chosen CTR | best CTR | uniform CTR | gap closed |" in text
    assert "`cacs-beats-random-creative`" in text and png.stat().st_size > 10_000
    table = pd.read_csv(csv, index_col=0)
    assert (table["ctr_chosen"] <= table["ctr_best"] + 1e-12).all()
    assert table["ctr_best"].nunique() == 1  # every row is scored on the same log
