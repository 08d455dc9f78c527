"""What every runner shares: the one set of hyper-parameters, the export's layout, the result file.

Standard library only: this module is imported in adrepro's environment and in each peer library's
own (``.peers/venv-*``), where neither adrepro nor numpy's version of it can be assumed.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

# The one configuration every library trains with (results/peers.md prints it). DeepFM as in the
# papers and in all three libraries: first-order weights + FM over the field embeddings + an MLP
# over their concatenation, logits summed. No regularisation of any kind (no L2, no dropout, no
# batch norm), and no gradient clipping (FuxiCTR and adrepro clip at norm 10 by default; DeepCTR
# does not clip): one rule for all.
SETTINGS = {
    "model": "DeepFM",
    "hidden_units": [256, 128, 64],
    "activation": "ReLU",
    "embedding_dim": 16,
    "batch_size": 4096,
    "optimizer": "Adam (dense, every parameter)",
    "lr": 1e-3,
    "epochs": 1,
    "seed": 0,
    "threads": 2,
    "min_count": 2,
    "l2": 0.0,
    "dropout": 0.0,
    "batch_norm": False,
    "gradient_clipping": None,
    "eval_batch_size": 65536,
}

SPLITS = ("train", "valid", "test")
META = "meta.json"  # written by peers.export beside the CSV files
TRUTH = "test_p_click.npy"  # the test rows' true click probabilities (the report's Bayes-optimal row)
RESULT = "result.json"  # written by each runner into its output folder
PREDICTIONS = "y_pred.npy"  # test-split click probabilities, float64, in the order of y_true.npy
LABELS = "y_true.npy"  # the test labels each runner saw beside its predictions


def run_settings(meta: dict, seed: int) -> dict:
    """SETTINGS as one run uses them: its training seed, and the export's ``min_count`` where the
    export names one (a variant of the world may ask every library for its own threshold)."""
    min_count = meta.get("min_count")
    return {**SETTINGS, "seed": seed, "min_count": SETTINGS["min_count"] if min_count is None else int(min_count)}


def load_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / META
    if not path.exists():
        sys.exit(f"{path} is missing: export the data first (python -m peers.export)")
    return json.loads(path.read_text())


def csv_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.csv"


def set_threads(n: int) -> None:
    """Thread caps for the native pools that read them at start-up (the Makefile also exports them)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ.setdefault(var, str(n))


def max_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def write_result(out_dir: str | Path, result: dict, settings: dict | None = None) -> None:
    """Write ``result.json`` last, atomically: its presence means the run finished. ``settings``:
    what the run used (``run_settings``; None: SETTINGS)."""
    out = Path(out_dir)
    result = {"python": platform.python_version(), "settings": settings or SETTINGS, **result}
    tmp = out / (RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / RESULT)


def fresh_dir(path: str | Path) -> Path:
    """An empty folder at ``path`` (a library's own cache from an earlier run would skip its
    preprocessing, which is measured)."""
    import shutil

    p = Path(path)
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True)
    return p
