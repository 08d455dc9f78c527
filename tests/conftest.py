"""Shared fixtures: one smoke-scale world prepared once per session in a temporary cache; the
fuzz tests' example count (``fuzz_settings``) and their report (``fuzz_ledger``)."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import event
from hypothesis import settings as hypothesis_settings

from repro.data.dataset import PreparedDataset
from repro.data.prepare import PrepareConfig, prepare
from repro.registry import SOURCES

SMOKE = {"scale": "smoke", "seed": 0}


def world(**overrides):
    return SOURCES.get("world").factory(SOURCES.config("world", {**SMOKE, **overrides}))


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def smoke_data(cache_root) -> PreparedDataset:
    root = prepare(world(), PrepareConfig(min_count=2, cache_root=str(cache_root)), verbose=False)
    return PreparedDataset(root)


@pytest.fixture(scope="session")
def blind(smoke_data) -> PreparedDataset:
    """The smoke world with the position left out of the model's inputs (carried by role only)."""
    return PreparedDataset(smoke_data.root, drop_roles=("position",))


def moved(batch):
    """The same rows at other positions (the position role, and its side column if present)."""
    import torch

    out = dict(batch, position=torch.flip(batch["position"], [0]))
    if "side:position" in out:
        out["side:position"] = out["position"]
    return out


@pytest.fixture
def run_config(tmp_path, cache_root):
    """A complete run config at smoke scale writing into a temporary results folder."""

    def make(**train):
        return {
            "data": {"name": "world", "min_count": 2, "cache_root": str(cache_root), **SMOKE},
            "model": {"name": "deepfm", "hidden_units": [32, 16]},
            "embedding": {"name": "full", "dim": 8},
            # one smoke epoch learns only with a larger step than the protocol's (0.003 -> AUC ~0.59)
            "train": {"epochs": 1, "batch_size": 2048, "progress": False, "evals_per_epoch": 1, "lr": 0.01, **train},
            "seed": 0,
            "experiment_name": "t",
            "results_dir": str(tmp_path / "results"),
        }

    return make


@pytest.fixture
def torchrun_tmp(tmp_path, monkeypatch) -> None:
    """torchrun's agent leaves a ``torchelastic_*`` folder in the temporary directory per launch:
    keep them in the test's own folder (the workers inherit the environment) rather than /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture
def bytes_read(monkeypatch) -> list[int]:
    """Counts the bytes every ``open``ed file hands out while the test runs (``monkeypatch.undo()``
    stops counting): how a reader's fingerprint is shown to sample a file, not read it whole."""
    read: list[int] = []
    real_open = builtins.open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    return read


