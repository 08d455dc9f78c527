"""Data-parallel training, measured (the HPC ladder's rung 8; issue 9): the harness trainer in one
process against the same run split over ``world_size`` torchrun processes (``repro.distributed``,
gloo on the CPU), with each DDP communication hook, on the same rows and the same global batch.

Rows, each the same DeepFM, rows, global batch and sample budget:

- ``1 process``: ``repro.train.train`` with all of ``threads``;
- ``N processes, <hook>``: ``train.world_size=N`` (the threads shared out: 2 threads, 2 processes
  of one thread each), dense gradients through DDP with the hook (``none``: fp32 all-reduce;
  ``fp16``: halved; ``powersgd``: rank-1 PowerSGD after 2 warm-up steps), the tables' sparse
  gradients all-reduced beside DDP as (indices, values);
- ``N processes, dense tables``: the tables updated by dense Adam instead of lazy SparseAdam, so
  their gradients travel as dense buckets through DDP: the whole table every step.

Per row: samples/s over the training time (rank 0's clock; evaluations excluded), the ratio to the
single process, the gradient bytes each process hands to collectives per step (what it sends into
each all-reduce, not the algorithm's wire traffic), and the test AUC. On one 2-core machine the
processes share the cores the single process had, so the speed ratio shows the cost of
communicating, not a gain: data parallelism pays across machines or GPUs, which is where the
bytes per step matter.

Choices: it is not stacked on the single-process ladder's rungs (CowClip's clipping, the compiled
step and bf16 live in the ladder's own loop, not in the harness trainer); the harness protocol's
settings otherwise (embedding L2 on looked-up rows, gradient clipping at norm 10), with a
fixed number of epochs and no early stopping, so every row trains the same samples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from repro.distributed import launch
from repro.errors import ConfigError
from repro.measurements import register_measurement
from repro.metrics import auc
from repro.registry import MODELS
from repro.run import open_data, resolve
from repro.train import COMM_HOOKS, TrainConfig, TrainResult, predict, train


@dataclass
class DataParallelConfig:
    model: str = "deepfm"
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dim: int = 16
    scale: str = "default"  # the world's scale
    min_count: int = 2
    cache_root: str = "cache"
    batch_size: int = 4096  # the global batch (every process trains batch_size / world_size rows of it)
    epochs: int = 2
    world_size: int = 2
    hooks: list[str] = field(default_factory=lambda: list(COMM_HOOKS))
    dense_tables: bool = True  # add the row whose tables travel as dense gradients
    threads: int = 2
    seed: int = 0
    progress: bool = True


def run_config(cfg: DataParallelConfig, **train) -> dict:
    """The resolved harness config of one row."""
    return resolve({
        "data": {"name": "world", "scale": cfg.scale, "min_count": cfg.min_count, "cache_root": cfg.cache_root},
        "model": {"name": cfg.model, "hidden_units": list(cfg.hidden_units)},
        "embedding": {"name": "full", "dim": cfg.dim},
        "train": {"batch_size": cfg.batch_size, "epochs": cfg.epochs, "patience": cfg.epochs + 1, "lr_decay": 1.0,
                  "threads": cfg.threads, "progress": cfg.progress, "checkpoint": False, **train},
        "seed": cfg.seed,
    }).config


def train_row(config: dict, data, seed: int) -> tuple[TrainResult, torch.nn.Module]:
    """Train one row (in this process, or in torchrun workers); the model holds the result."""
    torch.manual_seed(seed)
    model = MODELS.build(config["model"]["name"], config["model"], data.feature_map, embedding=config["embedding"])
    train_cfg = TrainConfig(**config["train"])
    if train_cfg.world_size == 1:
        return train(model, data, train_cfg, seed), model
    with tempfile.TemporaryDirectory(prefix="data_parallel-") as work:
        state, result = launch(config, data.root, seed, Path(work))
    model.load_state_dict(state)
    return result, model


@register_measurement("hpc_data_parallel", config=DataParallelConfig)
def hpc_data_parallel(cfg: DataParallelConfig) -> dict:
    """Single process against ``world_size`` DDP processes per hook (module docstring)."""
    unknown = [h for h in cfg.hooks if h not in COMM_HOOKS]
    if unknown or cfg.world_size < 2:
        raise ConfigError(f"hpc_data_parallel: hooks must be among {list(COMM_HOOKS)} (got {unknown}) and "
                          f"world_size >= 2 (got {cfg.world_size})")
    settings = [("1 process", {})]
    settings += [(f"{cfg.world_size} processes, {hook}", {"world_size": cfg.world_size, "comm_hook": hook})
                 for hook in cfg.hooks]
    if cfg.dense_tables:
        settings.append((f"{cfg.world_size} processes, none, dense tables",
                         {"world_size": cfg.world_size, "embedding_optimizer": "adam"}))
    data = open_data(run_config(cfg), verbose=cfg.progress)
    y_test = data.column("test", "label")
    rows, base = [], None
    for label, train_settings in settings:
        print(f"[data parallel] {label}", flush=True)
        config = run_config(cfg, **train_settings)
        result, model = train_row(config, data, cfg.seed)
        test_auc = auc(y_test, predict(model, data, "test", 65536))
        sps = result.samples / max(result.train_seconds + result.data_seconds, 1e-9)
        base = base or (sps, test_auc)
        sent = result.comm_bytes_per_step
        rows.append([label, f"{sps:,.0f}", f"{sps / base[0]:.2f}", f"{sent / 2**20:.2f}" if sent else "–",
                     f"{test_auc:.4f}", f"{test_auc - base[1]:+.4f}"])
    notes = [
        f"{cfg.model} {list(cfg.hidden_units)}, dim {cfg.dim}, world scale {cfg.scale}; global batch {cfg.batch_size:,}, "
        f"{cfg.epochs} epochs, seed {cfg.seed}, {cfg.threads} threads shared out among the processes (gloo)",
        "MiB sent / step: gradient bytes each process hands to collectives per step (dense buckets after the hook's "
        "compression; sparse table gradients as int64 indices + fp32 values)",
        "one machine: the processes share the single process's cores, so 'x 1 process' is the cost of "
        "communicating; the gain of data parallelism needs more machines or GPUs",
    ]
    return {"columns": ["setting", "samples/s", "x 1 process", "MiB sent / step", "test AUC", "AUC - 1 process"],
            "rows": rows, "notes": notes}
