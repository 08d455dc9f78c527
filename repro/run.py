"""The run contract: one resolved config + one seed -> one folder with manifest.json and metrics.json.

``results/runs/<experiment>/<label>-<variant hash>/seed<k>/``
- ``manifest.json``: resolved config and its hash, seed, code (commit, dirty, fingerprint of the
  source), package versions, machine, data provenance and fingerprint, times, and status
  ``running`` -> ``done`` | ``failed`` (with the reason);
- ``metrics.json``: validation and test metrics, the Bayes-optimal figures where the data has
  ground truth, training history and the profiler's figures.

Both are written atomically; metrics before the manifest says ``done``, so ``done`` implies a
complete metrics file.

Staleness follows the inputs. A done run is reused exactly when every input that decides its
numbers is unchanged (``manifest["inputs"]``, compared field by field, see ``staleness``):
- the resolved config (``auto`` device resolved to the device it will run on), less what cannot
  change a number (``progress``, ``keep_predictions``) or is scheduling (``threads``: kept in the
  manifest's config, out of the hash and the folder's name);
- the data: the content digest of the prepared cache (``repro.data.ledger``), found in the results'
  data ledger by the cache's key (the source's fingerprint, the preparation config and code),
  recomputed now, not only recorded; a key the ledger does not know makes the plan say "its cache
  must be built to tell", and ``execute`` builds and records the cache before it decides (a
  preparation refactor that builds the same bytes reruns nothing);
- the code it executes: the definitions reachable from ``_run`` plus its own model and embedding
  modules, with comments, docstrings and formatting dropped (``repro.identity``); bookkeeping
  (``resolve``, ``inputs``, ``staleness``, ``execute``'s manifest writing), the data preparation
  and the data source (both identified by the data input), an unrelated method, the report or the
  CLI are not part of it;
- the versions of the numeric libraries (torch, numpy).
``force`` reruns regardless. A stale run says why (which file, which input) before it reruns.

A killed run resumes: the trainer checkpoints into ``seed<k>.partial/`` at every evaluation, and
the next call continues from there when that folder's inputs equal the run's (else it starts
afresh).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from omegaconf import DictConfig, OmegaConf

from repro.cascade import evaluate_cascade, evaluate_creatives
from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare, raw_column, raw_hash
from repro.environment import NUMERIC_PACKAGES, code_identity, git_state, gpu_memory, machine, package_versions
from repro.errors import ConfigError, DataError
from repro.embeddings import embedding_layers
from repro.io import atomic_write, atomic_write_json, file_digest, pack_floats, stable_hash, unpack_floats
from repro import metrics as metric_fns
from repro.metrics import evaluate
from repro.profiling import GpuMonitor, PeakMemory, cpu_capabilities, matmul_peak_flops
from repro.registry import EMBEDDINGS, MODELS, SOURCES, ROOT
from repro.train import COMM_HOOKS, TrainConfig, predict, train

CHECKPOINT = "checkpoint.pt"  # written by the trainer into the run's work folder
RUN_KEYS = {"data", "model", "embedding", "train", "seed", "experiment_name", "label", "results_dir", "force"}
DATA_PREP_KEYS = ("name", "min_count", "cache_root", "drop_roles", "teacher")


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
    _check_scalars(plain)
    data = _block(plain, "data", {})
    prep = {k: data.pop(k) for k in DATA_PREP_KEYS if k in data}
    _check_prep(prep)
    source_name = prep.get("name", "world")
    if not isinstance(source_name, str):  # checked here: the registry's lookup is part of every run's identity
        raise ConfigError(f"data.name must be a registered source's name, got {source_name!r}")
    source_cfg = dataclasses.asdict(_checked_config(SOURCES, source_name, data))
    model_block = _block(plain, "model", {})
    emb_block = _block(plain, "embedding", {"name": "full"})
    model_name, emb_name = model_block.get("name", "deepfm"), emb_block.get("name", "full")
    for what, name in (("model", model_name), ("embedding", emb_name)):
        if not isinstance(name, str):
            raise ConfigError(f"{what}.name must be a registered {what}'s name, got {name!r}")
    config = {
        # drop_roles: fields (by role) the model must not see, e.g. [position]; the data are the same.
        # teacher: the label of a run of the same experiment (same seed and results folder) whose
        # predictions on the data's unlabelled splits this run reads (see `teacher_dir`).
        "data": {"name": source_name, "min_count": prep.get("min_count", 1),
                 "drop_roles": sorted(prep.get("drop_roles") or []), "teacher": str(prep.get("teacher") or ""),
                 **source_cfg},
        "model": {"name": model_name, **dataclasses.asdict(_checked_config(MODELS, model_name, model_block))},
        "embedding": {"name": emb_name, **dataclasses.asdict(_checked_config(EMBEDDINGS, emb_name, emb_block))},
        "train": dataclasses.asdict(_train_config(plain.get("train"))),
        "seed": int(plain.get("seed", 0)),
    }
    # The device a run computes on decides its numbers: `auto` is resolved before hashing.
    config["train"]["device"] = _resolved_device(config["train"]["device"])
    hashed = json.loads(json.dumps(config))
    hashed["train"].pop("progress")  # cosmetic: does not change a number
    hashed["train"].pop("keep_predictions")  # which outputs are kept, not what they are (`staleness` checks them)
    # A scheduling input: kept in the manifest's config, but the same run on another thread count
    # is the same run (its sums may differ in the last bits; `repro.reproduce` tells them apart).
    hashed["train"].pop("threads")
    config_hash = stable_hash(hashed, 16)
    variant = stable_hash({k: v for k, v in hashed.items() if k != "seed"}, 8)
    experiment = str(plain.get("experiment_name", "adhoc"))
    label = str(plain.get("label") or model_name)
    # conf/config.yaml sends ad-hoc runs to the git-ignored local/; a dict config names its own folder.
    # (This default stays "results": world_pcf's cache key still digests this function, see its fingerprint.)
    results_dir = Path(plain.get("results_dir", "results"))
    if not results_dir.is_absolute():
        results_dir = ROOT / results_dir
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    run_dir = results_dir / "runs" / experiment / f"{safe}-{variant}" / f"seed{config['seed']}"
    config["cache_root"] = prep.get("cache_root", "cache")
    return ResolvedRun(config, experiment, label, run_dir, config_hash)


def _checked_config(registry, name: str, block: dict):
    """``registry.config`` with every failure a ``ConfigError`` (omegaconf raises its own types
    for a broken interpolation). Caught here, not in the registry: the registry's lookup is part of
    every run's code identity, this bookkeeping is not."""
    try:
        return registry.config(name, block)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{registry.kind} {name!r}: {' '.join(str(e).split())}") from e


