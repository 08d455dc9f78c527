"""The hashing family of embedding compression baselines (baselines/embeddings/): sizes against each
scheme's formula and the shared budget, what each scheme keeps apart, and training inside a model."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf

from repro.compression import field_budget, hash_bucket, is_compressed
from repro.registry import EMBEDDINGS, MODELS, ROOT
from repro.run import embedding_sizes
from repro.train import TrainConfig, make_optimizers, train_step, uses_raw_ids

SCHEMES = ["hashing", "qr", "hash_embedding", "double_hashing", "mde"]
RAW_SCHEMES = ["hashing", "hash_embedding", "double_hashing"]
pytestmark = pytest.mark.filterwarnings("ignore:.*cannot fit the budget:UserWarning")


def build(data, name, **cfg):
    torch.manual_seed(0)
    return EMBEDDINGS.build(name, {"dim": 8, **cfg}, data.feature_map)


def col(data, field: str) -> int:
    return data.feature_map.categorical_index(field)


def every_value(data, field: str) -> torch.Tensor:
    """[N-1, F] indices: field ``field`` runs over 1..N-1 (its whole vocabulary and OOV), the other
    fields are missing."""
    fm = data.feature_map
    n = fm.field(field).vocab_size
    cat = torch.zeros(n - 1, len(fm.categorical), dtype=torch.long)
    cat[:, col(data, field)] = torch.arange(1, n)
    return cat


@torch.no_grad()
def vectors(layer, data, field: str) -> torch.Tensor:
    layer.eval()
    return layer(every_value(data, field))[:, col(data, field)]


def raw_batch(data, split="test", size=4096) -> dict:
    data.raw_ids = True
    try:
        return next(data.batches(split, size))
    finally:
        data.raw_ids = False


# -- sizes ---------------------------------------------------------------------------------------
def formula(name: str, layer, n: int, plan: dict, dim: int) -> int:
    """Stored floats of one compressed field of ``n`` rows by the scheme's formula."""
    if name == "hashing":
        return plan["buckets"] * dim
    if name == "qr":
        m = plan["collisions"]
        return (math.ceil(n / m) + m) * dim
    if name == "hash_embedding":
        return plan["pool"] * dim + plan["importance_buckets"] * layer.cfg.num_hashes
    if name == "double_hashing":
        return (plan["head"] + plan["tail"]) * dim
    sizes, dims = plan["block_sizes"], plan["dims"]
    assert sum(sizes) == n - 1  # every value but "missing" has its own row
    return sum(s * d for s, d in zip(sizes, dims)) + sum(d * dim for d in dims if d < dim)


def feasible(name: str, n: int, budget: int, dim: int, layer) -> bool:
    if name == "qr":  # some m with ceil(n/m) + m <= budget, by brute force
        return any(math.ceil(n / m) + m <= budget for m in range(1, n + 1))
    if name == "mde":  # every width at its minimum 1, with projections 1 -> dim
        return (n - 1) + layer.cfg.blocks * dim <= budget * dim
    return budget >= 2


@pytest.mark.parametrize("compression", [4, 16])
@pytest.mark.parametrize("name", SCHEMES)
def test_parameter_counts_follow_each_formula_within_the_budget(smoke_data, name, compression):
    fm = smoke_data.feature_map
    layer = build(smoke_data, name, compression=compression)
    by_field = layer.bytes_by_field()
    assert sum(by_field.values()) == layer.stored_bytes() == 4 * layer.num_parameters()
    compressed = 0
    for f in fm.categorical:
        floats = by_field[f.name] // 4
        if not is_compressed(f.vocab_size, layer.cfg):
            assert floats == f.vocab_size * 8
            continue
        compressed += 1
        plan, budget = layer.plan[f.name], field_budget(f.vocab_size, compression)
        assert floats == formula(name, layer, f.vocab_size, plan, 8) == plan["floats"], f.name
        fits = feasible(name, f.vocab_size, budget, 8, layer)
        assert plan["within_budget"] == fits, f.name
        if fits:
            assert floats <= budget * 8, f.name
        if name == "qr":  # the smallest m that fits; else the cheapest
            m = plan["collisions"]
            cost = lambda k: math.ceil(f.vocab_size / k) + k  # noqa: E731
            if fits:
                assert all(cost(k) > budget for k in range(1, m))
            else:
                assert cost(m) == min(cost(k) for k in range(1, f.vocab_size + 1))
        if name == "hashing":
            assert plan["buckets"] == budget
        if name == "double_hashing":
            assert plan["head"] + plan["tail"] == budget and plan["head"] == round(0.5 * budget)
    assert compressed >= 4  # the smoke world's ID fields


