"""Registries: the only way the harness finds models, embedding layers and data sources.

Each entry is a factory plus a config dataclass. Building from a config block validates the block
against the dataclass, so a misspelt key fails with a message naming it instead of being ignored.

A new model is one file that decorates its class with ``@register_model("name", config=Cfg)``;
``load_plugins()`` imports every module of ``baselines/`` and ``methods/`` (sub-packages included)
and ``datasets/`` (the
last by file path: a top-level package named ``datasets`` would shadow Hugging Face's).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from repro.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    config: type


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: type) -> Callable:
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{self.kind} {name!r}: config must be a dataclass, got {config!r}")

        def wrap(factory: Callable) -> Callable:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, config)
            return factory

        return wrap

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        load_plugins()
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries)) or 'none'}")
        return self._entries[name]

    def config(self, name: str, block: Any = None) -> Any:
        """The entry's config dataclass filled from ``block``; unknown keys are an error."""
        entry = self.get(name)
        values = _plain(block, f"{self.kind} {name!r}")
        values.pop("name", None)
        known = {f.name for f in dataclasses.fields(entry.config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r}: unknown config key(s) {unknown}; known: {sorted(known)}"
            )
        try:  # omegaconf raises several types for a wrongly typed value or a broken interpolation
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(entry.config), values))
        except Exception as e:
            raise ConfigError(f"{self.kind} {name!r}: {' '.join(str(e).split())}") from e

    def build(self, name: str, block: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self.get(name).factory(*args, self.config(name, block), **kwargs)


def _plain(block: Any, where: str = "a config block") -> dict:
    if block is None:
        return {}
    if isinstance(block, DictConfig):
        return OmegaConf.to_container(block, resolve=True)
    if dataclasses.is_dataclass(block) and not isinstance(block, type):
        return dataclasses.asdict(block)
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: a config block must be a mapping of keys, got {type(block).__name__}")
    return dict(block)


MODELS = Registry("model")
EMBEDDINGS = Registry("embedding")
SOURCES = Registry("data source")

register_model = MODELS.register
register_embedding = EMBEDDINGS.register
register_source = SOURCES.register

_loaded = False


def load_plugins() -> None:
    """Import every plugin module once (models, methods, embeddings, data sources)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("repro.embeddings")
    for package in ("baselines", "methods"):
        pkg = importlib.import_module(package)
        # Sub-packages too (methods/model_deepening/, baselines/embeddings/, ...), in a fixed order.
        for info in sorted(pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."), key=lambda i: i.name):
            if not any(part.startswith("_") for part in info.name.split(".")[1:]):
                importlib.import_module(info.name)
    for path in sorted((ROOT / "datasets").glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = f"adrepro_datasets.{path.stem}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
