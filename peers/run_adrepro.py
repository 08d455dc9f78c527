"""adrepro's DeepFM on the exported CSV files, through adrepro's own pipeline (adrepro's .venv).

Preprocessing (timed): the ``tabular`` source (datasets/tabular.py, the path for a user's own CSV
files) reads the three CSV files (a Criteo export: the ``criteo`` source, ``split: files``,
``layout: csv``, FuxiCTR's integer buckets and missing integers as 0) and ``repro.data.prepare``
builds the columnar cache (train-only vocabularies with ``min_count``, OOV and padding indices,
raw-value hashes), into a fresh cache folder so nothing is reused from an earlier run. Importing
the library (every source and model module) happens before the clock starts.

Training: ``baselines/deepfm.py`` with the ``full`` embedding (one fused table, its default init
N(0, 0.01)), trained by ``repro.train.train``, the trainer every adrepro table uses, configured to
the shared settings: dense Adam on every parameter, embedding tables included
(``embedding_optimizer: adam``; adrepro's own protocol uses lazy ``sparse_adam``, run with
``--embedding-optimizer sparse_adam``), lr 1e-3, no embedding L2, no weight decay, no clipping,
one epoch, batch 4096, 2 threads, seed 0, with the determinism switches ``repro.run`` sets.
Training samples/s = samples / (time in the training loop, data fetch included); the one
end-of-epoch validation pass the trainer makes is timed apart and excluded.

    python -m peers.run_adrepro --data .peers/data/world-default --out .peers/out/default/adrepro
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from peers.common import LABELS, PREDICTIONS, SETTINGS, Clock, fresh_dir, load_meta, max_rss_mb, run_settings, set_threads, write_result


INITS = {
    "adrepro": "embeddings N(0, 0.01) (full, init_std 0.01); first-order weights zero; MLP torch default "
               "(Kaiming-uniform weights and biases)",
    "fuxictr": "FuxiCTR's, set by the runner: embeddings and first-order weights N(0, 1e-4); MLP Xavier-normal "
               "weights, zero biases",
}


def fuxictr_init_(model, std: float = 1e-4) -> None:
    """Give adrepro's DeepFM FuxiCTR's initialisation (BaseModel.reset_parameters + FeatureEmbedding)."""
    from repro.embeddings import embedding_layers

    with torch.no_grad():
        for layer in embedding_layers(model):
            layer.weight.normal_(0.0, std)
            layer.weight[layer.offsets] = 0.0  # the padding rows stay zero, as FuxiCTR's padding_idx
        for m in model.mlp.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_normal_(m.weight)
                torch.nn.init.zeros_(m.bias)


def tabular_config(data_dir: str | Path, meta: dict) -> dict:
    """The ``tabular`` source's config for the exported files: categorical fields only, no roles."""
    return {
        "data_dir": str(Path(data_dir).resolve()),
        "split": "files",
        "train_file": "train.csv",
        "valid_file": "valid.csv",
        "test_file": "test.csv",
        "format": "csv",
        "label": meta["label"],
        "categorical": list(meta["fields"]),
        "dense": [],
        "roles": {},
        "transforms": {},
    }


def tabular_source(data_dir: str | Path, meta: dict | None = None):
    from repro.registry import SOURCES

    meta = meta or load_meta(data_dir)
    return SOURCES.get("tabular").factory(SOURCES.config("tabular", tabular_config(data_dir, meta)))


def criteo_config(data_dir: str | Path) -> dict:
    """The ``criteo`` source on a Criteo export (reczoo's Criteo_x4 CSV layout, one file per split),
    with FuxiCTR's Criteo_x4 preprocessing: integers bucketed by floor(ln(x)^2), missing ones 0."""
    return {"data_dir": str(Path(data_dir).resolve()), "split": "files", "layout": "csv", "train_file": "train.csv",
            "valid_file": "valid.csv", "test_file": "test.csv", "integers": "bucket", "missing_integers": "zero"}


