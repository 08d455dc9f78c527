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
    "adrepro_sparse": "adrepro, lazy SparseAdam on the tables",
    "adrepro_fuxictr_init": "adrepro, FuxiCTR's initialisation",
}
# What the two extra adrepro rows are, for the report's text.
EXTRA = {
    "adrepro_sparse": "adrepro's own protocol updates embedding rows with lazy `SparseAdam` (moments and steps only "
                      "for the rows a batch touched); everything else as the adrepro row",
    "adrepro_fuxictr_init": "adrepro's DeepFM initialised as FuxiCTR initialises its own (embeddings and first-order "
                            "weights N(0, 1e-4), Xavier-normal MLP weights, zero biases); everything else as the "
                            "adrepro row: an ablation of the one setting each library keeps its own default for",
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


def load_run(d: Path, y_export: np.ndarray) -> dict:
    result = json.loads((d / RESULT).read_text())
    measure = json.loads((d / "measure.json").read_text()) if (d / "measure.json").exists() else {}
    y = np.load(d / LABELS)
    p = np.load(d / PREDICTIONS)
    if len(y) != len(p):
        sys.exit(f"report: {d}: {len(p)} predictions for {len(y)} labels")
    if len(y) != len(y_export):
        sys.exit(f"report: {d}: {len(y)} test rows, the export has {len(y_export)}")
    in_order = bool(np.array_equal(y, y_export))
    if not in_order and int(y.sum()) != int(y_export.sum()):
        sys.exit(f"report: {d}: its test labels are not the exported ones ({int(y.sum())} vs {int(y_export.sum())} clicks)")
    return {"result": result, "measure": measure, "y": y, "p": p, "labels_in_order": in_order, **metrics(y, p)}


def load_runs(runs_dir: Path, y_export: np.ndarray) -> dict[str, dict[int, dict]]:
    """``{name: {seed: run}}`` for every finished run under ``runs_dir/<name>/seed<k>/``."""
    found: dict[str, dict[int, dict]] = {}
    for name in RUNS:
        seeds = sorted(int(d.name[4:]) for d in (runs_dir / name).glob("seed*") if (d / RESULT).exists())
        if seeds:
            found[name] = {k: load_run(runs_dir / name / f"seed{k}", y_export) for k in seeds}
    if not found:
        sys.exit(f"report: no finished run under {runs_dir}")
    return found


def first(seeds: dict[int, dict]) -> tuple[int, dict]:
    k = min(seeds)
    return k, seeds[k]


def spread(values: list[float], digits: int) -> str:
    """median [min, max]"""
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{np.median(values):,.{digits}f} [{min(values):,.{digits}f}, {max(values):,.{digits}f}]"


def data_name(meta: dict) -> str:
    cfg = meta["source_config"]
    if meta.get("source") == "criteo":
        return f"the generated Criteo-format file ({cfg['rows']:,} lines, generator seed {cfg['seed']})"
    if meta.get("variant"):
        return f"the simulated world's `{meta['variant']}` variant (`scale={cfg['scale']}` and the keys below, world seed {cfg['seed']})"
    return f"the simulated world (`scale={cfg['scale']}`, world seed {cfg['seed']})"


def variant_keys(meta: dict) -> str:
    """The world keys a variant sets over its scale, as ``peers/export.py``'s VARIANTS names them."""
    from peers.export import VARIANTS

    keys = VARIANTS.get(meta.get("variant") or "", {}).get("world", {})
    return ", ".join(f"`{k}={meta['source_config'][k]}`" for k in keys)


def make_command(meta: dict) -> str:
    if meta.get("variant"):
        return f"make peers PEERS_VARIANT={meta['variant']}"
    if meta.get("source") == "criteo":
        return f"make peers PEERS_CRITEO={meta['source_config']['rows']}"
    return "make peers"


def used_settings(runs: dict[str, dict[int, dict]]) -> dict:
    """The shared settings as the runs used them (the export may set ``min_count``); the seed varies by run."""
    used = {json.dumps({k: v for k, v in r["result"]["settings"].items() if k != "seed"}, sort_keys=True)
            for seeds in runs.values() for r in seeds.values()}
    if len(used) != 1:
        sys.exit(f"report: the runs used different settings: {sorted(used)}")
    return {**SETTINGS, **json.loads(used.pop()), "seed": SETTINGS["seed"]}


def data_lines(meta: dict) -> list[str]:
    """The Data section's description of the export (the world, or a generated Criteo file)."""
    cfg, rows, pos = meta["source_config"], meta["rows"], meta["positives"]
    counts = (f"train {rows['train']:,} rows ({pos['train']:,} clicks), valid {rows['valid']:,} ({pos['valid']:,}), "
              f"test {rows['test']:,} ({pos['test']:,})")
    if meta.get("source") == "criteo":
        return [
            f"A Criteo-format Kaggle `train.txt` of {cfg['rows']:,} lines written by `{cfg['generator']}` (the real "
            f"layout: 40 tab-separated fields, integers with missing values and negatives, 8-hex-digit hashes drawn "
            f"Zipf-like, labels that depend on a few fields; generator seed {cfg['seed']}; "
            f"{meta.get('generate_seconds', 0):.0f} s to write), split {cfg['split']} and written by "
            f"`peers/export.py` in reczoo's Criteo_x4 CSV layout (header `Label,I1..I13,C1..C26`, commas, empty = "
            f"missing): {counts}.",
            "",
            f"Fields ({len(meta['fields'])}, the same for every library): the 13 integer fields, each bucketed as "
            "FuxiCTR's Criteo_x4 config does (missing -> 0, then floor(ln(x)^2) above 2, truncation below; FuxiCTR: "
            "its own `CustomizedFeatureProcessor.convert_to_bucket`; DeepCTR-Torch: the same formula in numpy; "
            "adrepro: the `criteo` source with `integers: bucket`, `missing_integers: zero`) and then categorical, "
            "and the 26 categorical fields as text. Label: `Label`. A generated file carries no true click "
            "probability, so there is no Bayes-optimal row.",
        ]
    return [
        f"The simulated search-ads world (`datasets/world.py`) at `scale={cfg['scale']}`, world seed {cfg['seed']} "
        f"(`conf/data/world.yaml`: the rows adrepro's tables train on), generator fingerprint "
        f"`{meta['source_fingerprint']}`"
        + (f", its `{meta['variant']}` variant ({variant_keys(meta)}; every library's vocabulary with min_count "
           f"{meta['min_count']})" if meta.get("variant") else "")
        + f", exported by `peers/export.py` to CSV with raw integer values: {counts}"
        + (f"; the training split capped at its first {meta['max_train_rows']:,} rows" if meta.get("max_train_rows")
           else "; no row cap") + ".",
        "",
        f"Fields ({len(meta['fields'])}, all categorical, the same for every library, adrepro included): "
        + ", ".join(f"`{f}`" for f in meta["fields"]) + f". Label: `{meta['label']}`. Left out for every library: "
        "the dense `log_bid` and the 8-dim creative `content` vector (each library scales and embeds dense inputs "
        "its own way), so adrepro's numbers here are not its `results/baselines.md` numbers (those use all fields, "
        "its lr 3e-3 protocol, lazy Adam, embedding L2 and early stopping over up to 8 epochs).",
    ]


AUC_PARITY = 0.002  # issue 10: adrepro's mean test AUC within this of FuxiCTR's
PREPROCESS_RATIO = 20.0  # issue 10: adrepro's preprocessing at least this many times FuxiCTR's rows/s


def verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def target_lines(meta: dict, runs: dict[str, dict[int, dict]]) -> list[str]:
    """The parity targets of issue 10, judged on these runs: AUC within 0.002 of FuxiCTR's (means
    over the seeds both ran) and preprocessing at least 20x FuxiCTR's rows/s (medians over seeds)."""
    if "adrepro" not in runs or "fuxictr" not in runs:
        return []
    total = sum(meta["rows"].values())
    ours, theirs = runs["adrepro"], runs["fuxictr"]
    d = np.mean([r["auc"] for r in ours.values()]) - np.mean([r["auc"] for r in theirs.values()])
    rate = {n: float(np.median([total / r["result"]["preprocess_seconds"] for r in runs[n].values()])) for n in runs}
    ratio = rate["adrepro"] / rate["fuxictr"]
    return [
        "Targets (issue 10), on these runs:",
        "",
        f"- test AUC, mean over seeds, adrepro − FuxiCTR = {d:+.4f} ({len(ours)} and {len(theirs)} seeds); within "
        f"±{AUC_PARITY}: {verdict(abs(d) <= AUC_PARITY)}",
        f"- preprocessing rows/s (all {total:,} rows of the three splits / preprocessing time, median over seeds): "
        + ", ".join(f"{RUNS[n]} {rate[n]:,.0f}" for n in runs)
        + f"; adrepro / FuxiCTR = {ratio:.1f}x, at least {PREPROCESS_RATIO:.0f}x: {verdict(ratio >= PREPROCESS_RATIO)}",
        "",
    ]


HIGHCARD_ROWS = 10_000_000  # issue 9: the high-cardinality comparison needs at least this many embedding rows
HIGHCARD_SPEEDUP = 5.0  # issue 9: adrepro's best single-process DeepFM at least this many times FuxiCTR's samples/s
BEST = "adrepro_sparse"  # adrepro's best single-process DeepFM at the shared settings: lazy SparseAdam on the tables


def embedding_rows(run: dict) -> int:
    """Rows of every field's embedding table in one run (its vocabulary sizes summed)."""
    return int(sum(run["result"]["vocab_sizes"].values()))


def highcard_lines(runs: dict[str, dict[int, dict]]) -> list[str]:
    """Issue 9's peer target, judged where FuxiCTR's tables hold at least 10M rows: adrepro's best
    single-process DeepFM (lazy SparseAdam; every other setting shared) at least 5x FuxiCTR's
    training samples/s (medians over seeds) at equal test AUC (means over seeds within 0.002)."""
    if BEST not in runs or "fuxictr" not in runs:
        return []
    rows = embedding_rows(first(runs["fuxictr"])[1])
    if rows < HIGHCARD_ROWS:
        return []
    speed = {n: float(np.median([r["result"]["train_samples_per_s"] for r in runs[n].values()])) for n in runs}
    auc = {n: float(np.mean([r["auc"] for r in runs[n].values()])) for n in runs}
    ratio, d = speed[BEST] / speed["fuxictr"], auc[BEST] - auc["fuxictr"]
    lines = [
        f"Target (issue 9), on these runs: FuxiCTR's tables hold {rows:,} embedding rows (at least "
        f"{HIGHCARD_ROWS:,}), and its dense Adam updates every one of them at every step.",
        "",
        f"- {RUNS[BEST]} (adrepro's best single-process DeepFM at these settings) / FuxiCTR training samples/s "
        f"(medians over seeds): {speed[BEST]:,.0f} / {speed['fuxictr']:,.0f} = {ratio:.1f}x, at least "
        f"{HIGHCARD_SPEEDUP:.0f}x; test AUC, means over seeds, {d:+.4f} ({len(runs[BEST])} and {len(runs['fuxictr'])} "
        f"seeds), within ±{AUC_PARITY}: {verdict(ratio >= HIGHCARD_SPEEDUP and abs(d) <= AUC_PARITY)}",
    ]
    if "adrepro" in runs:
        lines.append(f"- for scale, with the same dense Adam on every row: adrepro / FuxiCTR training samples/s = "
                     f"{speed['adrepro'] / speed['fuxictr']:.2f}x; {RUNS[BEST]} / adrepro = "
                     f"{speed[BEST] / speed['adrepro']:.1f}x (the optimizer's share)")
    return lines + [""]


def fmt(x, digits=0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def render(meta: dict, runs: dict[str, dict], bayes: dict | None, machine: dict, runs_dir: Path,
           data_dir: Path) -> str:
    rows = meta["rows"]
    settings = used_settings(runs)
    lines = [
        "# Peer libraries: one DeepFM in FuxiCTR, DeepCTR-Torch and adrepro, same rows, same settings",
        "",
        f"Written by `{make_command(meta)}` (code and method: `peers/`, `peers/README.md`) on "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Every run is one process (the peers "
        f"in their own virtual environments), one run after the other, on the machine below. The comparison is "
        f"training seed {min(min(v) for v in runs.values())}"
        + ("; the same runs repeated with the other seeds below show how much of each difference is training "
           "noise and run-to-run speed noise." if any(len(v) > 1 for v in runs.values()) else
           " (one seed per library: no repeat gives the training noise here)."),
        "",
        "## Results",
        "",
        f"Test split of {data_name(meta)}: {rows['test']:,} rows; "
        f"training seed {min(min(v) for v in runs.values())}. "
        f"AUC and logloss by one function (`peers/report.py`: scikit-learn's `roc_auc_score` and `log_loss`, "
        f"predictions clipped to [1e-7, 1 - 1e-7]) on the predictions each library saved.",
        "",
        "| library | test AUC | test logloss | preprocessing (s) | training samples/s | training (s) | "
        "peak RSS, process (MB) | peak RSS, process tree (MB) | parameters | run wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seeds in runs.items():
        _, r = first(seeds)
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
    for name in runs:
        if name in EXTRA:
            lines.append(f"- *{RUNS[name]}*: {EXTRA[name]}.")
    lines += [""]

    seed_lists = {name: sorted(seeds) for name, seeds in runs.items()}
    if any(len(v) > 1 for v in seed_lists.values()):
        lines += [
            "The same runs repeated with other training seeds (the data, the settings and the machine unchanged; "
            "FuxiCTR's row order also changes from run to run whatever the seed): the spread of each number. "
            "Speed and preprocessing as median [min, max].",
            "",
            "| library | seeds | test AUC per seed | test AUC mean ± sd | test logloss mean | training samples/s | "
            "preprocessing (s) | peak RSS, process (MB), max | peak RSS, tree (MB), max |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, seeds in runs.items():
            rs = [seeds[k] for k in sorted(seeds)]
            aucs = [r["auc"] for r in rs]
            sd = f" ± {np.std(aucs, ddof=1):.4f}" if len(aucs) > 1 else ""
            lines.append(
                f"| {RUNS[name]} | {', '.join(map(str, sorted(seeds)))} | {', '.join(f'{a:.4f}' for a in aucs)} | "
                f"{np.mean(aucs):.4f}{sd} | {np.mean([r['logloss'] for r in rs]):.4f} | "
                f"{spread([r['result']['train_samples_per_s'] for r in rs], 0)} | "
                f"{spread([r['result']['preprocess_seconds'] for r in rs], 1)} | "
                f"{fmt(max((r['measure']['peak_rss_main_mb'] for r in rs if r['measure']), default=None))} | "
                f"{fmt(max((r['measure']['peak_rss_tree_mb'] for r in rs if r['measure']), default=None))} |"
            )
        lines.append("")

    ref = "adrepro" if "adrepro" in runs else next(iter(runs))
    others = [n for n in runs if n != ref]
    if others:
        k0, r0 = first(runs[ref])
        lines += [
            f"ΔAUC against {RUNS[ref]}: at seed {k0} on the same test rows, with a 95% paired bootstrap interval over "
            f"the test rows ({BOOTSTRAP} resamples; training noise is not in it), and between the means over the "
            f"seeds each ran (training noise is in the seeds' sd above):",
            "",
        ]
        for n in others:
            k, r = first(runs[n])
            d0 = r["auc"] - r0["auc"]
            if k == k0 and r["labels_in_order"] and r0["labels_in_order"]:
                lo, hi = paired_auc_interval(r0["y"], r["p"], r0["p"])
                at0 = f"{d0:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            else:
                at0 = f"{d0:+.4f} (no paired interval)"
            dm = np.mean([x["auc"] for x in runs[n].values()]) - np.mean([x["auc"] for x in runs[ref].values()])
            lines.append(f"- {RUNS[n]} − {RUNS[ref]}: seed {k0} {at0}; means over seeds {dm:+.4f}")
        lines.append("")

    lines += target_lines(meta, runs)
    lines += highcard_lines(runs)
    walls = [r["measure"]["wall_seconds"] for seeds in runs.values() for r in seeds.values() if r["measure"]]
    lines += [
        f"All {len(walls)} runs together: {sum(walls) / 60:.1f} minutes of wall time, one after the other (plus "
        f"{meta['seconds']:.0f} s for the export).",
        "",
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
        "| library | preprocessing does | of which Ray start-up (s) | training steps | loop data wait (s) | "
        "valid pass excluded (s) | test prediction (s) | peak RSS after preprocessing (MB, ru_maxrss) | "
        "test labels in export order |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seeds in runs.items():
        res = first(seeds)[1]["result"]
        r = first(seeds)[1]
        lines.append(
            f"| {RUNS[name]} | {res['preprocess_what']} | {fmt(res.get('ray_init_seconds'), 1)} | {res['train_steps']} | "
            f"{fmt(res.get('train_data_seconds'), 1)} | {fmt(res.get('valid_seconds_excluded'), 1)} | "
            f"{fmt(res['predict_seconds'], 1)} | {fmt(res['ru_maxrss_after_preprocess_mb'])} | "
            f"{'yes' if r['labels_in_order'] else 'no (same labels, reordered)'} |"
        )
    lines += [
        "",
        "## Data",
        "",
    ] + data_lines(meta) + [
        "",
        "Vocabulary sizes (rows of each field's embedding table; "
        + (f"values seen fewer than {settings['min_count']} times in train share one index):"
           if settings["min_count"] > 1 else "min_count 1: every value seen in train has its own row):"),
        "",
        "| field | " + " | ".join(RUNS[n] for n in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for f in meta["fields"]:
        lines.append(f"| `{f}` | " + " | ".join(str(first(runs[n])[1]["result"]["vocab_sizes"].get(f, "–"))
                                                for n in runs) + " |")
    lines += [
        "",
        "FuxiCTR and adrepro reserve index 0 for padding and n + 1 for rare/unseen values (n + 2 rows); the "
        "DeepCTR-Torch runner maps rare/unseen values to 0 (n + 1 rows). "
        + ("The world has no missing values." if meta.get("source") != "criteo" else
           "A missing category is one more value for FuxiCTR and DeepCTR-Torch (filled with the empty string) and "
           "the padding index for adrepro; a missing integer is 0 for all three (FuxiCTR's `fill_na: 0`)."),
        "",
        "## Settings (the same for every library)",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for k, v in settings.items():
        lines.append(f"| {k} | {v} |")
    lines += [
        "",
        "What each library does with them, and what is left to each library's defaults:",
        "",
        "| library | model | initialisation | optimizer | version |",
        "|---|---|---|---|---|",
    ]
    for name, seeds in runs.items():
        res = first(seeds)[1]["result"]
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
    for name, seeds in runs.items():
        res = first(seeds)[1]["result"]
        pk = ", ".join(f"{k} {v}" for k, v in res["packages"].items())
        lines.append(f"- {RUNS[name]}: {res['version']}; Python {res['python']}; {pk}")
    lines += [
        "",
        f"Reproduce: `{make_command(meta)}` (sets up `.peers/venv-fuxictr` and `.peers/venv-deepctr` from "
        "`peers/requirements-*.txt`, exports the data, makes every run above one after the other, writes this "
        "file; a second call reruns nothing, `make peers FORCE=1` reruns the runs). Outputs of these runs: "
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
    summary = ", ".join(f"{RUNS[n]} AUC {np.mean([r['auc'] for r in seeds.values()]):.4f}" for n, seeds in runs.items())
    print(f"report: {summary} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