def _block(plain: dict, key: str, default: dict) -> dict:
    """The config block ``plain[key]`` as a dict (``default`` when absent or empty): a mapping, or a
    ``ConfigError`` naming the block."""
    block = plain.get(key)
    if block is not None and not isinstance(block, dict):
        raise ConfigError(f"{key}: a config block must be a mapping of keys, got {type(block).__name__} {block!r}")
    return dict(block or default)


def _check_scalars(plain: dict) -> None:
    """The top-level values that are not blocks: ``seed`` an integer, the names strings (or
    integers; a null label is the model's name), the results folder a string, ``force`` a boolean
    (each when given)."""
    seed = plain.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    for key, types in (("experiment_name", (str, int)), ("label", (str, int)), ("results_dir", str)):
        value = plain.get(key)
        if value is None and key == "label":
            continue  # no label: the model's name
        if key in plain and (isinstance(value, bool) or not isinstance(value, types)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
    if plain.get("force", False) not in (True, False):  # a bool, or 0/1 as `force=1` gives
        raise ConfigError(f"force must be true or false, got {plain['force']!r}")


def _check_prep(prep: dict) -> None:
    """The preparation keys of ``data``: ``min_count`` a positive integer, ``drop_roles`` a list of
    role names, ``cache_root`` a string, ``teacher`` a string or null (``name`` is the source
    registry's to check)."""
    count = prep.get("min_count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"data: min_count must be a positive integer, got {count!r}")
    roles = prep.get("drop_roles") or []
    if isinstance(roles, str) or not isinstance(roles, (list, tuple)) or not all(isinstance(r, str) for r in roles):
        raise ConfigError(f"data: drop_roles must be a list of role names, got {roles!r}")
    if "cache_root" in prep and not isinstance(prep["cache_root"], str):
        raise ConfigError(f"data: cache_root must be a string, got {prep['cache_root']!r}")
    if prep.get("teacher") is not None and not isinstance(prep["teacher"], str):  # null: no teacher
        raise ConfigError(f"data: teacher must be a string (a run's label), got {prep['teacher']!r}")


def _train_config(block: Any) -> TrainConfig:
    if block is not None and not isinstance(block, dict):
        raise ConfigError(f"train: a config block must be a mapping of keys, got {type(block).__name__} {block!r}")
    values = dict(block or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"train: unknown config key(s) {unknown}; known: {sorted(known)}")
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), values))
    except Exception as e:
        raise ConfigError(f"train: {e}") from e
    if cfg.world_size < 1 or cfg.comm_hook not in COMM_HOOKS:
        raise ConfigError(f"train: world_size must be >= 1 (got {cfg.world_size}) and comm_hook one of "
                          f"{list(COMM_HOOKS)} (got {cfg.comm_hook!r})")
    return cfg