def export_source(data_dir: str | Path, meta: dict):
    """The adrepro source that reads this export: ``criteo`` for a Criteo export, else ``tabular``."""
    from repro.registry import SOURCES

    if meta.get("source") == "criteo":
        return SOURCES.get("criteo").factory(SOURCES.config("criteo", criteo_config(data_dir)))
    return tabular_source(data_dir, meta)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the folder peers.export wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--embedding-optimizer", default="adam", choices=("adam", "sparse_adam"))
    ap.add_argument("--seed", type=int, default=SETTINGS["seed"], help="the training seed")
    ap.add_argument("--init", default="adrepro", choices=tuple(INITS),
                    help="adrepro's own initialisation, or FuxiCTR's (an ablation of the one setting left to each library)")
    args = ap.parse_args(argv)
    set_threads(SETTINGS["threads"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = load_meta(args.data)
    s = run_settings(meta, args.seed)

    from repro.data.dataset import PreparedDataset
    from repro.data.prepare import PrepareConfig, prepare
    from repro.registry import MODELS
    from repro.train import TrainConfig, predict, train

    torch.set_num_threads(s["threads"])

    # -- preprocessing: raw CSV -> adrepro's columnar cache -----------------------------------
    from repro.registry import load_plugins

    load_plugins()  # importing the library (every source and model module) is not preprocessing
    cache = fresh_dir(out / "cache")
    clock = Clock()
    source = export_source(args.data, meta)
    root = prepare(source, PrepareConfig(min_count=s["min_count"], cache_root=str(cache)), verbose=False)
    data = PreparedDataset(root)
    preprocess_s = clock.seconds()
    rss_after_preprocess = max_rss_mb()

    # -- model and training, as repro.run does it ---------------------------------------------
    torch.manual_seed(s["seed"])
    np.random.seed(s["seed"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    model = MODELS.build("deepfm", {"hidden_units": s["hidden_units"], "dropout": s["dropout"],
                                    "batch_norm": s["batch_norm"]},
                         data.feature_map, embedding={"name": "full", "dim": s["embedding_dim"]})
    if args.init == "fuxictr":
        fuxictr_init_(model)
    cfg = TrainConfig(optimizer="adam", lr=s["lr"], weight_decay=0.0, embedding_optimizer=args.embedding_optimizer,
                      embedding_lr=None, embedding_l2=s["l2"], batch_size=s["batch_size"],
                      eval_batch_size=s["eval_batch_size"], epochs=s["epochs"], evals_per_epoch=1,
                      grad_clip_norm=0.0, threads=s["threads"], device="cpu", checkpoint=False, progress=False)
    result = train(model, data, cfg, seed=s["seed"])
    train_s = result.train_seconds + result.data_seconds

    t = time.perf_counter()
    y_pred = predict(model, data, "test", s["eval_batch_size"])
    predict_s = time.perf_counter() - t
    y_true = data.column("test", "label").astype(np.float64)
    np.save(out / PREDICTIONS, y_pred.astype(np.float64))
    np.save(out / LABELS, y_true)

    import importlib.metadata

    from repro.environment import git_state

    git = git_state()
    vocab = {f.name: f.vocab_size for f in data.feature_map.categorical}
    write_result(out, {
        "library": "adrepro",
        "version": f"adrepro {importlib.metadata.version('adrepro')} (git {git['commit'][:10]}"
                   f"{', uncommitted changes' if git['dirty'] else ''})",
        "packages": {"torch": torch.__version__, "numpy": np.__version__},
        "model_source": "baselines/deepfm.py (FirstOrder + FieldEmbedder + fm_interaction + MLP)",
        "embedding_optimizer": args.embedding_optimizer,
        "init": INITS[args.init],
        "seed": args.seed,
        "preprocess_seconds": round(preprocess_s, 3),
        "preprocess_what": f"{source.name} source reads the CSVs + repro.data.prepare (vocabularies, encoding, "
                           "parquet cache)",
        "train_seconds": round(train_s, 3),
        "train_data_seconds": round(result.data_seconds, 3),
        "train_samples": result.samples,
        "train_samples_per_s": round(result.samples / train_s, 1),
        "train_steps": result.steps,
        "valid_seconds_excluded": round(result.eval_seconds, 3),
        "predict_seconds": round(predict_s, 3),
        "parameters": int(model.num_parameters()),
        "vocab_sizes": vocab,
        "rows": {split: data.num_rows(split) for split in ("train", "valid", "test")},
        "ru_maxrss_after_preprocess_mb": round(rss_after_preprocess, 1),
        "ru_maxrss_mb": round(max_rss_mb(), 1),
        "threads": torch.get_num_threads(),
    }, settings=s)


if __name__ == "__main__":
    main()
