"""The ranker's oracle (methods/model_interaction/oracle.py): PAL plus a head predicting the
position re-ranking will give the ad; its served estimates never read the position."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from repro.errors import ConfigError
from repro.registry import MODELS
from repro.train import TrainConfig, train
from tests.conftest import moved

SMALL = {"hidden_units": [16], "head_units": 8}
EMB = {"name": "full", "dim": 4}


def build(blind, **cfg):
    torch.manual_seed(0)
    model = MODELS.build("oracle", {**SMALL, "seen_context": ["scene"], **cfg}, blind.feature_map, embedding=EMB)
    with torch.no_grad():  # move the ProbSeen tables off zero so the position matters
        model.seen.weight.normal_()
        model.crossed[0].weight.normal_()
    return model


@pytest.mark.parametrize("serve", ["ranking", "top", "context"])
def test_every_served_estimate_ignores_the_logged_position(blind, serve):
    model = build(blind, serve=serve).eval()
    batch = next(blind.batches("test", 256))
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["logit"], model(moved(batch))["logit"])


def test_served_estimates_are_the_ctr_tower_times_examination_where_the_ad_will_be(blind):
    batch = next(blind.batches("test", 256))
    ranking, top, context = (build(blind, serve=s).eval() for s in ("ranking", "top", "context"))
    with torch.no_grad():
        f = torch.sigmoid(ranking(batch)["logit"])
        g = torch.sigmoid(ranking.seen_logits_all(batch))
        # g for every position, read straight from PAL's tables: bias + position + (position x scene)
        scene = batch["cat"][:, blind.feature_map.categorical_index("scene")]
        scenes = ranking.crossed[0].num_embeddings // ranking.position_vocab
        for k in range(g.shape[1]):
            logit = ranking.seen_bias + ranking.seen.weight[k, 0] + ranking.crossed[0].weight[k * scenes + scene, 0]
            torch.testing.assert_close(g[:, k], torch.sigmoid(logit))
        torch.testing.assert_close(torch.sigmoid(top(batch)["logit"]), f * g[:, top.TOP_INDEX], rtol=1e-4, atol=1e-6)
        h = torch.softmax(context.position_head(context.ctr.embed(batch).flatten(1)), -1)
        torch.testing.assert_close(torch.sigmoid(context(batch)["logit"]), f * (h * g).sum(-1), rtol=1e-4, atol=1e-6)
        # a head certain of position k gives PAL's estimate at k
        last = context.position_head[-1]
        last.weight.zero_()
        last.bias.fill_(-30.0)
        last.bias[3] = 30.0
        torch.testing.assert_close(torch.sigmoid(context(batch)["logit"]), f * g[:, 3], rtol=1e-4, atol=1e-6)


def test_the_loss_is_pal_plus_the_position_cross_entropy(blind):
    model = build(blind).train()
    batch = next(blind.batches("train", 256))
    out = model(batch)
    p = torch.sigmoid(out["logit"]) * torch.sigmoid(out["seen_logit"])
    click = F.binary_cross_entropy(p, batch["label"])
    position = F.cross_entropy(out["position_logits"], batch["position"])
    torch.testing.assert_close(model.loss(batch, out), click + position, rtol=1e-4, atol=1e-6)
    # the head's target is the logged position: another position changes the loss
    assert not torch.allclose(model.loss(moved(batch), out), model.loss(batch, out))
    # position_weight 0: the head is not even evaluated, and the loss is PAL's
    untrained = build(blind, position_weight=0.0).train()
    out = untrained(batch)
    assert "position_logits" not in out
    p = torch.sigmoid(out["logit"]) * torch.sigmoid(out["seen_logit"])
    torch.testing.assert_close(untrained.loss(batch, out), F.binary_cross_entropy(p, batch["label"]),
                               rtol=1e-4, atol=1e-6)


def test_bad_oracle_configs_are_refused(smoke_data, blind):
    with pytest.raises(ConfigError, match="drop_roles"):
        MODELS.build("oracle", SMALL, smoke_data.feature_map, embedding=EMB)
    for bad, match in (({"serve": "later"}, "serve"), ({"position_weight": -1.0}, "position_weight"),
                       ({"head_units": 0}, "head_units")):
        with pytest.raises(ConfigError, match=match):
            MODELS.build("oracle", {**SMALL, **bad}, blind.feature_map, embedding=EMB)


def test_a_trained_head_predicts_the_position_better_than_its_training_frequencies(blind):
    model = build(blind, position_weight=1.0)
    train(model, blind, TrainConfig(epochs=1, batch_size=2048, lr=0.01, progress=False, evals_per_epoch=1), seed=0)
    model.eval()
    batch = next(blind.batches("test", 4096))
    with torch.no_grad():
        head = F.cross_entropy(model.position_head(model.ctr.embed(batch).flatten(1)), batch["position"])
    freq = torch.as_tensor(blind.feature_map.field_frequencies("position"), dtype=torch.float64)
    prior = (freq / freq.sum()).clamp_min(1e-12).log().float()
    marginal = F.nll_loss(prior.expand(len(batch["position"]), -1), batch["position"])
    assert head < marginal - 0.01, (float(head), float(marginal))