def _resolved_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_metrics(path: Path) -> dict | None:
    """A run's metrics.json with its packed arrays (bootstrap replicates) read back as lists."""
    found = load_json(path)
    return unpack_floats(found) if found is not None else None


def make_source(config: dict):
    data = dict(config["data"])
    name = data.pop("name")
    data.pop("min_count")
    data.pop("drop_roles", None)
    data.pop("teacher", None)
    return SOURCES.get(name).factory(SOURCES.config(name, data))


def _cache_root(config: dict) -> Path:
    root = Path(config.get("cache_root", "cache"))
    return root if root.is_absolute() else ROOT / root


def identity_files(config: dict) -> tuple[str, ...]:
    """The plug-in files a run's code identity holds whole: its model's and its embedding layer's.
    Not its data source's: the source acts only through the data preparation, whose output is the
    run's data input (see ``inputs``), so its code is identified there (the cache key holds the
    source's code digest, and the cache's content is what the run reads)."""
    entries = (MODELS.get(config["model"]["name"]), EMBEDDINGS.get(config["embedding"]["name"]))
    return tuple(sorted({inspect.getsourcefile(e.factory) for e in entries}))


def inputs(run: ResolvedRun) -> dict:
    """Every input that decides the run's numbers, as it stands now."""
    from repro.data.ledger import data_identity

    config = run.config
    source = make_source(config)
    versions = package_versions()
    now = {
        "config_hash": run.config_hash,
        # The prepared cache's content digest, from the results' data ledger by the cache's key;
        # None when the ledger does not know the key (new preparation code or config): `execute`
        # builds the cache and records it before it decides.
        "data": data_identity(source, PrepareConfig(min_count=config["data"]["min_count"]), ledger=ledger_path(run)),
        "code": code_identity(*identity_files(config))["fingerprint"],
        "versions": {k: versions.get(k) for k in NUMERIC_PACKAGES},
    }
    if config["data"].get("teacher"):
        now["teacher"] = teacher_identity(run)
    return now


def ledger_path(run: ResolvedRun) -> Path:
    """The data ledger of the run's results folder (``<results>/data_ledger.json``): cache key ->
    the content digest of the cache it builds (``repro.data.ledger``)."""
    return run.run_dir.parents[3] / "data_ledger.json"


def teacher_dir(run: ResolvedRun) -> Path | None:
    """The finished run that ``data.teacher`` names: the run labelled so in the same experiment,
    results folder and seed (the newest finished one, should an older variant linger). None when
    it has not run yet."""
    label = run.config["data"].get("teacher")
    if not label:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    found = []
    for manifest_path in run.run_dir.parents[1].glob(f"{safe}-*/{run.run_dir.name}/manifest.json"):
        manifest = load_json(manifest_path)
        if manifest and manifest.get("status") == "done" and manifest.get("label") == label:
            found.append((manifest.get("finished", ""), manifest_path.parent))
    return max(found)[1] if found else None


def teacher_identity(run: ResolvedRun) -> dict | None:
    """What a student's numbers depend on in its teacher: the teacher run's inputs and a digest of
    the predictions it left (None: no such run yet, so the student is stale until it exists)."""
    where = teacher_dir(run)
    if where is None:
        return None
    manifest = load_json(where / "manifest.json") or {}
    files = sorted((where / PREDICTIONS).glob("*.npy"))
    return {"config_hash": manifest.get("config_hash"), "code": manifest.get("inputs", {}).get("code"),
            "predictions": stable_hash({p.name: file_digest(p) for p in files}, 16)}


class LocalArtefact(str):
    """A staleness reason that is a missing local artefact, not a changed input: predictions are
    git-ignored, so on a fresh clone a run that keeps them, or a student whose teacher's they are,
    must rerun to rebuild them, and then gives the same numbers (``repro.freshness``: "waiting")."""