def test_qr_warns_when_the_budget_is_below_its_minimum(smoke_data):
    with pytest.warns(UserWarning, match="below the target"):
        build(smoke_data, "qr", compression=64)


def test_qr_and_mde_reject_raw_ids(smoke_data):
    for name in ("qr", "mde"):
        with pytest.raises(ValueError, match="ids: vocab"):
            build(smoke_data, name, compression=4, ids="raw")


# -- what each scheme keeps apart ----------------------------------------------------------------
@pytest.mark.parametrize("operation", ["mult", "add", "concat"])
def test_qr_vectors_are_unique_while_the_hashing_trick_collides(smoke_data, operation):
    n = smoke_data.feature_map.field("user_id").vocab_size
    qr = vectors(build(smoke_data, "qr", compression=16, operation=operation), smoke_data, "user_id")
    assert qr.shape == (n - 1, 8)
    assert len(torch.unique(qr, dim=0)) == n - 1
    hashed = vectors(build(smoke_data, "hashing", compression=16, ids="vocab"), smoke_data, "user_id")
    assert len(torch.unique(hashed, dim=0)) <= field_budget(n, 16) < n - 1


def test_hash_embeddings_separate_values_that_collide_in_one_hash(smoke_data):
    layer = build(smoke_data, "hash_embedding", compression=16, ids="vocab")
    j = col(smoke_data, "user_id")
    out = vectors(layer, smoke_data, "user_id")
    first = layer.hashes(every_value(smoke_data, "user_id"))[0][0][:, j]
    pairs = same = 0
    for bucket in first.unique():
        members = (first == bucket).nonzero().squeeze(1).tolist()
        for a, b in itertools.combinations(members, 2):
            pairs += 1
            same += bool(torch.equal(out[a], out[b]))
    assert pairs > 1000  # 2204 values in 69 pool vectors: many collide under h_0
    assert same <= 0.01 * pairs


def test_double_hashing_head_values_own_their_rows(smoke_data):
    layer = build(smoke_data, "double_hashing", compression=16, ids="vocab")
    j = col(smoke_data, "user_id")
    h = layer.plan["user_id"]["head"]
    base = int(layer.table.offsets[j])
    before = vectors(layer, smoke_data, "user_id")
    assert torch.equal(before[:h], layer.table.weight[base: base + h].detach())  # value v -> row v-1
    for v in (1, h):
        with torch.no_grad():
            layer.table.weight[base + v - 1] += 1.0
        after = vectors(layer, smoke_data, "user_id")
        changed = (after != before).any(dim=1).nonzero().squeeze(1).tolist()
        assert changed == [v - 1]  # row v-1 of the output is value v
        before = after
    # A tail value is the sum of two rows of its field's tail table.
    tail = layer.plan["user_id"]["tail"]
    x = torch.tensor(h + 5)
    a, b = (int(hash_bucket(x, tail, layer.seeds[i, j])) for i in range(2))
    rows = layer.table.weight[base + h + a] + layer.table.weight[base + h + b]
    assert torch.allclose(before[h + 4], rows)


def test_mde_widths_follow_frequency(smoke_data):
    fm = smoke_data.feature_map
    for compression in (2, 4, 16):
        layer = build(smoke_data, "mde", dim=16, compression=compression)
        for f in fm.categorical:
            if not is_compressed(f.vocab_size, layer.cfg):
                continue
            plan = layer.plan[f.name]
            dims, sizes = plan["dims"], plan["block_sizes"]
            assert all(1 <= d <= 16 for d in dims)
            assert dims[0] == max(dims) and dims == sorted(dims, reverse=True)
            assert sizes == sorted(sizes)  # geometric: the most frequent block is the smallest
            counts = fm.frequencies[f.name]
            assert counts[1: 1 + sizes[0]].mean() > counts[1 + sizes[0]:].mean()
            if compression == 4:
                assert dims[0] > dims[-1]  # the power rule spreads the widths
            if compression == 2:
                assert dims[0] == 16  # with room, the head gets the full width


