"""The data ledger: what a run's numbers depend on in its data is the CONTENT of its prepared cache.

A run records the content digest of the cache it trained on (``data_identity``), not the code that
prepared it, so a preparation refactor that leaves every cache byte-identical stales no run, while
a change that alters one byte of a split, a truth file, the frequencies or the feature map does.
The committed ledger ``results/data_ledger.json`` maps each cache key
(``repro.data.prepare.cache_key``: the source's fingerprint, ``min_count``, ``PREPARE_VERSION`` and
the normalised digest of the preparation code) to the content digest of the cache that key builds,
so the plan decides staleness without building a single cache. A key the ledger does not know
(new code, a new config) has no identity (``None``): the run is stale until its cache is built and
``record``-ed.

The choices, once:

- **Content digest** (``content_digest``): SHA-256 over every file of the cache folder, sorted by
  its path relative to the folder (``truth/valid.parquet``...), each entry its relative path and
  its file's digest. Parquet, JSON and every other file count by their bytes (pyarrow writes the
  same bytes for the same table and version; a pyarrow that writes other bytes for the same rows
  therefore changes the digest: conservative, it stales rather than hides). Two files are
  normalised:

  * ``DONE`` is excluded: the finished-marker carries no data.
  * ``provenance.json`` counts as its parsed JSON less ``PROVENANCE_EXCLUDED`` (``seconds``: the
    build's time; ``source_fingerprint``: the source's code digest, and a raw file's resolved path
    and modification time; ``cache_key`` and ``prepare_code``: the code's identity, which the
    content digest exists to abstract from; ``source_config``: the source's config, whose effect
    on the rows is in the data files, and which adds only paths (``data_dir``, file names) and the
    settings the cache key ignores because they change no row (``strict``, block sizes), so a
    strict and a lenient build of one key digest the same), re-serialised with sorted keys.
    Everything else in it (rows, rejected rows, splits, unlabelled splits, the split protocol, the
    split files' digests) is content and counts.
  * ``frequencies.npz`` counts as its arrays (name, dtype, shape, bytes, by name), not its zip
    container, whose layout belongs to numpy's writer.

  ``DONE`` must exist: an unfinished folder has no content digest.
- **Ledger** (``LEDGER_PATH``): ``{"format": 1, "caches": {key: {"content": digest, "source":
  name, "scale": ..., "min_count": ...}}, "unreproduced": {key: {...}}}``; source, scale and
  min_count are for humans reading it. ``unreproduced`` lists the keys whose rebuilt splits
  differed from the ones their runs trained on (``build``), with the split digests compared: they
  have no content digest, so their runs have no data identity, and the ledger says why.
  ``record`` writes it atomically (``repro.io.atomic_write_json``) and refuses to replace a known
  key's digest by another one (``DataError``): the same key building other bytes means the
  preparation is not deterministic, or the environment changed; ``replace=True`` accepts the new
  digest on purpose.
- **Keys of old caches** (``record(..., key=...)``): a cache records the key it was built under
  (``provenance["cache_key"]``); one built before that field existed is named by its folder
  (``<source>-<key>``). The one-off migration records caches built by the previous code under the
  key the current code gives their config (``build(reuse=True)``), after checking their split
  digests against the manifests: sound because the change between the two codes is a refactor
  of the preparation (the same bytes: ``tests/test_ledger.py``), and checked once by building
  all 12 reproducible committed caches again under the current code (the same content digests).

CLI: ``python -m repro.data.ledger build --from-manifests results [--reuse]`` prepares every cache
the committed manifests name (one at a time, building those missing; see ``build``), checks each
one's ``PreparedDataset.fingerprint`` against the manifests' ``data.fingerprint`` and records it;
``python -m repro.data.ledger digest <cache_dir>`` prints one cache's content digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.prepare import PrepareConfig, cache_key, prepare
from repro.data.source import Source
from repro.errors import DataError
from repro.io import atomic_write_json, file_digest
from repro.registry import ROOT

LEDGER_PATH = ROOT / "results" / "data_ledger.json"
LEDGER_FORMAT = 1
EXCLUDED_FILES = ("DONE",)  # the finished-marker: no data
# provenance.json keys that record a time, a path, a setting that changes no row or the code's
# identity, not the cache's content (see the module docstring).
PROVENANCE_EXCLUDED = ("seconds", "source_fingerprint", "cache_key", "prepare_code", "source_config")
DIGEST_LENGTH = 16  # hex characters kept of a content digest


def content_digest(cache_dir: str | Path) -> str:
    """The content digest of the finished cache ``cache_dir`` (see the module docstring)."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / "DONE").exists():
        raise DataError(f"{cache_dir}: not a finished prepared cache (no DONE marker); it has no content digest")
    h = hashlib.sha256()
    for path in sorted(p for p in cache_dir.rglob("*") if p.is_file()):
        name = path.relative_to(cache_dir).as_posix()
        if name in EXCLUDED_FILES:
            continue
        h.update(f"{name}\0{_file_content_digest(path, name)}\n".encode())
    return h.hexdigest()[:DIGEST_LENGTH]


