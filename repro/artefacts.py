"""Artefacts: what a model builds from the training data before training (PCF-GNN's graph and
pre-trained GNN), cached and fingerprinted like a prepared data set.

A model declares its artefacts as ``ArtefactSpec``s: a name, the config the artefact depends on,
and a builder ``build(data, config, folder)`` that writes files into ``folder``. An artefact lives
in ``<cache_root>/artefacts/<name>-<key>/``, where the key hashes the data set's fingerprint, the
config and the builder's source file, so that
- every seed of a CTR model (and every model declaring the same spec) reuses one build;
- a change to the data, the config or the builder's code gives another key, hence a rebuild, and
  (once the run contract records the key among a run's inputs) reruns the runs that used it.

The folder is built in a private temporary sibling and renamed into place with a ``DONE`` marker
written last, exactly as the data cache is: a killed build leaves nothing a later run trusts.

Builders read the training split only (the data contract gives them the prepared data set, and
ground truth lives apart under ``truth/``, which no builder may read); a builder that pre-trains
on a window must say in its docstring which rows it reads.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from repro.io import file_digest, stable_hash


@dataclass(frozen=True)
class ArtefactSpec:
    name: str
    config: dict
    build: Callable[[Any, dict, Path], None]  # (prepared data set, config, folder to fill)
    version: int = 1  # bump to invalidate every cached build of this artefact by hand
    extra_files: tuple[str, ...] = field(default=())  # more source files the build depends on

    def code_digest(self) -> str:
        files = [inspect.getsourcefile(self.build), *self.extra_files]
        return stable_hash({Path(f).name: file_digest(f) for f in files})

    def key(self, data_fingerprint: str) -> str:
        return stable_hash({"name": self.name, "config": self.config, "data": data_fingerprint,
                            "code": self.code_digest(), "version": self.version})


def artefact_dir(spec: ArtefactSpec, data_fingerprint: str, cache_root: str | Path) -> Path:
    return Path(cache_root) / "artefacts" / f"{spec.name}-{spec.key(data_fingerprint)}"


def build_or_load(spec: ArtefactSpec, data: Any, cache_root: str | Path, verbose: bool = True) -> Path:
    """The artefact's folder, built first if no finished build exists; ``data`` is a
    ``PreparedDataset`` (its ``fingerprint`` keys the build)."""
    root = artefact_dir(spec, data.fingerprint, cache_root)
    if (root / "DONE").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=root.parent))
    if verbose:
        print(f"[artefact] building {root.name}")
    try:
        spec.build(data, dict(spec.config), tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (root / "DONE").exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    (tmp / "DONE").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root
