"""One trainer for every model: optimise, early-stop on validation AUC, predict in row order.

Determinism on the CPU: the model is initialised after ``torch.manual_seed(seed)``, batches are
shuffled by a generator seeded from (seed, epoch), and deterministic algorithms are requested,
so the same seed on the same machine and thread count gives the same numbers.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from repro.data.dataset import PreparedDataset
from repro.errors import ConfigError, TrainingError
from repro.metrics import auc
from repro.model import CTRModel, logit_of
from repro.progress import progress


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # adam | adagrad | sgd
    lr: float = 3e-3
    weight_decay: float = 1e-4  # coupled L2: keeps rarely seen ID rows near 0 (overfitting guard)
    batch_size: int = 4096
    eval_batch_size: int = 65536
    epochs: int = 5
    evals_per_epoch: int = 2
    patience: int = 2  # evaluations without a better validation AUC before stopping
    grad_clip_norm: float = 10.0
    threads: int = 2
    max_seconds: float = 0.0  # 0 = no budget; otherwise training stops at the budget
    device: str = "cpu"  # cpu | cuda | auto (cuda when present)
    progress: bool = True


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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer {cfg.optimizer!r}; expected adam, adagrad or sgd")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not (name == "cuda" or name.startswith("cuda:")):
        raise ConfigError(f"train.device={name!r}: expected cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: CTRModel, data: PreparedDataset, split: str, batch_size: int) -> np.ndarray:
    """Click probabilities for every row of ``split``, in the split's row order."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.sigmoid(logit_of(model(to_device(b, device)))) for b in data.batches(split, batch_size, shuffle=False)]
    model.train()
    p = torch.cat(out).double().cpu().numpy()
    if not np.isfinite(p).all():
        raise TrainingError(f"the model predicts {int((~np.isfinite(p)).sum())} non-finite values on {split!r} "
                            f"(its weights diverged); try a lower train.lr or another seed")
    return p


class _BestKeeper:
    """Evaluates validation AUC at checkpoints and keeps the best weights (early stopping)."""

    def __init__(self, model: CTRModel, data: PreparedDataset, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.model, self.data, self.cfg, self.steps_per_epoch = model, data, cfg, steps_per_epoch
        self.y_valid = data.column("valid", "label")
        self.best_auc, self.best_step, self.best_state, self.bad_evals = -1.0, 0, None, 0
        self.seconds, self.history = 0.0, []

    def check(self, step: int, loss: float) -> bool:
        """Evaluate now; True when patience is exhausted."""
        t = time.perf_counter()
        valid_auc = auc(self.y_valid, predict(self.model, self.data, "valid", self.cfg.eval_batch_size))
        self.seconds += time.perf_counter() - t
        if not math.isfinite(valid_auc):
            raise TrainingError("validation AUC is undefined: the validation split holds only one class")
        self.history.append({"step": step, "epoch": step / self.steps_per_epoch, "valid_auc": valid_auc, "loss": loss})
        if valid_auc > self.best_auc:
            self.best_auc, self.best_step, self.bad_evals = valid_auc, step, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.cfg.patience


def train(model: CTRModel, data: PreparedDataset, cfg: TrainConfig, seed: int) -> TrainResult:
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(data.num_rows("train") / cfg.batch_size)
    eval_every = max(1, steps_per_epoch // max(1, cfg.evals_per_epoch))
    keeper = _BestKeeper(model, data, cfg, steps_per_epoch)

    step = samples = 0
    train_s = data_s = 0.0
    loss_value = float("nan")
    stopped_by = "epochs"
    model.train()
    started = time.perf_counter()
    with progress(cfg.epochs * steps_per_epoch, "train", cfg.progress, unit="step") as bar:
        for epoch in range(cfg.epochs):
            batches = data.batches("train", cfg.batch_size, shuffle=True, seed=seed, epoch=epoch)
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                t1 = time.perf_counter()
                data_s += t1 - t0
                if batch is None:
                    break
                batch = to_device(batch, device)
                loss = model.loss(batch, model(batch))
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"loss is {loss_value} at step {step} (epoch {epoch}); "
                        f"try a lower train.lr (now {cfg.lr}) or another seed"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                optimizer.step()
                step += 1
                samples += batch["label"].shape[0]
                train_s += time.perf_counter() - t1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", sps=f"{samples / (train_s + data_s):,.0f}", refresh=False)

                over_budget = cfg.max_seconds > 0 and time.perf_counter() - started > cfg.max_seconds
                if step % eval_every == 0 or over_budget:
                    if keeper.check(step, loss_value):
                        stopped_by = "early_stopping"
                    elif over_budget:
                        stopped_by = "budget"
                    if stopped_by != "epochs":
                        break
            if stopped_by != "epochs":
                break
    if not keeper.history or keeper.history[-1]["step"] != step:
        keeper.check(step, loss_value)
    model.load_state_dict(keeper.best_state)
    return TrainResult(
        best_valid_auc=keeper.best_auc, best_step=keeper.best_step, steps=step,
        epochs_run=step / steps_per_epoch, samples=samples, train_seconds=train_s, data_seconds=data_s,
        eval_seconds=keeper.seconds, stopped_by=stopped_by, history=keeper.history,
    )
