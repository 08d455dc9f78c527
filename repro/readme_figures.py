"""README figures computed from the committed results, so a regeneration that moves a number fails
``make test`` until the README follows (issue 27, part 6).

A figure in ``README.md`` that comes from a run is marked by an HTML comment right before its text,
``<!-- fig:dp_two_process_ratio -->0.64-0.69x``: invisible in rendered Markdown, one short tag in
plain text, and no closing tag, because each figure declares its :class:`Format`, which gives both
the exact text it renders and the shape (a regular expression) of the text it owns after the
marker. ``python -m repro.readme_figures --check`` compares every marked figure with the value the
results give and exits 1 listing each mismatch (figure, README text, value from results, source
files); ``--write`` rewrites the marked figures in place, atomically; ``--list`` prints every
figure with its value and source. ``make report`` ends with ``--write``; ``make readme-check`` runs
``--check``, and ``tests/test_readme_figures.py`` runs it on the committed tree.

Choices:

- Every figure is computed from committed files under ``results/`` only: the tables' CSVs
  (``results/<table>.csv``), run metrics found through each experiment's
  ``results/runs/<exp>/index.json`` and matched by the manifest's ``label`` (never by a folder
  name, whose hash changes), measurement JSONs (``result.columns`` / ``result.rows``),
  ``results/claims.md`` and the peers reports ``results/peers*.md``. The peers reports come from
  the git-ignored ``.peers/`` with no committed manifests yet: their figures are quoted as what the
  file says, and their source says so.
- A ratio is read from the measurement's own ratio column where it has one (``x rung 0``,
  ``x previous``, ``x 1 process``...): those were computed from unrounded speeds, while the
  speeds stored beside them are rounded to integers, which moves a ratio of two speeds of a few
  hundred samples/s in its second decimal. Ratios without such a column are computed from the
  stored speeds or times.
- Rounding is half-up on the decimal text of the value (``Decimal(str(value))``), so 0.125 renders
  as 0.13 at two decimals, as a reader rounds; negative decimals round to tens (320-420).
- A range (``span``) renders ``lo-hi`` and collapses to one number when both ends render alike
  (the compiled step's 1.20x / 1.16x read "1.2x"); a ``pair`` keeps every part (DeepFM / DCNv2).
- Figures about the papers (their own numbers), budgets, targets and code constants are not run
  results and carry no marker; nor do figures of earlier runs that only git history holds.
- This module is the report side of the harness: nothing ``repro/run.py`` imports may import it,
  so it is part of no run's code identity (a test checks the import closure).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Callable, Iterator

from repro.io import atomic_write_text, unpack_floats

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "results"

PEERS_CAVEAT = " (no committed manifests yet: quoted as the file states it)"
MARKER = re.compile(r"<!-- fig:([a-z0-9_]+) -->")
NUMBER = r"[+\-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # 1,622 but not the comma of "146, "


# --- formatting --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """How a figure's parts render. ``decimals`` is one count for every part or one per part
    (negative: round to tens, hundreds); ``scale`` multiplies first (1e-3 with suffix "k": 117k);
    ``signed`` writes "+" before a positive number (and before zero, which never keeps a minus);
    ``minus`` is the minus sign the README sets there; ``thousands`` groups digits (1,622);
    ``joiner`` sits between parts; ``suffix`` follows every part (``suffix_each``) or only the
    last; ``collapse`` renders one number when all parts render alike (ranges)."""

    decimals: int | tuple[int, ...] = 2
    suffix: str = ""
    signed: bool = False
    minus: str = "-"
    thousands: bool = False
    scale: float = 1.0
    joiner: str = "-"
    suffix_each: bool = False
    collapse: bool = False

    def _decimals(self, i: int) -> int:
        return self.decimals[i] if isinstance(self.decimals, tuple) else self.decimals

    def number(self, value: float, i: int = 0) -> str:
        """One part, rounded half-up, without the suffix."""
        digits = self._decimals(i)
        x = Decimal(str(value)) * Decimal(str(self.scale))
        if digits >= 0:
            q = x.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        else:
            step = Decimal(10) ** -digits
            q = (x / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step
            q = q.quantize(Decimal(1))
        if q == 0:
            q = abs(q)
        text = format(abs(q), ",f" if self.thousands else "f")
        if q < 0:
            return self.minus + text
        return ("+" if self.signed else "") + text

    def render(self, values: tuple[float, ...]) -> str:
        """The exact README text of a figure with these parts."""
        parts = [self.number(v, i) for i, v in enumerate(values)]
        if self.collapse and len(set(parts)) == 1:
            parts = parts[:1]
        if self.suffix_each:
            return self.joiner.join(p + self.suffix for p in parts)
        return self.joiner.join(parts) + self.suffix

    def pattern(self, parts: int) -> re.Pattern:
        """The shape of the text such a figure owns after its marker, whatever its digits."""
        part = NUMBER + (re.escape(self.suffix) if self.suffix_each else "")
        rest = f"(?:{re.escape(self.joiner)}{part})"
        if parts == 1:
            body = part
        elif self.collapse:
            body = part + rest + "{0,%d}" % (parts - 1)
        else:
            body = part + rest + "{%d}" % (parts - 1)
        return re.compile(body + ("" if self.suffix_each else re.escape(self.suffix)))


def value(decimals: int = 2, suffix: str = "", **kw) -> Format:
    """One number: ``value(2, "x")`` -> 1.74x."""
    return Format(decimals=decimals, suffix=suffix, **kw)


def span(decimals: int | tuple[int, ...] = 2, suffix: str = "", joiner: str = "-", **kw) -> Format:
    """A range lo-hi with the suffix once at the end: ``span(2, "x")`` -> 0.64-0.69x."""
    return Format(decimals=decimals, suffix=suffix, joiner=joiner, collapse=True, **kw)


def pair(decimals: int | tuple[int, ...] = 2, suffix: str = "", joiner: str = " / ", **kw) -> Format:
    """Parts side by side, each with the suffix: ``pair((2, 1), "x")`` -> 0.95x / 1.2x."""
    return Format(decimals=decimals, suffix=suffix, joiner=joiner, suffix_each=True, **kw)


# --- reading the results -----------------------------------------------------------------------

class Table:
    """A table of labelled rows: a measurement's ``result`` or a Markdown table; the first column
    labels the rows."""

    def __init__(self, columns: list[str], rows: list[list], where: str):
        self.columns, self.where = columns, where
        self.rows = {str(r[0]): dict(zip(columns, r)) for r in rows}

    def labels(self) -> list[str]:
        return list(self.rows)

    def cell(self, row: str, column: str) -> str:
        if row not in self.rows:
            raise KeyError(f"{self.where}: no row {row!r} (rows: {', '.join(self.rows)})")
        if column not in self.columns:
            raise KeyError(f"{self.where}: no column {column!r}")
        return str(self.rows[row][column])

    def number(self, row: str, column: str, part: int = 0, sep: str = "/") -> float:
        """The cell as a number: thousands separators, a sign, "x", "%", " s" and a trailing
        "[min, max]" dropped; ``part`` picks one of several numbers split by ``sep``
        ("65 / 9 / 13 / 14")."""
        text = self.cell(row, column).split("[")[0]
        text = text.split(sep)[part] if sep in text else text
        return parse_number(text, f"{self.where} [{row!r}, {column!r}]")


def parse_number(text: str, where: str) -> float:
    m = re.search(NUMBER, text)
    if not m:
        raise ValueError(f"{where}: no number in {text!r}")
    return float(m.group().replace(",", "").replace("−", "-"))


class Results:
    """Read access to a results folder; every file a figure reads is logged in ``touched``, which
    becomes the figure's source."""

    def __init__(self, root: Path = RESULTS):
        self.root = Path(root)
        self.touched: list[str] = []
        self._cache: dict[Path, object] = {}

    def _log(self, shown: str) -> None:
        if shown not in self.touched:
            self.touched.append(shown)

    def _read(self, rel: str, parse: Callable[[Path], object], log: bool = True):
        path = self.root / rel
        shown = f"results/{rel}"
        if log:
            self._log(shown + (PEERS_CAVEAT if rel.startswith("peers") else ""))
        if path not in self._cache:
            if not path.exists():
                raise FileNotFoundError(f"{shown} does not exist")
            self._cache[path] = parse(path)
        return self._cache[path]

    def measurement(self, experiment: str, name: str) -> Table:
        rel = f"runs/{experiment}/measurements/{name}.json"
        m = self._read(rel, _load_json)
        return Table(m["result"]["columns"], m["result"]["rows"], f"results/{rel}")

    def measurement_notes(self, experiment: str, name: str) -> str:
        rel = f"runs/{experiment}/measurements/{name}.json"
        return "\n".join(self._read(rel, _load_json)["result"].get("notes", []))

    def table_csv(self, table: str) -> Table:
        """``results/<table>.csv`` (one row per label, unrounded means)."""
        def parse(p: Path) -> list[list[str]]:
            with p.open(newline="") as f:
                return list(csv.reader(f))
        rows = self._read(f"{table}.csv", parse)
        return Table(rows[0], rows[1:], f"results/{table}.csv")

    def run_metrics(self, experiment: str, label: str) -> list[dict]:
        """The metrics.json of every seed of the row ``label``, through the experiment's
        index.json and each run's manifest ``label`` (folder names carry hashes that change)."""
        load = _load_json
        index = self._read(f"runs/{experiment}/index.json", load, log=False)
        out, seeds = [], []
        for rel in index["runs"]:
            manifest = self._read(f"runs/{experiment}/{rel}/manifest.json", load, log=False)
            if manifest.get("label") == label and manifest.get("status") == "done":
                out.append(self._read(f"runs/{experiment}/{rel}/metrics.json", load, log=False))
                seeds.append(str(manifest.get("seed")))
        if not out:
            raise KeyError(f"results/runs/{experiment}: no done run labelled {label!r}")
        self._log(f"results/runs/{experiment}/<{label!r}>/seed{{{','.join(seeds)}}}/metrics.json")
        return out

    def seed_mean(self, experiment: str, label: str, path: tuple[str, ...]) -> float:
        """Mean over the row's seeds of one metric (``("test", "auc")``)."""
        vals = []
        for metrics in self.run_metrics(experiment, label):
            v = metrics
            for key in path:
                v = v[key]
            vals.append(float(v))
        return sum(vals) / len(vals)

    def text(self, rel: str) -> str:
        return self._read(rel, lambda p: p.read_text())

    def claim_estimates(self, claim: str) -> list[tuple[float, float, float]]:
        """(estimate, lo, hi) of each condition of a claim, as ``results/claims.md`` states it."""
        for line in self.text("claims.md").splitlines():
            if line.startswith(f"- `{claim}`:") or line.startswith(f"- `{claim}` ["):  # [paper] / [suite check]
                found = re.findall(rf"({NUMBER}) \[({NUMBER}), ({NUMBER})\]", line)
                return [tuple(float(x) for x in f) for f in found]
        raise KeyError(f"results/claims.md: no claim {claim!r}")

    def peers_table(self, stem: str, column: str) -> Table:
        """The first Markdown table of ``results/<stem>.md`` with this column (the peers reports
        have no committed manifests: their figures are the file's own)."""
        lines = self.text(f"{stem}.md").splitlines()
        for i, line in enumerate(lines):
            cells = _md_cells(line)
            if cells and column in cells and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
                body = []
                for row in lines[i + 2:]:
                    if not row.startswith("|"):
                        break
                    body.append(_md_cells(row))
                return Table(cells, body, f"results/{stem}.md{PEERS_CAVEAT}")
        raise KeyError(f"results/{stem}.md: no table with a column {column!r}")

    def search(self, rel: str, pattern: str, text: str | None = None) -> float:
        """The number in the first match group of ``pattern`` in a file (or in ``text``)."""
        m = re.search(pattern, text if text is not None else self.text(rel))
        if not m:
            raise KeyError(f"results/{rel}: no match for {pattern!r}")
        return parse_number(m.group(1), f"results/{rel}")


