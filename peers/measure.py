"""Run one library's runner as a child process and record its wall time and peak memory.

    python -m peers.measure --out OUT/measure.json -- .peers/venv-fuxictr/bin/python -m peers.run_fuxictr ...

Peak memory two ways, both sampled every ``--interval`` seconds from /proc (psutil), from outside
the measured process so that every library is measured by the same code:
- ``peak_rss_main_mb``: the runner process itself;
- ``peak_rss_tree_mb``: the sum over the runner and all its descendants. This matters for FuxiCTR
  2.3, whose preprocessing and data loader run on Ray (a raylet, a GCS server and worker processes
  beside the driver). Pages shared between processes (Ray's object store is shared memory) count
  once per process that maps them, so the sum is an upper bound.
``ru_maxrss_children_mb`` is the kernel's own peak of the largest single descendant that was
waited for (the runner itself, in practice): a check on the sampled main peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between memory samples")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given")

    started = time.perf_counter()
    child = subprocess.Popen(cmd)
    root = psutil.Process(child.pid)
    peak_main = peak_tree = 0
    most_procs = 1
    while child.poll() is None:
        main_rss = _rss(root)
        try:
            descendants = root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            descendants = []
        tree = main_rss + sum(_rss(p) for p in descendants)
        peak_main, peak_tree = max(peak_main, main_rss), max(peak_tree, tree)
        most_procs = max(most_procs, 1 + len(descendants))
        time.sleep(args.interval)
    wall = time.perf_counter() - started
    record = {
        "command": cmd,
        "returncode": child.returncode,
        "wall_seconds": round(wall, 2),
        "peak_rss_main_mb": round(peak_main / 2**20, 1),
        "peak_rss_tree_mb": round(peak_tree / 2**20, 1),
        "most_processes": most_procs,
        "ru_maxrss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "sample_interval_s": args.interval,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    if child.returncode:
        print(f"measure: {' '.join(cmd)} exited with {child.returncode}", file=sys.stderr)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
