"""The run contract: one resolved config + one seed -> one folder with manifest.json and metrics.json.

``results/runs/<experiment>/<label>-<variant hash>/seed<k>/``
- ``manifest.json``: resolved config and its hash, seed, code (commit, dirty, fingerprint of the
  source), package versions, machine, data provenance and fingerprint, times, and status
  ``running`` -> ``done`` | ``failed`` (with the reason);
- ``metrics.json``: validation and test metrics, the Bayes-optimal figures where the data has
  ground truth, training history and the profiler's figures.

Both are written atomically; metrics before the manifest says ``done``, so ``done`` implies a
complete metrics file. A run whose manifest says ``done`` with the same config hash and code
fingerprint is not run again (``force`` reruns it).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.environment import git_state, gpu_memory, machine, package_versions
from repro.errors import ConfigError
from repro.io import atomic_write_json, stable_hash
from repro.metrics import evaluate
from repro.profiling import PeakMemory
from repro.registry import EMBEDDINGS, MODELS, SOURCES, ROOT
from repro.train import TrainConfig, predict, train

RUN_KEYS = {"data", "model", "embedding", "train", "seed", "experiment_name", "label", "results_dir", "force"}
DATA_PREP_KEYS = ("name", "min_count", "cache_root")


@dataclasses.dataclass
class ResolvedRun:
    config: dict  # everything that decides the numbers (hashed)
    experiment: str
    label: str
    run_dir: Path
    config_hash: str


def resolve(cfg: DictConfig | dict) -> ResolvedRun:
    """Validate every block against its dataclass and fill defaults; unknown keys are errors."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    plain.pop("hydra", None)
    unknown = sorted(set(plain) - RUN_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown}; known: {sorted(RUN_KEYS)}")
    data = dict(plain.get("data") or {})
    prep = {k: data.pop(k) for k in DATA_PREP_KEYS if k in data}
    source_name = prep.get("name", "world")
    source_cfg = dataclasses.asdict(SOURCES.config(source_name, data))
    model_block = dict(plain.get("model") or {})
    emb_block = dict(plain.get("embedding") or {"name": "full"})
    model_name, emb_name = model_block.get("name", "deepfm"), emb_block.get("name", "full")
    config = {
        "data": {"name": source_name, "min_count": prep.get("min_count", 1), **source_cfg},
        "model": {"name": model_name, **dataclasses.asdict(MODELS.config(model_name, model_block))},
        "embedding": {"name": emb_name, **dataclasses.asdict(EMBEDDINGS.config(emb_name, emb_block))},
        "train": dataclasses.asdict(_train_config(plain.get("train"))),
        "seed": int(plain.get("seed", 0)),
    }
    hashed = json.loads(json.dumps(config))
    hashed["train"].pop("progress")  # cosmetic: does not change a number
    config_hash = stable_hash(hashed, 16)
    variant = stable_hash({k: v for k, v in hashed.items() if k != "seed"}, 8)
    experiment = str(plain.get("experiment_name", "adhoc"))
    label = str(plain.get("label") or model_name)
    results_dir = Path(plain.get("results_dir", "results"))
    if not results_dir.is_absolute():
        results_dir = ROOT / results_dir
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    run_dir = results_dir / "runs" / experiment / f"{safe}-{variant}" / f"seed{config['seed']}"
    config["cache_root"] = prep.get("cache_root", "cache")
    return ResolvedRun(config, experiment, label, run_dir, config_hash)


