"""AMTL (methods/model_deepening/amtl.py): prefix masks from train-only frequencies, a hard forward
in training and inference with the straight-through gradient, warm start, and a bucketed store
whose bytes are what the masks keep and whose outputs are the masked layer's."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from repro.embeddings import FullEmbedding, embedding_layers
from repro.registry import EMBEDDINGS, MODELS
from repro.run import embedding_sizes
from repro.train import TrainConfig, make_optimizers, train_step


def build(data, **cfg):
    torch.manual_seed(0)
    return EMBEDDINGS.build("amtl", {"dim": 8, "init_std": 0.1, **cfg}, data.feature_map)


def shrink(emb, small: int = 2) -> None:
    """Make l-AML choose size ``small`` and h-AML the full size: rare values get k = small, each
    field's most frequent value (a = 1) gets d."""
    sizes = emb.choice_sizes
    with torch.no_grad():
        emb.l_aml.b2.zero_()
        emb.l_aml.b2[:, sizes.index(small)] = 20.0
        emb.h_aml.b2.zero_()
        emb.h_aml.b2[:, sizes.index(emb.dim)] = 20.0


def randomise(emb, scale: float = 5.0) -> None:
    with torch.no_grad():
        for twin in (emb.h_aml, emb.l_aml):
            twin.w2.normal_(0.0, scale)
            twin.b2.normal_(0.0, scale)


def all_rows(emb) -> torch.Tensor:
    return torch.arange(emb.weight.shape[0])


def batch(data, split="valid", n=1024):
    return next(data.batches(split, n, shuffle=True, seed=1))


# -- the masks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("allow_zero", [False, True])
def test_masks_are_prefix_masks_within_the_choice_set(smoke_data, allow_zero):
    emb = build(smoke_data, allow_zero=allow_zero)
    randomise(emb)
    with torch.no_grad():
        m, k = emb.masks(all_rows(emb))
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert (m[:, 1:] <= m[:, :-1]).all()  # ones then zeros
    assert torch.equal(m.sum(-1), k)
    choices = set(range(0 if allow_zero else 1, 9))
    assert set(k.long().tolist()) <= choices and len(set(k.long().tolist())) > 2  # varied, not trivially full
    # A value with no training count (every field's OOV index, count forced to 0) gets a valid mask too.
    fm = smoke_data.feature_map
    for j, f in enumerate(fm.categorical):
        row = emb.offsets[j] + f.oov_index
        assert emb.counts[row] == 0
        assert int(k[row]) in choices and m[row, : int(k[row])].all() and not m[row, int(k[row]):].any()


def test_forward_is_hard_in_training_and_inference_and_the_ste_reaches_both_twins(smoke_data):
    emb = build(smoke_data)
    randomise(emb, scale=1.0)
    cat = batch(smoke_data, "train")["cat"]
    emb.train()
    out_train = emb(cat)
    emb.eval()
    with torch.no_grad():
        out_eval = emb(cat)
        m, _ = emb.masks(all_rows(emb))
    assert torch.equal(out_train.detach(), out_eval)
    # Hard: the output is the table row times an exact 0/1 prefix mask.
    rows = cat + emb.offsets
    expected = emb.weight.detach()[rows] * m[rows] * (cat != 0).unsqueeze(-1)
    assert torch.equal(out_eval, expected)
    assert (m.sum(-1) < emb.dim).any()
    # The straight-through gradient reaches every parameter of both twins.
    (out_train * torch.randn_like(out_train)).sum().backward()
    for twin in (emb.h_aml, emb.l_aml):
        for p in twin.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_the_temperature_anneals_geometrically_after_the_warm_start(smoke_data):
    emb = build(smoke_data, temperature=2.0, temperature_final=0.5, anneal_steps=4, warm_start_steps=2)
    seen = []
    for step in range(8):
        emb.step.fill_(step)
        seen.append(emb.temperature())
    assert seen[:3] == [2.0, 2.0, 2.0] and seen[6:] == [0.5, 0.5]
    assert seen[4] == pytest.approx(1.0)  # halfway: sqrt(2 * 0.5)


