"""What a data source hands to the preparation step.

A source (the simulated world, a Criteo reader, ...) describes its raw fields and yields raw
chunks per split as ``pyarrow.Table``; ``repro.data.prepare`` turns them into the columnar cache.
A source never encodes vocabularies itself: fitting them on the training split only is the
preparation step's job, so no source can leak test statistics by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import pyarrow as pa

from repro.errors import DataError

SPLITS = ("train", "valid", "test")  # the splits of a source that declares none


@dataclass(frozen=True)
class RawField:
    """A raw column (or, for ``vector``, ``dim`` columns named ``<name>_<i>``)."""

    name: str
    kind: str  # categorical | dense | vector | key
    roles: tuple[str, ...] = ()
    dim: int = 1


class Source(Protocol):
    name: str
    split_protocol: str
    label: str
    weight: str | None
    # Columns stored beside the data but never given to a model (true click probability...).
    truth_columns: tuple[str, ...]

    # Optional: the splits the source yields, in order (default ``SPLITS``). "train" and "valid"
    # are required (vocabularies and frequencies come from train only; valid picks the epoch);
    # every other split is a test set (the world adds ``test_random``, its randomised test set).
    # splits: tuple[str, ...]

    # Optional: splits whose rows may lack a label (a cascade's candidate log: only shown candidates
    # have one). Their missing labels are kept, as NaN, instead of rejected; no trainer or metric
    # uses them as labels. Default: none.
    # unlabelled_splits: tuple[str, ...]

    # Optional: the truth columns of one split, when splits store different truth (default
    # ``truth_columns`` for every split).
    # def split_truth_columns(self, split: str) -> tuple[str, ...]: ...

    # Optional: line numbers of rows the source skipped as malformed in its last pass, per split;
    # the preparation step adds their count to the split's rejected rows.
    # rejected: dict[str, list[int]]

    def fields(self) -> list[RawField]: ...

    def fingerprint(self) -> str:
        """Identifies the raw input: a digest of the files, or of the generator's config."""
        ...

    def chunks(self, split: str) -> Iterator[pa.Table]:
        """Raw rows of ``split`` in a stable order, in chunks that fit in memory."""
        ...

    def expected_rows(self, split: str) -> int | None:
        """For progress bars; None when unknown."""
        ...

    def describe(self) -> dict:
        """The source's resolved config, recorded in the provenance."""
        ...


def unlabelled_splits(source: Source) -> tuple[str, ...]:
    """The splits of ``source`` whose rows may lack a label, checked."""
    unlabelled = tuple(getattr(source, "unlabelled_splits", ()))
    if "train" in unlabelled or "valid" in unlabelled or set(unlabelled) - set(source_splits(source)):
        raise DataError(f"{source.name}: unlabelled splits {unlabelled} must be declared splits other than "
                        "'train' and 'valid'")
    return unlabelled


def truth_columns(source: Source, split: str) -> tuple[str, ...]:
    """The truth columns stored for ``split``."""
    if hasattr(source, "split_truth_columns"):
        return tuple(source.split_truth_columns(split))
    return tuple(source.truth_columns or ())


def source_splits(source: Source) -> tuple[str, ...]:
    """The splits ``source`` declares (``SPLITS`` when it declares none), checked."""
    splits = tuple(getattr(source, "splits", SPLITS))
    if "train" not in splits or "valid" not in splits or len(set(splits)) != len(splits):
        raise DataError(f"{source.name}: splits {splits} must name 'train' and 'valid', each once")
    return splits
