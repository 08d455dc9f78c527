"""BH (binary code based hash embedding): the code, its tables, the budget rule and the layer in a model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from methods.model_deepening.bh import (
    BHConfig,
    BinaryCodeHashEmbedding,
    block_indices,
    block_positions,
    block_shape,
    candidate_lengths,
    field_floats,
)
from repro.compression import field_budget
from repro.data.featuremap import FeatureMap, FieldSpec
from repro.embeddings import FullEmbedding, FullEmbeddingConfig, embedding_layers
from repro.registry import EMBEDDINGS, MODELS
from repro.run import embedding_sizes
from repro.train import TrainConfig, make_optimizers, train_step

STRATEGIES = ("succession", "skip")


def synthetic_map(*sizes: int) -> FeatureMap:
    """A bare feature map with categorical fields of the given vocabulary sizes."""
    return FeatureMap("t", [FieldSpec(f"f{i}", "categorical", vocab_size=n, oov_index=n - 1)
                            for i, n in enumerate(sizes)])


def bh(fm: FeatureMap, **kw) -> BinaryCodeHashEmbedding:
    return EMBEDDINGS.build("bh", {"dim": 8, **kw}, fm)


# -- the code ----------------------------------------------------------------------------------
@pytest.mark.parametrize("L", [5, 12, 17])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_block_indices_are_in_range_and_a_bijection_of_the_code(L, strategy):
    ids = torch.arange(2**L, dtype=torch.long)
    for t in range(1, L + 1):
        B, bits = block_shape(L, t, strategy)
        blocks = block_positions(L, t, strategy)
        c = block_indices(ids, L, t, strategy)
        assert c.shape == (2**L, B)
        assert c.min() >= 0 and c.max() < 2**bits, (t, int(c.max()))
        # Every bit is in exactly one block ...
        assert sorted(p for b in blocks for p in b) == list(range(L))
        # ... and the blocks give the id back (so the tuple of block indices is injective).
        K = max(len(b) for b in blocks)
        pos = torch.tensor([b + [0] * (K - len(b)) for b in blocks])  # [B, K], padded with bit 0 ...
        valid = torch.tensor([[k < len(b) for k in range(K)] for b in blocks])  # ... that is masked
        bit = (c.unsqueeze(-1) >> torch.arange(K)) & 1  # the k-th bit of block n is global bit pos[n, k]
        back = ((bit << pos) * valid).sum(dim=(1, 2))  # the positions are disjoint: sum = or
        assert torch.equal(back, ids), t
        if L <= 12:  # the same, counted directly (a sort of 2^L numbers per t: slow at L = 17)
            packed = sum(c[:, n] << (bits * n) for n in range(B))  # c_n < 2^bits: one number per tuple
            assert torch.unique(packed).numel() == 2**L


def test_skip_and_succession_match_hand_computed_blocks():
    # id 118 = 0b1110110: b0=0 b1=1 b2=1 b3=0 b4=1 b5=1 b6=1 (L = 7).
    x = torch.tensor([118])
    # Skip, t = 2: B = 3 blocks of ceil(7/3) = 3 bits: {0,3,6}, {1,4}, {2,5}, local weights 2^k:
    # block 0 = b0 + 2 b3 + 4 b6 = 4, block 1 = b1 + 2 b4 = 3, block 2 = b2 + 2 b5 = 3. QunBB's kernel
    # (global weights 2^m) gives 64, 18, 36: out of the blocks' [0, 8) range.
    assert block_positions(7, 2, "skip") == [[0, 3, 6], [1, 4], [2, 5]]
    assert block_indices(x, 7, 2, "skip").tolist() == [[4, 3, 3]]
    # Succession, t = 3: bits [0,3) -> 0b110 = 6, [3,6) -> 0b110 = 6, [6,7) -> 1.
    assert block_indices(x, 7, 3, "succession").tolist() == [[6, 6, 1]]
    # Block counts and widths of the paper: ceil(L/t) blocks of t bits; t+1 of ceil(L/(t+1)).
    assert block_shape(24, 8, "succession") == (3, 8) and block_shape(24, 7, "skip") == (8, 3)


def test_the_layer_computes_the_same_block_indices_plus_its_table_offsets():
    fm = synthetic_map(5000, 40)  # L = 13; the 40-row field stays full
    for strategy, shared in itertools.product(STRATEGIES, (False, True)):
        layer = bh(fm, block_length=3, strategy=strategy, shared_tables=shared)
        cat = torch.stack([torch.arange(5000), torch.arange(5000) % 40], dim=1)
        idx = layer.slot_indices(cat)
        B, bits = block_shape(13, 3, strategy)
        expected = block_indices(cat[:, 0], 13, 3, strategy)
        if not shared:
            expected = expected + torch.arange(B) * 2**bits
        assert torch.equal(idx[:, :B], expected)
        assert torch.equal(idx[:, B], cat[:, 1] + layer.tables[0].offsets[1])  # full field: vocab index


# -- tables and budgets --------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1, 3, 5, 13])
def test_parameter_counts_follow_the_papers_cost_formula(t):
    dim, fm = 8, synthetic_map(5000, 1000, 50)  # L = 13, 10; the 50-row field stays full
    for strategy, shared in itertools.product(STRATEGIES, (False, True)):
        layer = bh(fm, dim=dim, block_length=t, strategy=strategy, shared_tables=shared)
        per_field = {}
        for name, L in (("f0", 13), ("f1", 10)):
            tt = min(t, L if strategy == "succession" else L - 1)  # explicit t is clamped to the code
            if strategy == "succession":
                rows = 2**tt if shared else math.ceil(L / tt) * 2**tt
            else:
                rows = 2 ** math.ceil(L / (tt + 1)) * (1 if shared else tt + 1)
            per_field[name] = rows * dim
            assert layer.plan[name]["t"] == tt and layer.plan[name]["rows"] == rows
        per_field["f2"] = 50 * dim
        assert layer.num_parameters() == sum(per_field.values()), (strategy, shared)
        by_field = layer.bytes_by_field()
        assert by_field == {k: 4 * v for k, v in per_field.items()}
        assert sum(by_field.values()) == layer.stored_bytes()


def test_bytes_by_field_add_up_with_concat_and_the_fusion_mlp():
    fm = synthetic_map(5000, 1000, 50)
    for fusion, mlp in itertools.product(("sum", "concat"), (False, True)):
        layer = bh(fm, dim=16, compression=16, fusion=fusion, fusion_mlp=mlp)
        assert sum(layer.bytes_by_field().values()) == layer.stored_bytes()
        for name, p in layer.plan.items():
            if p["coded"]:
                assert layer.bytes_by_field()[name] == 4 * p["floats"]


@pytest.mark.parametrize("compression", [2, 4, 16, 64, 1000])
def test_block_length_is_the_largest_within_the_budget(smoke_data, compression):
    fm = smoke_data.feature_map
    for strategy, shared, fusion, mlp in itertools.product(STRATEGIES, (False, True), ("sum", "concat"), (False, True)):
        dim = 16
        layer = bh(fm, dim=dim, compression=compression, strategy=strategy, shared_tables=shared,
                   fusion=fusion, fusion_mlp=mlp)
        for f in fm.categorical:
            p = layer.plan[f.name]
            assert p["coded"] == (f.vocab_size > 200)
            if not p["coded"]:
                continue
            budget = field_budget(f.vocab_size, compression) * dim
            assert p["L"] == math.ceil(math.log2(f.vocab_size))
            costs = {t: field_floats(p["L"], t, dim, strategy, shared, fusion, mlp)
                     for t in candidate_lengths(p["L"], strategy)
                     if not (fusion == "concat" and not mlp and block_shape(p["L"], t, strategy)[0] > dim)}
            assert p["floats"] == costs[p["t"]]
            if p["within_budget"]:
                assert p["floats"] <= budget
                assert not any(p["floats"] < c <= budget for c in costs.values())  # nothing larger fits
            else:
                assert min(costs.values()) > budget and p["floats"] == min(costs.values())
    # The measured bytes (not the plan) reach the field's target wherever the budget is feasible;
    # at small targets every field is (1000x is not: t = 1 alone needs 2L rows, e.g. 26 for L = 13).
    layer = bh(fm, dim=16, compression=compression)
    for f in (f for f in fm.categorical if f.vocab_size > 200):
        ratio = f.vocab_size * 16 * 4 / layer.bytes_by_field()[f.name]
        if layer.plan[f.name]["within_budget"]:
            assert ratio >= f.vocab_size / field_budget(f.vocab_size, compression)
        else:
            assert compression > 4 and ratio < compression


def test_an_infeasible_budget_takes_the_cheapest_block_length():
    layer = bh(synthetic_map(5000), compression=1000)  # budget 5 rows; t = 1 needs 13 * 2 = 26
    p = layer.plan["f0"]
    assert not p["within_budget"] and p["t"] == 1 and p["rows"] == 26


def test_at_compression_1_it_is_the_full_embedding(smoke_data):
    fm = smoke_data.feature_map
    torch.manual_seed(0)
    layer = bh(fm, compression=1)
    torch.manual_seed(0)
    full = FullEmbedding(fm, FullEmbeddingConfig(dim=8))
    assert not any(p["coded"] for p in layer.plan.values())
    assert layer.num_parameters() == full.num_parameters() == sum(f.vocab_size for f in fm.categorical) * 8
    assert layer.bytes_by_field() == full.bytes_by_field()
    cat = next(smoke_data.batches("test", 512))["cat"]
    torch.testing.assert_close(layer.eval()(cat), full.eval()(cat))
    # ... and stored bytes fall as the target ratio grows.
    sizes = [bh(fm, compression=c).stored_bytes() for c in (1, 4, 16, 64, 1000)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


# -- collisions --------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy,a,b", [("succession", 0b01, 0b100), ("skip", 0b10, 0b100)])
def test_shared_tables_with_sum_collide_block_permutations(strategy, a, b):
    # succession t=2: 1 -> blocks (1, 0, ...), 4 -> (0, 1, ...); skip t=2 (blocks {0,3,..}, {1,4,..},
    # {2,5,..}): 2 -> (0, 1, 0, ...), 4 -> (0, 0, 1, ...). Same multiset of block values.
    fm = synthetic_map(5000)
    ca, cb = block_indices(torch.tensor([a, b]), 13, 2, strategy).tolist()
    assert ca != cb and sorted(ca) == sorted(cb)
    cat = torch.tensor([[a], [b]])
    outs = {}
    for shared, fusion in itertools.product((False, True), ("sum", "concat")):
        torch.manual_seed(0)
        layer = bh(fm, block_length=2, strategy=strategy, shared_tables=shared, fusion=fusion, init_std=1.0)
        outs[shared, fusion] = layer.eval()(cat)
    torch.testing.assert_close(outs[True, "sum"][0], outs[True, "sum"][1])  # up to the order of the sum
    assert not torch.allclose(outs[False, "sum"][0], outs[False, "sum"][1])
    assert not torch.allclose(outs[True, "concat"][0], outs[True, "concat"][1])  # concat knows the position


# -- the layer on real batches -------------------------------------------------------------------
CASES = [
    dict(),
    dict(strategy="skip"),
    dict(shared_tables=True),
    dict(fusion="concat"),
    dict(fusion="concat", fusion_mlp=True, strategy="skip"),
    dict(fusion_mlp=True),
    dict(ids="raw"),
    dict(ids="raw", id_bits=20, fusion="concat"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("sparse", [True, False])
def test_forward_backward_on_a_real_batch(smoke_data, case, sparse):
    fm = smoke_data.feature_map
    torch.manual_seed(0)
    layer = bh(fm, compression=16, **case)
    smoke_data.raw_ids = layer.uses_raw_ids
    try:
        batch = next(smoke_data.batches("train", 512, shuffle=True, seed=0, epoch=0))
    finally:
        smoke_data.raw_ids = False
    assert layer.uses_raw_ids == (case.get("ids") == "raw") == ("raw" in batch)
    cat, raw = batch["cat"].clone(), batch.get("raw")
    cat[:7, 0] = 0  # missing user ids
    if raw is not None:
        raw = raw.clone()
        raw[:7, 0] = 0
    layer.sparse_grad = sparse
    layer.set_frequencies(smoke_data.frequencies, smoke_data.num_rows("train"))
    layer.train()
    out = layer(cat, raw)
    assert out.shape == (512, len(fm.categorical), 8) and torch.isfinite(out).all()
    assert torch.count_nonzero(out[:7, 0]) == 0
    assert out[7:, 0].abs().sum(-1).min() > 0
    (out.pow(2).sum() + layer.penalty()).backward()
    assert layer.sparse_parameters() == ([t.weight for t in layer.tables] if sparse else [])
    for t in layer.tables:
        assert t.weight.grad is not None and t.weight.grad.is_sparse == sparse
    if sparse and len(layer.tables) == 1:
        # Only the rows this batch looked up get a gradient.
        used = torch.unique(layer.slot_indices(cat, raw))
        touched = torch.unique(layer.tables[0].weight.grad.coalesce().indices())
        assert set(touched.tolist()) <= set(used.tolist())
    for mlp in layer.mlps.values():
        assert all(p.grad is not None for p in mlp.parameters())


def test_concat_keeps_the_output_width_and_rejects_too_many_blocks(smoke_data):
    fm = smoke_data.feature_map
    layer = bh(fm, dim=8, compression=64, fusion="concat")
    for f in fm.categorical:
        p = layer.plan[f.name]
        if p["coded"]:
            assert p["blocks"] <= 8 and p["width"] == math.ceil(8 / p["blocks"])
    assert layer.eval()(next(smoke_data.batches("test", 64))["cat"]).shape[-1] == 8
    with pytest.raises(ValueError, match="blocks"):
        bh(fm, dim=4, block_length=1, fusion="concat")  # 13 one-bit blocks, 4 columns


# -- inside a model ------------------------------------------------------------------------------
@pytest.mark.parametrize("embedding", [
    {"name": "bh", "dim": 8, "compression": 16},
    {"name": "bh", "dim": 8, "compression": 16, "fusion": "concat", "strategy": "skip", "ids": "raw"},
])
def test_a_model_with_bh_trains_and_stores_fewer_bytes(smoke_data, embedding):
    fm = smoke_data.feature_map
    torch.manual_seed(0)
    model = MODELS.build("deepfm", {}, fm, embedding=embedding)
    layers = embedding_layers(model)
    assert len(layers) == 2 and all(isinstance(layer, BinaryCodeHashEmbedding) for layer in layers)
    first = model.linear.weights
    assert first.dim == 1 and first.cfg.fusion == "sum" and not first.mlps
    assert all(torch.count_nonzero(t.weight) == 0 for t in first.tables)  # zero start, as LR's weights

    cfg = TrainConfig(batch_size=1024, epochs=1, evals_per_epoch=1, progress=False, threads=1, embedding_l2=1e-2)
    opt = make_optimizers(model, cfg)
    assert isinstance(opt.named["embedding"], torch.optim.SparseAdam)
    for layer in layers:
        layer.set_frequencies(smoke_data.frequencies, smoke_data.num_rows("train"))
    smoke_data.raw_ids = any(layer.uses_raw_ids for layer in layers)
    try:
        batches = list(itertools.islice(smoke_data.batches("train", 1024, shuffle=True, seed=0, epoch=0), 3))
    finally:
        smoke_data.raw_ids = False
    before = [t.weight.detach().clone() for layer in layers for t in layer.tables]
    model.train()
    losses = [train_step(model, b, opt, cfg) for b in batches]
    assert all(math.isfinite(x) for x in losses)
    after = [t.weight.detach() for layer in layers for t in layer.tables]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))

    sizes = embedding_sizes(model)
    full = embedding_sizes(MODELS.build("deepfm", {}, fm, embedding={"name": "full", "dim": 8}))
    assert sizes["embedding_bytes"] < full["embedding_bytes"] / 4
    assert sum(sizes["embedding_bytes_by_field"].values()) == sizes["embedding_bytes"]
    big = [f.name for f in fm.categorical if f.vocab_size > 200]
    small = [f.name for f in fm.categorical if f.vocab_size <= 200]
    assert all(sizes["embedding_bytes_by_field"][n] < full["embedding_bytes_by_field"][n] for n in big)
    assert all(sizes["embedding_bytes_by_field"][n] == full["embedding_bytes_by_field"][n] for n in small)