def staleness(run: ResolvedRun, manifest: dict | None = None, now: dict | None = None) -> list[str]:
    """Why the run must be (re)done; empty when its done result still stands. Reasons that are only
    missing local artefacts are ``LocalArtefact`` strings; every input is compared regardless."""
    manifest = manifest if manifest is not None else load_json(run.run_dir / "manifest.json")
    if not manifest:
        return ["no run yet"]
    if manifest.get("status") != "done" or not (run.run_dir / "metrics.json").exists():
        return [f"the last attempt is {manifest.get('status', 'unknown')!r}, not done"]
    then = manifest.get("inputs")
    if not then:
        return ["its manifest predates input tracking"]
    reasons: list[str] = []
    missing = [s for s in run.config["train"].get("keep_predictions", ())
               if not (run.run_dir / PREDICTIONS / f"{s}.npy").exists()]
    if missing:
        reasons.append(LocalArtefact(f"its predictions on {', '.join(missing)} are not here (git-ignored; "
                                     "rerunning it rebuilds them)"))
    now = now or inputs(run)
    if then.get("config_hash") != now["config_hash"]:
        reasons.append("the resolved config changed")
    if then.get("teacher") != now.get("teacher"):
        reasons.append(_teacher_reason(run, then.get("teacher"), now.get("teacher")))
    if then.get("data") != now["data"]:
        reasons.append(_unknown_data_reason(run) if now["data"] is None
                       else f"the data changed (prepared-data content {then.get('data')} -> {now['data']})")
    if then.get("code") != now["code"]:
        old = manifest.get("code", {}).get("files", {})
        new = code_identity(*identity_files(run.config))["files"]
        changed = sorted(f for f in old.keys() | new.keys() if old.get(f) != new.get(f))
        reasons.append(f"the code it executes changed ({', '.join(changed) or 'unknown files'})")
    for k, v in now["versions"].items():
        if then.get("versions", {}).get(k) != v:
            reasons.append(f"{k} {then.get('versions', {}).get(k)} -> {v}")
    return reasons


def _unknown_data_reason(run: ResolvedRun) -> str:
    """Why the data ledger has no content digest for the run's cache: the key is new (the
    preparation's code or config changed), or its cache was found not to rebuild byte for byte."""
    from repro.data.ledger import load_unreproduced
    from repro.data.prepare import cache_key

    key = cache_key(make_source(run.config), PrepareConfig(min_count=run.config["data"]["min_count"]))
    entry = load_unreproduced(ledger_path(run)).get(key) if ledger_path(run).exists() else None
    if entry:
        return (f"its prepared cache does not rebuild byte for byte here (the data ledger lists key {key} as "
                f"unreproduced: split digest {entry.get('rebuilt_split_digest')} rebuilt, "
                f"{entry.get('manifest_split_digest')} trained on)")
    return "the data preparation changed: its cache must be built to tell"


def _teacher_reason(run: ResolvedRun, then: dict | None, now: dict | None) -> str:
    """Why a student's teacher no longer matches: gone, changed, or only its (local) predictions absent."""
    if now is None:
        return "its teacher run is missing"
    same_run = then is not None and all(then.get(k) == now.get(k) for k in ("config_hash", "code"))
    where = teacher_dir(run)
    if same_run and where is not None and not any((where / PREDICTIONS).glob("*.npy")):
        return LocalArtefact("its teacher's predictions are not here (git-ignored; rerunning the teacher rebuilds them)")
    return "its teacher run changed"


def is_done(run: ResolvedRun) -> bool:
    return not staleness(run)


def open_data(config: dict, verbose: bool = True) -> PreparedDataset:
    prep = PrepareConfig(min_count=config["data"]["min_count"], cache_root=str(_cache_root(config)))
    return PreparedDataset(prepare(make_source(config), prep, verbose=verbose),
                           drop_roles=tuple(config["data"].get("drop_roles", ())))


