"""What a manifest records about the code and the machine a number came from."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from repro.registry import ROOT

PACKAGES = ("torch", "torch-geometric", "numpy", "pandas", "pyarrow", "hydra-core", "omegaconf",
            "scikit-learn", "matplotlib", "nvidia-ml-py", "pytest-benchmark")
# Folders whose Python source decides what a run computes; results/ and docs do not.
CODE_DIRS = ("repro", "baselines", "methods", "datasets")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of every .py file that can change a result: a run is stale when this changes."""
    h = hashlib.sha256()
    for d in CODE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def git_state() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # results/ changes while experiments run; only code and config make a tree dirty here.
    dirty = bool(git("status", "--porcelain", "--", ".", ":(exclude)results"))
    return {"commit": commit, "dirty": dirty, "fingerprint": code_fingerprint()}


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
