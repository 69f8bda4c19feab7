"""Shared fixtures: GPU skipping, an isolated model cache, and subprocess helpers for the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where there is no NVIDIA GPU (CI never has one)."""
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def asciitune(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run the real CLI in a fresh process (one backend per process), returning CompletedProcess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def variant_result(run_dir: Path, name: str) -> dict:
    """A finished variant's JSON from a run folder."""
    return json.loads((Path(run_dir) / "variants" / f"{name}.json").read_text())


def only_run(reports: Path) -> Path:
    """The one run folder under reports/runs (a one-variant `train` or a single `run`)."""
    runs = sorted((Path(reports) / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def run_job_here(name: str, cfg, run_dir: Path, resume_from: str | None = None):
    """One variant through harness.train.job.run_job in this process, with the run's inputs built as the runner does."""
    from harness.data import build_dataset
    from harness.judge.samples import human_reference
    from harness.train.job import Job, run_job

    ds = build_dataset(cfg.data)
    return run_job(Job(name, cfg, Path(run_dir), ds, human_reference(ds), resume_from))


@pytest.fixture(scope="session")
def cats():
    """The built-in cats dataset with default settings (real catsart data)."""
    from harness.config import DataConfig
    from harness.data import build_dataset

    return build_dataset(DataConfig())