def execute(cfg: DictConfig | dict, force: bool = False) -> dict:
    """Run one config (or return the cached result); returns the manifest.

    The run is built in ``seed<k>.partial/`` and renamed onto ``seed<k>/`` only when it is done,
    so a failing or killed rerun never touches the previous result; a failure leaves its manifest
    (status ``failed`` with the reason) in ``seed<k>.failed/``. A run killed or interrupted
    (Ctrl-C) keeps its ``.partial/`` folder and checkpoint, and the next call resumes it.
    """
    run = resolve(cfg)
    now = inputs(run)
    if now["data"] is None:  # a cache the ledger does not know: build it, record its content, then decide
        from repro.data.ledger import record

        root = prepare(make_source(run.config), PrepareConfig(min_count=run.config["data"]["min_count"],
                                                              cache_root=str(_cache_root(run.config))),
                       verbose=run.config["train"]["progress"])
        now["data"] = record(root, ledger=ledger_path(run))
    where = run.run_dir.relative_to(ROOT) if run.run_dir.is_relative_to(ROOT) else run.run_dir
    reasons = staleness(run, now=now) if not force else ["forced"]
    if not reasons:
        print(f"[cached] {where}")
        return load_json(run.run_dir / "manifest.json")
    if (run.run_dir / "manifest.json").exists():
        print(f"[stale] {where}: {'; '.join(reasons)}")

    work = _sibling(run.run_dir, ".partial")
    previous = load_json(work / "manifest.json")
    resuming = bool(previous and previous.get("inputs") == now and (work / CHECKPOINT).exists())
    if not resuming:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"[resume] {where} from its last checkpoint")
    work.mkdir(parents=True, exist_ok=True)
    manifest = {
        "experiment": run.experiment,
        "label": run.label,
        "status": "running",
        "config": run.config,
        "config_hash": run.config_hash,
        "inputs": now,
        "seed": run.config["seed"],
        "code": {**git_state(), **code_identity(*identity_files(run.config))},
        "packages": package_versions(),
        "machine": machine(),
        "started": previous["started"] if resuming else _now(),
        "resumed": (previous.get("resumed", 0) + 1) if resuming else 0,
    }
    atomic_write_json(work / "manifest.json", manifest)
    try:
        check_strict_data(run.config)
        metrics = _run(run, manifest, work)
        atomic_write_json(work / "metrics.json", pack_floats(metrics))  # replicates packed (repro.io)
        manifest.update(status="done", finished=_now())
        atomic_write_json(work / "manifest.json", manifest)
        for leftover in work.glob("*.pt"):  # checkpoints are for resuming, never results
            leftover.unlink()
        _replace_dir(work, run.run_dir)
        shutil.rmtree(_sibling(run.run_dir, ".failed"), ignore_errors=True)
        print(f"[done] {run.label} seed={run.config['seed']} test AUC {metrics['test']['auc']:.4f}")
        return manifest
    except KeyboardInterrupt:
        manifest.update(status="interrupted", finished=_now())
        atomic_write_json(work / "manifest.json", manifest)
        raise
    except BaseException as e:
        manifest.update(status="failed", finished=_now(), reason=f"{type(e).__name__}: {e}",
                        traceback=traceback.format_exc(limit=5))
        atomic_write_json(work / "manifest.json", manifest)
        (work / "metrics.json").unlink(missing_ok=True)
        for leftover in work.glob("*.pt"):
            leftover.unlink()
        _replace_dir(work, _sibling(run.run_dir, ".failed"))
        raise


def check_strict_data(config: dict) -> None:
    """``data.strict: true`` holds on a cache hit too: raise ``DataError`` naming the first rejected
    line when the prepared cache this run would read rejected any (its ``provenance.json``'s
    ``rejected_rows``, the line numbers in its ``rejects.json``). A source whose fingerprint ignores
    ``strict`` (Criteo's: it changes no row that is kept) shares one cache between strict and
    lenient runs, so a strict run would otherwise train on a file with bad lines as if it were clean.
    A bookkeeping check, called by ``execute`` before ``_run``: what it reads is the data input, so
    it is no part of the code identity. Without ``strict: true`` it does nothing."""
    if not config["data"].get("strict"):
        return
    from repro.data.prepare import REJECTS_FILE

    root = prepare(make_source(config), PrepareConfig(min_count=config["data"]["min_count"],
                                                      cache_root=str(_cache_root(config))), verbose=False)
    provenance = load_json(root / "provenance.json") or {}
    rejected = {s: n for s, n in (provenance.get("rejected_rows") or {}).items() if n}
    if not rejected:
        return
    rejects = load_json(root / REJECTS_FILE) or {}
    source = provenance.get("source_config") or config["data"]
    order = [s for s in provenance.get("splits", []) if s in rejected] or sorted(rejected)
    lines = {s: (rejects.get(s) or {}).get("first_malformed_line_numbers") or [] for s in order}
    split = next((s for s in order if lines[s]), order[0])
    if source.get("split") != "files" and any(lines.values()):  # one file: its first bad line, whatever split
        split = min((min(v), s) for s, v in lines.items() if v)[1]
    # The raw file a split's line numbers count in, as the source's config names it.
    name = source.get(f"{split}_file") if source.get("split") == "files" else source.get("file")
    where = str(Path(source["data_dir"]) / name) if name and source.get("data_dir") else (name or "its raw file")
    total = sum(rejected.values())
    if lines[split]:
        first = f"{where}: line {min(lines[split])}: a malformed line (split {split})"
    else:
        first = (f"split {split}: {rejected[split]} row(s) with a missing or invalid label "
                 f"(their line numbers are not recorded)")
    raise DataError(f"data.strict=true, but the prepared cache {root} rejected {total} row(s) of the raw data; "
                    f"the first: {first}. The cache was built by a lenient run (strict is not part of its "
                    "key); fix the file, or set data.strict=false to train on the rows kept")


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


PREDICTIONS = "predictions"  # a run's predictions on its data's unlabelled splits, one .npy each


