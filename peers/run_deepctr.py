"""DeepCTR-Torch 0.3.0's DeepFM on the exported CSV files (its own venv: .peers/venv-deepctr).

Preprocessing (timed): DeepCTR-Torch ships no preprocessing; its examples read a CSV with pandas and
label-encode each sparse field with scikit-learn's ``LabelEncoder`` fitted on all rows. That cannot
map a value unseen in training, and fitting on test rows leaks, so this runner does what a careful
user of the library writes instead, in pandas: read the three CSV files, build each field's
vocabulary from the training rows (values seen at least ``min_count`` times, as FuxiCTR's and
adrepro's tokenizers do), encode every split through it (index 0 = rare or unseen), and build the
``SparseFeat`` columns and the input dicts ``fit`` takes.

Training: ``deepctr_torch.models.DeepFM`` with the shared settings (``l2_reg_linear``,
``l2_reg_embedding`` and ``l2_reg_dnn`` 0 -- the library's defaults are 1e-5 on the first two --
``dnn_dropout`` 0, no batch norm) and its own initialisation (embeddings, first-order weights and
MLP weights all N(0, 1e-4): ``init_std``), compiled with ``torch.optim.Adam(lr=1e-3)`` and
``binary_crossentropy`` (DeepCTR sums the loss over the batch; Adam's update does not depend on the
loss scale, up to its epsilon). ``fit`` runs one epoch, shuffled by torch's generator (seed 0), with
no validation data and ``verbose=0`` (with verbose > 0 it computes AUC and logloss on every batch,
which would be timed). Training samples/s = rows / wall time of ``fit``.

The package checks PyPI for a newer version on import (``requests.get`` in a thread, no timeout);
the runner makes that call fail at once so no run waits on the network.

    .peers/venv-deepctr/bin/python -m peers.run_deepctr --data .peers/data/world-default --out .peers/out/default/deepctr
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from peers.common import LABELS, PREDICTIONS, SETTINGS, SPLITS, Clock, csv_path, load_meta, max_rss_mb, run_settings, set_threads, write_result


def _no_version_check() -> None:
    import requests

    def offline(*args, **kwargs):
        raise requests.ConnectionError("peers: DeepCTR-Torch's version check is disabled")

    requests.get = offline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the folder peers.export wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=SETTINGS["seed"], help="the training seed")
    args = ap.parse_args(argv)
    set_threads(SETTINGS["threads"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = load_meta(args.data)
    s = run_settings(meta, args.seed)
    fields, label = meta["fields"], meta["label"]

    import numpy as np
    import pandas as pd
    import torch

    _no_version_check()
    import deepctr_torch
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM

    torch.set_num_threads(s["threads"])
    random.seed(s["seed"])
    np.random.seed(s["seed"])
    torch.manual_seed(s["seed"])

    # -- preprocessing: raw CSV -> integer ids, the user's code (DeepCTR-Torch has none) ---------
    clock = Clock()
    integers = set(meta.get("integer_fields") or ())  # a Criteo export: FuxiCTR's Criteo_x4 preprocessing
    dtypes = {f: "float64" if f in integers else "string" for f in fields} if integers else None
    frames = {split: pd.read_csv(csv_path(args.data, split), usecols=[label, *fields], dtype=dtypes)
              for split in SPLITS}
    for frame in frames.values():
        for f in fields:
            if f in integers:  # missing -> 0, then floor(ln(x)^2) above 2, truncation toward zero below
                x = frame[f].fillna(0.0).to_numpy()
                with np.errstate(invalid="ignore", divide="ignore"):
                    frame[f] = np.where(x > 2, np.floor(np.log(x) ** 2), np.trunc(x)).astype(np.int64)
            elif integers:
                frame[f] = frame[f].fillna("")  # a missing category is one more value, as FuxiCTR's fill_na
    inputs = {split: {} for split in SPLITS}
    vocab_sizes = {}
    for f in fields:
        counts = frames["train"][f].value_counts()
        vocab = pd.Index(counts.index[counts >= s["min_count"]])
        for split in SPLITS:
            codes = vocab.get_indexer(frames[split][f]).astype(np.int64)  # a hash lookup; -1: rare or unseen
            inputs[split][f] = codes + 1  # -1 -> 0
        vocab_sizes[f] = len(vocab) + 1
    labels = {split: frames[split][label].to_numpy(dtype=np.float32) for split in SPLITS}
    rows = {split: len(frames[split]) for split in SPLITS}
    del frames
    columns = [SparseFeat(f, vocabulary_size=vocab_sizes[f], embedding_dim=s["embedding_dim"]) for f in fields]
    preprocess_s = clock.seconds()
    rss_after_preprocess = max_rss_mb()

    # -- model and training -------------------------------------------------------------------
    model = DeepFM(linear_feature_columns=columns, dnn_feature_columns=columns, use_fm=True,
                   dnn_hidden_units=tuple(s["hidden_units"]), l2_reg_linear=s["l2"], l2_reg_embedding=s["l2"],
                   l2_reg_dnn=s["l2"], dnn_dropout=s["dropout"], dnn_activation="relu", dnn_use_bn=s["batch_norm"],
                   seed=s["seed"], task="binary", device="cpu")
    model.compile(torch.optim.Adam(model.parameters(), lr=s["lr"]), "binary_crossentropy")
    t = time.perf_counter()
    model.fit(inputs["train"], labels["train"], batch_size=s["batch_size"], epochs=s["epochs"], verbose=0,
              shuffle=True)
    train_s = time.perf_counter() - t

    t = time.perf_counter()
    y_pred = model.predict(inputs["test"], batch_size=s["eval_batch_size"]).reshape(-1)
    predict_s = time.perf_counter() - t
    np.save(out / PREDICTIONS, y_pred.astype(np.float64))
    np.save(out / LABELS, labels["test"].astype(np.float64))

    import importlib.metadata

    write_result(out, {
        "library": "DeepCTR-Torch",
        "version": f"deepctr-torch {deepctr_torch.__version__}",
        "packages": {name: importlib.metadata.version(name) for name in ("torch", "numpy", "pandas", "scikit-learn")},
        "model_source": "deepctr_torch.models.DeepFM (as shipped)",
        "embedding_optimizer": "adam",
        "init": "embeddings, first-order weights and MLP weights N(0, 1e-4) (init_std); MLP biases torch default",
        "seed": args.seed,
        "preprocess_seconds": round(preprocess_s, 3),
        "preprocess_what": "pandas read_csv of the three files + train-only vocabularies (min_count) + encoding "
                           "+ SparseFeat columns" + (" (Criteo: integers filled with 0 and bucketed by "
                                                      "floor(ln(x)^2), numpy-vectorised)" if integers else ""),
        "train_seconds": round(train_s, 3),
        "train_samples": rows["train"],
        "train_samples_per_s": round(rows["train"] / train_s, 1),
        "train_steps": -(-rows["train"] // s["batch_size"]),
        "predict_seconds": round(predict_s, 3),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "vocab_sizes": vocab_sizes,
        "rows": rows,
        "ru_maxrss_after_preprocess_mb": round(rss_after_preprocess, 1),
        "ru_maxrss_mb": round(max_rss_mb(), 1),
        "threads": torch.get_num_threads(),
    }, settings=s)


if __name__ == "__main__":
    main()
