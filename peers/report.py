"""Build results/peers.md from the runners' outputs: one metric function for every library.

Every runner saved its test predictions (``y_pred.npy``) and the labels it saw beside them
(``y_true.npy``); AUC and logloss are computed here, by ``metrics`` below (scikit-learn's
``roc_auc_score`` and ``log_loss``), so no library's own metric code is involved. The labels each
runner saw are checked against the exported test split (same values in the same order, or at least
the same multiset when a loader reorders rows).

    python -m peers.report --data .peers/data/world-default --runs .peers/out/default --out results/peers.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
from sklearn.metrics import log_loss, roc_auc_score

from peers.common import LABELS, META, PREDICTIONS, RESULT, SETTINGS, TRUTH, csv_path

# Output folder name -> row label, in table order.
RUNS = {
    "fuxictr": "FuxiCTR",
    "deepctr": "DeepCTR-Torch",
    "adrepro": "adrepro",
    "adrepro_sparse": "adrepro (lazy SparseAdam tables)",
}
EPS = 1e-7  # predictions are clipped to [EPS, 1 - EPS] before the logloss (a saturated float32 sigmoid is 0 or 1)
BOOTSTRAP = 200


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The one metric function: test AUC and logloss of click probabilities ``p`` for labels ``y``."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, p, labels=[0, 1]))}


def paired_auc_interval(y: np.ndarray, p: np.ndarray, q: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of AUC(p) - AUC(q) over bootstrap resamples of the test rows."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        diffs.append(roc_auc_score(y[i], p[i]) - roc_auc_score(y[i], q[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def load_runs(runs_dir: Path, y_export: np.ndarray) -> dict[str, dict]:
    found = {}
    for name in RUNS:
        d = runs_dir / name
        if not (d / RESULT).exists():
            continue
        result = json.loads((d / RESULT).read_text())
        measure = json.loads((d / "measure.json").read_text()) if (d / "measure.json").exists() else {}
        y = np.load(d / LABELS)
        p = np.load(d / PREDICTIONS)
        if len(y) != len(p):
            sys.exit(f"report: {d}: {len(p)} predictions for {len(y)} labels")
        if len(y) != len(y_export):
            sys.exit(f"report: {d}: {len(y)} test rows, the export has {len(y_export)}")
        in_order = bool(np.array_equal(y, y_export))
        same_multiset = in_order or int(y.sum()) == int(y_export.sum())
        if not same_multiset:
            sys.exit(f"report: {d}: its test labels are not the exported ones ({int(y.sum())} vs {int(y_export.sum())} clicks)")
        found[name] = {"result": result, "measure": measure, "y": y, "p": p, "labels_in_order": in_order,
                       **metrics(y, p)}
    if not found:
        sys.exit(f"report: no finished run under {runs_dir}")
    return found


def fmt(x, digits=0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def render(meta: dict, runs: dict[str, dict], bayes: dict | None, machine: dict, runs_dir: Path,
           data_dir: Path) -> str:
    cfg = meta["source_config"]
    rows = meta["rows"]
    lines = [
        "# Peer libraries: one DeepFM in FuxiCTR, DeepCTR-Torch and adrepro, same rows, same settings",
        "",
        f"Written by `make peers` (code and method: `peers/`, `peers/README.md`) on "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Each library ran in its own process "
        f"(the peers in their own virtual environments), one after the other, on the machine below. One seed, one "
        f"run each: speed and memory are single measurements, and the AUC differences carry the training noise of "
        f"one seed, which the test-row interval below does not cover.",
        "",
        "## Results",
        "",
        f"Test split of the simulated world (`scale={cfg['scale']}`, world seed {cfg['seed']}): {rows['test']:,} rows. "
        f"AUC and logloss by one function (`peers/report.py`: scikit-learn's `roc_auc_score` and `log_loss`, "
        f"predictions clipped to [1e-7, 1 - 1e-7]) on the predictions each library saved.",
        "",
        "| library | test AUC | test logloss | preprocessing (s) | training samples/s | training (s) | "
        "peak RSS, process (MB) | peak RSS, process tree (MB) | parameters | run wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        res, m = r["result"], r["measure"]
        lines.append(
            f"| {RUNS[name]} | {r['auc']:.4f} | {r['logloss']:.4f} | {fmt(res['preprocess_seconds'], 1)} | "
            f"{fmt(res['train_samples_per_s'])} | {fmt(res['train_seconds'], 1)} | {fmt(m.get('peak_rss_main_mb'))} | "
            f"{fmt(m.get('peak_rss_tree_mb'))} | {fmt(res['parameters'])} | {fmt(m.get('wall_seconds'), 1)} |"
        )
    if bayes is not None:
        lines.append(f"| Bayes-optimal (the world's true click probability) | {bayes['auc']:.4f} | "
                     f"{bayes['logloss']:.4f} | | | | | | | |")
    lines += [""]

    ref = "adrepro" if "adrepro" in runs else next(iter(runs))
    others = [n for n in runs if n != ref]
    if others:
        lines += [
            f"ΔAUC against {RUNS[ref]} on the same test rows, with a 95% paired bootstrap interval over the test rows "
            f"({BOOTSTRAP} resamples, seed 0; training noise across seeds is not in it):",
            "",
        ]
        y, p_ref = runs[ref]["y"], runs[ref]["p"]
        for n in others:
            if runs[n]["labels_in_order"] and runs[ref]["labels_in_order"]:
                lo, hi = paired_auc_interval(y, runs[n]["p"], p_ref)
                lines.append(f"- {RUNS[n]} − {RUNS[ref]}: {runs[n]['auc'] - runs[ref]['auc']:+.4f} "
                             f"[{lo:+.4f}, {hi:+.4f}]")
            else:
                lines.append(f"- {RUNS[n]} − {RUNS[ref]}: {runs[n]['auc'] - runs[ref]['auc']:+.4f} "
                             f"(rows not in export order: no paired interval)")
        lines.append("")

    lines += [
        "Columns:",
        "",
        "- **preprocessing**: wall time from the raw CSV files to the encoded data the library trains from, "
        "in each library's own way (below); the three splits are read and encoded, vocabularies fitted on train.",
        "- **training samples/s**: training rows / wall time of the training loop only (one epoch through the "
        "library's own data loader, data fetch included; no validation, checkpointing or prediction in it).",
        "- **peak RSS**: sampled every 0.1 s from outside (`peers/measure.py`) over the whole run (preprocessing, "
        "training, prediction); *process* is the runner itself, *process tree* the sum over it and every descendant "
        "(FuxiCTR's Ray processes; shared memory counted once per process, so an upper bound).",
        "- **run wall**: the whole process, interpreter start, imports and prediction included.",
        "",
        "Per-phase detail:",
        "",
        "| library | preprocessing does | training steps | loop data wait (s) | valid pass excluded (s) | "
        "test prediction (s) | peak RSS after preprocessing (MB, ru_maxrss) | test labels in export order |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        res = r["result"]
        lines.append(
            f"| {RUNS[name]} | {res['preprocess_what']} | {res['train_steps']} | "
            f"{fmt(res.get('train_data_seconds'), 1)} | {fmt(res.get('valid_seconds_excluded'), 1)} | "
            f"{fmt(res['predict_seconds'], 1)} | {fmt(res['ru_maxrss_after_preprocess_mb'])} | "
            f"{'yes' if r['labels_in_order'] else 'no (same labels, reordered)'} |"
        )
    lines += [
        "",
        "## Data",
        "",
        f"The simulated search-ads world (`datasets/world.py`) at `scale={cfg['scale']}`, world seed {cfg['seed']} "
        f"(`conf/data/world.yaml`: the rows adrepro's tables train on), generator fingerprint "
        f"`{meta['source_fingerprint']}`, exported by `peers/export.py` to CSV with raw integer values: "
        f"train {rows['train']:,} rows ({meta['positives']['train']:,} clicks), valid {rows['valid']:,} "
        f"({meta['positives']['valid']:,}), test {rows['test']:,} ({meta['positives']['test']:,})"
        + (f"; the training split capped at its first {meta['max_train_rows']:,} rows" if meta.get("max_train_rows")
           else "; no row cap") + ".",
        "",
        f"Fields ({len(meta['fields'])}, all categorical, the same for every library, adrepro included): "
        + ", ".join(f"`{f}`" for f in meta["fields"]) + f". Label: `{meta['label']}`. Left out for every library: "
        "the dense `log_bid` and the 8-dim creative `content` vector (each library scales and embeds dense inputs "
        "its own way), so adrepro's numbers here are not its `results/baselines.md` numbers (those use all fields, "
        "its lr 3e-3 protocol, lazy Adam, embedding L2 and early stopping over up to 8 epochs).",
        "",
        "Vocabulary sizes (rows of each field's embedding table; values seen fewer than "
        f"{SETTINGS['min_count']} times in train share one index):",
        "",
        "| field | " + " | ".join(RUNS[n] for n in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for f in meta["fields"]:
        lines.append(f"| `{f}` | " + " | ".join(str(runs[n]["result"]["vocab_sizes"].get(f, "–")) for n in runs) + " |")
    lines += [
        "",
        "FuxiCTR and adrepro reserve index 0 for padding and n + 1 for rare/unseen values (n + 2 rows); the "
        "DeepCTR-Torch runner maps rare/unseen values to 0 (n + 1 rows). The world has no missing values.",
        "",
        "## Settings (the same for every library)",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for k, v in SETTINGS.items():
        lines.append(f"| {k} | {v} |")
    lines += [
        "",
        "What each library does with them, and what is left to each library's defaults:",
        "",
        "| library | model | initialisation | optimizer | version |",
        "|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        res = r["result"]
        lines.append(f"| {RUNS[name]} | {res['model_source']} | {res['init']} | Adam, lr {res['settings']['lr']:g}, "
                     f"embedding tables: {res['embedding_optimizer']} | {res['version']} |")
    lines += [
        "",
        "Not equalised (each library's own way): initialisation (table above); the training row order (FuxiCTR: "
        "Ray Data's global shuffle, which takes no seed, so its run is not bit-reproducible; DeepCTR-Torch: torch's "
        "`DataLoader` shuffle from seed 0; adrepro: its seeded column gather); the loss reduction (DeepCTR-Torch sums "
        "over the batch, the others average: the same Adam steps up to Adam's epsilon); the data loader and batch "
        "format; adrepro's one fused embedding table against the peers' one `nn.Embedding` per field.",
        "",
        "## Machine and versions",
        "",
        f"- machine: {machine.get('cpu_model')}, {machine.get('cores')} cores visible, "
        f"{machine.get('memory_gb')} GiB memory, {machine.get('platform')}; CPU only",
        f"- threads: torch {SETTINGS['threads']} in every runner (`torch.set_num_threads`), and "
        "`OMP_NUM_THREADS`/`MKL_NUM_THREADS`/`POLARS_MAX_THREADS` = 2 in the environment; Ray starts with its "
        "defaults (FuxiCTR's `transform` uses cpu_count // 2 = 1 worker task)",
    ]
    for name, r in runs.items():
        res = r["result"]
        pk = ", ".join(f"{k} {v}" for k, v in res["packages"].items())
        lines.append(f"- {RUNS[name]}: {res['version']}; Python {res['python']}; {pk}")
    lines += [
        "",
        "Reproduce: `make peers` (sets up `.peers/venv-fuxictr` and `.peers/venv-deepctr` from "
        "`peers/requirements-*.txt`, exports the data, runs the three runners one after the other, writes this "
        "file; a second call reruns nothing, `make peers FORCE=1` reruns the runs). Outputs of this run: "
        f"`{runs_dir}` and `{data_dir}` (git-ignored).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the folder peers.export wrote")
    ap.add_argument("--runs", required=True, help="the folder holding one output folder per library")
    ap.add_argument("--out", required=True, help="the Markdown file to write")
    args = ap.parse_args(argv)
    data_dir, runs_dir = Path(args.data), Path(args.runs)
    meta = json.loads((data_dir / META).read_text())
    y_export = pacsv.read_csv(csv_path(data_dir, "test"),
                              convert_options=pacsv.ConvertOptions(include_columns=[meta["label"]])
                              ).column(meta["label"]).to_numpy().astype(np.float64)
    runs = load_runs(runs_dir, y_export)
    bayes = metrics(y_export, np.load(data_dir / TRUTH)) if (data_dir / TRUTH).exists() else None
    from repro.environment import machine

    text = render(meta, runs, bayes, machine(), runs_dir, data_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    summary = ", ".join(f"{RUNS[n]} AUC {r['auc']:.4f}" for n, r in runs.items())
    print(f"report: {summary} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