def save_predictions(run_dir: Path, split: str, p: np.ndarray) -> None:
    """Keep a run's click probabilities on an unlabelled split (float32, in the split's row order):
    what a later run reads as a frozen teacher (``load_predictions``), never retraining it."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a path
            np.save(fh, np.asarray(p, dtype=np.float32))

    atomic_write(run_dir / PREDICTIONS / f"{split}.npy", write)


def load_predictions(run_dir: Path, split: str) -> np.ndarray:
    path = Path(run_dir) / PREDICTIONS / f"{split}.npy"
    if not path.exists():
        raise DataError(f"{run_dir}: no predictions on split {split!r} ({path}); the run's data has no such "
                        "unlabelled split, or the run predates prediction keeping")
    return np.load(path)


BOOTSTRAP_REPLICATES = 500  # paired (by request) replicates stored per evaluated test split


def _run(run: ResolvedRun, manifest: dict, work: Path) -> dict:
    started = time.perf_counter()
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
    # What deterministic CUDA needs besides (cuBLAS's workspace; no cuDNN autotuning); no-ops on the CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    # Deterministic mode also fills every new tensor with NaN by default (to expose reads of
    # uninitialised memory); on the CPU that cost 25% of a DeepFM step and 10-30x of a hashed
    # lookup (measured 2026-11-28), and correct ops never read such memory.
    torch.utils.deterministic.fill_uninitialized_memory = False
    train_cfg = TrainConfig(**config["train"])
    torch.set_num_threads(train_cfg.threads)
    teacher = _attach_teacher(run, data)
    # Every labelled split but train is evaluated; valid picks the epoch, the others are test
    # sets. Unlabelled splits (a candidate log) are predicted and their predictions kept.
    unlabelled = data.unlabelled_splits
    splits = [s for s in data.splits if s != "train" and s not in unlabelled]
    metrics: dict[str, Any] = {}
    with PeakMemory() as memory, GpuMonitor() as gpu:
        model = MODELS.build(config["model"]["name"], config["model"], data.feature_map, embedding=config["embedding"])
        if train_cfg.world_size > 1:  # torchrun workers train; this process predicts and scores
            from repro.distributed import launch

            state, result = launch(config, data.root, seed, work)
            model.load_state_dict(state)
        else:
            result = train(model, data, train_cfg, seed, checkpoint_dir=work)
        predictions = {}
        for split in splits:
            t = time.perf_counter()
            predictions[split] = predict(model, data, split, train_cfg.eval_batch_size)
            predict_s = time.perf_counter() - t
            metrics[split] = {"predict_rows_per_s": len(predictions[split]) / predict_s}
        for split in train_cfg.keep_predictions:
            if split not in data.splits:
                raise DataError(f"train.keep_predictions: the data has no split {split!r} ({list(data.splits)})")
            kept = predictions[split] if split in predictions else predict(model, data, split, train_cfg.eval_batch_size)
            save_predictions(work, split, kept)
        unscored = {}
        for split in unlabelled:
            t = time.perf_counter()
            unscored[split] = predict(model, data, split, train_cfg.eval_batch_size)
            metrics.setdefault("unlabelled", {})[split] = {
                "rows": len(unscored[split]), "predict_rows_per_s": len(unscored[split]) / (time.perf_counter() - t)}
            save_predictions(work, split, unscored[split])
    truth = {s: data.truth(s) for s in splits}  # read once per split
    for split in splits:
        metrics[split].update(_split_metrics(data, split, predictions[split], truth[split], bootstrap=split != "valid"))
    if all(truth[s] is not None for s in splits):
        metrics["bayes"] = {s: _split_metrics(data, s, truth[s]["p_click"].to_numpy(), truth[s], bootstrap=s != "valid")
                            for s in splits}
    if CASCADE_SPLIT in unscored:
        metrics["cascade"] = _cascade_metrics(data, unscored[CASCADE_SPLIT], teacher)
    if CREATIVE_SPLIT in unscored:
        metrics["creatives"] = _creative_metrics(data, unscored[CREATIVE_SPLIT])
    metrics["train"] = {k: v for k, v in dataclasses.asdict(result).items() if k != "history"}
    metrics["history"] = result.history
    peak = matmul_peak_flops(train_cfg.threads) if next(model.parameters()).device.type == "cpu" else None
    achieved = (result.flops_per_sample * result.samples / result.train_seconds
                if result.flops_per_sample and result.train_seconds > 0 else None)
    metrics["profile"] = {
        "train_samples_per_s": result.samples / max(result.train_seconds + result.data_seconds, 1e-9),
        "data_wait_share": result.data_seconds / max(result.train_seconds + result.data_seconds, 1e-9),
        "train_seconds": result.train_seconds + result.data_seconds,
        "phase_seconds": result.phase_seconds,
        "flops_per_sample": result.flops_per_sample,
        # Matrix-product FLOP/s of the training steps (data waits excluded), against this
        # process's own matrix-product peak (CPU runs; a GPU's peak is not measured here).
        "achieved_flops_per_s": achieved,
        "matmul_peak_flops_per_s": peak,
        "peak_share": achieved / peak if achieved and peak else None,
        "optimizer_state_bytes": result.optimizer_state_bytes,
        "world_size": result.world_size,
        "comm_bytes_per_step": result.comm_bytes_per_step,
        "cpu": cpu_capabilities(),
        "gpu": gpu.summary(),
        "eval_seconds": result.eval_seconds,
        "run_wall_seconds": time.perf_counter() - started,  # this call only (a resumed run: since resuming)
        "peak_rss_mb": memory.peak_rss_mb,
        "parameters": model.num_parameters(),
        "model_bytes": model.stored_bytes(),
        **embedding_sizes(model),
        "lookup_ms_4096": lookup_latency_ms(model, data, splits[-1] if splits else "valid"),
        "threads": train_cfg.threads,
        "device": str(next(model.parameters()).device),
        **gpu_memory(),
    }
    return metrics


CASCADE_SPLIT = "candidates_test"  # the candidate log a cascade is scored on


def _cascade_metrics(data: PreparedDataset, p: np.ndarray, teacher: Path | None) -> dict | None:
    """The run as the pre-ranker of a cascade whose ranker is its teacher (as the only stage when
    it has none), scored on the test candidate log's truth (``repro.cascade``); also its AUC
    against the true relevance over every candidate, shown or not."""
    truth = data.truth(CASCADE_SPLIT)
    bid_field = data.feature_map.by_role("bid")
    request_field = data.feature_map.group_key("request")
    if truth is None or bid_field is None or request_field is None or not {"relevance", "eta"} <= set(truth):
        return None
    rank = load_predictions(teacher, CASCADE_SPLIT) if teacher is not None else p
    slots = int(data.provenance.get("source_config", {}).get("slots", 5))
    out = evaluate_cascade(data.column(CASCADE_SPLIT, request_field.name),
                           np.exp(data.column(CASCADE_SPLIT, bid_field.columns[0]).astype(np.float64)), p, rank,
                           truth["relevance"].to_numpy(), truth["eta"].to_numpy(), slots,
                           n_replicates=BOOTSTRAP_REPLICATES)
    out["auc_relevance"] = metric_fns.relevance_auc(truth["relevance"].to_numpy(), p)
    out["ranker"] = "teacher" if teacher is not None else "self"
    return out


CREATIVE_SPLIT = "creatives_test"  # the creative log creative selection is scored on


def _creative_metrics(data: PreparedDataset, p: np.ndarray) -> dict | None:
    """The run as a creative selector on the test creative log (``repro.cascade.evaluate_creatives``):
    per shown ad of a request, its highest-scored alive creative against the ad's best and a
    uniform choice, by the world's truth; cold creatives are those born during the log."""
    truth = data.truth(CREATIVE_SPLIT)
    fm = data.feature_map
    request_field, position_field = fm.group_key("request"), fm.by_role("position")
    if truth is None or request_field is None or position_field is None or \
            not {"relevance", "creative_born"} <= set(truth):
        return None
    request = data.column(CREATIVE_SPLIT, request_field.name).astype(np.int64)
    group = request * (position_field.vocab_size + 1) + data.column(CREATIVE_SPLIT, position_field.name)
    return evaluate_creatives(group, p, truth["relevance"].to_numpy(), data.column(CREATIVE_SPLIT, "label"),
                              truth["creative_born"].to_numpy() >= 0, n_replicates=BOOTSTRAP_REPLICATES,
                              request=request)


