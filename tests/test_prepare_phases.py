"""benchmarks/prepare_phases.py still times the preparation it names, and its two vocabulary
orders agree (the script wraps private functions of repro.data.prepare: a rename must fail here)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _table(lines: list[str], header: str) -> list[list[str]]:
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_every_phase_is_timed_and_both_vocabulary_orders_are_the_same():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prepare_phases.py"), "--criteo-rows", "3000",
                           "--repeats", "2", "--vocabulary", "--min-distinct", "500"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    repeats = _table(lines, "| repeat |")
    assert [r[0] for r in repeats] == ["1", "2"]
    for i, repeat in enumerate(repeats):
        rows, total, pass1, fit, lookups, pass2, rest = repeat[1:8]
        assert int(rows.replace(",", "")) > 2900  # generated lines less the damaged ones
        # every wrapped phase ran, and together they are most of the preparation, without overlap;
        # the first repeat also digests the preparation code once for the cache key (~0.15 s of
        # tokenizing, cached for the process), which no phase wraps
        assert float(pass1) > 0 and float(fit) > 0 and float(pass2) > 0 and float(lookups) >= 0
        assert -0.02 <= float(rest) < float(total) / (1 if i == 0 else 2)
    fields = _table(lines, "| field |")
    assert fields and all(row[-1] == "yes" for row in fields), fields