# -- frequencies: train split only --------------------------------------------------------------
def test_the_frequency_input_is_the_train_split_counts(smoke_data):
    fm = smoke_data.feature_map
    emb = build(smoke_data)
    for j, f in enumerate(fm.categorical):
        counts = np.asarray(fm.frequencies[f.name], dtype=np.float64)
        assert np.array_equal(counts, np.bincount(smoke_data.column("train", f.name), minlength=f.vocab_size))
        expected = counts.copy()
        expected[0] = expected[f.oov_index] = 0  # missing and OOV count as unseen
        layer = emb.counts[emb.offsets[j]: emb.offsets[j] + f.vocab_size].double().numpy()
        assert np.array_equal(layer, expected)
    # The valid split's counts are not in it: they differ from the layer's for some value.
    valid = np.bincount(smoke_data.column("valid", "user_id"), minlength=fm.field("user_id").vocab_size)
    assert not np.array_equal(valid, np.asarray(fm.frequencies["user_id"]))

    # Changing the counts changes the mask inputs (and nothing else reads them).
    freqs = {k: np.asarray(v).copy() for k, v in fm.frequencies.items()}
    freqs["user_id"][5] = 0
    other = EMBEDDINGS.build("amtl", {"dim": 8}, dataclasses.replace(fm, frequencies=freqs))
    rows = all_rows(emb)
    s0, a0 = emb.frequency_inputs(rows)
    s1, a1 = other.frequency_inputs(rows)
    changed = (s0 != s1).any(-1) | (a0 != a1)
    user = fm.categorical_index("user_id")
    assert changed.nonzero().squeeze(1).tolist() == [int(emb.offsets[user]) + 5]
    assert a1[emb.offsets[user] + 5] == 0 and s1[emb.offsets[user] + 5, 0] == 0


# -- the exported store ---------------------------------------------------------------------------
@pytest.mark.parametrize("allow_zero", [False, True])
def test_the_store_keeps_only_the_kept_dims_and_gives_the_same_outputs(smoke_data, allow_zero):
    emb = build(smoke_data, allow_zero=allow_zero)
    shrink(emb, small=0 if allow_zero else 2)
    emb.eval()
    k = emb.row_sizes()
    assert (k < emb.dim).any() and (k == emb.dim).any()
    store = emb.export()
    rows = k.numel()
    buckets = len(set(k[k > 0].tolist()))
    # Bytes: the kept floats, one int32 slot per row and the bucket bounds and widths.
    expected = int(k.sum()) * 4 + rows * 4 + (2 * buckets + 1) * 4
    assert store.stored_bytes() == emb.stored_bytes() == expected
    dense = rows * emb.dim * 4
    assert expected < dense
    assert sum(emb.bytes_by_field().values()) == emb.stored_bytes() == sum(store.bytes_by_field().values())
    assert [t.shape[1] for t in store.tables] == sorted(set(k[k > 0].tolist()))
    assert sum(t.shape[0] for t in store.tables) == int((k > 0).sum())
    assert emb.num_parameters() > emb.weight.numel()  # training still holds the full table + twins
    # Same outputs on a real batch.
    cat = batch(smoke_data)["cat"]
    with torch.no_grad():
        assert torch.equal(store(cat), emb(cat))
    # Per-field mean kept dims for the report.
    kept = emb.kept_dims()
    assert set(kept) == {f.name for f in smoke_data.feature_map.categorical}
    assert all(0 <= v <= emb.dim for v in kept.values()) and min(kept.values()) < emb.dim


def test_the_model_predicts_the_same_with_the_store_swapped_in(smoke_data):
    torch.manual_seed(0)
    model = MODELS.build("deepfm", {"hidden_units": [16]}, smoke_data.feature_map, embedding={"name": "amtl", "dim": 8})
    emb = model.embed.categorical
    with torch.no_grad():
        emb.weight.normal_(0, 0.1)
    shrink(emb)
    model.eval()
    b = batch(smoke_data, "test")
    with torch.no_grad():
        before = model(b)
        sizes_before = embedding_sizes(model)
        model.embed.categorical = emb.export()
        after = model(b)
    assert torch.equal(before, after)
    # The swapped-in store reports the bytes the layer announced.
    assert embedding_sizes(model)["embedding_bytes"] == sizes_before["embedding_bytes"]
    assert embedding_sizes(model)["embedding_bytes_by_field"] == sizes_before["embedding_bytes_by_field"]


