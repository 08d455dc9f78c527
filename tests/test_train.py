"""The trainer: lookup penalty and sparse updates, early stopping, determinism, resuming after a kill."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import repro.train as trainer
from repro.embeddings import FullEmbedding, embedding_layers
from repro.registry import EMBEDDINGS, MODELS, ROOT
from repro.train import CHECKPOINT, Optimizers, TrainConfig, make_optimizers, predict, train, train_step

SMALL = {"hidden_units": [16], "dropout": 0.1}  # dropout: the torch RNG must be checkpointed too


def small_model(data, name="deepfm", seed=0, **model):
    torch.manual_seed(seed)
    return MODELS.build(name, {**SMALL, **model} if name != "lr" else {}, data.feature_map,
                        embedding={"name": "full", "dim": 8})


def cfg(**kw) -> TrainConfig:
    base = dict(batch_size=2048, epochs=1, evals_per_epoch=1, progress=False, threads=1, embedding_l2=1e-2)
    return TrainConfig(**{**base, **kw})


class WithoutRow:
    """A data set whose training batches never use one row of one field (it is mapped to OOV)."""

    def __init__(self, data, field: int, value: int) -> None:
        self.data, self.field, self.value = data, field, value
        self.feature_map = data.feature_map
        self.frequencies = data.frequencies

    @property
    def splits(self):
        return self.data.splits

    def num_rows(self, split):
        return self.data.num_rows(split)

    def column(self, split, name):
        return self.data.column(split, name)

    def batches(self, split, *args, **kwargs):
        for b in self.data.batches(split, *args, **kwargs):
            if split == "train":
                cat = b["cat"].clone()
                cat[:, self.field][cat[:, self.field] == self.value] = 1
                b = {**b, "cat": cat}
            yield b


def absent_row(data):
    """(field index, value) of a frequent user we will hide from training."""
    field = next(i for i, f in enumerate(data.feature_map.categorical) if f.name == "user_id")
    counts = np.bincount(data.column("train", "user_id"))
    counts[:2] = 0  # not padding, not the OOV index the hidden value is mapped to
    value = int(counts.argmax())
    return field, value


def row_of(model, field, value) -> torch.Tensor:
    emb = model.embed.categorical
    return emb.weight[emb.offsets[field] + value].detach().clone()


# -- the penalty and sparse updates ------------------------------------------------------------
def test_the_penalty_is_per_occurrence_and_pulls_only_the_rows_looked_up(smoke_data):
    emb = EMBEDDINGS.build("full", {"dim": 4, "init_std": 0.5}, smoke_data.feature_map)
    emb.train()
    cat = next(smoke_data.batches("train", 64, shuffle=True))["cat"]
    out = emb(cat)
    penalty = emb.penalty()
    assert torch.allclose(penalty, out.pow(2).sum() / 64)
    penalty.backward()
    rows = (cat + emb.offsets)[cat != 0]
    counts = torch.bincount(rows, minlength=emb.weight.shape[0]).unsqueeze(1).float()
    expected = 2 * counts * emb.weight.detach() / 64
    assert torch.allclose(emb.weight.grad, expected, atol=1e-7)
    assert (emb.weight.grad[counts.squeeze(1) == 0] == 0).all()  # unseen rows: exactly no pull
    emb.forget()
    assert emb.penalty() == 0
    emb.eval()
    emb(cat)
    assert emb.penalty() == 0  # nothing is remembered outside training


def test_the_frequency_scaled_penalty_weights_each_occurrence_by_n_over_count(smoke_data):
    """Mini-batch-aware L2: value v's occurrences weigh N / n_v, so rare values are pulled hardest."""
    emb = EMBEDDINGS.build("full", {"dim": 4, "init_std": 0.5}, smoke_data.feature_map)
    n = smoke_data.num_rows("train")
    emb.set_frequencies(smoke_data.frequencies, n)
    emb.train()
    cat = next(smoke_data.batches("train", 64, shuffle=True))["cat"]
    out = emb(cat)
    counts = torch.stack([torch.as_tensor(smoke_data.frequencies[f.name], dtype=torch.float64)[cat[:, i]]
                          for i, f in enumerate(smoke_data.feature_map.categorical)], dim=1)
    weight = (n / counts.clamp(min=1)).float()
    expected = (out.pow(2).sum(-1) * weight).sum() / 64
    assert torch.allclose(emb.penalty(), expected, rtol=1e-5)
    # per value and per epoch the pull is the same for head and tail: weight x count = N
    assert torch.allclose((weight * counts.float())[cat != 0], torch.full_like(weight[cat != 0], float(n)))
    with pytest.raises(ValueError, match="frequency"):
        emb.set_frequencies(smoke_data.frequencies, n, by="frequncy")


