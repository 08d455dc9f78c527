"""A prepared data set on disk, and the batches of tensors it yields (the batch contract).

A batch is a dict of tensors, built by slicing whole columns (no per-row Python):
- ``cat``    [B, F] int64: categorical indices in ``feature_map.categorical`` order;
- ``dense``  [B, D] float32: dense and vector columns in ``feature_map.dense_columns`` order;
- ``raw``    [B, F] int64, only when ``raw_ids`` is set (a model that hashes raw values asks for
  it): the raw-value hash of every categorical field (see ``repro.data.prepare.raw_hash``);
- ``label``  [B] float32; ``weight`` [B] float32 when the data set has one;
- role tensors, views of the above: ``position``, ``scene``, ``user``, ``query``, ``ad``,
  ``creative`` ([B] int64), ``bid`` ([B] or [B, k]), ``content`` ([B, dim]), and ``request`` [B]
  int64 from the key column. A role the data set lacks is simply absent.

Splits smaller than ``max_rows_in_memory`` are decoded once and kept as tensors (the common
case; an epoch is then a permutation and a gather per batch). Larger splits stream parquet row
groups in a shuffled order through a shuffle window of a few row groups, so memory stays bounded
by the window, not the split.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from repro.data.featuremap import FeatureMap
from repro.data.prepare import raw_column
from repro.errors import DataError

Batch = dict[str, torch.Tensor]


class PreparedDataset:
    def __init__(self, root: str | Path, max_rows_in_memory: int = 20_000_000, drop_roles: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        if not (self.root / "DONE").exists():
            raise DataError(
                f"no prepared data set at {self.root} (missing or unfinished; prepare it first, "
                f"e.g. `python -m repro data=... ` prepares on first use)"
            )
        self.feature_map = FeatureMap.load(self.root / "feature_map.json")
        self.provenance = json.loads((self.root / "provenance.json").read_text())
        self.max_rows_in_memory = max_rows_in_memory
        self._memory: dict[str, Batch] = {}
        self._attached: dict[str, dict[str, torch.Tensor]] = {}
        self._raw_ids = False
        if "train" not in self.splits or "valid" not in self.splits:
            raise DataError(f"prepared data set {self.root} records no train or valid split ({self.splits}); "
                            f"delete it to rebuild it")
        for split in self.splits:
            if not self.split_path(split).exists():
                raise DataError(f"prepared data set {self.root} lacks its {split!r} split ({self.split_path(split)})")
        # The data contract hands every model the train-only counts (embedding layers that size
        # or mask rows by frequency read them from the feature map they are built with).
        self.feature_map.frequencies = self.frequencies
        self.feature_map.train_rows = self.num_rows("train")
        if drop_roles:  # fields a model must not see (position, context): batches carry them by role only
            self.feature_map = self.feature_map.without_roles(tuple(drop_roles))

    @property
    def raw_ids(self) -> bool:
        """Whether batches carry ``raw`` (the raw-value hashes); set by the trainer for a model
        whose embedding layers hash raw values, so no other model pays for reading them."""
        return self._raw_ids

    @raw_ids.setter
    def raw_ids(self, wanted: bool) -> None:
        if wanted and not self.feature_map.extra.get("raw_ids"):
            raise DataError(f"prepared data set {self.root} has no raw-value hashes (prepared before they "
                            f"existed); delete it to rebuild it")
        if wanted != self._raw_ids:
            self._memory.clear()
        self._raw_ids = bool(wanted)

    # -- facts ---------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.provenance["fingerprint"]

    @property
    def splits(self) -> tuple[str, ...]:
        """The prepared splits (those with rows in the provenance), in the source's order: train,
        valid, then the test sets."""
        rows = self.provenance["rows"]
        order = [s for s in self.provenance.get("splits", ("train", "valid", "test")) if s in rows]
        return tuple(order + sorted(s for s in rows if s not in order))

    @property
    def unlabelled_splits(self) -> tuple[str, ...]:
        """Splits whose rows may lack a label (NaN): a cascade's candidate log. They are predicted,
        never trained on or scored against labels."""
        return tuple(s for s in self.provenance.get("unlabelled_splits", ()) if s in self.splits)

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.parquet"

    def num_rows(self, split: str) -> int:
        return int(self.provenance["rows"][split])

    @cached_property
    def frequencies(self) -> dict[str, np.ndarray]:
        """Training-split count of every encoded categorical index, per field."""
        with np.load(self.root / "frequencies.npz") as z:
            return {k: z[k] for k in z.files}

    def truth(self, split: str) -> pd.DataFrame | None:
        """Ground truth aligned with the split's row order (simulated data only)."""
        path = self.root / "truth" / f"{split}.parquet"
        if not path.exists():
            return None
        return self._read(path).to_pandas()

    def column(self, split: str, name: str) -> np.ndarray:
        """One column of a split in row order (labels, keys, a field), for metrics."""
        return self._read(self.split_path(split), columns=[name]).column(name).to_numpy()

    def attach(self, split: str, name: str, values: np.ndarray) -> None:
        """Add a per-row column to every batch of ``split`` as ``batch[name]`` (float32, the split's
        row order): a frozen teacher's predictions, read from its run, never recomputed."""
        if split not in self.splits:
            raise DataError(f"attach {name!r}: {self.root} has no split {split!r}")
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.num_rows(split),):
            raise DataError(f"attach {name!r} to {split!r}: {values.shape[0] if values.ndim else 0} values for "
                            f"{self.num_rows(split)} rows")
        if name in ("cat", "dense", "label", "weight", "raw") or ":" in name:
            raise DataError(f"attach: {name!r} is a name the loader uses itself")
        self._attached.setdefault(split, {})[name] = torch.from_numpy(values)
        self._memory.pop(split, None)

    # -- batches -------------------------------------------------------------------------
    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        shuffle_window: int = 4,
        group_by_request: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[Batch]:
        """Yield batches; with ``shuffle`` the order is a function of (seed, epoch) only.

        ``group_by_request`` keeps all rows of a request in one batch (requests are shuffled as
        units, and a batch ends at a request boundary once it holds ``batch_size`` rows or more).
        ``shard=(rank, world_size)`` yields rank ``rank``'s part of every batch (data-parallel
        training): the batches are those of the unsharded call, each cut into ``world_size``
        consecutive parts whose sizes differ by at most one row, so the ranks together see exactly
        the rows and steps of one process; only the rank's own rows are gathered.
        """
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise DataError(f"shard {shard}: expected (rank, world_size) with 0 <= rank < world_size")
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if group_by_request:
            key = self.feature_map.by_role("request")
            if key is None:
                raise DataError(f"{self.feature_map.dataset}: group_by_request needs a field with role 'request'")
            group = f"key:{key.name}"
        else:
            group = None
        if self.num_rows(split) <= self.max_rows_in_memory:
            yield from self._slices(self._in_memory(split), batch_size, shuffle, gen, group, shard)
            return
        pf = self._parquet(self.split_path(split))
        groups = torch.randperm(pf.num_row_groups, generator=gen).tolist() if shuffle else range(pf.num_row_groups)
        groups = list(groups)
        offsets = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        step = shuffle_window if shuffle else 1
        for start in range(0, len(groups), step):
            chosen = groups[start : start + step]
            tensors = self._to_tensors(pf.read_row_groups(chosen))
            for name, column in self._attached.get(split, {}).items():
                tensors[name] = torch.cat([column[offsets[g] : offsets[g + 1]] for g in chosen])
            yield from self._slices(tensors, batch_size, shuffle, gen, group, shard)

    def _slices(self, data: Batch, batch_size: int, shuffle: bool, gen: torch.Generator,
                group: str | None = None, shard: tuple[int, int] | None = None) -> Iterator[Batch]:
        n = data["label"].shape[0]
        if group is None:
            order = torch.randperm(n, generator=gen) if shuffle else None
            bounds = list(range(0, n, batch_size)) + [n]
        else:
            order, bounds = _grouped_order(data[group], batch_size, shuffle, gen)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if shard is not None:  # this rank's consecutive part of the batch
                rank, world = shard
                size, extra = divmod(stop - start, world)
                start, stop = start + rank * size + min(rank, extra), start + (rank + 1) * size + min(rank + 1, extra)
            if order is None:
                part = {k: v[start:stop] for k, v in data.items()}
            else:
                idx = order[start:stop]
                part = {k: v.index_select(0, idx) for k, v in data.items()}
            yield self._with_roles(part)

    def _in_memory(self, split: str) -> Batch:
        if split not in self._memory:
            self._memory[split] = {**self._to_tensors(self._read(self.split_path(split))),
                                   **self._attached.get(split, {})}
        return self._memory[split]

    def _to_tensors(self, table: pa.Table) -> Batch:
        fm = self.feature_map
        out: Batch = {}
        try:
            if fm.categorical:
                cat = np.stack([table.column(f.name).to_numpy() for f in fm.categorical], axis=1)
                out["cat"] = torch.from_numpy(cat.astype(np.int64, copy=False))
                if self._raw_ids:
                    raw = np.stack([table.column(raw_column(f.name)).to_numpy() for f in fm.categorical], axis=1)
                    out["raw"] = torch.from_numpy(raw.astype(np.int64, copy=False))
            dense_cols = fm.dense_columns
            if dense_cols:
                dense = np.stack([table.column(c).to_numpy() for c in dense_cols], axis=1)
                out["dense"] = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
            out["label"] = torch.from_numpy(table.column("label").to_numpy().astype(np.float32))
            if fm.weight:
                out["weight"] = torch.from_numpy(table.column("weight").to_numpy().astype(np.float32))
            for f in fm.keys:
                out[f"key:{f.name}"] = torch.from_numpy(table.column(f.name).to_numpy().astype(np.int64))
            for f in fm.side:
                if f.kind == "categorical":
                    out[f"side:{f.name}"] = torch.from_numpy(table.column(f.name).to_numpy().astype(np.int64))
                else:
                    cols = np.stack([table.column(c).to_numpy() for c in f.columns], axis=1)
                    out[f"side:{f.name}"] = torch.from_numpy(np.ascontiguousarray(cols, dtype=np.float32))
        except KeyError as e:
            raise DataError(f"{self.root}: a split lacks column {e} named by its feature map") from e
        return out

    def _with_roles(self, part: Batch) -> Batch:
        """Add role tensors (views) so methods can ask for ``batch['position']``."""
        fm = self.feature_map
        for f in fm.side:
            for role in f.roles:
                if role not in part:
                    side = part[f"side:{f.name}"]
                    part[role] = side[:, 0] if f.kind == "dense" else side
        for f in fm.fields:
            for role in f.roles:
                if role in part:
                    continue
                if f.kind == "categorical":
                    part[role] = part["cat"][:, fm.categorical_index(f.name)]
                elif f.kind == "key":
                    part[role] = part[f"key:{f.name}"]
                else:
                    s = fm.dense_slice(f.name)
                    part[role] = part["dense"][:, s] if f.kind == "vector" else part["dense"][:, s.start]
        return part

    # -- parquet access with errors that name the file ------------------------------------
    def _parquet(self, path: Path) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path}: {e} (delete {self.root} to rebuild it)") from e

    def _read(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path}: {e} (delete {self.root} to rebuild it)") from e


def _grouped_order(keys: torch.Tensor, batch_size: int, shuffle: bool, gen: torch.Generator):
    """Row order that keeps runs of equal keys (a request's rows are stored together) intact,
    and batch bounds that fall on run boundaries."""
    n = keys.shape[0]
    change = torch.ones(n, dtype=torch.bool)
    change[1:] = keys[1:] != keys[:-1]
    starts = torch.nonzero(change).squeeze(1)
    lengths = torch.diff(starts, append=torch.tensor([n]))
    if shuffle:
        perm = torch.randperm(len(starts), generator=gen)
        starts, lengths = starts[perm], lengths[perm]
    ends = torch.cumsum(lengths, 0)
    # Row i of the new order = its run's start + its offset inside the run.
    order = torch.repeat_interleave(starts - (ends - lengths), lengths) + torch.arange(n)
    cut = torch.searchsorted(ends, torch.arange(batch_size, n, batch_size), right=False)
    bounds = sorted(set([0, *ends[cut.clamp(max=len(ends) - 1)].tolist(), n]))
    return order, bounds
