"""Every registered model honours the model contract on real batches."""

import pytest
import torch

from repro.data.dataset import PreparedDataset
from repro.errors import ConfigError
from repro.model import logit_of
from repro.registry import EMBEDDINGS, MODELS


# What a model needs beyond a plain batch: fields left out of its inputs (PAL models the position
# apart), or a teacher's predictions (PFD distils them).
NEEDS_DROPPED = {"pal": ("position",), "oracle": ("position",)}
NEEDS_TEACHER = {"pfd"}


@pytest.mark.parametrize("name", MODELS.names())
def test_model_contract(name, smoke_data):
    torch.manual_seed(0)
    data = PreparedDataset(smoke_data.root, drop_roles=NEEDS_DROPPED[name]) if name in NEEDS_DROPPED else smoke_data
    model = MODELS.build(name, {}, data.feature_map, embedding={"name": "full", "dim": 8})
    batch = next(data.batches("train", 512, shuffle=True))
    if name in NEEDS_TEACHER:
        batch["teacher"] = torch.rand(512) * 0.1
    out = model(batch)
    assert logit_of(out).shape == (512,)
    loss = model.loss(batch, out)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.num_parameters() > 0 and model.stored_bytes() == 4 * model.num_parameters()  # fp32


def test_any_model_takes_the_embedding_by_config(smoke_data):
    small = MODELS.build("deepfm", {}, smoke_data.feature_map, embedding={"name": "full", "dim": 4})
    large = MODELS.build("deepfm", {}, smoke_data.feature_map, embedding={"name": "full", "dim": 16})
    assert large.num_parameters() > small.num_parameters()


def test_full_embedding_reports_its_size(smoke_data):
    emb = EMBEDDINGS.build("full", {"dim": 8}, smoke_data.feature_map)
    rows = sum(f.vocab_size for f in smoke_data.feature_map.categorical)
    assert emb.num_parameters() == rows * 8 and emb.stored_bytes() == rows * 8 * 4
    out = emb(next(smoke_data.batches("test", 64))["cat"])
    assert out.shape == (64, len(smoke_data.feature_map.categorical), 8)


def test_unknown_model_and_unknown_key_are_config_errors(smoke_data):
    with pytest.raises(ConfigError, match="unknown model 'deepfn'.*deepfm"):
        MODELS.build("deepfn", {}, smoke_data.feature_map)
    with pytest.raises(ConfigError, match="hiden_units"):
        MODELS.build("deepfm", {"hiden_units": [8]}, smoke_data.feature_map)
    with pytest.raises(ConfigError):
        MODELS.build("deepfm", {"dropout": "lots"}, smoke_data.feature_map)


def test_padding_index_maps_to_zero_and_never_trains(smoke_data):
    emb = EMBEDDINGS.build("full", {"dim": 4, "init_std": 1.0}, smoke_data.feature_map)
    cat = next(smoke_data.batches("test", 8))["cat"].clone()
    cat[:, 0] = 0
    out = emb(cat)
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0])) and out[:, 1].abs().sum() > 0
    out.sum().backward()
    assert emb.weight.grad[emb.offsets[0]].abs().sum() == 0


def test_the_weighted_loss_is_the_mean_over_the_expanded_rows():
    """A row of weight w stands for w identical impressions: the weighted loss must equal the plain
    mean over the expanded rows, whatever the batch's total weight (no step-size drift)."""
    import torch

    from repro.model import CTRModel

    model = CTRModel(feature_map=None)
    logit = torch.tensor([0.3, -1.2, 2.0])
    label = torch.tensor([1.0, 0.0, 0.0])
    weight = torch.tensor([3.0, 1.0, 5.0])
    expanded = model.loss({"label": label.repeat_interleave(weight.long())}, logit.repeat_interleave(weight.long()))
    weighted = model.loss({"label": label, "weight": weight}, logit)
    assert weighted == pytest.approx(float(expanded), rel=1e-6)
    assert model.loss({"label": label, "weight": weight * 1000}, logit) == pytest.approx(float(weighted), rel=1e-6)
