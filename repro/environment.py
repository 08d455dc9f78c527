"""What a manifest records about the code, the libraries and the machine a number came from."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from repro.io import stable_hash
from repro.registry import ROOT

PACKAGES = ("torch", "torch-geometric", "numpy", "pandas", "pyarrow", "hydra-core", "omegaconf",
            "scikit-learn", "scipy", "matplotlib", "nvidia-ml-py", "pytest-benchmark",
            "torchrec", "fbgemm-gpu-cpu")  # TorchRec's engine decides hpc_torchrec's speeds
# Libraries whose version can change a number computed on the same code and data: a run made
# under other versions of these is stale. (The others are recorded, not compared.)
NUMERIC_PACKAGES = ("torch", "numpy")
# The harness core's entry: `repro.identity` identifies what `repro/run.py::_run` reaches. The
# report, the experiment driver and the CLI are not in it: editing them changes no number.
CORE_ENTRY = ROOT / "repro" / "run.py"


def import_closure(entries: list[Path]) -> list[Path]:
    """``entries`` and every project file they import, transitively, sorted (package
    ``__init__`` files included, imports inside functions too): ``repro.identity``'s own reading of
    imports, for checks such as "the report is not part of any run"."""
    from repro import identity

    read = identity.disk_reader(ROOT)
    seen: set[str] = set()
    todo = [Path(e).resolve().relative_to(ROOT.resolve()).as_posix() for e in entries]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        tree = ast.parse(read(rel) or b"", filename=rel)
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        todo.extend(identity._imported_files(rel, imports, read) - seen)
    return sorted(ROOT / rel for rel in seen)


@lru_cache(maxsize=None)
def code_identity(*entry_files: str) -> dict:
    """What a run executes: the definitions reachable from the harness core's computation
    (``repro/run.py::_run``) plus its own plug-in modules (``entry_files``, whole: model and
    embedding layer; a measurement's module) and what they import, by ``repro.identity``'s rules
    (comments, docstrings and formatting dropped; bookkeeping such as ``staleness`` and the data
    preparation, which the data identity covers, left out). ``fingerprint`` covers all of it,
    ``core`` the harness alone, ``files`` each included file's digest of its included definitions
    (so a stale run can say which file changed) and ``files_raw`` their raw-byte digests, for the
    record. A new method in ``methods/``, the report or the CLI changes none of these."""
    from repro import identity

    read = identity.disk_reader(ROOT)
    entry = CORE_ENTRY.resolve().relative_to(ROOT.resolve()).as_posix()
    whole = tuple(sorted(Path(f).resolve().relative_to(ROOT.resolve()).as_posix() for f in entry_files))
    core = identity.code_identity(entry, (), read)
    full = identity.code_identity(entry, whole, read) if whole else core
    return {"fingerprint": full["fingerprint"], "core": core["fingerprint"], "files": full["files"],
            "files_raw": full["files_raw"]}


def code_fingerprint() -> str:
    """The harness core's fingerprint (what every run executes, whatever its model)."""
    return code_identity()["core"]


def git_state() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # results/ changes while experiments run; only code and config make a tree dirty here.
    dirty = bool(git("status", "--porcelain", "--", ".", ":(exclude)results"))
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@lru_cache(maxsize=1)
def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "cpu_model": platform.processor() or "unknown",
        "cpu_flags": [],
        "cores": os.cpu_count(),
        "memory_gb": None,
        "gpu": gpu_name(),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["cpu_flags"] = sorted(flags & {"avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma", "f16c"})
                break
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def gpu_name() -> str:
    """The GPU by NVML (nvidia-ml-py) when a driver is present, else "none"."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() == 0:
                return "none"
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: a CPU-only machine
        return "none"


def gpu_memory() -> dict:
    """Peak CUDA memory of this process, and the device's memory in use by NVML; {} on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    out = {"cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
           "cuda_max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device()))
            out["nvml_used_mb"] = info.used / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing: the torch figures still stand
        pass
    return out
