"""Data-parallel training on ``torch.distributed``: ``train.world_size=N`` trains a run in N
processes launched with torchrun (gloo on the CPU, NCCL on a GPU).

The run's own process (``repro.run``) stays in charge of everything but the training: it prepares
the data, writes the manifest, and, after the workers finish, loads the trained weights rank 0
saved and predicts and scores as any run does. ``launch`` starts ``torchrun --standalone
--nproc_per_node N -m repro.distributed <spec>``; every worker builds the model from the same seed
(DDP also broadcasts rank 0's weights), trains its part of every batch (``repro.train.train`` with
``parallel=``), and rank 0 writes the weights and the training result atomically.

Choices: the run's ``threads`` are shared out among the workers (2 threads, 2 workers: one
each), so a data-parallel run on one machine uses what the single-process run would; dropout
draws from a per-rank stream; a killed data-parallel run restarts from the beginning (workers
write no checkpoint); a worker's failure ends them all (torchrun's behaviour) and its log's end is
raised as the run's error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from repro.data.dataset import PreparedDataset
from repro.errors import TrainingError
from repro.io import atomic_write, atomic_write_json
from repro.registry import MODELS, ROOT
from repro.train import DataParallel, TrainConfig, TrainResult, train

RESULT = "result.pt"
LOG_TAIL = 3000  # characters of the workers' log quoted in an error


def launch(config: dict, data_root: Path, seed: int, work: Path) -> tuple[dict, TrainResult]:
    """Train ``config``'s model on ``world_size`` workers; (rank 0's final state dict, its result)."""
    cfg = TrainConfig(**config["train"])
    out = work / "distributed"
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT).unlink(missing_ok=True)
    spec = out / "spec.json"
    atomic_write_json(spec, {"config": config, "data_root": str(data_root), "seed": seed, "out": str(out)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.world_size}",
           "-m", "repro.distributed", str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cfg.threads // cfg.world_size)),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = out / "workers.log"
    with open(log, "w") as sink:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=None if cfg.progress else sink, stderr=sink)
    if done.returncode != 0 or not (out / RESULT).exists():
        tail = log.read_text(errors="replace")[-LOG_TAIL:]
        raise TrainingError(f"data-parallel training ({cfg.world_size} workers) failed with exit code "
                            f"{done.returncode}; the end of {log}:\n{tail}")
    saved = torch.load(out / RESULT, weights_only=True)
    return saved["state"], TrainResult(**json.loads(saved["result"]))


def worker(spec_path: Path) -> None:
    """One torchrun worker: train its part, rank 0 saves the result."""
    spec = json.loads(Path(spec_path).read_text())
    config, seed = spec["config"], spec["seed"]
    cfg = TrainConfig(**config["train"])
    backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if cfg.device.startswith("cuda"):
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        cfg = dataclasses.replace(cfg, threads=max(1, cfg.threads // world), progress=cfg.progress and rank == 0)
        torch.manual_seed(seed)
        np.random.seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        data = PreparedDataset(Path(spec["data_root"]), drop_roles=tuple(config["data"].get("drop_roles", ())))
        model = MODELS.build(config["model"]["name"], config["model"], data.feature_map, embedding=config["embedding"])
        torch.manual_seed(seed * 1_000_003 + rank)  # dropout: a stream of each rank's own
        result = train(model, data, cfg, seed, parallel=DataParallel(rank, world, cfg.comm_hook))
        if rank == 0:
            payload = {"state": model.state_dict(), "result": json.dumps(dataclasses.asdict(result))}
            atomic_write(Path(spec["out"]) / RESULT, lambda tmp: torch.save(payload, tmp))
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
