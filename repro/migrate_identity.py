"""One-off migration of the committed results to the second identity (issue 25, part 1), staling nothing.

``python -m repro.migrate_identity [--results-dir results] [--check]``

For every run manifest (``<results>/runs/<experiment>/<label>-<variant>/seed<k>/manifest.json``)
and measurement (``<results>/runs/<experiment>/measurements/<name>.json``) still holding the first
identity (no ``inputs_v1``):

- **code**: the identity of ``repro.identity`` computed FROM THE FILES AT THE COMMIT IT RECORDED:
  every file is read as ``git show <commit>:<path>`` and checked against the raw digest the
  manifest recorded for it (``code.files``); when that blob differs (a run made on a dirty tree),
  the current HEAD's blob is used if it matches the recorded digest. A file the old closure did not
  record (one the new rules reach by a path in a string) is read at the commit when the tree was
  clean. A run with a file that cannot be found so is reported and left as it is.
- **config**: ``config_hash`` and the folder's variant recomputed from the manifest's own config
  without ``train.threads`` (after checking that the first rule gives back the recorded hash and
  folder name); the run's variant folder is renamed when its name changes, and the experiment's
  ``index.json`` follows.
- **data**: the content digest of the prepared cache, from the committed ledger
  (``repro.data.ledger.data_identity``) when it knows the cache; else the old cache key is kept and
  the run reported.
- **teacher**: a student's record of its teacher follows the teacher's migrated inputs.

The new ``inputs`` are written atomically (``repro.io.atomic_write_json``), the old ones kept under
``inputs_v1``; ``code`` gets the new ``fingerprint``/``core``/``files`` and keeps the recorded raw
digests as ``files_raw``. ``--check`` writes nothing and exits 1 when anything is left to migrate
or cannot be. Running it again migrates nothing twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

from repro import identity
from repro.errors import ReproError
from repro.io import atomic_write_json, stable_hash
from repro.registry import ROOT


class GitFiles:
    """Blobs of the repository at ``ROOT`` by (commit, path), read once each."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self._blobs: dict[tuple[str, str], bytes | None] = {}

    def blob(self, commit: str, rel: str) -> bytes | None:
        key = (commit, rel)
        if key not in self._blobs:
            done = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=self.root, capture_output=True)
            self._blobs[key] = done.stdout if done.returncode == 0 else None
        return self._blobs[key]

    def verified_reader(self, commit: str, recorded: dict[str, str], dirty: bool,
                        problems: list[str]) -> identity.Reader:
        """A reader of the files a manifest recorded: the commit's blob, or HEAD's, whichever has
        the recorded raw digest; a file not recorded, at the commit of a clean tree. What fails is
        added to ``problems`` (and reads as missing)."""
        def read(rel: str) -> bytes | None:
            if rel not in recorded:
                blob = self.blob(commit, rel)
                if blob is not None and dirty:
                    problems.append(f"{rel}: not recorded, and the run's tree was dirty")
                return blob
            for at in (commit, "HEAD"):
                blob = self.blob(at, rel)
                if blob is not None and identity.raw_digest(blob) == recorded[rel]:
                    return blob
            problems.append(f"{rel}: no blob at {commit[:10]} or HEAD has the recorded digest {recorded[rel]}")
            return None
        return read


def _hashes(config: dict, drop_threads: bool) -> tuple[str, str]:
    """(config_hash, variant) of a resolved config, as ``repro.run.resolve`` computes them."""
    hashed = json.loads(json.dumps({k: v for k, v in config.items() if k != "cache_root"}))
    hashed["train"].pop("progress", None)
    hashed["train"].pop("keep_predictions", None)
    if drop_threads:
        hashed["train"].pop("threads", None)
    return stable_hash(hashed, 16), stable_hash({k: v for k, v in hashed.items() if k != "seed"}, 8)


def _rel(path: str) -> str:
    return Path(path).resolve().relative_to(ROOT).as_posix()


