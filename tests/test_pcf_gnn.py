"""PCF-GNN's pieces: pair statistics, the window-only graph, pre-training, the frozen serving
store and the explicit pair table it is compared with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from methods.model_deepening.pcf_gnn import (
    CrossFeatureStore,
    PairTable,
    PCFGNNConfig,
    build_graph,
    pair_statistics,
    pretrain,
    relation_name,
)
from repro.errors import ConfigError

VOCAB, OOV = {"u": 31, "i": 21}, {"u": 30, "i": 20}  # indices 1..29 / 1..19 are values, the last is OOV
CFG = PCFGNNConfig(pairs=[["u", "i"]], dim=8, layers=2, crossnet_units=[16], epochs=150, lr=0.02, prior_strength=5.0)


def synthetic_log(n: int = 20_000, users: int = 30, items: int = 20, seed: int = 0):
    """Clicks whose pair CTR is low rank: sigmoid(-1.5 + 2 <a_u, b_i>), 2-dim factors, so a pair
    never seen together is predictable from each side's other pairs. Rows are in time order, and
    a quarter of the pairs (``held_out``) occurs only in the second half of the log."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(users, 2)), rng.normal(size=(items, 2))
    u = rng.integers(1, users, n)  # index 0 is 'missing' in the data contract: never drawn
    i = rng.integers(1, items, n)
    held_out = rng.random((users, items)) < 0.25
    first = np.arange(n) < n // 2
    keep = ~(first & held_out[u, i])
    u, i = u[keep], i[keep]
    p = 1 / (1 + np.exp(1.5 - 2 * (a[u] * b[i]).sum(1)))
    y = (rng.random(len(u)) < p).astype(np.float32)
    return u, i, y, p


def test_pair_statistics_match_a_groupby_and_smooth_toward_the_prior():
    u, i, y, _ = synthetic_log(2_000)
    st = pair_statistics(u, i, y, prior_strength=5.0)
    df = pd.DataFrame({"u": u, "i": i, "y": y}).groupby(["u", "i"])["y"].agg(["count", "sum"]).reset_index()
    assert len(st.a) == len(df)
    got = pd.DataFrame({"u": st.a, "i": st.b, "n": st.impressions, "c": st.clicks}).sort_values(["u", "i"])
    np.testing.assert_array_equal(got["n"].to_numpy(), df["count"].to_numpy())
    np.testing.assert_allclose(got["c"].to_numpy(), df["sum"].to_numpy())
    prior = y.mean()
    np.testing.assert_allclose(st.ctr, (st.clicks + 5 * prior) / (st.impressions + 5), rtol=1e-6)
    assert st.prior == pytest.approx(prior)


def test_the_graph_holds_only_pairs_of_the_window():
    u, i, y, _ = synthetic_log()
    w = 5_000  # in the first half: the held-out pairs occur only later
    graph, stats = build_graph({"u": u[:w], "i": i[:w]}, y[:w], VOCAB, CFG)
    edges = graph["u", relation_name("u", "i"), "i"].edge_index.numpy()
    in_window = set(zip(u[:w].tolist(), i[:w].tolist()))
    assert set(zip(edges[0].tolist(), edges[1].tolist())) == in_window
    later_only = set(zip(u[w:].tolist(), i[w:].tolist())) - in_window
    assert later_only, "the test needs pairs that occur only after the window"
    assert not later_only & set(zip(edges[0].tolist(), edges[1].tolist()))
    rev = graph["i", "rev_" + relation_name("u", "i"), "u"].edge_index.numpy()
    np.testing.assert_array_equal(rev, edges[::-1])


def test_an_unknown_pair_field_and_an_empty_window_are_config_errors():
    u, i, y, _ = synthetic_log(100)
    with pytest.raises(ConfigError, match="'x' is not a categorical field"):
        build_graph({"u": u, "i": i}, y, VOCAB, PCFGNNConfig(pairs=[["u", "x"]]))
    with pytest.raises(ConfigError, match="holds no rows"):
        build_graph({"u": u[:0], "i": i[:0]}, y[:0], VOCAB, CFG)