@pytest.mark.parametrize("name", RAW_SCHEMES)
def test_raw_ids_keep_oov_values_apart_and_vocab_ids_do_not(smoke_data, name):
    batch = raw_batch(smoke_data)
    j = col(smoke_data, "user_id")
    f = smoke_data.feature_map.field("user_id")
    oov = batch["cat"][:, j] == f.oov_index
    assert len(batch["raw"][oov, j].unique()) > 10
    distinct = {}
    for ids in ("raw", "vocab"):
        layer = build(smoke_data, name, compression=16, ids=ids).eval()
        with torch.no_grad():
            out = layer(batch["cat"], batch["raw"])[oov, j]
        distinct[ids] = len(torch.unique(out, dim=0))
        if name == "hashing" and ids == "raw":
            assert distinct[ids] == len(layer.bucket_of(batch["raw"])[oov, j].unique())
    assert distinct["vocab"] == 1
    assert distinct["raw"] > 5


# -- the layer contract, and training inside a model ---------------------------------------------
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("name", SCHEMES)
def test_forward_backward_missing_and_sparse_gradients(smoke_data, name, sparse):
    batch = raw_batch(smoke_data, "train", 512)
    cat, raw = batch["cat"].clone(), batch["raw"].clone()
    j = col(smoke_data, "user_id")
    cat[:40], raw[:40] = 0, 0  # whole rows missing
    cat[40:80, j], raw[40:80, j] = 0, 0  # a compressed field missing
    layer = build(smoke_data, name, compression=16)
    layer.sparse_grad = sparse
    layer.train()
    out = layer(cat, raw)
    assert out.shape == (512, cat.shape[1], 8)
    assert torch.count_nonzero(out[cat == 0]) == 0
    assert torch.count_nonzero(out[cat != 0]) > 0
    (out * torch.randn_like(out)).sum().add(layer.penalty()).backward()
    sparse_ids = {id(p) for p in layer.sparse_parameters()}
    assert bool(sparse_ids) == sparse
    for p in layer.parameters():
        assert p.grad is not None and p.grad.is_sparse == (id(p) in sparse_ids)
    # An all-missing batch looks nothing up: no row gets even a zero gradient (SparseAdam would
    # still move a row it is handed, by its momentum).
    layer.zero_grad(set_to_none=True)
    out = layer(torch.zeros_like(cat), torch.zeros_like(raw))
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    for p in layer.sparse_parameters():
        assert p.grad.coalesce()._nnz() == 0


@pytest.mark.parametrize("name", SCHEMES)
def test_first_order_weights_start_at_zero_and_learn(smoke_data, name):
    fm = smoke_data.feature_map
    cfg = EMBEDDINGS.config(name, {"dim": 8, "compression": 16})
    first = EMBEDDINGS.get(name).factory.first_order(fm, cfg)
    assert first.dim == 1
    full = sum(f.vocab_size for f in fm.categorical)
    assert first.num_parameters() < full  # compressed too
    batch = raw_batch(smoke_data, "train", 256)
    first.train()
    out = first(batch["cat"], batch["raw"])
    assert torch.count_nonzero(out) == 0
    (out * torch.randn_like(out)).sum().backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad.to_dense()) > 0 for p in first.parameters())


@pytest.mark.parametrize("name", SCHEMES)
def test_each_scheme_trains_inside_deepfm_with_fewer_bytes(smoke_data, name):
    fm = smoke_data.feature_map
    torch.manual_seed(0)
    model = MODELS.build("deepfm", {"hidden_units": [16]}, fm, embedding={"name": name, "dim": 8, "compression": 16})
    full = MODELS.build("deepfm", {"hidden_units": [16]}, fm, embedding={"name": "full", "dim": 8})
    cfg = TrainConfig(batch_size=1024, progress=False, threads=1, embedding_l2=1e-2)
    opt = make_optimizers(model, cfg)
    assert uses_raw_ids(model) == (name in RAW_SCHEMES)
    smoke_data.raw_ids = uses_raw_ids(model)
    try:
        batch = next(smoke_data.batches("train", 1024, shuffle=True))
    finally:
        smoke_data.raw_ids = False
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    loss = train_step(model, batch, opt, cfg)
    assert math.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    sizes, full_sizes = embedding_sizes(model), embedding_sizes(full)
    assert sizes["embedding_bytes"] < full_sizes["embedding_bytes"]
    assert sum(sizes["embedding_bytes_by_field"].values()) == sizes["embedding_bytes"]
    assert sizes["embedding_parameters"] * 4 == sizes["embedding_bytes"]


@pytest.mark.parametrize("name", SCHEMES)
def test_config_files_hold_every_key_with_its_default(name):
    block = OmegaConf.load(ROOT / "conf" / "embedding" / f"{name}.yaml")
    assert block.name == name
    fields = {f.name for f in dataclasses.fields(EMBEDDINGS.get(name).config)}
    assert set(block) - {"name"} == fields
    assert EMBEDDINGS.config(name, block) == EMBEDDINGS.config(name, {})
