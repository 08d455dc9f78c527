"""One trainer for every model: optimise, early-stop on validation AUC, predict in row order.

The protocol (FuxiCTR/BARS style, the same for every row of a table, LR included):

- **Regularisation.** Embedding tables get no weight decay: the loss carries
  ``embedding_l2 * penalty``, where every embedding layer's ``penalty()`` is the squared norm of
  the vectors it looked up in this batch / batch size, each occurrence of value v weighted by
  N / n_v (mini-batch-aware L2: the full-table L2 in expectation, applied only to the rows a batch
  uses; see ``repro.embeddings.EmbeddingLayer``). Rows absent from a batch are untouched. Dense parameters
  (MLP, cross layers, dense-field vectors, biases) get coupled ``weight_decay`` in their optimizer.
- **Optimizers.** The dense part uses ``optimizer`` (Adam); embedding tables use ``SparseAdam``
  (lazy Adam: sparse gradients, moments and updates only for the rows a batch touched) with
  ``embedding_optimizer: sparse_adam``, or a dense ``Adam`` (the old, full-table update) with
  ``embedding_optimizer: adam``.
- **Clipping.** ``grad_clip_norm`` clips the global norm over every gradient, dense and sparse:
  sparse gradients are coalesced first (duplicate rows summed), so their norm is the norm of the
  gradient they represent, and they are scaled by the same factor as the dense ones.
- **Early stopping.** Validation AUC is evaluated ``evals_per_epoch`` times per epoch (the last at
  the epoch's end). An evaluation without a better AUC multiplies every learning rate by
  ``lr_decay`` and counts against ``patience``; ``patience`` such evaluations in a row stop the
  run. The best weights are kept and restored at the end.
- **Resuming.** With a ``checkpoint_dir`` (and ``checkpoint: true``) every evaluation writes
  ``checkpoint.pt`` atomically; a later call with the same folder resumes from it. An epoch's
  shuffling depends on (seed, epoch) only, so resuming mid-epoch skips the batches already used,
  and a resumed run equals an uninterrupted one bit for bit on the CPU.

Determinism on the CPU: the model is initialised after ``torch.manual_seed(seed)``, batches are
shuffled by a generator seeded from (seed, epoch), and the torch RNG (dropout) is checkpointed,
so the same seed on the same machine and thread count gives the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from repro.data.dataset import PreparedDataset
from repro.embeddings import EmbeddingLayer, embedding_layers
from repro.errors import ConfigError, DataError, TrainingError
from repro.io import atomic_write
from repro.metrics import auc
from repro.model import CTRModel, logit_of
from repro.profiling import PHASES, PhaseClock, count_flops, optimizer_state_bytes
from repro.progress import progress

CHECKPOINT = "checkpoint.pt"  # the file ``train`` writes into (and resumes from) ``checkpoint_dir``
_CHECKPOINT_VERSION = 1

GPU_LOSS_READ_EVERY = 50  # steps between loss reads (host syncs) on a GPU; see ``loss_read_every``

# Test hook: called with the global step after every optimizer step (lets tests interrupt a run).
_after_step: Optional[Callable[[int], None]] = None


@dataclass
class TrainConfig:
    """The training protocol; ``conf/train/default.yaml`` holds every key with its default.

    ``lr``, ``embedding_lr`` and ``embedding_l2`` were chosen once for all models by a small
    validation sweep (see the yaml); ``weight_decay`` (dense parameters only) stays 0, as in BARS's
    tuned baselines (``net_regularizer: 0``): the dense part is small next to the tables.
    """

    optimizer: str = "adam"  # dense parameters: adam | adagrad | sgd
    lr: float = 3e-3  # dense parameters
    weight_decay: float = 0.0  # coupled L2 on dense parameters only (never on embedding tables)
    embedding_optimizer: str = "sparse_adam"  # sparse_adam (lazy, touched rows only) | adam (dense)
    embedding_lr: Optional[float] = None  # null = lr
    embedding_l2: float = 1e-4  # strength of the penalty on looked-up embedding vectors
    # frequency: each occurrence of value v weighted N / n_v (mini-batch-aware L2, = full-table L2
    # in expectation); occurrence: weight 1. See repro.embeddings.EmbeddingLayer.
    embedding_l2_by: str = "frequency"
    batch_size: int = 4096
    eval_batch_size: int = 65536
    epochs: int = 8  # at most; early stopping usually ends a run before
    evals_per_epoch: int = 1  # validation evaluations (and checkpoints) per epoch
    patience: int = 2  # evaluations in a row without a better validation AUC before stopping
    lr_decay: float = 0.1  # every lr is multiplied by this at an evaluation without improvement
    grad_clip_norm: float = 10.0  # global norm over dense and (coalesced) sparse gradients; 0 = off
    threads: int = 2
    max_seconds: float = 0.0  # 0 = no budget; otherwise training stops at the budget
    device: str = "cpu"  # cpu | cuda | auto (cuda when present)
    checkpoint: bool = True  # write a resumable checkpoint at every evaluation (when given a folder)
    progress: bool = True
    # Data-parallel training (repro.distributed): world_size processes launched with torchrun (gloo
    # on the CPU, NCCL on a GPU), each training on its part of every batch, `threads` shared out
    # among them. comm_hook: how DDP sends dense gradients: none (fp32 all-reduce) | fp16 |
    # powersgd (rank 1); sparse embedding gradients always travel uncompressed (indices + values).
    world_size: int = 1
    comm_hook: str = "none"
    # What a step reads: the split trained on (a cascade's pre-ranker trains on its candidate log,
    # `candidates_train`, whose unshown rows have no label: its loss must handle them) and whether
    # a batch keeps every row of a request together (listwise and pairwise losses).
    train_split: str = "train"
    group_by_request: bool = False
    # Labelled splits whose predictions the run keeps beside its metrics (predictions/<split>.npy),
    # for a student that reads this run as its teacher (PFD distils on the training split); the
    # predictions on unlabelled splits are always kept.
    keep_predictions: list = field(default_factory=list)


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (``torch.distributed`` is initialised)."""

    rank: int
    world_size: int
    comm_hook: str = "none"