def _attach_teacher(run: ResolvedRun, data: PreparedDataset) -> Path | None:
    """Give every batch of each split the teacher run kept predictions on (its unlabelled splits,
    and those of its ``train.keep_predictions``) those frozen predictions as ``batch['teacher']``;
    the teacher must have predicted exactly these prepared rows."""
    label = run.config["data"].get("teacher")
    if not label:
        return None
    where = teacher_dir(run)
    if where is None:
        raise DataError(f"data.teacher={label!r}: no finished run labelled so in {run.run_dir.parents[1]} for "
                        f"{run.run_dir.name}; list the teacher before its students in the experiment")
    manifest = load_json(where / "manifest.json") or {}
    if manifest.get("data", {}).get("fingerprint") != data.fingerprint:
        raise DataError(f"data.teacher={label!r}: {where} was trained on other prepared data "
                        f"({manifest.get('data', {}).get('fingerprint')} vs {data.fingerprint})")
    scored = [s for s in data.splits if (where / PREDICTIONS / f"{s}.npy").exists()]
    if not scored:
        raise DataError(f"data.teacher={label!r}: {where} kept no predictions (it keeps them on unlabelled splits "
                        "and on the splits of its train.keep_predictions)")
    for split in scored:
        data.attach(split, "teacher", load_predictions(where, split))
    return where


