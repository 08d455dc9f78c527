"""FuxiCTR 2.3.10's DeepFM on the exported CSV files (its own venv: .peers/venv-fuxictr).

The ``fuxictr`` wheel ships the preprocessing, the data loaders, ``BaseModel`` and the layers, but
not the model zoo (``model_zoo/DeepFM`` lives in the GitHub repository only). ``DeepFM`` below is
assembled from the wheel's own pieces exactly as the zoo's DeepFM is: ``FeatureEmbedding`` (the
field embeddings), ``FactorizationMachine`` (a ``LogisticRegression`` first-order term with bias +
the ``InnerProductInteraction`` FM sum) and ``MLP_Block`` (hidden layers, ReLU, a 1-unit output),
summed and passed through ``BaseModel``'s sigmoid; ``compile``, ``reset_parameters`` (Xavier-normal
linear layers, zero biases; embeddings N(0, 1e-4)) and ``train_step`` are BaseModel's.

Preprocessing (timed) is FuxiCTR's own pipeline: ``FeatureProcessor`` (every field
``{type: categorical, dtype: str}``, label ``click``) and ``build_dataset`` with
``min_categr_count``: polars reads the CSV files, the tokenizers are fitted on train, and Ray Data
encodes every split into parquet (in 2.3 ``transform`` always runs on Ray; the local Ray start-up
is inside this time).

Training: ``RankDataLoader(data_format="parquet")`` (a Ray Data dataset, globally shuffled per
epoch by Ray, which takes no seed) and one pass of ``BaseModel.train_step`` over it -- what
``BaseModel.fit``'s epoch does, minus the validation pass and checkpoint it makes at the epoch's
end, which are not training. ``fit`` clips the gradient norm at ``max_gradient_norm`` (default 10);
here it is set to infinity (no clipping), as for every library. Training samples/s = rows / wall
time of that loop (Ray's shuffle included). Test predictions come from the same loader with
``shuffle=False`` and Ray's order preservation on, each batch's labels saved beside its predictions.

    .peers/venv-fuxictr/bin/python -m peers.run_fuxictr --data .peers/data/world-default --out .peers/out/default/fuxictr
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from peers.common import LABELS, PREDICTIONS, SETTINGS, Clock, csv_path, fresh_dir, load_meta, max_rss_mb, run_settings, set_threads, write_result


def build_model_class():
    """FuxiCTR's model-zoo DeepFM, from the wheel's BaseModel and layers."""
    from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    class DeepFM(BaseModel):
        def __init__(self, feature_map, model_id="DeepFM", gpu=-1, learning_rate=1e-3, embedding_dim=10,
                     hidden_units=(64, 64, 64), hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                     embedding_regularizer=None, net_regularizer=None, **kwargs):
            super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                             net_regularizer=net_regularizer, **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.fm = FactorizationMachine(feature_map)
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                                 hidden_units=list(hidden_units), hidden_activations=hidden_activations,
                                 output_activation=None, dropout_rates=net_dropout, batch_norm=batch_norm)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X)
            y_pred = self.fm(X, feature_emb)
            y_pred = y_pred + self.mlp(feature_emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(y_pred)}

    return DeepFM


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the folder peers.export wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=SETTINGS["seed"], help="the training seed (Ray's shuffle takes none)")
    args = ap.parse_args(argv)
    set_threads(SETTINGS["threads"])
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta = load_meta(args.data)
    s = run_settings(meta, args.seed)
    fields, label = meta["fields"], meta["label"]
    logging.basicConfig(level=logging.WARNING, format="fuxictr: %(message)s")

    import numpy as np
    import torch

    import fuxictr
    import ray
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    torch.set_num_threads(s["threads"])
    seed_everything(seed=s["seed"])
    ray_init_seconds = [0.0]
    ray_init = ray.init

    def timed_ray_init(*a, **k):  # FuxiCTR starts Ray itself (build_dataset's init_ray); only timed here
        t0 = time.perf_counter()
        try:
            return ray_init(*a, **k)
        finally:
            ray_init_seconds[0] += time.perf_counter() - t0

    ray.init = timed_ray_init
    dataset_id = "world_peers"
    data_root = fresh_dir(out / "fuxictr_data")
    model_root = fresh_dir(out / "fuxictr_model")

    # -- preprocessing: FuxiCTR's FeatureProcessor + build_dataset (polars, then Ray Data) ------
    clock = Clock()
    integers = list(meta.get("integer_fields") or ())
    if integers:  # a Criteo export: FuxiCTR's own Criteo_x4 config (dataset_config/Criteo.yaml)
        from fuxictr.datasets.criteo import CustomizedFeatureProcessor as Processor

        feature_cols = [
            {"name": integers, "active": True, "dtype": "float", "type": "categorical", "fill_na": 0,
             "preprocess": "convert_to_bucket"},
            {"name": [f for f in fields if f not in integers], "active": True, "dtype": "str", "type": "categorical"},
        ]
    else:
        Processor = FeatureProcessor
        feature_cols = [{"name": list(fields), "active": True, "dtype": "str", "type": "categorical"}]
    processor = Processor(
        feature_cols=feature_cols,
        label_col={"name": label, "dtype": "float"},
        dataset_id=dataset_id,
        data_root=str(data_root),
    )
    train_data, _valid_data, test_data = build_dataset(
        processor,
        train_data=str(csv_path(args.data, "train").resolve()),
        valid_data=str(csv_path(args.data, "valid").resolve()),
        test_data=str(csv_path(args.data, "test").resolve()),
        data_format="csv",
        min_categr_count=s["min_count"],
    )
    preprocess_s = clock.seconds()
    rss_after_preprocess = max_rss_mb()

    params = {  # what BaseModel reads from its keyword arguments
        "model_root": str(model_root), "verbose": 0, "metrics": ["AUC", "logloss"], "optimizer": "adam",
        "loss": "binary_crossentropy",
    }
    feature_map = FeatureMap(dataset_id, os.path.join(str(data_root), dataset_id))
    feature_map.load(os.path.join(feature_map.data_dir, "feature_map.json"), {"embedding_dim": s["embedding_dim"]})

    # -- model and training -------------------------------------------------------------------
    seed_everything(seed=s["seed"])
    DeepFM = build_model_class()
    model = DeepFM(feature_map, gpu=-1, learning_rate=s["lr"], embedding_dim=s["embedding_dim"],
                   hidden_units=s["hidden_units"], hidden_activations=s["activation"], net_dropout=s["dropout"],
                   batch_norm=s["batch_norm"], embedding_regularizer=None, net_regularizer=None, **params)
    train_gen, _ = RankDataLoader(feature_map, stage="train", train_data=train_data, valid_data=None,
                                  batch_size=s["batch_size"], shuffle=True, data_format="parquet")
    model._max_gradient_norm = float("inf")  # what fit(max_gradient_norm=inf) sets: no clipping
    model.train()
    samples = steps = 0
    t = time.perf_counter()
    for _epoch in range(s["epochs"]):
        for batch in train_gen:
            model.train_step(batch)
            samples += len(batch[label])
            steps += 1
    train_s = time.perf_counter() - t

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    test_gen = RankDataLoader(feature_map, stage="test", test_data=test_data, batch_size=s["eval_batch_size"],
                              shuffle=False, data_format="parquet")
    t = time.perf_counter()
    model.eval()
    preds, ys = [], []
    with torch.no_grad():
        for batch in test_gen:
            preds.append(model.forward(batch)["y_pred"].reshape(-1).double().numpy())
            ys.append(model.get_labels(batch).reshape(-1).double().numpy())
    predict_s = time.perf_counter() - t
    np.save(out / PREDICTIONS, np.concatenate(preds))
    np.save(out / LABELS, np.concatenate(ys))

    import importlib.metadata

    vocab = {name: spec["vocab_size"] for name, spec in feature_map.features.items()}
    write_result(out, {
        "library": "FuxiCTR",
        "version": f"fuxictr {fuxictr.__version__}" if hasattr(fuxictr, "__version__")
                   else f"fuxictr {importlib.metadata.version('fuxictr')}",
        "packages": {name: importlib.metadata.version(name)
                     for name in ("torch", "numpy", "polars", "ray", "pyarrow", "pandas")},
        "model_source": "DeepFM assembled from the wheel's BaseModel, FeatureEmbedding, FactorizationMachine "
                        "(LogisticRegression + InnerProductInteraction) and MLP_Block, as model_zoo/DeepFM",
        "embedding_optimizer": "adam",
        "init": "embeddings and first-order weights N(0, 1e-4); MLP Xavier-normal weights, zero biases",
        "seed": args.seed,
        "ray_init_seconds": round(ray_init_seconds[0], 3),
        "preprocess_seconds": round(preprocess_s, 3),
        "preprocess_what": "FeatureProcessor + build_dataset: polars reads the CSVs, tokenizers fitted on train, "
                           "Ray Data encodes every split to parquet (Ray start-up included)",
        "train_seconds": round(train_s, 3),
        "train_samples": samples,
        "train_samples_per_s": round(samples / train_s, 1),
        "train_steps": steps,
        "predict_seconds": round(predict_s, 3),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "vocab_sizes": vocab,
        "rows": {"train": train_gen.num_samples, "test": test_gen.num_samples},
        "ru_maxrss_after_preprocess_mb": round(rss_after_preprocess, 1),
        "ru_maxrss_mb": round(max_rss_mb(), 1),
        "threads": torch.get_num_threads(),
    }, settings=s)
    ray.shutdown()


if __name__ == "__main__":
    main()