COMM_HOOKS = ("none", "fp16", "powersgd")


@dataclass
class TrainResult:
    best_valid_auc: float
    best_step: int
    steps: int
    epochs_run: float
    samples: int
    train_seconds: float
    data_seconds: float
    eval_seconds: float
    stopped_by: str
    history: list[dict] = field(default_factory=list)
    # The profiling layer's figures (repro.profiling): training steps' seconds per phase, the
    # matrix-product FLOPs of one training sample (forward and backward, counted on the first step
    # with a full batch), and the bytes the optimizers hold at the end.
    phase_seconds: dict[str, float] = field(default_factory=dict)
    flops_per_sample: Optional[float] = None
    optimizer_state_bytes: int = 0
    # Data-parallel runs: processes, and the gradient bytes each handed to collectives per step.
    world_size: int = 1
    comm_bytes_per_step: Optional[float] = None


# -- optimizers --------------------------------------------------------------------------------
class Optimizers:
    """The trainer's optimizers as one: ``dense`` (everything but embedding tables) and the
    embedding tables' (``embedding``: SparseAdam or Adam; ``embedding_dense``: Adam for the
    parameters of embedding layers that cannot give sparse gradients)."""

    def __init__(self, named: dict[str, torch.optim.Optimizer]) -> None:
        self.named = named

    def params(self) -> list[torch.nn.Parameter]:
        return [p for opt in self.named.values() for g in opt.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.named.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.named.values():
            opt.step()

    def scale_lr(self, factor: float) -> None:
        for opt in self.named.values():
            for g in opt.param_groups:
                g["lr"] *= factor

    def lrs(self) -> dict[str, float]:
        return {name: opt.param_groups[0]["lr"] for name, opt in self.named.items()}

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.named.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.named):
            raise TrainingError(f"checkpoint holds optimizers {sorted(state)}, this run has {sorted(self.named)}")
        for name, opt in self.named.items():
            opt.load_state_dict(state[name])