def _split_metrics(data: PreparedDataset, split: str, p: np.ndarray, truth, bootstrap: bool) -> dict:
    fm = data.feature_map
    y = data.column(split, "label")
    groups = {}
    for role in ("user", "request"):
        f = fm.group_key(role)
        if f is not None:
            groups[role] = data.column(split, f.name)
    subsets = {}
    if truth is not None and "is_random" in truth:
        mask = truth["is_random"].to_numpy()
        if not mask.all():  # a fully random split is its own metric
            subsets["random"] = mask
    tail = tail_rows(data, split)
    if tail is not None and tail.any():
        subsets["tail"] = tail
    weight = data.column(split, "weight") if fm.weight else None
    out = evaluate(y, p, groups=groups, subsets=subsets or None, weight=weight)
    # Position-free figures: against the world's relevance, and within each shown position.
    if truth is not None and "relevance" in truth:
        out["auc_relevance"] = metric_fns.relevance_auc(truth["relevance"].to_numpy(), p)
    positions = shown_positions(data, split)
    if positions is not None and weight is None:
        out.update(metric_fns.by_position(y, p, positions))
    if bootstrap:
        unit = "request" if "request" in groups else "row"
        keys = groups.get("request", np.arange(len(y)))
        reps = metric_fns.bootstrap_replicates(y, p, keys, n_replicates=BOOTSTRAP_REPLICATES, seed=0, weight=weight)
        out["bootstrap"] = {**{k: np.asarray(v).tolist() for k, v in reps.items()},
                            "n_replicates": BOOTSTRAP_REPLICATES, "seed": 0, "unit": unit}
    return out


def shown_positions(data: PreparedDataset, split: str, largest: int = 1000) -> np.ndarray | None:
    """The raw position (1, 2, ...) of every row of ``split``, decoded from the position field's
    raw-value hashes (integers up to ``largest``; -1 for anything else); None without a position."""
    f = data.feature_map.by_role("position")
    if f is None or f.kind != "categorical":
        return None
    values = np.arange(largest + 1)
    lookup = pd.Series(values, index=raw_hash(pa.array(values)))
    raw = data.column(split, raw_column(f.name))
    return lookup.reindex(raw).fillna(-1).to_numpy(dtype=np.int64)


TAIL_ROLES = ("user", "query", "ad", "creative")  # the entity-ID fields whose rarity defines the tail
TAIL_SHARE = 0.1


def tail_rows(data: PreparedDataset, split: str) -> np.ndarray | None:
    """The rows whose IDs are in the bottom frequency decile: a row's rarity is the smallest
    training count among its entity-ID fields (roles user, query, ad, creative; every categorical
    field when a data set declares none of them), and the tail is every row at or below the
    split's 10% quantile of rarity (ties included, so it may hold more than 10% of the rows).
    Counts are the train split's; a value unseen in train (OOV) counts 0."""
    fm = data.feature_map
    fields = [f for f in fm.categorical if set(f.roles) & set(TAIL_ROLES)] or fm.categorical
    if not fields or fm.frequencies is None:
        return None
    rarity = None
    for f in fields:
        counts = np.asarray(fm.frequencies[f.name])[data.column(split, f.name)]
        rarity = counts if rarity is None else np.minimum(rarity, counts)
    return rarity <= np.quantile(rarity, TAIL_SHARE)


def lookup_latency_ms(model: torch.nn.Module, data: PreparedDataset, split: str, batch_size: int = 4096,
                      repeats: int = 7) -> float:
    """Median milliseconds of one inference lookup of ``batch_size`` rows through every embedding
    layer of ``model`` (the first-order tables included): a speed figure, never judged."""
    layers = embedding_layers(model)
    if not layers:
        return 0.0
    device = next(model.parameters()).device
    batch = next(data.batches(split, batch_size))
    cat, raw = batch["cat"].to(device), batch.get("raw")
    raw = raw.to(device) if raw is not None else None
    was_training = model.training
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            for layer in layers:
                layer(cat, raw)
            times.append(time.perf_counter() - t)
    model.train(was_training)
    return 1000.0 * float(np.median(times))


def embedding_sizes(model: torch.nn.Module) -> dict:
    """Parameters and stored bytes of every embedding layer (first-order tables included), in
    total and per categorical field where the layers can attribute them."""
    layers = embedding_layers(model)
    by_field: dict[str, int] = {}
    attributable = True
    for layer in layers:
        part = layer.bytes_by_field()
        if part is None:
            attributable = False
            continue
        for name, b in part.items():
            by_field[name] = by_field.get(name, 0) + int(b)
    return {
        "embedding_parameters": int(sum(layer.num_parameters() for layer in layers)),
        "embedding_bytes": int(sum(layer.stored_bytes() for layer in layers)),
        "embedding_bytes_by_field": by_field if attributable else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
