"""The feature map: what every column of a prepared data set is, and which role it plays.

Methods look fields up by *role* (``user``, ``query``, ``ad``, ``creative``, ``position``,
``scene``, ``request``, ``content``, ``bid``), never by a data set's column name, so the same
method runs on the simulated world and on Criteo-like data without edits. A ``bid`` field holds
the log of the ad's bid (a cascade ranks by pCTR x bid).

Field kinds:
- ``categorical``: one int column; 0 = padding/missing, ``oov_index`` = out of vocabulary.
- ``dense``: one float column.
- ``vector``: ``dim`` float columns ``<name>_0 .. <name>_{dim-1}`` (e.g. a creative's content vector).
- ``key``: an int64 grouping key (request id) that models never see as a feature.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repro.errors import DataError

ROLES = ("user", "query", "ad", "creative", "position", "scene", "request", "content", "bid")
KINDS = ("categorical", "dense", "vector", "key")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    vocab_size: int = 0  # categorical: number of rows an embedding table needs (incl. pad and OOV)
    oov_index: int = 0
    dim: int = 1  # vector: width
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise DataError(f"field {self.name!r}: unknown roles {sorted(unknown)}; expected among {ROLES}")

    @property
    def columns(self) -> list[str]:
        if self.kind == "vector":
            return [f"{self.name}_{i}" for i in range(self.dim)]
        return [self.name]


@dataclass
class FeatureMap:
    """Describes a prepared data set; serialised as ``feature_map.json`` beside the splits."""

    dataset: str
    fields: list[FieldSpec]
    label: str = "label"
    weight: str | None = None
    extra: dict = field(default_factory=dict)
    # Set by the loader, never serialised: the training split's count of every encoded index per
    # field ([missing, kept values..., OOV]) and its row count. None for a bare feature map.
    frequencies: dict | None = field(default=None, repr=False, compare=False)
    train_rows: int | None = field(default=None, repr=False, compare=False)
    # Fields held out of the model's inputs (``without_roles``): not in ``batch['cat']`` or
    # ``batch['dense']``, still in every batch by role (``batch['position']``) for a method that
    # models them apart, as PAL models position. Never serialised.
    side: list[FieldSpec] = field(default_factory=list, repr=False, compare=False)

    def without_roles(self, roles: tuple[str, ...] | list[str]) -> "FeatureMap":
        """This map with every categorical, dense or vector field that plays one of ``roles``
        moved to ``side``: a model built from it never sees them (position and context fields
        a serving system would not have)."""
        roles = set(roles)
        unknown = roles - set(ROLES)
        if unknown:
            raise DataError(f"drop_roles: unknown roles {sorted(unknown)}; expected among {ROLES}")
        held = [f for f in self.fields if f.kind != "key" and roles & set(f.roles)]
        missing = roles - {r for f in held for r in f.roles}
        if missing:
            raise DataError(f"drop_roles: {self.dataset!r} has no input field with role(s) {sorted(missing)}")
        kept = [f for f in self.fields if f not in held]
        return FeatureMap(self.dataset, kept, self.label, self.weight, self.extra, self.frequencies, self.train_rows,
                          side=[*self.side, *held])

    # -- views used by the loader and by models -------------------------------------------
    @property
    def categorical(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "categorical"]

    @property
    def dense(self) -> list[FieldSpec]:
        """Dense and vector fields, in the order their columns appear in ``batch['dense']``."""
        return [f for f in self.fields if f.kind in ("dense", "vector")]

    @property
    def keys(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "key"]

    @property
    def dense_columns(self) -> list[str]:
        return [c for f in self.dense for c in f.columns]

    @property
    def num_dense(self) -> int:
        return len(self.dense_columns)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"feature map of {self.dataset!r} has no field {name!r}")

    def by_role(self, role: str) -> FieldSpec | None:
        """The (first) field that plays ``role`` (model inputs first, then ``side`` fields), or None
        when the data set lacks it."""
        for f in [*self.fields, *self.side]:
            if role in f.roles:
                return f
        return None

    def group_key(self, role: str) -> FieldSpec | None:
        """The column to group rows by for ``role`` (GAUC by user, by request): a raw ``key``
        field with that role when the source provides one, else the role's encoded field, whose
        OOV index would lump all rare values into one group."""
        for f in self.fields:
            if f.kind == "key" and role in f.roles:
                return f
        return self.by_role(role)

    def field_frequencies(self, name: str):
        """Training counts of field ``name``'s encoded indices (numpy int64, length vocab_size)."""
        if self.frequencies is None or name not in self.frequencies:
            raise DataError(f"feature map of {self.dataset!r} carries no training frequencies for {name!r} "
                            f"(build the model from a PreparedDataset's feature map)")
        return self.frequencies[name]

    def categorical_index(self, name: str) -> int:
        """Column of ``batch['cat']`` that holds field ``name``."""
        return [f.name for f in self.categorical].index(name)

    def dense_slice(self, name: str) -> slice:
        """Columns of ``batch['dense']`` that hold dense/vector field ``name``."""
        start = 0
        for f in self.dense:
            if f.name == name:
                return slice(start, start + f.dim)
            start += f.dim
        raise KeyError(f"{name!r} is not a dense or vector field")

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "label": self.label,
            "weight": self.weight,
            "fields": [{**asdict(f), "roles": list(f.roles)} for f in self.fields],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureMap":
        fields = [FieldSpec(**{**f, "roles": tuple(f.get("roles", ()))}) for f in d["fields"]]
        return cls(d["dataset"], fields, d.get("label", "label"), d.get("weight"), d.get("extra", {}))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureMap":
        path = Path(path)
        if not path.exists():
            raise DataError(f"feature map not found: {path} (was the data set prepared?)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"feature map {path} is malformed: {e}") from e
