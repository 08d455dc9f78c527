"""Batches: every row once per epoch, reproducible order, bounded-memory streaming, role tensors."""

import pyarrow.parquet as pq
import torch

from repro.data.dataset import PreparedDataset


def request_ids(batches):
    return torch.cat([b["request"] for b in batches])


def row_keys(batches):
    """A key unique per row: (request, position)."""
    return torch.cat([b["request"] * 100 + b["position"] for b in batches])


def all_row_keys(data, split="train"):
    return torch.tensor(data.column(split, "request_id")) * 100 + torch.tensor(data.column(split, "position"))


def test_an_epoch_covers_every_row_once(smoke_data):
    keys = row_keys(smoke_data.batches("train", 1000, shuffle=True, seed=3))
    expected = all_row_keys(smoke_data)
    assert len(torch.unique(expected)) == len(expected) == smoke_data.num_rows("train")
    assert torch.equal(keys.sort().values, expected.sort().values)


def test_shuffle_depends_on_seed_and_epoch_only(smoke_data):
    a = request_ids(smoke_data.batches("train", 4096, shuffle=True, seed=1, epoch=0))
    b = request_ids(smoke_data.batches("train", 4096, shuffle=True, seed=1, epoch=0))
    c = request_ids(smoke_data.batches("train", 4096, shuffle=True, seed=1, epoch=1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_evaluation_order_is_row_order(smoke_data):
    keys = row_keys(smoke_data.batches("test", 777))
    assert torch.equal(keys, all_row_keys(smoke_data, "test"))


def test_streaming_path_yields_the_same_rows_in_a_shuffled_order(cache_root):
    from repro.data.prepare import PrepareConfig, prepare
    from tests.conftest import world

    root = prepare(world(chunk_requests=1000), PrepareConfig(min_count=2, cache_root=str(cache_root)), verbose=False)
    in_memory = PreparedDataset(root)
    streaming = PreparedDataset(root, max_rows_in_memory=1000)
    assert pq.ParquetFile(streaming.split_path("train")).num_row_groups == 20  # > the shuffle window of 4
    keys = row_keys(streaming.batches("train", 1000, shuffle=True, seed=0, shuffle_window=4))
    expected = all_row_keys(in_memory)
    assert torch.equal(keys.sort().values, expected.sort().values)
    assert not torch.equal(keys, expected)  # row groups were visited out of order
    # the first batch mixes rows of several row groups (1000 requests each): a shuffle window
    assert len(torch.unique(keys[:1000] // 100 // 1000)) >= 2


def test_batch_contract_shapes_and_roles(smoke_data):
    fm = smoke_data.feature_map
    b = next(smoke_data.batches("train", 256))
    assert b["cat"].shape == (256, len(fm.categorical)) and b["cat"].dtype == torch.int64
    assert b["dense"].shape == (256, fm.num_dense) and b["label"].shape == (256,)
    assert b["content"].shape == (256, fm.field("content").dim)
    assert torch.equal(b["position"], b["cat"][:, fm.categorical_index("position")])
    for role in ("user", "query", "ad", "creative", "scene", "request", "bid"):
        assert role in b, role
    # Ground truth never reaches a model.
    assert not any(k in b for k in ("p_click", "relevance", "examination", "is_random"))
    # Every index is inside its field's table.
    sizes = torch.tensor([f.vocab_size for f in fm.categorical])
    assert (b["cat"] >= 0).all() and (b["cat"] < sizes).all()


def test_request_grouped_batches_keep_requests_whole(smoke_data):
    seen = []
    for b in smoke_data.batches("train", 1000, shuffle=True, seed=2, group_by_request=True):
        req = b["request"]
        assert len(req) >= 1
        seen.append(req)
        # rows of one request are contiguous inside the batch
        change = (req[1:] != req[:-1]).sum().item() + 1
        assert change == len(torch.unique(req))
    all_ids = torch.cat(seen)
    expected = torch.tensor(smoke_data.column("train", "request_id"))
    assert torch.equal(all_ids.sort().values, expected.sort().values)
    # no request is split across two batches
    per_batch = [set(r.tolist()) for r in seen]
    assert sum(len(s) for s in per_batch) == len(set().union(*per_batch))


def test_the_worlds_randomised_test_set_is_prepared(smoke_data):
    from tests.conftest import world

    assert smoke_data.splits == ("train", "valid", "test", "test_random")
    assert smoke_data.num_rows("test_random") == smoke_data.provenance["rows"]["test_random"] > 0
    assert smoke_data.num_rows("test_random") <= world().expected_rows("test_random")
    truth = smoke_data.truth("test_random")
    assert len(truth) == smoke_data.num_rows("test_random") and truth["is_random"].all()
    requests = smoke_data.column("test_random", "request_id")
    assert requests.min() > smoke_data.column("test", "request_id").max()
    # encoded through the training vocabulary, like every split
    b = next(smoke_data.batches("test_random", 512))
    sizes = torch.tensor([f.vocab_size for f in smoke_data.feature_map.categorical])
    assert (b["cat"] >= 0).all() and (b["cat"] < sizes).all()
