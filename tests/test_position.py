"""Position bias in the ranker (methods/model_interaction/position.py): PAL serves without the
position, the position-as-feature baseline serves at its default, PFD distils a teacher that saw
the position, read by reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from repro.errors import ConfigError, DataError
from repro.registry import MODELS
from repro.run import PREDICTIONS, execute, load_predictions, resolve, staleness
from tests.conftest import moved

SMALL = {"hidden_units": [16]}
EMB = {"name": "full", "dim": 4}


def test_pal_serves_the_ctr_tower_alone_and_trains_on_the_product(blind):
    torch.manual_seed(0)
    model = MODELS.build("pal", {**SMALL, "seen_context": ["scene"]}, blind.feature_map, embedding=EMB)
    batch = next(blind.batches("train", 256))
    model.eval()
    with torch.no_grad():
        served = model(batch)
        assert set(served) == {"logit"}
        torch.testing.assert_close(served["logit"], model(moved(batch))["logit"])  # position never enters
    model.train()
    with torch.no_grad():  # move the ProbSeen tables off zero so the position matters
        model.seen.weight.normal_()
        model.crossed[0].weight.normal_()
    out = model(batch)
    p = torch.sigmoid(out["logit"]) * torch.sigmoid(out["seen_logit"])
    expected = F.binary_cross_entropy(p, batch["label"])
    torch.testing.assert_close(model.loss(batch, out), expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(model(moved(batch))["seen_logit"], out["seen_logit"])


def test_pal_and_the_default_position_model_refuse_the_wrong_inputs(smoke_data, blind):
    with pytest.raises(ConfigError, match="drop_roles"):
        MODELS.build("pal", SMALL, smoke_data.feature_map, embedding=EMB)
    with pytest.raises(ConfigError, match="left out of the inputs"):
        MODELS.build("position_default", SMALL, blind.feature_map, embedding=EMB)
    with pytest.raises(ConfigError, match="seen_context"):
        MODELS.build("pal", {**SMALL, "seen_context": ["nope"]}, blind.feature_map, embedding=EMB)


def test_the_position_feature_model_is_served_at_its_default_position(smoke_data):
    torch.manual_seed(0)
    model = MODELS.build("position_default", SMALL, smoke_data.feature_map, embedding=EMB)
    batch = next(smoke_data.batches("test", 256))
    col = smoke_data.feature_map.categorical_index("position")
    other = dict(batch, cat=batch["cat"].clone())
    other["cat"][:, col] = torch.flip(batch["cat"][:, col], [0])
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(batch), model(other))  # trained on the logged positions
        model.eval()
        torch.testing.assert_close(model(batch), model(other))  # served at one position for all
    # the default is the commonest training position
    freq = smoke_data.feature_map.field_frequencies("position")
    assert int(np.argmax(freq)) == model.DEFAULT_INDEX


def resolve_rows(cfg, split):
    from repro.run import open_data

    return open_data(resolve(cfg).config, verbose=False).num_rows(split)


def test_pfd_distils_a_teacher_that_saw_the_position(run_config):
    teacher = run_config(keep_predictions=["train"])
    teacher["label"] = "teacher"
    manifest = execute(teacher)
    where = resolve(teacher).run_dir
    assert (where / PREDICTIONS / "train.npy").exists()
    # keeping predictions is not part of the config's hash, but a run that lost them is not done
    plain = run_config()
    plain["label"] = "teacher"
    assert resolve(plain).config_hash == resolve(teacher).config_hash
    (where / PREDICTIONS / "train.npy").rename(where / "aside.npy")
    assert staleness(resolve(teacher)) == ["its predictions on train are not here (git-ignored; rerunning it rebuilds them)"]
    (where / "aside.npy").rename(where / PREDICTIONS / "train.npy")
    assert staleness(resolve(teacher)) == []

    student = run_config()
    student["data"].update(drop_roles=["position"], teacher="teacher")
    student["model"], student["label"] = {"name": "pfd", "hidden_units": [32, 16]}, "student"
    execute(student)
    scored = json.loads((resolve(student).run_dir / "metrics.json").read_text())
    assert scored["test"]["auc"] > 0.55 and manifest["status"] == "done"
    assert len(load_predictions(where, "train")) == resolve_rows(student, "train")

    lonely = run_config()
    lonely["data"].update(drop_roles=["position"])
    lonely["model"], lonely["label"] = {"name": "pfd", "hidden_units": [32, 16]}, "lonely"
    with pytest.raises(ConfigError, match="teacher"):
        execute(lonely)
    wrong = run_config(keep_predictions=["nope"])
    with pytest.raises(DataError, match="keep_predictions"):
        execute(wrong)
