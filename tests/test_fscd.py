"""FSCD (methods/model_interaction/fscd.py): relaxed field masks while searching, a hard mask of
the chosen fields afterwards and at evaluation, a penalty that grows with a field's complexity."""

from __future__ import annotations

import pytest
import torch

from repro.errors import ConfigError
from repro.registry import MODELS

SMALL = {"hidden_units": [16], "keep_fields": 3, "search_steps": 2}
EMB = {"name": "full", "dim": 4}


def build(data, **cfg):
    torch.manual_seed(0)
    return MODELS.build("fscd", {**SMALL, **cfg}, data.feature_map, embedding=EMB)


def test_the_search_relaxes_the_masks_then_freezes_the_chosen_fields(smoke_data):
    model = build(smoke_data).train()
    batch = next(smoke_data.batches("train", 256))
    seen = []
    model.mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    emb = model.embed(batch).detach()
    with torch.no_grad():
        model.keep_logit.copy_(torch.linspace(-1, 1, len(model.keep_logit)))
    outputs = [model(batch) for _ in range(3)]
    # while searching: every field scaled by a mask strictly between 0 and 1, drawn per row
    scale = (seen[0].view_as(emb) / emb)[emb.abs() > 1e-3]
    assert ((scale >= 0) & (scale <= 1 + 1e-5)).all() and scale.std() > 0.01
    assert ((scale > 0.01) & (scale < 0.99)).float().mean() > 0.5
    assert int(model.steps) == 2 and not model.searching()
    # the step after the search: the keep_fields fields of largest keep probability, exactly
    chosen = model.selected().bool()
    assert int(chosen.sum()) == 3 and chosen.tolist() == [False] * (len(chosen) - 3) + [True] * 3
    kept = seen[2].view_as(emb)
    torch.testing.assert_close(kept[:, chosen], emb[:, chosen])
    assert (kept[:, ~chosen] == 0).all()
    assert model.kept_fields() == [n for n, c in zip(model.field_names, chosen.tolist()) if c]
    # after the search the keep probabilities get no gradient, so the choice cannot move
    model.loss(batch, outputs[2]).backward()
    assert model.keep_logit.grad is None
    # while searching they do (the masks and the penalty)
    model.zero_grad()
    model.steps.zero_()
    model.loss(batch, model(batch)).backward()
    assert model.keep_logit.grad is not None and model.keep_logit.grad.abs().sum() > 0


def test_evaluation_serves_the_chosen_fields_only(smoke_data):
    model = build(smoke_data).eval()
    with torch.no_grad():
        model.keep_logit.copy_(torch.linspace(1, -1, len(model.keep_logit)))  # the first three fields
    batch = next(smoke_data.batches("test", 256))
    cat = smoke_data.feature_map.categorical
    assert model.field_names.index(cat[-1].name) >= 3  # the last categorical field is not kept
    other = dict(batch, cat=batch["cat"].clone())
    other["cat"][:, len(cat) - 1] = torch.flip(batch["cat"][:, len(cat) - 1], [0])  # a dropped field changes
    with torch.no_grad():
        out = model(batch)
        torch.testing.assert_close(model(other), out)
        moved = dict(batch, cat=batch["cat"].clone())
        moved["cat"][:, 0] = torch.flip(batch["cat"][:, 0], [0])  # a kept field changes the score
        assert not torch.allclose(model(moved), out)


def test_the_penalty_weighs_each_field_by_its_complexity(smoke_data):
    model = build(smoke_data, search_steps=10, penalty=1.0).train()
    batch = next(smoke_data.batches("train", 256))
    out = model(batch)
    base = super(type(model), model).loss(batch, out)
    total = model.loss(batch, out)
    expected = (model.complexity * torch.sigmoid(model.keep_logit)).sum()
    torch.testing.assert_close(total - base, expected)
    vocab = {f.name: f.vocab_size for f in smoke_data.feature_map.categorical}
    big, small = max(vocab, key=vocab.get), min(vocab, key=vocab.get)
    names = model.field_names
    assert model.complexity[names.index(big)] > model.complexity[names.index(small)]
    model.steps.fill_(10)  # after the search: no penalty
    out = model(batch)
    torch.testing.assert_close(model.loss(batch, out), super(type(model), model).loss(batch, out))


def test_bad_fscd_configs_are_refused(smoke_data):
    for bad, match in (({"keep_fields": 0}, "keep_fields"), ({"keep_fields": 999}, "keep_fields"),
                       ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ConfigError, match=match):
            build(smoke_data, **bad)