def _file_content_digest(path: Path, name: str) -> str:
    if name == "provenance.json":
        provenance = json.loads(path.read_text())
        kept = {k: v for k, v in provenance.items() if k not in PROVENANCE_EXCLUDED}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    if name == "frequencies.npz":
        h = hashlib.sha256()
        with np.load(path, allow_pickle=False) as arrays:
            for key in sorted(arrays.files):
                a = np.ascontiguousarray(arrays[key])
                h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
                h.update(a.tobytes())
        return h.hexdigest()
    return file_digest(path)


# -- the ledger ------------------------------------------------------------------------------


def _read(ledger: str | Path) -> dict[str, Any]:
    path = Path(ledger)
    if not path.exists():
        return {"format": LEDGER_FORMAT, "caches": {}, "unreproduced": {}}
    data = json.loads(path.read_text())
    if data.get("format") != LEDGER_FORMAT:
        raise DataError(f"{path}: ledger format {data.get('format')!r}, expected {LEDGER_FORMAT}")
    return {"format": LEDGER_FORMAT, "caches": dict(data.get("caches", {})),
            "unreproduced": dict(data.get("unreproduced", {}))}


def _write(ledger: str | Path, data: dict[str, Any]) -> None:
    atomic_write_json(ledger, {"format": LEDGER_FORMAT, "caches": dict(sorted(data["caches"].items())),
                               "unreproduced": dict(sorted(data["unreproduced"].items()))})


def load_ledger(ledger: str | Path = LEDGER_PATH) -> dict[str, dict[str, Any]]:
    """The ledger's entries by cache key (none when the file does not exist)."""
    return _read(ledger)["caches"]


def load_unreproduced(ledger: str | Path = LEDGER_PATH) -> dict[str, dict[str, Any]]:
    """The cache keys whose rebuilt splits differed from the ones their runs trained on, with the
    digests compared (``build``): they have no identity, and the ledger says why."""
    return _read(ledger)["unreproduced"]


def data_identity(source: Source, prepare_config: PrepareConfig, ledger: str | Path = LEDGER_PATH) -> str | None:
    """The content digest of the cache ``source`` prepared with ``prepare_config`` builds, from the
    ledger; None when the ledger does not know its cache key. Builds nothing."""
    entry = load_ledger(ledger).get(cache_key(source, prepare_config))
    return entry["content"] if entry else None