def test_every_embedding_layer_is_found_first_order_tables_included(smoke_data):
    model = small_model(smoke_data, "deepfm")
    layers = embedding_layers(model)
    assert len(layers) == 2 and all(isinstance(m, FullEmbedding) for m in layers)
    assert sorted(m.dim for m in layers) == [1, 8]
    assert model.embedding_layers() == layers


@pytest.mark.parametrize("embedding_optimizer", ["sparse_adam", "adam"])
def test_a_row_absent_from_every_batch_keeps_its_values(smoke_data, embedding_optimizer):
    field, value = absent_row(smoke_data)
    data = WithoutRow(smoke_data, field, value)
    model = small_model(smoke_data)
    before = row_of(model, field, value)
    c = cfg(embedding_optimizer=embedding_optimizer, embedding_l2=1e-1)
    train(model, data, c, seed=0)
    assert torch.equal(row_of(model, field, value), before)
    # ... while the rows the batches used moved and were pulled by the penalty (below).


def test_coupled_weight_decay_erases_an_absent_row(smoke_data):
    """The old protocol, for contrast: Adam(weight_decay) moves every row at every step."""
    field, value = absent_row(smoke_data)
    data = WithoutRow(smoke_data, field, value)
    model = small_model(smoke_data)
    before = row_of(model, field, value)
    c = cfg(embedding_l2=0.0, grad_clip_norm=0.0)
    opt = Optimizers({"all": torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)})
    model.train()
    for batch in data.batches("train", 2048, shuffle=True, seed=0, epoch=0):
        train_step(model, batch, opt, c)
    after = row_of(model, field, value)
    assert after.norm() < 0.5 * before.norm()


def test_rows_in_batches_are_pulled_by_the_penalty(smoke_data):
    norms = {}
    for l2 in (0.0, 1.0):
        model = small_model(smoke_data)
        train(model, smoke_data, cfg(embedding_l2=l2), seed=0)
        norms[l2] = model.embed.categorical.weight.detach().norm()
    assert norms[1.0] < 0.95 * norms[0.0]  # measured: ~0.87 after one epoch


@pytest.mark.parametrize("embedding_optimizer", ["sparse_adam", "adam"])
def test_sparse_and_dense_embedding_optimizers_both_train(smoke_data, embedding_optimizer):
    model = small_model(smoke_data)
    c = cfg(embedding_optimizer=embedding_optimizer)
    opt = make_optimizers(model, c)
    assert ("embedding" in opt.named) and isinstance(opt.named["embedding"], torch.optim.SparseAdam) == (
        embedding_optimizer == "sparse_adam")
    model.train()
    losses = []
    for batch in itertools.islice(smoke_data.batches("train", 1024, shuffle=True), 40):
        losses.append(train_step(model, batch, opt, c))
    weight = model.embed.categorical.weight
    assert weight.grad is not None and weight.grad.is_sparse == (embedding_optimizer == "sparse_adam")
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.05


def test_clipping_counts_sparse_gradients_coalesced():
    w = torch.nn.Parameter(torch.zeros(5, 2))
    d = torch.nn.Parameter(torch.zeros(3))
    w.grad = torch.sparse_coo_tensor(torch.tensor([[1, 1, 3]]), torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]]),
                                     (5, 2), check_invariants=True)
    d.grad = torch.tensor([0.0, 0.0, 0.0])
    assert trainer.clip_gradients([w, d], 1.0) == pytest.approx(5.0, rel=1e-5)
    assert w.grad.is_sparse and torch.allclose(w.grad.to_dense().norm(), torch.tensor(1.0), atol=1e-5)