# -- warm start ------------------------------------------------------------------------------------
def test_warm_start_trains_the_unmasked_table_first_then_masks_and_resumes_exactly(smoke_data):
    emb = build(smoke_data, warm_start_steps=3)
    shrink(emb)
    cat = batch(smoke_data, "train")["cat"]
    rows = cat + emb.offsets
    unmasked = lambda: emb.weight.detach()[rows] * (cat != 0).unsqueeze(-1)  # noqa: E731
    for _ in range(3):
        emb.eval()
        with torch.no_grad():  # evaluation during the warm start is unmasked too (and not counted)
            assert torch.equal(emb(cat), unmasked())
            assert set(emb.kept_dims().values()) == {8.0}
        emb.train()
        assert torch.equal(emb(cat).detach(), unmasked())
    assert int(emb.step) == 3
    emb.eval()
    with torch.no_grad():  # from now on inference is masked as training is
        masked_eval = emb(cat)
    emb.train()
    masked = emb(cat).detach()
    assert torch.equal(masked, masked_eval)
    k = emb.row_sizes()[rows]
    assert not torch.equal(masked, unmasked())
    assert torch.equal(masked, unmasked() * (torch.arange(8) < k.unsqueeze(-1)))
    # The counter is saved with the model: a resumed layer is in the same phase.
    resumed = build(smoke_data, warm_start_steps=3)
    assert not resumed.masking()
    resumed.load_state_dict(emb.state_dict())
    assert int(resumed.step) == 4 and resumed.masking()


# -- the size penalty -------------------------------------------------------------------------------
def test_the_optional_size_penalty_adds_the_mean_kept_fraction(smoke_data):
    cat = batch(smoke_data, "train")["cat"]
    plain, sized = build(smoke_data), build(smoke_data, size_penalty=0.5)
    for emb in (plain, sized):
        shrink(emb)
        emb.train()
        emb(cat)
    rows = torch.unique(cat + sized.offsets)
    rows = rows[rows != sized.offsets[sized._field_of(rows)]]
    kept = sized.row_sizes()[rows].float().mean() / 8
    assert torch.allclose(sized.penalty() - plain.penalty(), 0.5 * kept)
    sized.penalty().backward()
    assert sized.l_aml.b2.grad.abs().sum() > 0
    sized.forget()
    assert sized.penalty() == 0


# -- inside a model ----------------------------------------------------------------------------------
def test_amtl_trains_inside_deepfm_and_reports_consistent_sizes(smoke_data):
    torch.manual_seed(0)
    model = MODELS.build("deepfm", {}, smoke_data.feature_map, embedding={"name": "amtl", "dim": 8})
    emb = model.embed.categorical
    first = model.linear.weights
    assert type(emb).__name__ == "AMTLEmbedding" and isinstance(first, FullEmbedding) and first.dim == 1
    assert embedding_layers(model) == [first, emb] or embedding_layers(model) == [emb, first]
    c = TrainConfig(batch_size=1024, epochs=1, progress=False, threads=1, lr=0.01, embedding_l2=1e-2)
    opt = make_optimizers(model, c)
    assert emb.sparse_grad and isinstance(opt.named["embedding"], torch.optim.SparseAdam)
    dense_emb = {id(p) for g in opt.named["embedding_dense"].param_groups for p in g["params"]}
    assert all(id(p) in dense_emb for p in [*emb.h_aml.parameters(), *emb.l_aml.parameters()])
    twins_before = [p.detach().clone() for p in emb.l_aml.parameters()]
    model.train()
    losses = [train_step(model, b, opt, c) for b in itertools.islice(smoke_data.batches("train", 1024, shuffle=True), 6)]
    assert all(np.isfinite(losses)) and int(emb.step) == 6
    assert emb.weight.grad is not None and emb.weight.grad.is_sparse
    assert any(not torch.equal(a, b) for a, b in zip(twins_before, emb.l_aml.parameters()))
    sizes = embedding_sizes(model)
    assert sizes["embedding_bytes"] == emb.stored_bytes() + first.stored_bytes()
    assert sum(sizes["embedding_bytes_by_field"].values()) == sizes["embedding_bytes"]
    assert sizes["embedding_parameters"] == emb.num_parameters() + first.num_parameters()
    assert emb.stored_bytes() == emb.export().stored_bytes()