@pytest.fixture(scope="module")
def trained():
    u, i, y, p = synthetic_log()
    w = 6_000  # inside the first half (about 7,500 rows), where held-out pairs are absent
    graph, stats = build_graph({"u": u[:w], "i": i[:w]}, y[:w], VOCAB, CFG)
    gnn, history = pretrain(graph, CFG)
    return u, i, y, p, w, graph, stats, gnn, history


def test_pretraining_lowers_the_weighted_squared_error(trained):
    *_, history = trained
    assert history[-1] < 0.5 * history[0], (history[0], history[-1])


def test_the_serving_store_needs_no_graph_and_matches_the_encoder(trained):
    u, i, y, p, w, graph, stats, gnn, _ = trained
    store = CrossFeatureStore(gnn, graph, OOV)
    rel = relation_name("u", "i")
    e = graph["u", rel, "i"].edge_index
    with torch.no_grad():
        want = torch.sigmoid(gnn.edge_logits(graph, gnn.encode(graph))[rel])
    got = store({"u": e[0], "i": e[1]})[:, 0]
    torch.testing.assert_close(got, want)
    assert all(not q.requires_grad for q in store.parameters())
    # the store is two node tables and the CrossNet: O((N1 + N2) d), not O(N1 N2)
    assert store.stored_bytes() == (31 + 21) * 8 * 4 + sum(q.numel() * 4 for q in store.cross.parameters())


def test_the_gnn_generalises_to_pairs_never_seen_in_the_window_where_the_table_only_knows_the_prior(trained):
    u, i, y, p, w, graph, stats, gnn, _ = trained
    store = CrossFeatureStore(gnn, graph, OOV)
    table = PairTable(stats, CFG.pairs, VOCAB)
    seen = set(zip(u[:w].tolist(), i[:w].tolist()))
    unseen = np.array([(a, b) not in seen for a, b in zip(u[w:], i[w:])])
    ids = {"u": torch.from_numpy(u[w:][unseen]), "i": torch.from_numpy(i[w:][unseen])}
    truth = p[w:][unseen]
    gnn_pred, table_pred = store(ids)[:, 0].numpy(), table(ids)[:, 0].numpy()
    assert np.all(table_pred == stats[relation_name("u", "i")].prior)  # the table cannot tell them apart
    assert np.corrcoef(gnn_pred, truth)[0, 1] > 0.5


def test_the_pair_table_returns_the_window_statistic_for_seen_pairs_and_the_prior_otherwise():
    u, i, y, _ = synthetic_log(3_000)
    stats = {relation_name("u", "i"): pair_statistics(u, i, y, 5.0)}
    table = PairTable(stats, CFG.pairs, VOCAB)
    st = stats[relation_name("u", "i")]
    got = table({"u": torch.from_numpy(st.a), "i": torch.from_numpy(st.b)})[:, 0]
    torch.testing.assert_close(got, torch.from_numpy(st.ctr))
    seen = set(zip(st.a.tolist(), st.b.tolist()))
    missing = next((a, b) for a in range(1, 30) for b in range(1, 20) if (a, b) not in seen)
    out = table({"u": torch.tensor([missing[0]]), "i": torch.tensor([missing[1]])})
    assert out.item() == pytest.approx(st.prior)
    assert table.stored_bytes() == len(st.a) * 12


def test_pretraining_is_bit_reproducible_across_builds_and_the_callers_thread_count():
    # Large enough that the scatter-sums and matrix products run on several threads: without
    # pinned deterministic kernels two pre-trainings of this graph drift apart within a few steps.
    u, i, y, _ = synthetic_log(200_000, users=3_000, items=2_000, seed=1)
    cfg = PCFGNNConfig(pairs=[["u", "i"]], dim=8, layers=2, crossnet_units=[16], epochs=20, lr=0.02)
    graph, _ = build_graph({"u": u, "i": i}, y, {"u": 3_000, "i": 2_000}, cfg)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        runs = []
        for n in (2, 2, 1):
            torch.set_num_threads(n)
            runs.append(pretrain(graph, cfg))
            assert torch.get_num_threads() == n  # the caller's setting is restored
    finally:
        torch.set_num_threads(threads)
    (first, loss), *others = runs
    for gnn, other_loss in others:
        assert other_loss == loss
        for name, value in first.state_dict().items():
            assert torch.equal(value, gnn.state_dict()[name]), name
    assert torch.are_deterministic_algorithms_enabled() == deterministic
