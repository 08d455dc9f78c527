"""TorchRec's embedding engine beside the suite's own (issue 9: "TorchRec is the real engine for
model-parallel embedding tables beyond one device"): the HPC ladder's sparse rung (rung 2) on the
high-cardinality world, with its 16-wide table held by TorchRec in one process and sharded over
two, measured side by side with the suite's own sparse updates (measurement ``hpc_torchrec``).

Rows, each the same DeepFM, initial weights, rows, global batch and sample budget (rung 2's
settings: the columnar loader, batch 512, fp32, not compiled, the base learning rates):

- ``torch tables, SparseAdam``: the ladder's rung 2 (``nn.functional.embedding`` with sparse
  gradients, lazy ``SparseAdam`` on the touched rows);
- ``torch tables, row-wise Adagrad``: the same with the tables' optimizer changed to exact
  row-wise Adagrad (``RowWiseAdagrad`` below), the only optimizer fbgemm's CPU kernels run that
  TorchRec fuses into its backward (fbgemm 1.8 refuses Adam and partial row-wise Adam on the CPU:
  "not supported in CPU mode"). This row separates the optimizer's share from the engine's;
- ``TorchRec, 1 process``: the 16-wide table as one TorchRec table per categorical field in an
  ``EmbeddingBagCollection``, planned and wrapped by ``DistributedModelParallel`` (a gloo group of
  one), compute kernel ``fused``: fbgemm's CPU table-batched embedding, whose row-wise Adagrad
  update runs inside the backward pass (no gradient is materialised);
- ``TorchRec, N processes``: the same tables sharded table-wise over N torchrun processes (the
  only row-preserving sharding TorchRec plans on the CPU: table-wise, column-wise,
  table-column-wise or data-parallel; row-wise is GPU-only), each process training its share of
  every global batch; lookups and their gradients travel by all-to-all, the dense parameters'
  gradients by one all-reduce per step.

Choices the references leave open:
- fbgemm needs a table width divisible by 4, so DeepFM's width-1 first-order weights stay a torch
  table with sparse gradients and the row's own optimizer (row-wise Adagrad, exact); with N
  processes it is replicated and its sparse gradients are summed by gloo's sparse all-reduce every
  step;
- per-field tables (not the suite's one fused table with offsets): table-wise sharding needs more
  than one table, and row-wise Adagrad keeps one state per row, so splitting a table by rows
  changes nothing it computes; every row starts from the suite's initial table (``FullEmbedding``
  at the same seed, copied into TorchRec's shards), padding rows zero and masked as there;
- row-wise Adagrad as fbgemm's ``EXACT_ROWWISE_ADAGRAD``: a batch's gradients of a row are summed
  first, then state += mean(g^2) over the row, w -= lr * g / (sqrt(state) + eps); lr is the suite's
  embedding learning rate (3e-3, as Adam's), eps 1e-8. Adagrad is not tuned here: the AUC column
  says what the change of optimizer costs at the protocol's rate;
- the loss of each of N processes is scaled by 1/N and the dense gradients summed, so the N
  processes compute the single process's global-batch step (tested against it);
- the first step of every row (TorchRec's and fbgemm's first-call set-up) is not timed; times
  exclude evaluation; peak memory is summed over the processes (each holds its own copy of the
  in-memory data set, the same for every row).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.system_efficiency.ladder import (
    Rung,
    RungResult,
    TrainingConfig,
    build_model,
    describe_world,
    make_optimizers,
    open_world,
)
from repro.data.dataset import PreparedDataset
from repro.embeddings import EmbeddingLayer, FullEmbedding, embedding_layers
from repro.errors import ConfigError, TrainingError
from repro.io import atomic_write_json
from repro.measurements import register_measurement
from repro.metrics import auc
from repro.model import logit_of
from repro.profiling import PeakMemory
from repro.progress import progress
from repro.registry import ROOT

LOG_TAIL = 3000  # characters of the workers' log quoted in an error
SHARDING = "table_wise"  # the only row-preserving sharding TorchRec plans on the CPU (module docstring)


@dataclass(frozen=True)
class Engine:
    """How one row holds and updates its tables."""

    label: str
    torchrec: bool  # the 16-wide table in TorchRec (fused row-wise Adagrad) | a torch table
    optimizer: str  # the torch tables' optimizer: sparse_adam | rowwise_adagrad
    sharded: bool = False  # TorchRec's tables sharded over ``world_size`` processes


ENGINES = {
    "sparse_adam": Engine("torch tables, SparseAdam", torchrec=False, optimizer="sparse_adam"),
    "rowwise_adagrad": Engine("torch tables, row-wise Adagrad", torchrec=False, optimizer="rowwise_adagrad"),
    "torchrec": Engine("TorchRec, 1 process", torchrec=True, optimizer="rowwise_adagrad"),
    "torchrec_sharded": Engine("TorchRec, {n} processes", torchrec=True, optimizer="rowwise_adagrad", sharded=True),
}


@dataclass
class TorchRecConfig(TrainingConfig):
    model: str = "deepfm"
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    batches: list[int] = field(default_factory=lambda: [512, 4096])  # global batches: rung 2's, and the ladder's large one
    world_size: int = 2  # processes of the sharded row
    eps: float = 1e-8  # row-wise Adagrad's


# --------------------------------------------------------------------------- row-wise Adagrad
class RowWiseAdagrad(torch.optim.Optimizer):
    """Exact row-wise Adagrad (fbgemm's ``EXACT_ROWWISE_ADAGRAD``) for 2-D tables, with sparse or
    dense gradients: one accumulator per row, state += mean(g_row^2), row -= lr * g_row /
    (sqrt(state) + eps), a batch's gradients of a row summed first; rows with no gradient entry
    are left as they are (a dense gradient touches every row)."""

    def __init__(self, params, lr: float, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.dim() != 2:
                    raise TrainingError(f"RowWiseAdagrad updates 2-D tables; got a parameter of shape {tuple(p.shape)}")
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype)
                if p.grad.is_sparse:
                    g = p.grad.coalesce()
                    rows, values = g.indices()[0], g.values()
                else:
                    rows, values = torch.arange(p.shape[0]), p.grad
                acc = state["sum"].index_add_(0, rows, values.pow(2).mean(dim=1))[rows]
                p.index_add_(0, rows, values * (-group["lr"] / (acc.sqrt() + group["eps"])).unsqueeze(1))


# --------------------------------------------------------------------------- TorchRec's tables
class TorchRecTables(EmbeddingLayer):
    """A ``FullEmbedding``'s rows as one TorchRec table per field (its initial weights copied in),
    planned by TorchRec's sharding planner over the current process group and wrapped in
    ``DistributedModelParallel``; the row-wise Adagrad update is fused into the backward pass.
    Lookups mask padding (index 0) as ``FullEmbedding`` does, and honour the lookup-penalty
    contract; the table's parameters are TorchRec's, not the model's optimizers'."""

    def __init__(self, full: FullEmbedding, lr: float, eps: float) -> None:
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        from torchrec.distributed import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
        from torchrec.optim.rowwise_adagrad import RowWiseAdagrad as FusedRowWiseAdagrad

        super().__init__()
        self.dim = full.dim
        self.penalty_fields = list(full.penalty_fields)
        self._value_weight, self._value_offsets = full._value_weight, full._value_offsets
        sizes = [full._vocab[name] for name in self.penalty_fields]
        tables = [EmbeddingBagConfig(name=name, embedding_dim=full.dim, num_embeddings=n, feature_names=[name])
                  for name, n in zip(self.penalty_fields, sizes)]
        collection = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        apply_optimizer_in_backward(FusedRowWiseAdagrad, collection.parameters(), {"lr": lr, "eps": eps})
        world = torch.distributed.get_world_size()
        constraints = {name: ParameterConstraints(sharding_types=[SHARDING], compute_kernels=["fused"])
                       for name in self.penalty_fields}
        plan = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"),
                                        constraints=constraints).collective_plan(collection)
        self.tables = DistributedModelParallel(collection, device=torch.device("cpu"), plan=plan)
        placement = next(iter(plan.plan.values()))  # the collection's tables -> their ranks
        per_rank: dict[int, dict[str, int]] = {}
        for name, n in zip(self.penalty_fields, sizes):
            for rank in placement[name].ranks:
                per_rank.setdefault(rank, {})[name] = n
        self.plan = "; ".join(f"rank {rank}: {sum(tables.values()):,} rows ({', '.join(tables)})"
                              for rank, tables in sorted(per_rank.items()))
        starts = np.cumsum([0] + sizes)
        self.local_rows = 0
        weights = self.tables.state_dict()  # views of TorchRec's tables
        with torch.no_grad():
            for name, start in zip(self.penalty_fields, starts):
                for shard in weights[f"embedding_bags.{name}.weight"].local_shards():
                    (r0, c0), (n, d) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(full.weight[start + r0:start + r0 + n, c0:c0 + d])
                    self.local_rows += n

    def forward(self, cat: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        from torchrec import KeyedJaggedTensor

        b, f = cat.shape
        ids = KeyedJaggedTensor(keys=self.penalty_fields, values=cat.t().reshape(-1),
                                lengths=torch.ones(b * f, dtype=torch.int32))
        out = self.tables(ids)
        by_field = (out.wait() if hasattr(out, "wait") else out).to_dict()  # sharded: keys come grouped by rank
        out = torch.stack([by_field[name] for name in self.penalty_fields], dim=1)
        return self.remember(out * (cat != 0).unsqueeze(-1).to(out.dtype), cat)

    def stored_bytes(self) -> int:  # this process's rows
        return self.local_rows * self.dim * 4

    def optimizer_bytes(self) -> int:  # one fp32 accumulator per row
        return self.local_rows * 4


def use_torchrec_tables(model: nn.Module, lr: float, eps: float) -> TorchRecTables:
    """Replace the model's (only) wider-than-1 ``FullEmbedding`` by ``TorchRecTables``."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FullEmbedding) and child.dim > 1:
                swapped.append(TorchRecTables(child, lr, eps))
                setattr(parent, name, swapped[-1])
    if len(swapped) != 1:
        raise ConfigError(f"hpc_torchrec: expected one full embedding table wider than 1, found {len(swapped)}")
    return swapped[0]


# --------------------------------------------------------------------------- one row (each process)
@dataclass
class RowResult(RungResult):
    """A rung's result (speed, phases, memory, AUC curve) and what a row over processes adds."""

    comm_bytes_per_step: int = 0  # handed to collectives besides TorchRec's own all-to-alls
    plan: str = ""  # where TorchRec put each table

    @classmethod
    def from_json(cls, saved: dict) -> "RowResult":
        return cls(**{**saved, "rung": Rung(**saved["rung"]), "curve": [tuple(point) for point in saved["curve"]]})


def optimizers(model: nn.Module, engine: Engine, cfg: TorchRecConfig, rung: Rung, torch_tables: list[nn.Parameter],
               dense: list[nn.Parameter]) -> list[torch.optim.Optimizer]:
    """The torch tables' optimizer (the engine's), then the dense Adam (the ladder's rung 2)."""
    if engine.optimizer == "sparse_adam":
        return make_optimizers(model, rung, cfg)
    return [RowWiseAdagrad(torch_tables, lr=cfg.lr, eps=cfg.eps), torch.optim.Adam(dense, lr=cfg.lr)]


def all_reduce_sparse_(p: nn.Parameter) -> int:
    """Replace ``p``'s sparse gradient by the sum of every process's (gloo's sparse all-reduce, as
    ``repro.train``'s data parallelism does); returns the bytes this process sends."""
    g = p.grad.coalesce()
    sent = g.indices().numel() * g.indices().element_size() + g.values().numel() * g.values().element_size()
    torch.distributed.all_reduce(g)
    p.grad = g
    return sent


def all_reduce_dense_(params: list[nn.Parameter]) -> int:
    """Sum the dense gradients over the processes in one buffer; returns the bytes sent."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat.numel() * flat.element_size()


@torch.no_grad()
def sharded_test_auc(model: nn.Module, test: dict[str, torch.Tensor], y: np.ndarray, chunk: int = 65536) -> float:
    """Test AUC with every process predicting an equal slice (the last padded by repeating its last
    row: sharded lookups are collectives, so every process runs the same number of batches);
    rank 0's value is the AUC of all rows (the others return nan)."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    n = len(y)
    per = -(-n // world)
    idx = torch.arange(rank * per, (rank + 1) * per).clamp(max=n - 1)
    model.eval()
    out = []
    for start in range(0, per, chunk):
        part = idx[start:start + chunk]
        out.append(torch.sigmoid(logit_of(model({k: v.index_select(0, part) for k, v in test.items()})).float()))
    model.train()
    mine = torch.cat(out)
    every = [torch.empty_like(mine) for _ in range(world)]
    torch.distributed.all_gather(every, mine)
    return auc(y, torch.cat(every)[:n].double().numpy()) if rank == 0 else float("nan")


def train_row(cfg: TorchRecConfig, engine: Engine, data: PreparedDataset, batch_size: int) -> RowResult:
    """Train one row at global batch ``batch_size`` in this process (one of the group's; the module
    docstring)."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    rung = Rung(engine.label, batch_size=batch_size)  # rung 2: columnar loader, sparse rows, fp32
    model = build_model(data, cfg, cfg.model, rung)
    fused = use_torchrec_tables(model, cfg.lr, cfg.eps) if engine.torchrec else None
    layers = embedding_layers(model)
    # the torch tables (every table with TorchRec's off; the width-1 one with it on: replicated over
    # processes) and the dense parameters; TorchRec's own tables update themselves in the backward
    torch_tables = [p for layer in layers if not isinstance(layer, TorchRecTables) for p in layer.parameters()]
    table_ids = {id(p) for layer in layers for p in layer.parameters()}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    opts = optimizers(model, engine, cfg, rung, torch_tables, dense)
    test = next(data.batches("test", data.num_rows("test")))
    y_test = data.column("test", "label")
    steps_per_epoch = data.num_rows("train") // batch_size
    total = max(2, int(round(cfg.epochs * steps_per_epoch)))
    check_every = max(1, steps_per_epoch // cfg.evals_per_epoch)
    result = RowResult(rung, steps=total, plan=fused.plan if fused is not None else "")
    model.train()
    step, epoch = 0, 0
    with PeakMemory() as memory, progress(total, engine.label.format(n=world), cfg.progress and rank == 0,
                                          unit="step") as bar:
        while step < total:
            batches = data.batches("train", batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                                   shard=(rank, world))
            for _ in range(min(steps_per_epoch, total - step)):  # full batches only: every process agrees
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                for layer in layers:
                    layer.forget()
                out = model(batch)
                loss = model.loss(batch, out) + cfg.embedding_l2 * model.embedding_penalty()
                t2 = time.perf_counter()
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                (loss / world).backward()  # TorchRec's tables update here
                for layer in layers:
                    layer.forget()
                t3 = time.perf_counter()
                sent = 0
                if world > 1:
                    sent = all_reduce_dense_(dense) + sum(all_reduce_sparse_(p) for p in torch_tables if p.grad is not None)
                for opt in opts:
                    opt.step()
                t4 = time.perf_counter()
                step += 1
                if step > 1:  # the first step sets TorchRec and fbgemm up
                    result.data_s += t1 - t0
                    result.forward_s += t2 - t1
                    result.backward_s += t3 - t2
                    result.optimizer_s += t4 - t3
                    result.samples += batch_size
                    result.comm_bytes_per_step = sent
                bar.update(1)
                if step % check_every == 0 or step == total:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingError(f"hpc_torchrec {engine.label!r}: loss is {value} at step {step}")
                    result.curve.append((result.train_s, result.samples, sharded_test_auc(model, test, y_test)))
            epoch += 1
    result.test_auc = result.curve[-1][2]
    peak = torch.tensor([memory.peak_rss_mb])
    torch.distributed.all_reduce(peak)
    result.peak_rss_mb = float(peak)
    state = sum(v.numel() * v.element_size() for opt in opts for s in opt.state.values() for v in s.values()
                if torch.is_tensor(v))
    state = torch.tensor([state + (fused.optimizer_bytes() if fused is not None else 0)])
    torch.distributed.all_reduce(state)
    result.optimizer_bytes = int(state)
    return result


def worker(spec_path: Path) -> None:
    """One torchrun process of a row: train its part; rank 0 writes the row's result."""
    spec = json.loads(Path(spec_path).read_text())
    cfg = TorchRecConfig(**spec["config"])
    torch.distributed.init_process_group("gloo")
    try:
        world = torch.distributed.get_world_size()
        torch.set_num_threads(max(1, cfg.threads // world))
        data = PreparedDataset(Path(spec["data_root"]))  # prepared by the measurement's own process
        result = train_row(cfg, ENGINES[spec["engine"]], data, spec["batch_size"])
        if torch.distributed.get_rank() == 0:
            atomic_write_json(Path(spec["out"]), asdict(result))
    finally:
        torch.distributed.destroy_process_group()


def launch_row(cfg: TorchRecConfig, engine: str, batch_size: int, data_root: Path, work: Path) -> RowResult:
    """Run one row in its torchrun workers (one process included: every row runs the same way)."""
    processes = cfg.world_size if ENGINES[engine].sharded else 1
    name = f"{engine}-{batch_size}"
    spec, out, log = work / f"{name}.json", work / f"{name}.result.json", work / f"{name}.log"
    atomic_write_json(spec, {"config": asdict(cfg), "engine": engine, "batch_size": batch_size,
                             "data_root": str(data_root), "out": str(out)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "methods.system_efficiency.torchrec_worker", str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cfg.threads // processes)), "TMPDIR": str(work),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with open(log, "w") as sink:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=None if cfg.progress else sink, stderr=sink)
    if done.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-LOG_TAIL:]
        raise TrainingError(f"hpc_torchrec: row {engine!r} at batch {batch_size} ({processes} process(es)) failed "
                            f"with exit code {done.returncode}; the end of its log:\n{tail}")
    return RowResult.from_json(json.loads(out.read_text()))


def plot_engines(result: dict, path: Path, title: str) -> None:
    """Samples/s of every engine, grouped by batch."""
    from repro.plots import pyplot, save_figure

    col = result["columns"].index
    batches = list(dict.fromkeys(row[col("batch")] for row in result["rows"]))
    engines = list(dict.fromkeys(row[col("engine")] for row in result["rows"]))
    speed = {(row[col("engine")], row[col("batch")]): float(row[col("samples/s")].replace(",", ""))
             for row in result["rows"]}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        ax.bar([b + i * width for b in range(len(batches))], [speed.get((engine, b), 0) for b in batches],
               width=width, label=engine)
    ax.set_xticks([b + 0.4 - width / 2 for b in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_ylabel("training samples/s")
    ax.legend(fontsize=8)
    save_figure(fig, title, path)


@register_measurement("hpc_torchrec", config=TorchRecConfig, plot=plot_engines)
def hpc_torchrec(cfg: TorchRecConfig) -> dict[str, Any]:
    """Every engine of ``cfg.engines`` at every batch, each row its own torchrun launch (module docstring)."""
    unknown = [e for e in cfg.engines if e not in ENGINES]
    if unknown or not cfg.engines or not cfg.batches or cfg.world_size < 2:
        raise ConfigError(f"hpc_torchrec: engines must be among {list(ENGINES)} (got {unknown or cfg.engines}), "
                          f"batches non-empty (got {cfg.batches}) and world_size >= 2 (got {cfg.world_size})")
    data = open_world(cfg)  # prepared once here, read by every worker
    describe = describe_world(cfg, data)
    results: dict[tuple[str, int], RowResult] = {}
    with tempfile.TemporaryDirectory(prefix="hpc_torchrec-") as work:
        for batch in cfg.batches:
            for engine in cfg.engines:
                print(f"[torchrec] {ENGINES[engine].label.format(n=cfg.world_size)}, batch {batch:,}", flush=True)
                results[engine, batch] = launch_row(cfg, engine, batch, data.root, Path(work))

    rows = []
    for (engine, batch), r in results.items():
        base, adagrad = results.get(("sparse_adam", batch)), results.get(("rowwise_adagrad", batch))
        phases = " / ".join(f"{100 * x / max(r.train_s, 1e-9):.0f}" for x in (r.data_s, r.forward_s, r.backward_s,
                                                                              r.optimizer_s))
        label = ENGINES[engine].label.format(n=cfg.world_size)
        rows.append([
            f"{label} · {batch:,}", label, f"{batch:,}", ENGINES[engine].optimizer.replace("_", " "),
            f"{r.samples_per_s:,.0f}", f"{r.samples_per_s / base.samples_per_s:.2f}" if base else "–",
            f"{r.samples_per_s / adagrad.samples_per_s:.2f}" if adagrad else "–",
            phases, f"{r.peak_rss_mb:,.0f}", f"{r.optimizer_bytes / 2**20:,.1f}",
            f"{r.comm_bytes_per_step / 2**20:.2f}" if r.comm_bytes_per_step else "–",
            f"{r.test_auc:.4f}", f"{r.test_auc - base.test_auc:+.4f}" if base else "–",
        ])
    notes = [
        f"{cfg.model} {list(cfg.hidden_units)}, dim {cfg.dim}; {describe}; every row {cfg.epochs:g} epochs of the "
        "training split at its global batch (rung 2's settings otherwise: columnar loader, fp32, not compiled, no "
        f"batch-size scaling rule), lr {cfg.lr:g} for tables and dense layers (Adam for the dense ones in every "
        f"row), embedding L2 {cfg.embedding_l2:g} on looked-up rows, seed {cfg.seed}; {cfg.threads} threads shared "
        "out among a row's processes (gloo); the first step of each row is not timed; times exclude evaluation",
        "'x SparseAdam' and 'AUC - SparseAdam' compare with the row 'torch tables, SparseAdam' at the same batch, "
        "'x row-wise Adagrad' with 'torch tables, row-wise Adagrad' (the same optimizer as TorchRec's rows)",
        "'optimizer': the tables' optimizer; TorchRec rows fuse row-wise Adagrad into the backward pass (fbgemm's "
        "CPU kernels run no Adam), so their '% bwd' includes the table update and '% opt' is the dense Adam, the "
        "width-1 first-order table's row-wise Adagrad and, over several processes, the gradient exchange",
        "peak RSS: summed over a row's processes (each holds the in-memory data set); optimizer MiB: optimizer "
        "state over all processes; MiB sent / step: what each process hands to collectives besides TorchRec's own "
        "all-to-alls (the dense gradients' all-reduce and the first-order table's sparse all-reduce)",
    ]
    planned = [r.plan for (engine, _), r in results.items() if ENGINES[engine].sharded and r.plan]
    if planned:
        notes.append(f"TorchRec's plan over {cfg.world_size} processes (table-wise, compute kernel fused): {planned[0]}")
    columns = ["engine · batch", "engine", "batch", "optimizer", "samples/s", "x SparseAdam", "x row-wise Adagrad",
               "% data / fwd / bwd / opt", "peak RSS MB", "optimizer MiB", "MiB sent / step", "test AUC",
               "AUC - SparseAdam"]
    return {"columns": columns, "rows": rows, "notes": notes}