def _dense_optimizer(params: list, cfg: TrainConfig, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer {cfg.optimizer!r}; expected adam, adagrad or sgd")


def _unique(params) -> list[torch.nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def make_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> Optimizers:
    """Split the parameters into embedding tables and the dense rest and build their optimizers.

    Sets ``sparse_grad`` on every embedding layer that supports it when
    ``cfg.embedding_optimizer == 'sparse_adam'`` (and clears it otherwise).
    """
    if cfg.embedding_optimizer not in ("sparse_adam", "adam"):
        raise ConfigError(f"train.embedding_optimizer: unknown {cfg.embedding_optimizer!r}; expected sparse_adam or adam")
    sparse = cfg.embedding_optimizer == "sparse_adam"
    layers = embedding_layers(model)
    for layer in layers:
        layer.sparse_grad = sparse and layer.supports_sparse_grad
    emb_lr = cfg.lr if cfg.embedding_lr is None else cfg.embedding_lr
    sparse_params = _unique(p for layer in layers for p in layer.sparse_parameters())
    sparse_ids = {id(p) for p in sparse_params}
    emb_params = _unique(p for layer in layers for p in layer.parameters() if id(p) not in sparse_ids)
    emb_ids = sparse_ids | {id(p) for p in emb_params}
    dense_params = _unique(p for p in model.parameters() if id(p) not in emb_ids)
    named: dict[str, torch.optim.Optimizer] = {}
    if dense_params:
        named["dense"] = _dense_optimizer(dense_params, cfg, cfg.lr, cfg.weight_decay)
    if sparse_params:
        named["embedding"] = torch.optim.SparseAdam(sparse_params, lr=emb_lr)
    if emb_params:
        named["embedding" if not sparse else "embedding_dense"] = torch.optim.Adam(emb_params, lr=emb_lr)
    if not named:
        raise ConfigError("the model has no trainable parameters")
    return Optimizers(named)


make_optimizer = make_optimizers  # the old name


def clip_gradients(params, max_norm: float) -> float:
    """Scale every gradient so that their global 2-norm is at most ``max_norm``; returns the norm.

    Sparse gradients are coalesced in place first, so the norm counts a row's summed gradient,
    exactly as the dense equivalent would (``clip_grad_norm_`` does not take sparse gradients).
    """
    grads = []
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            if not g.is_coalesced():
                g = g.coalesce()
                p.grad = g
            grads.append(g._values())
        else:
            grads.append(g)
    if not grads:
        return 0.0
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef)
    return float(total)


def train_step(model: CTRModel, batch: dict[str, torch.Tensor], optimizers: Optimizers, cfg: TrainConfig,
               layers: list[EmbeddingLayer] | None = None, clock: PhaseClock | None = None,
               read_loss: bool = True, net: torch.nn.Module | None = None,
               loss_scale: float = 1.0, after_backward: Callable[[], None] | None = None) -> float | torch.Tensor:
    """One optimizer step on ``batch``; returns the data loss (without the penalty).

    ``read_loss`` (default) reads the loss as a float and fails on a non-finite one; without it the
    detached loss tensor is returned unread, so a GPU step needs no host sync (the caller checks
    it later). ``clock`` times the forward, backward and optimizer phases. ``net`` is what runs
    the forward pass (a ``DistributedDataParallel`` wrapper of ``model``; default ``model``);
    the optimised loss (data loss and penalty) is multiplied by ``loss_scale``; ``after_backward``
    runs between the backward pass and clipping (a data-parallel run all-reduces its sparse
    gradients there)."""
    layers = embedding_layers(model) if layers is None else layers
    if clock is not None:
        clock.start()
    for layer in layers:
        layer.forget()
    loss = model.loss(batch, (net or model)(batch))
    loss_value: float | torch.Tensor = loss.detach()
    if read_loss:
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingError(f"loss is {loss_value}; try a lower train.lr (now {cfg.lr}) or another seed")
    if cfg.embedding_l2 > 0 and layers:
        loss = loss + cfg.embedding_l2 * sum(layer.penalty() for layer in layers)
    if loss_scale != 1.0:
        loss = loss * loss_scale
    if clock is not None:
        clock.mark("forward")
    optimizers.zero_grad(set_to_none=True)
    loss.backward()
    for layer in layers:
        layer.forget()
    if after_backward is not None:
        after_backward()
    if clock is not None:
        clock.mark("backward")
    if cfg.grad_clip_norm > 0:
        clip_gradients(optimizers.params(), cfg.grad_clip_norm)
    optimizers.step()
    if clock is not None:
        clock.mark("optimizer")
    return loss_value


def loss_read_every(device: torch.device) -> int:
    """Steps between reads of the loss: every step on the CPU (free there, and a non-finite loss
    is named at its step), every ``GPU_LOSS_READ_EVERY`` on a GPU (each read is a host sync)."""
    return 1 if device.type == "cpu" else GPU_LOSS_READ_EVERY


# -- data parallelism --------------------------------------------------------------------------
@dataclass
class CommCount:
    """Gradient bytes this rank handed to collectives (what it sends into each all-reduce, not
    the wire traffic of the algorithm), and the steps they were counted over."""

    bytes: int = 0
    steps: int = 0


def _dense_bytes(bucket, hook: str, state) -> int:
    """Bytes a dense bucket sends: fp32 as is, fp16 halved, PowerSGD's P and Q for each matrix
    it compresses (after its warm-up; vectors and matrices not worth compressing go whole)."""
    if hook == "fp16":
        return bucket.buffer().numel() * 2
    if hook == "powersgd" and state.iter >= state.start_powerSGD_iter:
        total = 0
        for g in bucket.gradients():
            if g.dim() < 2:
                total += g.numel() * g.element_size()
                continue
            n, m = g.shape[0], g.numel() // g.shape[0]
            r = min(n, m, state.matrix_approximation_rank)
            compressed = (n + m) * r
            total += (compressed if n * m >= state.min_compression_rate * compressed else n * m) * g.element_size()
        return total
    return bucket.buffer().numel() * bucket.buffer().element_size()


def _data_parallel(model: torch.nn.Module, device: torch.device, parallel: DataParallel,
                   sparse_params: list[torch.nn.Parameter]):
    """``model`` in ``DistributedDataParallel`` with the chosen hook (wrapped to count bytes) for
    the dense gradients; a function that all-reduces the sparse ones; the byte counter; a gloo
    group for the trainer's own small collectives.

    DDP recognises sparse gradients only from ``nn.Embedding`` modules, and adrepro's embedding
    layers hold their tables themselves, so the tables with sparse gradients are left out of DDP
    and their gradients all-reduced after the backward pass as (indices, values): gloo's sparse
    all-reduce on the CPU; on a GPU (NCCL has none) densified first, which is correct but sends the
    whole table: model-parallel tables are TorchRec's job."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel

    sparse_ids = {id(p) for p in sparse_params}
    ignored = [name for name, p in model.named_parameters() if id(p) in sparse_ids]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  broadcast_buffers=False)
    comm = CommCount()
    state = None
    if parallel.comm_hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1, start_powerSGD_iter=2)
    dense_hook = {"none": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
                  "powersgd": powerSGD_hook.powerSGD_hook}[parallel.comm_hook]

    def hook(hook_state, bucket):
        comm.bytes += _dense_bytes(bucket, parallel.comm_hook, state)
        return dense_hook(state, bucket)

    net.register_comm_hook(state, hook)

    def sync_sparse() -> None:
        for p in sparse_params:
            if p.grad is None:
                continue
            g = p.grad.coalesce()
            if device.type == "cuda":
                g = g.to_dense()
                comm.bytes += g.numel() * g.element_size()
            else:
                comm.bytes += g._indices().numel() * 8 + g._values().numel() * g._values().element_size()
            torch.distributed.all_reduce(g)
            p.grad = g.div_(parallel.world_size)

    meta_group = torch.distributed.new_group(backend="gloo")
    return net, sync_sparse, comm, meta_group


# -- helpers -----------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not (name == "cuda" or name.startswith("cuda:")):
        raise ConfigError(f"train.device={name!r}: expected cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` on ``device``; to a GPU through pinned memory, so the copy does not block the host."""
    if device.type == "cpu":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: CTRModel, data: PreparedDataset, split: str, batch_size: int) -> np.ndarray:
    """Click probabilities for every row of ``split``, in the split's row order."""
    was_training = model.training
    data.raw_ids = uses_raw_ids(model)
    model.eval()
    device = next(model.parameters()).device
    # The sigmoid in fp32 whatever the model computed in: a bf16 sigmoid ties many predictions.
    out = [torch.sigmoid(logit_of(model(to_device(b, device))).float())
           for b in data.batches(split, batch_size, shuffle=False)]
    model.train(was_training)
    p = torch.cat(out).double().cpu().numpy()
    if not np.isfinite(p).all():
        raise TrainingError(f"the model predicts {int((~np.isfinite(p)).sum())} non-finite values on {split!r} "
                            f"(its weights diverged); try a lower train.lr or another seed")
    return p