# -- early stopping ----------------------------------------------------------------------------
def test_plateau_decays_the_lr_patience_stops_and_the_best_weights_return(smoke_data, monkeypatch):
    sequence = iter([0.60, 0.55, 0.70, 0.65, 0.68, 0.99])
    states = []

    def fake_auc(y, p):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(sequence)

    monkeypatch.setattr(trainer, "auc", fake_auc)
    model = small_model(smoke_data)
    result = train(model, smoke_data, cfg(batch_size=16384, epochs=10, lr=1e-3), seed=0)
    assert [h["valid_auc"] for h in result.history] == [0.60, 0.55, 0.70, 0.65, 0.68]
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0, 4.0, 5.0]
    # 0.55: plateau -> lr x 0.1; 0.70 resets the count; 0.65 -> x 0.1 again; 0.68: 2nd in a row, stop.
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert [h["embedding_lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert result.stopped_by == "early_stopping" and result.best_valid_auc == 0.70
    assert result.best_step == 3 * result.steps // 5
    final = model.state_dict()
    assert all(torch.equal(final[k], states[2][k]) for k in final)
    assert not all(torch.equal(final[k], states[4][k]) for k in final)


# -- determinism and resuming ------------------------------------------------------------------
def fingerprint(model, data, result):
    history = [{k: h[k] for k in ("step", "epoch", "valid_auc", "loss", "lr")} for h in result.history]
    return history, predict(model, data, "test", 65536), (result.steps, result.best_step, result.stopped_by)


RESUME = dict(epochs=3, evals_per_epoch=2, patience=5, lr=3e-3)


def test_the_same_seed_gives_the_same_numbers(smoke_data):
    runs = []
    for _ in range(2):
        model = small_model(smoke_data)
        runs.append(fingerprint(model, smoke_data, train(model, smoke_data, cfg(epochs=2, evals_per_epoch=2), seed=3)))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]


class Interrupt(Exception):
    pass


def test_a_run_interrupted_mid_epoch_resumes_bit_for_bit(smoke_data, tmp_path, monkeypatch):
    model = small_model(smoke_data)
    reference = fingerprint(model, smoke_data, train(model, smoke_data, cfg(**RESUME), seed=1))

    first = math.ceil(math.ceil(smoke_data.num_rows("train") / 2048) / 2)  # the first (mid-epoch) checkpoint

    def stop(step):
        if step == first + 7:  # 7 steps after the first checkpoint, still inside epoch 0
            raise Interrupt

    monkeypatch.setattr(trainer, "_after_step", stop)
    with pytest.raises(Interrupt):
        train(small_model(smoke_data), smoke_data, cfg(**RESUME), seed=1, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert saved["progress"]["step"] == first and saved["progress"]["pos"] == first and saved["progress"]["epoch"] == 0
    monkeypatch.setattr(trainer, "_after_step", None)
    model = small_model(smoke_data, seed=123)  # whatever the init: the checkpoint's weights win
    resumed = fingerprint(model, smoke_data, train(model, smoke_data, cfg(**RESUME), seed=1, checkpoint_dir=tmp_path))
    assert resumed[0] == reference[0] and resumed[2] == reference[2]
    assert np.array_equal(resumed[1], reference[1])
    # A finished checkpoint: calling again only restores the best weights.
    model = small_model(smoke_data)
    again = fingerprint(model, smoke_data, train(model, smoke_data, cfg(**RESUME), seed=1, checkpoint_dir=tmp_path))
    assert again[0] == reference[0] and np.array_equal(again[1], reference[1])


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    sys.path.insert(0, {root!r})
    from repro.data.dataset import PreparedDataset
    from repro.registry import MODELS
    from repro.train import TrainConfig, predict, train
    data = PreparedDataset(sys.argv[1])
    torch.manual_seed(0)
    model = MODELS.build("deepfm", {small!r}, data.feature_map, embedding={{"name": "full", "dim": 8}})
    cfg = TrainConfig(**{cfg!r})
    result = train(model, data, cfg, seed=2, checkpoint_dir=sys.argv[2] if sys.argv[2] != "-" else None)
    np.save(sys.argv[3] + ".npy", predict(model, data, "test", 65536))
    json.dump([h["valid_auc"] for h in result.history], open(sys.argv[3] + ".json", "w"))
""")


def test_a_run_killed_by_sigkill_resumes_bit_for_bit(smoke_data, tmp_path):
    c = dict(batch_size=2048, progress=False, threads=1, embedding_l2=1e-2, **{**RESUME, "epochs": 4})
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), small=SMALL, cfg=c))
    ckpt = tmp_path / "ckpt"

    def start(checkpoint_dir, out):
        return subprocess.Popen([sys.executable, str(script), str(smoke_data.root), checkpoint_dir, str(tmp_path / out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    reference = start("-", "reference")  # uninterrupted, alongside (one thread each)
    victim = start(str(ckpt), "victim")
    deadline = time.monotonic() + 120
    while not (ckpt / CHECKPOINT).exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read().decode()
    assert (ckpt / CHECKPOINT).exists() and not (tmp_path / "victim.json").exists()
    resumed = start(str(ckpt), "resumed")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    ref_auc = json.loads((tmp_path / "reference.json").read_text())
    assert json.loads((tmp_path / "resumed.json").read_text()) == ref_auc and len(ref_auc) == 8
    assert np.array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "reference.npy"))
    assert [p for p in ckpt.iterdir() if p.name != CHECKPOINT] == []  # no temp file left behind