def _train_config(block: Any) -> TrainConfig:
    values = dict(block or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"train: unknown config key(s) {unknown}; known: {sorted(known)}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), values))
    except Exception as e:
        raise ConfigError(f"train: {e}") from e


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(run: ResolvedRun) -> bool:
    manifest = load_json(run.run_dir / "manifest.json")
    return bool(
        manifest
        and manifest.get("status") == "done"
        and manifest.get("config_hash") == run.config_hash
        and manifest.get("code", {}).get("fingerprint") == git_state()["fingerprint"]
        and (run.run_dir / "metrics.json").exists()
    )


def open_data(config: dict, verbose: bool = True) -> PreparedDataset:
    data = dict(config["data"])
    name, min_count = data.pop("name"), data.pop("min_count")
    source = SOURCES.get(name).factory(SOURCES.config(name, data))
    root = ROOT / config.get("cache_root", "cache") if not Path(config.get("cache_root", "cache")).is_absolute() else Path(config["cache_root"])
    return PreparedDataset(prepare(source, PrepareConfig(min_count=min_count, cache_root=str(root)), verbose=verbose))


def execute(cfg: DictConfig | dict, force: bool = False) -> dict:
    """Run one config (or return the cached result); returns the manifest.

    The run is built in ``seed<k>.partial/`` and renamed onto ``seed<k>/`` only when it is done,
    so a failing or killed rerun never touches the previous result; a failure leaves its manifest
    (status ``failed`` with the reason) in ``seed<k>.failed/``.
    """
    run = resolve(cfg)
    if not force and is_done(run):
        print(f"[cached] {run.run_dir.relative_to(ROOT) if run.run_dir.is_relative_to(ROOT) else run.run_dir}")
        return load_json(run.run_dir / "manifest.json")

    manifest = {
        "experiment": run.experiment,
        "label": run.label,
        "status": "running",
        "config": run.config,
        "config_hash": run.config_hash,
        "seed": run.config["seed"],
        "code": git_state(),
        "packages": package_versions(),
        "machine": machine(),
        "started": _now(),
    }
    work = _sibling(run.run_dir, ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    atomic_write_json(work / "manifest.json", manifest)
    try:
        metrics = _run(run, manifest, work)
        atomic_write_json(work / "metrics.json", metrics)
        manifest.update(status="done", finished=_now())
        atomic_write_json(work / "manifest.json", manifest)
        _replace_dir(work, run.run_dir)
        shutil.rmtree(_sibling(run.run_dir, ".failed"), ignore_errors=True)
        print(f"[done] {run.label} seed={run.config['seed']} test AUC {metrics['test']['auc']:.4f}")
        return manifest
    except BaseException as e:
        manifest.update(status="failed", finished=_now(), reason=f"{type(e).__name__}: {e}",
                        traceback=traceback.format_exc(limit=5))
        atomic_write_json(work / "manifest.json", manifest)
        (work / "metrics.json").unlink(missing_ok=True)
        _replace_dir(work, _sibling(run.run_dir, ".failed"))
        raise


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _replace_dir(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst``; the old ``dst`` is moved aside first, never half-deleted in place."""
    old = _sibling(dst, ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def _run(run: ResolvedRun, manifest: dict, work: Path) -> dict:
    config = run.config
    data = open_data(config, verbose=config["train"]["progress"])
    manifest["data"] = {"root": str(data.root.name), "fingerprint": data.fingerprint, **{
        k: data.provenance[k] for k in ("source", "split_protocol", "rows", "rejected_rows", "source_fingerprint",
                                        "source_config")}}  # source_config: with the scale's sizes filled in
    atomic_write_json(work / "manifest.json", manifest)

    seed = config["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    train_cfg = TrainConfig(**config["train"])
    torch.set_num_threads(train_cfg.threads)
    metrics: dict[str, Any] = {}
    with PeakMemory() as memory:
        model = MODELS.build(config["model"]["name"], config["model"], data.feature_map, embedding=config["embedding"])
        result = train(model, data, train_cfg, seed)
        for split in ("valid", "test"):
            t = time.perf_counter()
            p = predict(model, data, split, train_cfg.eval_batch_size)
            predict_s = time.perf_counter() - t
            metrics[split] = _split_metrics(data, split, p)
            metrics[split]["predict_rows_per_s"] = len(p) / predict_s
    truth = {s: data.truth(s) for s in ("valid", "test")}
    if truth["test"] is not None:
        metrics["bayes"] = {s: _split_metrics(data, s, truth[s]["p_click"].to_numpy()) for s in ("valid", "test")}
    metrics["train"] = {k: v for k, v in dataclasses.asdict(result).items() if k != "history"}
    metrics["history"] = result.history
    metrics["profile"] = {
        "train_samples_per_s": result.samples / max(result.train_seconds + result.data_seconds, 1e-9),
        "data_wait_share": result.data_seconds / max(result.train_seconds + result.data_seconds, 1e-9),
        "train_seconds": result.train_seconds + result.data_seconds,
        "eval_seconds": result.eval_seconds,
        "peak_rss_mb": memory.peak_rss_mb,
        "parameters": model.num_parameters(),
        "model_bytes": model.stored_bytes(),
        "threads": train_cfg.threads,
        "device": str(next(model.parameters()).device),
        **gpu_memory(),
    }
    return metrics


def _split_metrics(data: PreparedDataset, split: str, p: np.ndarray) -> dict:
    fm = data.feature_map
    y = data.column(split, "label")
    groups = {}
    for role in ("user", "request"):
        f = fm.group_key(role)
        if f is not None:
            groups[role] = data.column(split, f.name)
    truth = data.truth(split)
    subsets = {"random": truth["is_random"].to_numpy()} if truth is not None and "is_random" in truth else None
    weight = data.column(split, "weight") if fm.weight else None
    return evaluate(y, p, groups=groups, subsets=subsets, weight=weight)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