def uses_raw_ids(model: torch.nn.Module) -> bool:
    """Whether any embedding layer of ``model`` hashes raw values (batches must carry ``raw``)."""
    return any(layer.uses_raw_ids for layer in embedding_layers(model))


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class _Progress:
    """Everything the loop carries between steps; what a checkpoint stores besides the weights."""

    step: int = 0
    epoch: int = 0  # the epoch in progress
    pos: int = 0  # batches of ``epoch`` already consumed
    samples: int = 0
    train_s: float = 0.0
    data_s: float = 0.0
    eval_s: float = 0.0
    elapsed_s: float = 0.0  # wall time (for max_seconds), summed over resumed pieces
    best_auc: float = -1.0
    best_step: int = 0
    bad_evals: int = 0
    stopped_by: str = ""  # "" while running
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_n: int = 0
    history: list = field(default_factory=list)
    phase_s: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    flops_per_sample: Optional[float] = None


def _save_checkpoint(path: Path, model, optimizers: Optimizers, best_state, st: _Progress, seed: int,
                     steps_per_epoch: int) -> None:
    payload = {
        "version": _CHECKPOINT_VERSION,
        "seed": seed,
        "steps_per_epoch": steps_per_epoch,
        "model": model.state_dict(),
        "optimizers": optimizers.state_dict(),
        "lrs": optimizers.lrs(),
        "best_state": best_state,
        "progress": {k: getattr(st, k) for k in _Progress.__dataclass_fields__},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, model, optimizers: Optimizers, seed: int, steps_per_epoch: int, device):
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: say which and how to recover
        raise TrainingError(f"cannot read the checkpoint {path}: {e} (delete it to start over)") from e
    if ck.get("version") != _CHECKPOINT_VERSION or ck.get("seed") != seed or ck.get("steps_per_epoch") != steps_per_epoch:
        raise TrainingError(f"the checkpoint {path} belongs to another run (seed {ck.get('seed')}, "
                            f"{ck.get('steps_per_epoch')} steps per epoch); delete it to start over")
    model.load_state_dict(ck["model"])
    optimizers.load_state_dict(ck["optimizers"])
    torch.set_rng_state(ck["torch_rng"].cpu())
    if ck["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["cuda_rng"]])
    return ck["best_state"], _Progress(**ck["progress"])


# -- the trainer -------------------------------------------------------------------------------
def train(model: CTRModel, data: PreparedDataset, cfg: TrainConfig, seed: int,
          checkpoint_dir: Path | str | None = None, parallel: DataParallel | None = None) -> TrainResult:
    """Train ``model`` (already initialised) and leave it holding its best validation weights.

    With ``checkpoint_dir`` and ``cfg.checkpoint``, resumes from ``checkpoint_dir/checkpoint.pt``
    when it exists and (re)writes it at every evaluation; the caller deletes it when done.

    With ``parallel`` (one rank of a data-parallel run, ``repro.distributed`` launches them) the
    model is wrapped in ``DistributedDataParallel`` and this rank trains on its part of every
    batch (``PreparedDataset.batches(shard=...)``); each rank's loss is scaled by its share of
    the batch's rows, so the averaged gradient is the gradient of the whole batch's mean loss,
    as in one process. Every rank evaluates the whole validation split with the same weights, so
    every rank takes the same early-stopping decisions. No checkpoint is written.
    """
    if cfg.patience < 1 or cfg.evals_per_epoch < 1 or not 0 < cfg.lr_decay <= 1:
        raise ConfigError("train: patience and evals_per_epoch must be >= 1 and lr_decay in (0, 1]")
    if cfg.world_size < 1 or cfg.comm_hook not in COMM_HOOKS:
        raise ConfigError(f"train: world_size must be >= 1 (got {cfg.world_size}) and comm_hook one of "
                          f"{COMM_HOOKS} (got {cfg.comm_hook!r})")
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model.to(device)
    optimizers = make_optimizers(model, cfg)
    net, sync_sparse, comm, shard, meta_group = model, None, None, None, None
    if parallel is not None:
        sparse = [p for layer in embedding_layers(model) for p in layer.sparse_parameters()]
        net, sync_sparse, comm, meta_group = _data_parallel(model, device, parallel, sparse)
        shard = (parallel.rank, parallel.world_size)
        checkpoint_dir = None
    layers = embedding_layers(model)
    data.raw_ids = uses_raw_ids(model)
    for layer in layers:  # the penalty's per-value weights, from the train-only frequencies
        layer.set_frequencies(data.frequencies, data.num_rows("train"), by=cfg.embedding_l2_by)
    if cfg.train_split not in data.splits or cfg.train_split == "valid":
        raise DataError(f"train.train_split={cfg.train_split!r}: expected one of the data's splits other than "
                        f"'valid' ({list(data.splits)})")
    steps_per_epoch = math.ceil(data.num_rows(cfg.train_split) / cfg.batch_size)
    # Evaluations inside an epoch; the last one is at the epoch's end, whatever its batch count.
    mid_evals = {math.ceil(k * steps_per_epoch / cfg.evals_per_epoch) for k in range(1, cfg.evals_per_epoch)}
    mid_evals.discard(steps_per_epoch)
    y_valid = data.column("valid", "label")
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None and cfg.checkpoint else None

    st, best_state = _Progress(), None
    if ckpt is not None and ckpt.exists():
        best_state, st = _load_checkpoint(ckpt, model, optimizers, seed, steps_per_epoch, device)
    clock = PhaseClock(device)
    clock.seconds.update(st.phase_s)
    # A data-parallel rank always defers: its losses are summed over the ranks when read.
    read_every = loss_read_every(device)
    unread: list[torch.Tensor] = []  # losses of the steps since the last read (read_every > 1)
    last_loss = float("nan")

    def read_losses() -> None:
        """Read the unread losses (one host sync), fail on a non-finite one, add them up."""
        nonlocal last_loss
        if not unread:
            return
        values = torch.stack(unread).double().cpu()
        if parallel is not None:  # each entry is this rank's share of its batch's mean loss
            torch.distributed.all_reduce(values, group=meta_group)
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            at = st.step - len(unread) + int(bad[0])
            raise TrainingError(f"at step {at} (epoch {st.epoch}): loss is {float(values[int(bad[0])])}; "
                                f"try a lower train.lr (now {cfg.lr}) or another seed")
        st.loss_sum += float(values.sum())
        st.loss_n += len(unread)
        last_loss = float(values[-1])
        unread.clear()

    def evaluate(epoch_float: float) -> None:
        nonlocal best_state
        read_losses()
        t = time.perf_counter()
        valid_auc = auc(y_valid, predict(model, data, "valid", cfg.eval_batch_size))
        if not math.isfinite(valid_auc):
            raise TrainingError("validation AUC is undefined: the validation split holds only one class")
        lrs = optimizers.lrs()
        st.history.append({
            "step": st.step, "epoch": epoch_float, "valid_auc": valid_auc,
            "loss": st.loss_sum / st.loss_n if st.loss_n else float("nan"),
            "lr": lrs.get("dense", cfg.lr), "embedding_lr": lrs.get("embedding", lrs.get("dense")),
        })
        st.loss_sum, st.loss_n = 0.0, 0
        if valid_auc > st.best_auc:
            st.best_auc, st.best_step, st.bad_evals = valid_auc, st.step, 0
            best_state = _copy_state(model)
        else:
            st.bad_evals += 1
            if st.bad_evals >= cfg.patience:
                st.stopped_by = "early_stopping"
            else:
                optimizers.scale_lr(cfg.lr_decay)  # plateau: continue with a smaller step
        st.eval_s += time.perf_counter() - t

    def checkpoint() -> None:
        st.phase_s = clock.resolve()
        if ckpt is not None:
            st.elapsed_s = time.perf_counter() - started
            _save_checkpoint(ckpt, model, optimizers, best_state, st, seed, steps_per_epoch)

    model.train()
    started = time.perf_counter() - st.elapsed_s
    with progress(cfg.epochs * steps_per_epoch, "train", cfg.progress, unit="step") as bar:
        bar.update(st.step)
        while not st.stopped_by and st.epoch < cfg.epochs:
            batches = data.batches(cfg.train_split, cfg.batch_size, shuffle=True, seed=seed, epoch=st.epoch,
                                   shard=shard, group_by_request=cfg.group_by_request)
            for _ in range(st.pos):  # resuming mid-epoch: skip what was consumed
                next(batches)
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                t1 = time.perf_counter()
                st.data_s += t1 - t0
                if batch is None:
                    break
                batch = to_device(batch, device)
                rows = global_rows = batch["label"].shape[0]
                scale = 1.0
                if parallel is not None:  # this rank's share of the batch decides its loss's weight
                    # (its share of the rows, or of the row weights for a weighted source)
                    mass = float(batch["weight"].sum()) if "weight" in batch else float(rows)
                    counts = torch.tensor([rows, mass], dtype=torch.float64)
                    torch.distributed.all_reduce(counts, group=meta_group)
                    global_rows = int(counts[0])
                    share = mass / float(counts[1])
                    scale = share * parallel.world_size
                # The FLOPs of a training sample: counted once, on a full batch.
                full = global_rows == cfg.batch_size
                with count_flops(st.flops_per_sample is None and full) as counted:
                    try:
                        loss_value = train_step(model, batch, optimizers, cfg, layers, clock,
                                                read_loss=read_every == 1 and parallel is None, net=net,
                                                loss_scale=scale, after_backward=sync_sparse)
                    except TrainingError as e:
                        raise TrainingError(f"at step {st.step} (epoch {st.epoch}): {e}") from None
                if counted["flops"] is not None:
                    st.flops_per_sample = counted["flops"] / rows
                if parallel is not None:
                    loss_value = loss_value * share  # the ranks' shares sum to the batch mean
                st.step += 1
                st.pos += 1
                st.samples += global_rows
                if isinstance(loss_value, float):
                    st.loss_sum += loss_value
                    st.loss_n += 1
                    last_loss = loss_value
                else:
                    unread.append(loss_value)
                    if len(unread) >= read_every:
                        read_losses()
                if comm is not None:
                    comm.steps += 1
                st.train_s += time.perf_counter() - t1
                if _after_step is not None:
                    _after_step(st.step)
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", sps=f"{st.samples / (st.train_s + st.data_s):,.0f}",
                                refresh=False)
                over_budget = cfg.max_seconds > 0 and time.perf_counter() - started > cfg.max_seconds
                if parallel is not None and cfg.max_seconds > 0:  # rank 0's clock decides for every rank
                    flag = torch.tensor([int(over_budget)])
                    torch.distributed.broadcast(flag, src=0, group=meta_group)
                    over_budget = bool(flag)
                if st.pos in mid_evals or over_budget:
                    evaluate(st.epoch + st.pos / steps_per_epoch)
                    if over_budget and not st.stopped_by:
                        st.stopped_by = "budget"
                    checkpoint()
                    if st.stopped_by:
                        break
            if st.stopped_by:
                break
            st.epoch, st.pos = st.epoch + 1, 0
            evaluate(float(st.epoch))
            if not st.stopped_by and st.epoch >= cfg.epochs:
                st.stopped_by = "epochs"
            checkpoint()
    if not st.history:  # no batch at all
        evaluate(0.0)
    st.phase_s = clock.resolve()
    model.load_state_dict(best_state)
    return TrainResult(
        best_valid_auc=st.best_auc, best_step=st.best_step, steps=st.step,
        epochs_run=st.step / steps_per_epoch, samples=st.samples, train_seconds=st.train_s,
        data_seconds=st.data_s, eval_seconds=st.eval_s, stopped_by=st.stopped_by or "epochs",
        history=st.history, phase_seconds={"data": st.data_s, **st.phase_s},
        flops_per_sample=st.flops_per_sample,
        optimizer_state_bytes=optimizer_state_bytes(list(optimizers.named.values())),
        world_size=parallel.world_size if parallel is not None else 1,
        comm_bytes_per_step=comm.bytes / comm.steps if comm is not None and comm.steps else None,
    )