def cache_key_of(cache_dir: str | Path) -> str:
    """The cache key ``cache_dir`` was built under: its provenance's ``cache_key``, else the key
    in its folder name ``<source>-<key>`` (caches built before provenance recorded it)."""
    cache_dir = Path(cache_dir)
    provenance = json.loads((cache_dir / "provenance.json").read_text())
    if "cache_key" in provenance:
        return provenance["cache_key"]
    prefix = f"{provenance['source']}-"
    if not cache_dir.name.startswith(prefix):
        raise DataError(f"{cache_dir}: cannot tell its cache key (no provenance cache_key, and the folder is not "
                        f"named {prefix}<key>)")
    return cache_dir.name[len(prefix):]


def record(cache_dir: str | Path, ledger: str | Path = LEDGER_PATH, key: str | None = None,
           replace: bool = False) -> str:
    """Compute the finished cache ``cache_dir``'s content digest, add it to the ledger under
    ``key`` (default: the key it was built under, ``cache_key_of``) atomically, and return it.

    A key already recorded with the same digest is left as it is; with another digest it raises
    ``DataError`` unless ``replace``."""
    cache_dir = Path(cache_dir)
    digest = content_digest(cache_dir)
    key = key or cache_key_of(cache_dir)
    provenance = json.loads((cache_dir / "provenance.json").read_text())
    data = _read(ledger)
    entries = data["caches"]
    known = entries.get(key, {}).get("content")
    if known == digest:
        return digest
    if known is not None and not replace:
        raise DataError(f"{cache_dir}: content digest {digest}, but the ledger {ledger} records {known} for its cache "
                        f"key {key}: the same key built other bytes (a preparation that is not deterministic, or "
                        f"other library versions); find the file that differs, or record with replace=True")
    entries[key] = {
        "content": digest,
        "source": provenance["source"],
        "scale": provenance.get("source_config", {}).get("scale"),
        "min_count": provenance["prepare"]["min_count"],
    }
    data["unreproduced"].pop(key, None)  # reproduced now
    _write(ledger, data)
    return digest


def record_unreproduced(key: str, ledger: str | Path, **facts: Any) -> None:
    """Note in the ledger, atomically, that the cache of ``key`` was rebuilt with other splits than
    its runs trained on (``facts``: the source, the digests compared, the runs). It gets no content
    digest: a run is never given the identity of bytes it did not train on."""
    data = _read(ledger)
    if key in data["caches"]:
        raise DataError(f"{ledger}: cache key {key} has a content digest; a rebuild that differs from its runs' "
                        f"splits contradicts it")
    data["unreproduced"][key] = facts
    _write(ledger, data)


# -- build from the committed manifests --------------------------------------------------------