def _load_json(path: Path) -> dict:
    return unpack_floats(json.loads(path.read_text()))  # metrics.json packs its replicates (repro.io)


def _md_cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [c.strip() for c in line.strip().strip("|").split("|")]


# --- the figures -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """A named README figure: ``compute`` reads the results and returns its ``parts`` numbers,
    ``fmt`` renders them; ``about`` (the compute's docstring) says what it is."""

    name: str
    fmt: Format
    parts: int
    compute: Callable[[Results], tuple[float, ...]]
    about: str = ""


FIGURES: dict[str, Figure] = {}


def figure(name: str, fmt: Format, parts: int = 1) -> Callable:
    def register(fn: Callable[[Results], float | tuple[float, ...]]) -> Callable:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")

        def compute(r: Results) -> tuple[float, ...]:
            out = fn(r)
            out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            if len(out) != parts:
                raise ValueError(f"figure {name!r} gave {len(out)} parts, declares {parts}")
            return out

        FIGURES[name] = Figure(name, fmt, parts, compute, " ".join((fn.__doc__ or "").split()))
        return fn
    return register


def minmax(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


MODELS = ("deepfm", "dcnv2")


def ladder(r: Results, experiment: str) -> Table:
    return r.measurement(experiment, "hpc_ladder")


# peers (results/peers*.md: no committed manifests yet; the files' own figures)

PEER_LIBS = {"fuxictr": "FuxiCTR", "deepctr": "DeepCTR-Torch", "adrepro": "adrepro"}


def _peer_seeds(r: Results, stem: str) -> Table:
    return r.peers_table(stem, "seeds")


for _key, _lib in PEER_LIBS.items():
    def _auc(r: Results, lib: str = _lib) -> float:
        """Mean test AUC over seeds (results/peers.md, seeds table)."""
        return _peer_seeds(r, "peers").number(lib, "test AUC mean ± sd", sep="±")

    def _speed(r: Results, lib: str = _lib) -> float:
        """Median training samples/s over seeds (results/peers.md)."""
        return _peer_seeds(r, "peers").number(lib, "training samples/s")

    figure(f"peers_auc_{_key}", value(4))(_auc)
    figure(f"peers_speed_{_key}", value(0, "k", scale=1e-3))(_speed)


@figure("peers_prep_adrepro", value(1, " s"))
def _(r: Results) -> float:
    """adrepro's median preprocessing seconds (results/peers.md)."""
    return _peer_seeds(r, "peers").number("adrepro", "preprocessing (s)")


@figure("peers_prep_fuxictr", value(0, " s"))
def _(r: Results) -> float:
    """FuxiCTR's median preprocessing seconds (results/peers.md)."""
    return _peer_seeds(r, "peers").number("FuxiCTR", "preprocessing (s)")


def _prep_ratio(r: Results, stem: str) -> float:
    return r.search(f"{stem}.md", r"adrepro / FuxiCTR = (\d+(?:\.\d+)?)x")


@figure("peers_prep_rows_ratio", value(1, "x"))
def _(r: Results) -> float:
    """adrepro / FuxiCTR preprocessing rows/s, as the report's issue-10 target line states it."""
    return _prep_ratio(r, "peers")


@figure("peers_criteo_auc", pair(4), parts=3)
def _(r: Results) -> tuple[float, ...]:
    """Mean test AUC over seeds, FuxiCTR / DeepCTR-Torch / adrepro (results/peers_criteo.md)."""
    t = _peer_seeds(r, "peers_criteo")
    return tuple(t.number(lib, "test AUC mean ± sd", sep="±") for lib in PEER_LIBS.values())


@figure("peers_criteo_speed", pair(0, "k", scale=1e-3), parts=3)
def _(r: Results) -> tuple[float, ...]:
    """Median training samples/s, FuxiCTR / DeepCTR-Torch / adrepro (results/peers_criteo.md)."""
    t = _peer_seeds(r, "peers_criteo")
    return tuple(t.number(lib, "training samples/s") for lib in PEER_LIBS.values())


@figure("peers_criteo_prep", pair((0, 0, 1), " s"), parts=3)
def _(r: Results) -> tuple[float, ...]:
    """Median preprocessing seconds, FuxiCTR / DeepCTR-Torch / adrepro (results/peers_criteo.md)."""
    t = _peer_seeds(r, "peers_criteo")
    return tuple(t.number(lib, "preprocessing (s)") for lib in PEER_LIBS.values())


@figure("peers_criteo_prep_rows_ratio", value(1, "x"))
def _(r: Results) -> float:
    """adrepro / FuxiCTR preprocessing rows/s on the Criteo-format file (its target line)."""
    return _prep_ratio(r, "peers_criteo")


@figure("peers_criteo_fuxictr_rows_per_s", value(0, "k", scale=1e-3))
def _(r: Results) -> float:
    """FuxiCTR's preprocessing rows/s on the Criteo-format file (the target line's median)."""
    return r.search("peers_criteo.md", r"preprocessing rows/s[^:]*: FuxiCTR ([\d,]+)")


@figure("peers_highcard_embedding_rows", value(1, "M", scale=1e-6))
def _(r: Results) -> float:
    """Embedding rows of FuxiCTR's tables on the highcard export (results/peers_highcard.md)."""
    return r.search("peers_highcard.md", r"tables hold ([\d,]+) embedding rows")


@figure("peers_highcard_train_rows", value(1, "M", scale=1e-6))
def _(r: Results) -> float:
    """Training rows of the highcard export (results/peers_highcard.md)."""
    return r.search("peers_highcard.md", r"train ([\d,]+) rows")


def _highcard_speed(r: Results, lib: str) -> float:
    return _peer_seeds(r, "peers_highcard").number(lib, "training samples/s")


@figure("peers_highcard_fuxictr_speed", value(1, "k", scale=1e-3))
def _(r: Results) -> float:
    """FuxiCTR's median training samples/s on the highcard export."""
    return _highcard_speed(r, "FuxiCTR")


@figure("peers_highcard_fuxictr_step_s", value(1, " s"))
def _(r: Results) -> float:
    """FuxiCTR's seconds a step: the settings' batch_size / its median samples/s (highcard)."""
    batch = r.search("peers_highcard.md", r"\| batch_size \| (\d+) \|")
    return batch / _highcard_speed(r, "FuxiCTR")


@figure("peers_highcard_dense_ratio", value(2, "x"))
def _(r: Results) -> float:
    """adrepro with dense Adam against FuxiCTR, median samples/s (highcard)."""
    return _highcard_speed(r, "adrepro") / _highcard_speed(r, "FuxiCTR")


@figure("peers_highcard_sparse_speed", value(0, "k", scale=1e-3))
def _(r: Results) -> float:
    """adrepro with lazy SparseAdam, median samples/s (highcard)."""
    return _highcard_speed(r, "adrepro, lazy SparseAdam on the tables")


@figure("peers_highcard_sparse_ratio", value(1, "x"))
def _(r: Results) -> float:
    """adrepro with lazy SparseAdam against FuxiCTR, median samples/s (highcard)."""
    return _highcard_speed(r, "adrepro, lazy SparseAdam on the tables") / _highcard_speed(r, "FuxiCTR")


@figure("peers_highcard_auc", pair(4, joiner=" and "), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Mean test AUC over seeds, FuxiCTR and adrepro with lazy SparseAdam (highcard)."""
    t = _peer_seeds(r, "peers_highcard")
    return tuple(t.number(lib, "test AUC mean ± sd", sep="±")
                 for lib in ("FuxiCTR", "adrepro, lazy SparseAdam on the tables"))


# the HPC ladder on the default world (results/runs/hpc_ladder/measurements/)

def _per_model(r: Results, experiment: str, rung: str, column: str, part: int = 0) -> tuple[float, float]:
    t = ladder(r, experiment)
    return tuple(t.number(f"{m} · {rung}", column, part) for m in MODELS)


@figure("ladder_columnar_deepfm", value(1, "x"))
def _(r: Results) -> float:
    """DeepFM's columnar loader over the naive loop ('x previous')."""
    return ladder(r, "hpc_ladder").number("deepfm · 1 columnar loader", "x previous")


@figure("ladder_columnar_dcnv2", value(1, "x"))
def _(r: Results) -> float:
    """DCNv2's columnar loader over the naive loop ('x previous')."""
    return ladder(r, "hpc_ladder").number("dcnv2 · 1 columnar loader", "x previous")


@figure("ladder_naive_data_share", span(0, "%"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Share of the naive loop's training time spent on data, over both models."""
    return minmax(list(_per_model(r, "hpc_ladder", "0 naive", "% data / fwd / bwd / opt", 0)))


@figure("ladder_sparse", pair((2, 1), "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Sparse row updates over the columnar loader, DeepFM / DCNv2 ('x previous')."""
    return _per_model(r, "hpc_ladder", "2 sparse row updates", "x previous")


@figure("ladder_large_batch", pair(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The 8x batch (CowClip's rules, base L2: the rung the climb continues from) over rung 2."""
    return _per_model(r, "hpc_ladder", "3 large batch, CowClip, base L2", "x previous")


@figure("ladder_compiled", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The compiled step over the 8x batch ('x previous')."""
    return _per_model(r, "hpc_ladder", "4 compiled step", "x previous")


@figure("ladder_bf16", pair((2, 1), "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """bf16 autocast over the compiled step ('x previous')."""
    return _per_model(r, "hpc_ladder", "5 bf16 autocast", "x previous")


@figure("ladder_multihash", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Multi-hash embedding over bf16 ('x previous')."""
    return _per_model(r, "hpc_ladder", "6 multi-hash embedding", "x previous")


@figure("ladder_multihash_fewer_bytes", pair(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Model bytes of the naive rung / the multi-hash rung's (model MiB)."""
    t = ladder(r, "hpc_ladder")
    return tuple(t.number(f"{m} · 0 naive", "model MiB") / t.number(f"{m} · 6 multi-hash embedding", "model MiB")
                 for m in MODELS)


@figure("ladder_fastest", pair(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The fastest rung (bf16) over the naive loop in samples/s ('x rung 0')."""
    return _per_model(r, "hpc_ladder", "5 bf16 autocast", "x rung 0")


@figure("ladder_fastest_time_to_target", pair(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The bf16 rung's time to rung 0's AUC against rung 0's ('x rung 0 (time to target)')."""
    return _per_model(r, "hpc_ladder", "5 bf16 autocast", "x rung 0 (time to target)")


@figure("ladder_stack", span(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The whole stack's rungs (bf16 and multi-hash) over the naive loop, both models ('x rung 0')."""
    return minmax([*_per_model(r, "hpc_ladder", "5 bf16 autocast", "x rung 0"),
                   *_per_model(r, "hpc_ladder", "6 multi-hash embedding", "x rung 0")])


def _sweep(r: Results, row: str) -> float:
    return r.measurement("hpc_ladder", "hpc_batch_sweep").number(row, "AUC - 512")


@figure("sweep_cowclip_1024", value(4))
def _(r: Results) -> float:
    """CowClip's embedding-L2 rule at batch 1,024, AUC minus batch 512's (hpc_batch_sweep)."""
    return _sweep(r, "cowclip · 1,024")


@figure("sweep_cowclip_base_l2_1024", value(4, signed=True))
def _(r: Results) -> float:
    """CowClip with the base L2 at batch 1,024, AUC minus batch 512's."""
    return _sweep(r, "cowclip, base L2 · 1,024")


@figure("sweep_cowclip_base_l2_4096_loss", value(4))
def _(r: Results) -> float:
    """AUC lost by CowClip with the base L2 at batch 4,096 (512's minus its)."""
    return -_sweep(r, "cowclip, base L2 · 4,096")


@figure("sweep_cowclip_base_l2_16384_loss", value(3))
def _(r: Results) -> float:
    """AUC lost by CowClip with the base L2 at batch 16,384."""
    return -_sweep(r, "cowclip, base L2 · 16,384")


@figure("sweep_steps_16384", value(0))
def _(r: Results) -> float:
    """Steps of 2 epochs at batch 16,384 (hpc_batch_sweep)."""
    return r.measurement("hpc_ladder", "hpc_batch_sweep").number("cowclip, base L2 · 16,384", "steps")


# data parallelism (hpc_data_parallel)

def _dp(r: Results) -> Table:
    return r.measurement("hpc_ladder", "hpc_data_parallel")


@figure("dp_two_process_ratio", span(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Two processes against one on the same 2 cores, every 2-process row ('x 1 process')."""
    t = _dp(r)
    return minmax([t.number(row, "x 1 process") for row in t.labels() if row.startswith("2 processes")])


for _row, _name in (("2 processes, none", "fp32"), ("2 processes, fp16", "fp16"),
                    ("2 processes, powersgd", "powersgd"), ("2 processes, none, dense tables", "dense")):
    def _sent(r: Results, row: str = _row) -> float:
        """MiB each process sends per step (hpc_data_parallel)."""
        return _dp(r).number(row, "MiB sent / step")

    figure(f"dp_mib_{_name}", value(1 if _name == "dense" else 2))(_sent)


@figure("dp_powersgd_auc", value(4, signed=True))
def _(r: Results) -> float:
    """Rank-1 PowerSGD's test AUC minus one process's."""
    return _dp(r).number("2 processes, powersgd", "AUC - 1 process")


# the ladder on the high-cardinality world (results/runs/hpc_ladder_large/measurements/)

@figure("large_embedding_rows", value(1, "M", scale=1e-6))
def _(r: Results) -> float:
    """Embedding rows of the high-cardinality world (the ladder's notes)."""
    return r.search("runs/hpc_ladder_large/measurements/hpc_ladder.json", r"([\d,]+) embedding rows",
                    r.measurement_notes("hpc_ladder_large", "hpc_ladder"))


@figure("large_deepfm_mib", value(0))
def _(r: Results) -> float:
    """DeepFM's model MiB on the high-cardinality world (rung 0)."""
    return ladder(r, "hpc_ladder_large").number("deepfm · 0 naive", "model MiB")


@figure("large_dense_speed", span(-1), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Samples/s of rungs 0 and 1 (dense Adam over the tables), both models."""
    return minmax([*_per_model(r, "hpc_ladder_large", "0 naive", "samples/s"),
                   *_per_model(r, "hpc_ladder_large", "1 columnar loader", "samples/s")])


@figure("large_dense_step_s", span(1), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Seconds a step of rungs 0 and 1: batch / samples/s, both models."""
    t = ladder(r, "hpc_ladder_large")
    rows = [f"{m} · {rung}" for m in MODELS for rung in ("0 naive", "1 columnar loader")]
    return minmax([t.number(row, "batch") / t.number(row, "samples/s") for row in rows])


def _peak(r: Results, experiment: str) -> float:
    return r.search(f"runs/{experiment}/measurements/hpc_ladder.json", r"fp32 (\d+) GFLOP/s",
                    r.measurement_notes(experiment, "hpc_ladder"))


@figure("large_fp32_peak", value(0))
def _(r: Results) -> float:
    """fp32 matrix-product peak GFLOP/s measured by the high-cardinality ladder."""
    return _peak(r, "hpc_ladder_large")


@figure("default_fp32_peak", value(0))
def _(r: Results) -> float:
    """fp32 matrix-product peak GFLOP/s measured by the default world's ladder."""
    return _peak(r, "hpc_ladder")


@figure("large_naive_optimizer_share", span(0, "%"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Share of the naive loop's time in the optimizer, both models (high-cardinality)."""
    return minmax(list(_per_model(r, "hpc_ladder_large", "0 naive", "% data / fwd / bwd / opt", 3)))


@figure("large_columnar", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The columnar loader over the naive loop ('x previous', high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "1 columnar loader", "x previous")


@figure("large_sparse", pair(0, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Sparse row updates over rung 0 ('x rung 0', high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "2 sparse row updates", "x rung 0")


@figure("large_large_batch", pair((1, 2), "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The 8x batch (CowClip's rules, base L2) over sparse updates ('x previous')."""
    return _per_model(r, "hpc_ladder_large", "3 large batch, CowClip, base L2", "x previous")


@figure("large_compiled", pair(1, "x", collapse=True), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The compiled step over the 8x batch, DeepFM / DCNv2 ('x previous'; one number when alike)."""
    return _per_model(r, "hpc_ladder_large", "4 compiled step", "x previous")


@figure("large_bf16", pair(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """bf16 autocast over the compiled step ('x previous', high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "5 bf16 autocast", "x previous")


@figure("large_best", pair(0, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The best rung (bf16) over rung 0 in samples/s ('x rung 0', high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "5 bf16 autocast", "x rung 0")


@figure("large_best_time_to_target", pair(0, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The bf16 rung's time to rung 0's AUC against rung 0's (high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "5 bf16 autocast", "x rung 0 (time to target)")


@figure("large_best_auc", pair(4, signed=True), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The bf16 rung's test AUC minus rung 0's (high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "5 bf16 autocast", "AUC - rung 0")


@figure("large_multihash", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Multi-hash embedding over bf16 ('x previous', high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "6 multi-hash embedding", "x previous")


def _fewer_bytes(r: Results, rung: str) -> list[float]:
    return [1 / x for x in _per_model(r, "hpc_ladder_large", rung, "model x rung 0")]


@figure("large_multihash_fewer_bytes", span(0, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Full model bytes / the multi-hash model's, both models (1 / 'model x rung 0')."""
    return minmax(_fewer_bytes(r, "6 multi-hash embedding"))


@figure("large_multihash_auc", pair(4, signed=True), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The multi-hash rung's test AUC minus rung 0's (high-cardinality)."""
    return _per_model(r, "hpc_ladder_large", "6 multi-hash embedding", "AUC - rung 0")


@figure("large_fp16_rows_fewer_bytes", span(0, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Full model bytes / the multi-hash model's with fp16 rows, both models."""
    return minmax(_fewer_bytes(r, "7 fp16 rows"))


@figure("large_int8_rows_fewer_bytes", span(0, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Full model bytes / the multi-hash model's with int8 rows, both models."""
    return minmax(_fewer_bytes(r, "7 int8 rows"))


@figure("large_protocol_auc", value(4))
def _(r: Results) -> float:
    """Test AUC of the suite's own protocol on the high-cardinality world (results/hpc_ladder_large.csv)."""
    return float(r.table_csv("hpc_ladder_large").cell("DeepFM", "test AUC mean"))


# TorchRec (hpc_torchrec on the high-cardinality world)

def _torchrec(r: Results) -> Table:
    return r.measurement("hpc_ladder_large", "hpc_torchrec")


BATCHES = ("512", "4,096")


def _tr(r: Results, engine: str, column: str, part: int = 0) -> tuple[float, float]:
    return tuple(_torchrec(r).number(f"{engine} · {b}", column, part) for b in BATCHES)


@figure("torchrec_rowwise_over_sparseadam", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Torch tables with row-wise Adagrad against SparseAdam, batch 512 / 4,096 ('x SparseAdam')."""
    return _tr(r, "torch tables, row-wise Adagrad", "x SparseAdam")


@figure("torchrec_state_ratio", value(0, "x"))
def _(r: Results) -> float:
    """SparseAdam's optimizer state / row-wise Adagrad's (batch 512 rows)."""
    t = _torchrec(r)
    return (t.number("torch tables, SparseAdam · 512", "optimizer MiB")
            / t.number("torch tables, row-wise Adagrad · 512", "optimizer MiB"))


@figure("torchrec_rowwise_state_mib", value(0))
def _(r: Results) -> float:
    """Row-wise Adagrad's optimizer MiB."""
    return _torchrec(r).number("torch tables, row-wise Adagrad · 512", "optimizer MiB")


@figure("torchrec_sparseadam_state_mib", value(0, thousands=True))
def _(r: Results) -> float:
    """SparseAdam's optimizer MiB."""
    return _torchrec(r).number("torch tables, SparseAdam · 512", "optimizer MiB")


@figure("torchrec_rowwise_auc", span(3, signed=True), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Row-wise Adagrad's test AUC minus SparseAdam's, both batches."""
    return minmax(list(_tr(r, "torch tables, row-wise Adagrad", "AUC - SparseAdam")))


@figure("torchrec_fused_one_process", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """TorchRec's fused engine in one process against torch's tables with the same row-wise
    Adagrad, batch 512 / 4,096 ('x row-wise Adagrad')."""
    return _tr(r, "TorchRec, 1 process", "x row-wise Adagrad")


@figure("torchrec_backward_share", span(0, "%"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Share of TorchRec's one-process step in its backward pass (the fused update included)."""
    return minmax(list(_tr(r, "TorchRec, 1 process", "% data / fwd / bwd / opt", 2)))


@figure("torchrec_two_process_ratio", pair(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """TorchRec over two processes against one, samples/s, batch 512 / 4,096."""
    two, one = _tr(r, "TorchRec, 2 processes", "samples/s"), _tr(r, "TorchRec, 1 process", "samples/s")
    return tuple(a / b for a, b in zip(two, one))


@figure("torchrec_plan_rows", pair(1, "M", scale=1e-6), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Rows on rank 0 / rank 1 in TorchRec's two-process plan (the measurement's notes)."""
    notes = r.measurement_notes("hpc_ladder_large", "hpc_torchrec")
    rel = "runs/hpc_ladder_large/measurements/hpc_torchrec.json"
    return tuple(r.search(rel, rf"rank {k}: ([\d,]+) rows", notes) for k in (0, 1))


# APG (its runs' metrics, apg_efficiency)

@figure("apg_group_auc_gap", value(4, minus="−"))
def _(r: Results) -> float:
    """Group-wise APG's test AUC minus the static DeepFM's, each the mean over its seeds' metrics.json."""
    return (r.seed_mean("apg", "APG group (scene)", ("test", "auc"))
            - r.seed_mean("apg", "DeepFM", ("test", "auc")))


def _apg_efficient_rows(t: Table) -> list[str]:
    return [row for row in t.labels() if row.startswith("APG ")]


@figure("apg_infer_time", span(2, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The efficient APG towers' inference time / the static tower's, over every efficient row."""
    t = r.measurement("apg", "apg_efficiency")
    return minmax([t.number(row, "infer time / static") for row in _apg_efficient_rows(t)])


@figure("apg_infer_memory", span(1, "x"), parts=2)
def _(r: Results) -> tuple[float, float]:
    """The efficient APG towers' inference peak memory / the static tower's."""
    t = r.measurement("apg", "apg_efficiency")
    return minmax([t.number(row, "infer memory / static") for row in _apg_efficient_rows(t)])


@figure("apg_saving_over_basic", value(0, "%"))
def _(r: Results) -> float:
    """Inference time group-wise APG saves against basic APG with the same condition."""
    t = r.measurement("apg", "apg_efficiency")
    return 100 * (1 - t.number("APG group K=32/16/8", "infer ms") / t.number("basic APG group", "infer ms"))


# PCF-GNN (results/claims.md)

@figure("pcf_crosses_on_gain", value(4, signed=True))
def _(r: Results) -> float:
    """PCF-GNN's gain over DeepFM with the crosses on (claim pcf-gain-needs-crosses' requirement)."""
    return r.claim_estimates("pcf-gain-needs-crosses")[0][0]


@figure("pcf_crosses_did", value(4, signed=True))
def _(r: Results) -> float:
    """How much of that gain the crosses carry: the gain with them on minus the gain with them off
    (claim pcf-gain-needs-crosses' difference of differences)."""
    return r.claim_estimates("pcf-gain-needs-crosses")[1][0]


@figure("pcf_crosses_did_interval", span(4, joiner=" to ", signed=True), parts=2)
def _(r: Results) -> tuple[float, float]:
    """Its 95% interval (claim pcf-gain-needs-crosses)."""
    _, lo, hi = r.claim_estimates("pcf-gain-needs-crosses")[1]
    return lo, hi


# the world and the compression tables

@figure("bayes_random_auc_se", value(3))
def _(r: Results) -> float:
    """Bootstrap standard error of the Bayes-optimal AUC on test_random at the default scale: the
    standard deviation of its 500 request replicates, averaged over the baseline DeepFM's seeds."""
    ses = []
    for metrics in r.run_metrics("baselines", "DeepFM"):
        reps = [float(x) for x in metrics["bayes"]["test_random"]["bootstrap"]["auc"]]
        mean = sum(reps) / len(reps)
        ses.append((sum((x - mean) ** 2 for x in reps) / (len(reps) - 1)) ** 0.5)
    return sum(ses) / len(ses)


@figure("compression_large_embedding_rows", value(1, scale=1e-6))
def _(r: Results) -> float:
    """Millions of embedding rows of the full vocabulary on the compression table's
    high-cardinality world (the table's own line)."""
    return r.search("embedding_compression_large.md", r"Full vocabulary: ([\d,]+) embedding rows")


@figure("large_train_rows", value(0, "M", scale=1e-6))
def _(r: Results) -> float:
    """Training rows of the ladder's high-cardinality world (the ladder's notes)."""
    return r.search("runs/hpc_ladder_large/measurements/hpc_ladder.json", r"([\d,]+) training rows",
                    r.measurement_notes("hpc_ladder_large", "hpc_ladder"))


# --- checking and writing ----------------------------------------------------------------------

@dataclass
class Mark:
    """One marker in the README: the figure's name, where its text starts and that text (None
    when the text after the marker does not have the figure's shape)."""

    name: str
    start: int
    text: str | None
    line: int


@dataclass
class Mismatch:
    figure: str
    readme: str
    results: str
    source: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"README.md:{self.line}: " if self.line else ""
        return f"{where}fig:{self.figure}: README has {self.readme!r}, results give {self.results!r} ({self.source})"


@dataclass
class Evaluated:
    text: str | None
    source: str
    error: str | None = None


def marks(readme: str) -> Iterator[Mark]:
    for m in MARKER.finditer(readme):
        name, start = m.group(1), m.end()
        fig = FIGURES.get(name)
        shape = fig.fmt.pattern(fig.parts).match(readme, start) if fig else None
        yield Mark(name, start, shape.group() if shape else None, readme.count("\n", 0, m.start()) + 1)


def evaluate(results: Results, names: set[str] | None = None) -> dict[str, Evaluated]:
    """Each figure's rendered text from the results, with its source files (or the error)."""
    out = {}
    for name, fig in FIGURES.items():
        if names is not None and name not in names:
            continue
        results.touched = []
        try:
            text = fig.fmt.render(fig.compute(results))
            out[name] = Evaluated(text, ", ".join(results.touched))
        except (KeyError, ValueError, FileNotFoundError, IndexError, ZeroDivisionError) as e:
            out[name] = Evaluated(None, ", ".join(results.touched), f"{type(e).__name__}: {e}")
    return out


def check(readme: str, results: Results) -> list[Mismatch]:
    """Every difference between the README's marked figures and the results: a figure whose text
    differs, a marker with no figure of that name or no text of its shape, a figure that cannot be
    computed, and a registered figure the README does not mark."""
    found = list(marks(readme))
    values = evaluate(results)
    out = []
    for mark in found:
        if mark.name not in FIGURES:
            out.append(Mismatch(mark.name, "", "(no such figure)", "repro/readme_figures.py", mark.line))
            continue
        ev = values[mark.name]
        if ev.text is None:
            out.append(Mismatch(mark.name, mark.text or "", f"(not computable: {ev.error})", ev.source, mark.line))
        elif mark.text is None:
            following = readme[mark.start:mark.start + 20].split("\n")[0]
            out.append(Mismatch(mark.name, following, ev.text, ev.source + "; README text has not the figure's shape",
                                mark.line))
        elif mark.text != ev.text:
            out.append(Mismatch(mark.name, mark.text, ev.text, ev.source, mark.line))
    marked = {m.name for m in found}
    for name in FIGURES:
        if name not in marked:
            out.append(Mismatch(name, "(not marked)", values[name].text or values[name].error, values[name].source))
    return out


def rewrite(readme: str, results: Results) -> tuple[str, list[Mismatch]]:
    """The README with every marked figure rendered from the results, and the marks it could not
    rewrite (unknown name, no text of the figure's shape, not computable)."""
    values = evaluate(results)
    pieces, pos, problems = [], 0, []
    for mark in marks(readme):
        ev = values.get(mark.name)
        if ev is None or ev.text is None or mark.text is None:
            problems.append(Mismatch(mark.name, mark.text or "", (ev.error if ev else "(no such figure)") or "",
                                     ev.source if ev else "repro/readme_figures.py", mark.line))
            continue
        pieces += [readme[pos:mark.start], ev.text]
        pos = mark.start + len(mark.text)
    pieces.append(readme[pos:])
    return "".join(pieces), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.readme_figures", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 listing every mismatch")
    mode.add_argument("--write", action="store_true", help="rewrite the marked figures from the results")
    mode.add_argument("--list", action="store_true", help="print every figure, its value and source")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = Results(args.results)
    readme = args.readme.read_text()
    if args.list:
        for name, ev in evaluate(results).items():
            print(f"{name}: {ev.text or ev.error}  [{ev.source}]  {FIGURES[name].about}")
        return 0
    if args.write:
        new, problems = rewrite(readme, results)
        if new != readme:
            atomic_write_text(args.readme, new)
            print(f"rewrote the figures of {args.readme}")
        for p in problems:
            print(f"not rewritten: {p}", file=sys.stderr)
        return 1 if problems else 0
    mismatches = check(readme, results)
    for m in mismatches:
        print(m)
    if mismatches:
        print(f"{len(mismatches)} README figure(s) differ from {args.results}: "
              "`python -m repro.readme_figures --write` rewrites them")
        return 1
    print(f"{sum(1 for _ in marks(readme))} README figures match {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
