"""Measurement ``cascade_latency``: the CPU time each cascade stage spends on one request, unbatched,
as a server thread scores a request (issue 7: "latency per request of each stage on the CPU").

Each stage is a model composed exactly as an experiment's run is (Hydra, the experiment's data
overrides plus the stage's own), with fresh weights (latency does not depend on their values),
in eval mode under ``no_grad``. It scores the rows of one request of a logged split (the candidate
log for pre-ranking and ranking, the creative log for creative selection), cut to the first
``keep`` rows when the stage sees only the survivors of the stage before it (the ranker scores
the pre-ranker's top K1). Figures: median and 99th-percentile milliseconds per request over
``requests`` requests after ``warmup`` untimed ones, rows per request, and the median as a ratio to
the ``reference`` stage, measured in the same process.

Choices made here: one thread (a server runs many requests side by side, one per core);
``served: cached_ads`` times a two-tower pre-ranker as it is served, the ad vectors computed
offline (outside the timer) and only the user/query tower and the dot products timed; any other
stage times the model's whole forward over the request's rows. Python's per-call overhead is
part of every figure, as it is of a Python server; a C++ server would shrink the small stages.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from repro.errors import ConfigError
from repro.measurements import register_measurement
from repro.registry import MODELS, ROOT
from repro.run import open_data, resolve

STAGE_KEYS = {"label", "overrides", "split", "keep", "served"}


@dataclass
class CascadeLatencyConfig:
    overrides: list[str] = field(default_factory=list)  # the experiment's common overrides
    # each: {label, overrides: [model=..., ...], split: candidates_test, keep: 0 (all rows) | K, served: forward | cached_ads}
    stages: list[dict] = field(default_factory=list)
    reference: str = ""  # the stage every ratio is against (default: the first)
    requests: int = 300
    warmup: int = 20
    threads: int = 1


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=overrides)


def _requests(data, split: str, count: int):
    """The first ``count`` requests of ``split``, one batch each (rows grouped by request)."""
    out = []
    for batch in data.batches(split, 1, group_by_request=True):
        out.append(batch)
        if len(out) == count:
            break
    if not out:
        raise ConfigError(f"cascade_latency: split {split!r} has no rows")
    return out


def _cut(batch: dict, keep: int) -> dict:
    if keep <= 0:
        return batch
    return {k: v[:keep] for k, v in batch.items()}


def _scorer(model, served: str, batch: dict):
    if served == "forward":
        return lambda: model(batch)
    if served == "cached_ads":
        if not hasattr(model, "user_tower"):
            raise ConfigError("cascade_latency: served=cached_ads is for a two-tower model")
        emb = model.embed(batch)
        ads = model.ad_tower(emb[:, model.ad_idx].flatten(1))  # computed offline by a server

        def score():
            user = model.user_tower(model.embed({k: v[:1] for k, v in batch.items()})[:, model.user_idx].flatten(1))
            return ads @ user[0] + model.bias

        return score
    raise ConfigError(f"cascade_latency: unknown served {served!r} (forward | cached_ads)")


def _time_stage(stage: dict, cfg: CascadeLatencyConfig) -> dict:
    run_cfg = resolve(_compose(list(cfg.overrides) + list(stage.get("overrides", [])))).config
    data = open_data(run_cfg, verbose=False)
    torch.manual_seed(0)
    model = MODELS.build(run_cfg["model"]["name"], run_cfg["model"], data.feature_map, embedding=run_cfg["embedding"])
    model.eval()
    batches = [_cut(b, int(stage.get("keep", 0))) for b in
               _requests(data, stage.get("split", "candidates_test"), cfg.requests + cfg.warmup)]
    times, rows = [], []
    with torch.no_grad():
        for i, batch in enumerate(batches):
            score = _scorer(model, stage.get("served", "forward"), batch)
            started = time.perf_counter()
            score()
            if i >= cfg.warmup:
                times.append(time.perf_counter() - started)
                rows.append(len(batch["label"]))
    return {"median": statistics.median(times) * 1e3, "p99": float(np.percentile(times, 99)) * 1e3,
            "rows": float(np.mean(rows))}


@register_measurement("cascade_latency", config=CascadeLatencyConfig)
def cascade_latency(cfg: CascadeLatencyConfig) -> dict:
    if not cfg.stages:
        raise ConfigError("cascade_latency: no stages")
    for stage in cfg.stages:
        unknown = set(stage) - STAGE_KEYS
        if unknown or "label" not in stage:
            raise ConfigError(f"cascade_latency: stage {stage}: needs a label; unknown keys {sorted(unknown)}; "
                              f"known {sorted(STAGE_KEYS)}")
    reference = cfg.reference or cfg.stages[0]["label"]
    if reference not in [s["label"] for s in cfg.stages]:
        raise ConfigError(f"cascade_latency: reference {reference!r} is not a stage")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        figures = {s["label"]: _time_stage(s, cfg) for s in cfg.stages}
    finally:
        torch.set_num_threads(threads)
    ref = figures[reference]["median"]
    rows = [[label, f"{f['rows']:.1f}", f"{f['median']:.3f}", f"{f['p99']:.3f}", f"{f['median'] / ref:.2f}"]
            for label, f in figures.items()]
    return {"columns": ["stage", "rows per request", "median ms / request", "p99 ms / request",
                        f"median / {reference}"],
            "rows": rows,
            "notes": [f"{cfg.requests} requests after {cfg.warmup} untimed, one at a time, {cfg.threads} thread(s), "
                      "fresh weights, eval mode, no_grad; `cached_ads`: ad vectors computed outside the timer"]}