def manifest_data_configs(results: str | Path) -> dict[str, dict[str, Any]]:
    """The distinct data configs of the committed manifests under ``results``, by the cache key the
    manifests recorded (``inputs.data``): one manifest's config, the split digest
    (``data.fingerprint``) and the number of runs."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(results).glob("runs/*/*/seed*/manifest.json")):
        manifest = json.loads(path.read_text())
        recorded = manifest["inputs"]["data"]
        entry = out.setdefault(recorded, {"config": manifest["config"], "fingerprint": manifest["data"]["fingerprint"],
                                          "root": manifest["data"]["root"], "runs": 0})
        if entry["fingerprint"] != manifest["data"]["fingerprint"]:
            raise DataError(f"{path}: data fingerprint {manifest['data']['fingerprint']} differs from "
                            f"{entry['fingerprint']}, which another run with cache key {recorded} recorded")
        entry["runs"] += 1
    return out


def build(results: str | Path, cache_root: str | Path, ledger: str | Path = LEDGER_PATH, reuse: bool = False,
          verbose: bool = True) -> dict[str, dict[str, Any]]:
    """Record in ``ledger`` the cache of every data config the manifests under ``results`` name,
    under the key the current code gives it, one at a time, the ``large`` scale last.

    Each cache is the finished one under its current key in ``cache_root``, else (``reuse``) a
    finished one of the same source whose split digest is the manifests' (a cache built by
    earlier code under another key, as the one-off migration has them), else built now. Its split digest
    (``PreparedDataset.fingerprint``) must equal the manifests' ``data.fingerprint``, which shows
    it is the data the runs trained on; a mismatch is reported and never recorded. A key the ledger
    already holds is checked by ``record`` (the same digest, or an error).

    Returns, per cache key the manifests recorded: the current key, the content digest (None on a
    mismatch), the split digests compared, whether the cache was reused, and its seconds."""
    from repro.data.dataset import PreparedDataset
    from repro.run import make_source  # here: repro.run imports this module

    out: dict[str, dict[str, Any]] = {}
    configs = manifest_data_configs(results)
    built = _finished_caches(cache_root) if reuse else {}
    order = sorted(configs, key=lambda k: (configs[k]["config"]["data"].get("scale") == "large", k))
    for recorded in order:
        entry = configs[recorded]
        config = entry["config"]
        source = make_source(config)
        prepare_config = PrepareConfig(min_count=config["data"]["min_count"], cache_root=str(cache_root))
        key = cache_key(source, prepare_config)
        started = time.time()
        current = Path(cache_root) / f"{source.name}-{key}"
        earlier = built.get((source.name, entry["fingerprint"]))
        reused = earlier is not None and not (current / "DONE").exists()
        data = PreparedDataset(earlier if reused else prepare(source, prepare_config, verbose=verbose))
        seconds = round(time.time() - started, 1)
        match = data.fingerprint == entry["fingerprint"]
        digest = record(data.root, ledger, key=key) if match else None
        if not match:
            record_unreproduced(key, ledger, source=source.name, scale=config["data"].get("scale"),
                                min_count=config["data"]["min_count"], runs=entry["runs"],
                                manifest_split_digest=entry["fingerprint"], rebuilt_split_digest=data.fingerprint)
        out[recorded] = {"key": key, "content": digest, "fingerprint": data.fingerprint,
                         "manifest_fingerprint": entry["fingerprint"], "reused": reused, "runs": entry["runs"],
                         "seconds": seconds, "source": source.name, "scale": config["data"].get("scale")}
        if verbose:
            verdict = "recorded" if match else "MISMATCH, not recorded"
            print(f"[ledger] {recorded} -> {key}: {verdict} ({'reused ' if reused else ''}{data.root.name}; "
                  f"split digest {data.fingerprint}, manifests {entry['fingerprint']}; content {digest}; "
                  f"{entry['runs']} runs; {seconds} s)", flush=True)
    return out


def _finished_caches(cache_root: str | Path) -> dict[tuple[str, str], Path]:
    """The finished caches under ``cache_root`` by (source, split digest)."""
    out = {}
    for done in sorted(Path(cache_root).glob("*/DONE")):
        provenance = json.loads((done.parent / "provenance.json").read_text())
        out[(provenance["source"], provenance["fingerprint"])] = done.parent
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.data.ledger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="prepare, check and record every cache the committed manifests name")
    b.add_argument("--from-manifests", default=str(ROOT / "results"), metavar="RESULTS")
    b.add_argument("--cache-root", default=str(ROOT / "cache"))
    b.add_argument("--ledger", default=str(LEDGER_PATH))
    b.add_argument("--reuse", action="store_true",
                   help="use a finished cache of the manifests' split digest, built under another key, "
                        "instead of building it again")
    d = sub.add_parser("digest", help="print a finished cache's content digest")
    d.add_argument("cache_dir")
    args = parser.parse_args(argv)
    if args.command == "digest":
        print(content_digest(args.cache_dir))
        return 0
    results = build(args.from_manifests, args.cache_root, args.ledger, reuse=args.reuse)
    mismatched = [k for k, v in results.items() if v["content"] is None]
    print(f"[ledger] {len(results) - len(mismatched)} of {len(results)} caches recorded in {args.ledger}"
          + (f"; split digests differ from the manifests for {mismatched}" if mismatched else ""))
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
