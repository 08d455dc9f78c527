"""``python -m repro.pack_results [RESULTS_DIR]``: store the bootstrap replicates of every run's
metrics.json packed (``repro.io.pack_floats``), as runs write them now.

A one-off for run stores written before packing (and idempotent: a packed file is left alone).
Each file is replaced only after its packed form has been read back equal, value for value, to
the original, and atomically; no number changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from repro.errors import DataError
from repro.io import atomic_write_json, pack_floats, unpack_floats
from repro.registry import ROOT


def pack_file(path: Path) -> bool:
    """Pack one metrics.json in place; False when it was packed already."""
    original = json.loads(path.read_text())
    packed = pack_floats(original)
    if packed == original or unpack_floats(original) != original:  # nothing to pack, or packed already
        return False
    if unpack_floats(json.loads(json.dumps(packed))) != original:
        raise DataError(f"{path}: its packed form does not read back equal; left as it is")
    atomic_write_json(path, packed)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else ROOT / "results"
    files = sorted(root.glob("runs/*/*/seed*/metrics.json"))
    before = sum(f.stat().st_size for f in files)
    packed = sum(pack_file(f) for f in files)
    after = sum(f.stat().st_size for f in files)
    print(f"packed {packed} of {len(files)} metrics.json under {root}: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