class Migration:
    def __init__(self, results: Path, check: bool, data: bool = True) -> None:
        self.results = results
        self.check = check
        self.with_data = data
        self.git = GitFiles()
        self._identities: dict[tuple, dict] = {}
        self.problems: list[str] = []  # left as they are
        self.notices: list[str] = []  # migrated, with something to say
        self.migrated = 0
        self.pending = 0

    def code(self, where: str, code: dict, entries: tuple[str, ...]) -> dict | None:
        """The new code identity of a manifest's ``code`` block, or None (reported)."""
        commit, recorded, dirty = code.get("commit", ""), code.get("files", {}), bool(code.get("dirty"))
        if not commit or commit == "unknown":
            self.problems.append(f"{where}: no recorded commit")
            return None
        missing = [e for e in entries if e not in recorded]
        if missing:
            self.problems.append(f"{where}: its plug-in file(s) {missing} were not recorded")
            return None
        key = (commit, entries, dirty, tuple(sorted(recorded.items())))
        if key not in self._identities:
            problems: list[str] = []
            read = self.git.verified_reader(commit, recorded, dirty, problems)
            try:
                full = identity.code_identity("repro/run.py", entries, read)
                core = identity.code_identity("repro/run.py", (), read)
            except ReproError as e:
                problems.append(str(e))
            self._identities[key] = {"problems": problems} if problems else {
                "fingerprint": full["fingerprint"], "core": core["fingerprint"], "files": full["files"]}
        found = self._identities[key]
        if "problems" in found:
            self.problems += [f"{where}: {p}" for p in found["problems"]]
            return None
        return found

    def data(self, where: str, config: dict, old: str) -> str:
        if not self.with_data:
            return old
        try:
            from repro.data.ledger import data_identity
        except ImportError:
            return old
        from repro.data.prepare import PrepareConfig
        from repro.run import make_source

        digest = data_identity(make_source(config), PrepareConfig(min_count=config["data"]["min_count"]),
                               ledger=self.results / "data_ledger.json")
        if digest is None:
            self.notices.append(f"{where}: the ledger does not know its prepared cache; inputs.data kept as {old}")
            return old
        return digest

    def runs(self) -> None:
        from repro.run import identity_files

        new_by_dir: dict[Path, dict] = {}  # run folder -> its migrated manifest, for the students
        renames: dict[Path, Path] = {}
        for path in sorted(self.results.glob("runs/*/*/seed*/manifest.json")):
            where = str(path.relative_to(self.results))
            manifest = json.loads(path.read_text())
            if "inputs_v1" in manifest and manifest["inputs"]["data"] == manifest["inputs_v1"]["data"] \
                    and self.with_data:  # migrated before the ledger knew its cache: the data only
                self.pending += 1
                digest = self.data(where, manifest["config"], manifest["inputs"]["data"])
                manifest = {**manifest, "inputs": {**manifest["inputs"], "data": digest}}
            if manifest.get("status") != "done" or "inputs_v1" in manifest or not manifest.get("inputs"):
                new_by_dir[path.parent] = manifest
                continue
            self.pending += 1
            config = manifest["config"]
            old_hash, old_variant = _hashes(config, drop_threads=False)
            variant_dir = path.parent.parent
            if old_hash != manifest["config_hash"] or not variant_dir.name.endswith(f"-{old_variant}"):
                self.problems.append(f"{where}: the first rule does not give back its config hash and folder")
                continue
            code = self.code(where, manifest["code"], tuple(sorted(_rel(f) for f in identity_files(config))))
            if code is None:
                continue
            new_hash, new_variant = _hashes(config, drop_threads=True)
            old_inputs = manifest["inputs"]
            inputs = {**old_inputs, "config_hash": new_hash, "code": code["fingerprint"],
                      "data": self.data(where, config, old_inputs["data"])}
            manifest = {**manifest, "inputs": inputs, "inputs_v1": old_inputs, "config_hash": new_hash,
                        "code": {**manifest["code"], **code, "files_raw": manifest["code"]["files"]}}
            new_by_dir[path.parent] = manifest
            renames[variant_dir] = variant_dir.with_name(f"{variant_dir.name[: -len(old_variant)]}{new_variant}")
        for run_dir, manifest in new_by_dir.items():  # a student follows its teacher's new inputs
            teacher = manifest.get("inputs", {}).get("teacher")
            if "inputs_v1" in manifest and teacher:
                found = self._teacher(run_dir, manifest["config"]["data"]["teacher"], new_by_dir)
                if found is None:
                    self.problems.append(f"{run_dir.relative_to(self.results)}: its teacher run is not found")
                    new_by_dir[run_dir] = json.loads((run_dir / "manifest.json").read_text())
                    renames.pop(run_dir.parent, None)
                    continue
                manifest["inputs"]["teacher"] = {**teacher, "config_hash": found["config_hash"],
                                                 "code": found["inputs"]["code"]}
        for run_dir, manifest in new_by_dir.items():
            if "inputs_v1" not in manifest or json.loads((run_dir / "manifest.json").read_text()) == manifest:
                continue
            self.migrated += 1
            if not self.check:
                atomic_write_json(run_dir / "manifest.json", manifest)
        self._rename(renames)

    def _teacher(self, run_dir: Path, label: str, manifests: dict[Path, dict]) -> dict | None:
        """The migrated manifest of the run ``repro.run.teacher_dir`` finds for ``run_dir``."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
        found = [(m.get("finished", ""), str(d), m) for d, m in manifests.items()
                 if d.parent.parent == run_dir.parent.parent and d.name == run_dir.name
                 and d.parent.name.startswith(f"{safe}-") and m.get("label") == label and m.get("status") == "done"]
        return max(found)[2] if found else None

    def _rename(self, renames: dict[Path, Path]) -> None:
        targets = [new for old, new in renames.items() if old != new]
        clashes = {t for t in targets if targets.count(t) > 1 or (t.exists() and t not in renames)}
        for old, new in sorted(renames.items()):
            if old == new:
                continue
            if new in clashes:
                self.problems.append(f"{old.relative_to(self.results)}: its new name {new.name} is taken")
                continue
            if self.check:
                continue
            old.rename(new)
            index_path = old.parent / "index.json"
            if index_path.exists():
                index = json.loads(index_path.read_text())
                index["runs"] = [f"{new.name}/{r.split('/', 1)[1]}" if r.split("/", 1)[0] == old.name else r
                                 for r in index["runs"]]
                atomic_write_json(index_path, index)

    def measurements(self) -> None:
        from repro.measurements import MEASUREMENTS

        for path in sorted(self.results.glob("runs/*/measurements/*.json")):
            where = str(path.relative_to(self.results))
            record = json.loads(path.read_text())
            if "inputs_v1" in record or not record.get("inputs"):
                continue
            self.pending += 1
            entry = _rel(inspect.getsourcefile(MEASUREMENTS.get(record["measurement"]).factory))
            code = self.code(where, record["code"], (entry,))
            if code is None:
                continue
            old_inputs = record["inputs"]
            record = {**record, "inputs": {**old_inputs, "code": code["fingerprint"]}, "inputs_v1": old_inputs,
                      "code": {**record["code"], **code, "files_raw": record["code"]["files"]}}
            self.migrated += 1
            if not self.check:
                atomic_write_json(path, record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.migrate_identity", description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything is left to migrate")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep inputs.data as the cache key (the ledger is not committed yet); a later run sets it")
    args = parser.parse_args(argv)
    results = Path(args.results_dir)
    results = results if results.is_absolute() else ROOT / results
    migration = Migration(results, args.check, data=not args.keep_data)
    migration.runs()
    migration.measurements()
    for p in migration.notices:
        print(f"note: {p}", file=sys.stderr)
    for p in migration.problems:
        print(f"not migrated: {p}", file=sys.stderr)
    verb = "would migrate" if args.check else "migrated"
    print(f"{verb} {migration.migrated} of {migration.pending} manifests on the first identity or with a data "
          f"input the ledger did not know; {len(migration.problems)} problem(s)")
    return 1 if migration.problems or (args.check and migration.migrated) else 0


if __name__ == "__main__":
    sys.exit(main())