def assert_fingerprint_follows_edits(path: Path, fingerprint: Callable[[], str], first: str) -> None:
    """A raw file's fingerprint (``first`` now) changes when a byte of its first sampled block
    changes with the size and modification time kept, and again when a line is appended."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"x")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = fingerprint()
    assert second != first
    with open(path, "ab") as f:
        f.write(b"\n")
    assert fingerprint() not in (first, second)


# -- fuzzing: one place for the example count, one report per fuzz test ------------------------

FUZZ_ENV = "ADREPRO_FUZZ_EXAMPLES"  # `make fuzz` sets it (10,000); unset in `make test`
FUZZ_REPORTS: list[str] = []  # one line per fuzz test run this session, printed at the end under `make fuzz`


def fuzz_examples(default: int) -> int:
    """The examples a property test tries: its own bounded ``default`` (``make test``), or
    ``ADREPRO_FUZZ_EXAMPLES`` when that is set (``make fuzz``). A value that is not a positive
    integer is an error, not a silent fall-back to the default."""
    value = os.environ.get(FUZZ_ENV, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{FUZZ_ENV}={value!r}: expected a positive number of examples")
    return int(value)


def fuzzing() -> bool:
    return bool(os.environ.get(FUZZ_ENV, "").strip())


def fuzz_settings(default: int, *, derandomize: bool = False, **kw) -> hypothesis_settings:
    """Hypothesis settings of a fuzz test: ``max_examples=fuzz_examples(default)``.

    In ``make test`` the test's own choices hold (``derandomize`` as it had it, so CI draws the
    same examples every time). Under ``make fuzz`` generation is random (a long run should explore,
    not replay CI's examples), the seed is the one ``--hypothesis-seed`` names (the Makefile draws
    and prints it; ``make fuzz FUZZ_SEED=N`` replays a run), no example database is kept, and a
    failure prints its ``@reproduce_failure`` blob as well."""
    kw.setdefault("deadline", None)
    if fuzzing():
        kw.update(derandomize=False, database=None, print_blob=True)
    else:
        kw["derandomize"] = derandomize
    return hypothesis_settings(max_examples=fuzz_examples(default), **kw)


SPLITS = ("train", "valid", "test")


class FuzzLedger:
    """What one fuzz test tried: ``examples`` (calls of its property), ``outcomes`` (the test's
    own verdicts: rows, a clear error, ...) and the reader's rejected lines by kind.

    The kinds are the reader's own (``repro.data.rawfiles.Rejections.counts``), read as each
    ledger is reported at the end of a pass, so a test needs no hook in the reader. ``lines`` sums
    them over every (file, split) pass of every example: a file read as all three splits
    (``split=files``) counts its rejections three times. ``examples_with`` counts the examples with
    at least one line of the kind (also sent to ``hypothesis.event``, for
    ``--hypothesis-show-statistics`` where the property is the test itself). A side table's kinds
    (a profile or users file) are prefixed with its ledger's name ("profile:fields")."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.examples = 0
        self.outcomes: Counter = Counter()
        self.errors: Counter = Counter()
        self.lines: Counter = Counter()
        self.examples_with: Counter = Counter()
        self._current: Counter | None = None

    @contextlib.contextmanager
    def example(self) -> Iterator["FuzzLedger"]:
        """One example: counted, and the kinds its passes rejected collected."""
        self.examples += 1
        self._current = Counter()
        try:
            yield self
        finally:
            current, self._current = self._current, None
            for kind, n in current.items():
                self.lines[kind] += n
                self.examples_with[kind] += 1
                event(f"rejected: {kind}")

    def rejected(self, ledger) -> None:
        """A reader's ``Rejections`` ledger, as it is reported at the end of a pass."""
        prefix = "" if ledger.split in SPLITS else f"{ledger.split}:"
        for kind, n in ledger.counts.items():
            self.count(f"{prefix}{kind}", n)

    def count(self, kind: str, n: int = 1) -> None:
        """Rejected lines of ``kind`` the test saw itself (a block parser's verdicts)."""
        if self._current is None:
            raise RuntimeError("FuzzLedger.count outside `with ledger.example()`")
        self._current[kind] += n

    def line(self) -> str:
        kinds = ", ".join(f"{k} {self.lines[k]} in {self.examples_with[k]} ex." for k in sorted(self.lines)) or "none"
        top = dict(self.errors.most_common(5))  # messages vary with the bytes they quote: the commonest
        errors = (f"; errors: {sum(self.errors.values())} of {len(self.errors)} kinds, the commonest {top}"
                  if self.errors else "")
        return (f"{self.name}: {self.examples} examples tried; outcomes: {dict(self.outcomes)}; "
                f"rejected lines by kind: {kinds}{errors}")


@pytest.fixture
def fuzz_ledger(monkeypatch, request) -> Callable[[str], FuzzLedger]:
    """``fuzz_ledger(name)``: a ``FuzzLedger`` that sees every ``Rejections.report`` call while the
    test runs (the reader's stderr summary is still written, into a buffer: thousands of examples
    must not flood a ``-s`` run). Its line is printed with the test's own output and, under
    ``make fuzz``, again in the session's closing "fuzz report"."""
    from repro.data.rawfiles import Rejections

    ledgers: list[FuzzLedger] = []
    real = Rejections.report

    def report(self, file=None):
        for ledger in ledgers:
            if ledger._current is not None:
                ledger.rejected(self)
        real(self, file=io.StringIO())

    monkeypatch.setattr(Rejections, "report", report)

    def make(name: str) -> FuzzLedger:
        ledgers.append(FuzzLedger(name))
        return ledgers[-1]

    yield make
    for ledger in ledgers:
        print(f"\n{ledger.line()}")
        FUZZ_REPORTS.append(f"{request.node.nodeid}: {ledger.line()}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Under ``make fuzz``: the seed and one line per fuzz test, whatever ``-s`` or ``-q`` say."""
    if not fuzzing():
        return
    seed = config.getoption("--hypothesis-seed", None)
    terminalreporter.section("fuzz report")
    terminalreporter.write_line(f"{FUZZ_ENV}={os.environ[FUZZ_ENV]}; hypothesis seed: "
                                f"{seed if seed is not None else 'none given (a failure prints the one it drew)'}")
    for text in FUZZ_REPORTS:
        terminalreporter.write_line(text)


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: a property-based test whose example count `make fuzz` raises "
                                       "(tests/conftest.py: fuzz_settings, fuzz_ledger)")
