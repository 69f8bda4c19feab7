"""The Ray executor: one Ray task per variant, outputs returned through the object store.

    asciitune run --executor ray                        # a local Ray instance started for this run
    asciitune run --executor ray --ray-address auto     # join the cluster `ray start` made

Each task runs its variant in a fresh worker process (`max_calls=1`: Unsloth must be imported before
transformers, and a process holds one backend) in a scratch folder on its worker and returns the
variant's files (result JSON, samples, adapter, log) as bytes, which the driver unpacks into the one run
folder. No shared file system is needed; the model cache is the only thing each node must have (see
docs/scaling.md). The local executor (harness.train.executors) is the default.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from harness.errors import UserError
from harness.results import VariantResult
from harness.train.executors import Executor, Finished, Say, collect, describe
from harness.train.job import JOBS_DIR, Job, run_job, variant_file

RAY_INSTALL = "pip install -e '.[ray]'"


def import_ray():
    """The ray module, or one sentence saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: run `{RAY_INSTALL}` in asciitune's "
                        "environment (or drop --executor ray).") from None
    return ray


def _connect(ray, address: str | None) -> None:
    import logging

    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:  # "local": a new instance even if `ray start` left one on this machine (plain None would join it)
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **quiet)
    except ConnectionError as exc:
        raise UserError(f"Could not reach a Ray cluster at {address} ({str(exc).splitlines()[0]}): start one with "
                        "`ray start --head`, or drop --ray-address to start a local instance.") from None


def ray_resources(ray, gpus: float | None, cpus: float | None, n_jobs: int) -> tuple[float, float]:
    """GPUs and CPUs each variant's task asks for: the flags, else a GPU each where the cluster has GPUs."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    node_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    node_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    if gpus is None:
        gpus = 1.0 if node_gpus else 0.0
    if cpus is None:  # on GPUs the CPU only feeds the card; on CPUs, spread the cluster's cores over the variants
        total = sum(r.get("CPU", 0) for r in nodes)
        cpus = 1.0 if gpus else float(max(1, min(node_cpus, total // max(1, n_jobs))))
    if gpus > node_gpus or cpus > node_cpus:  # such a task would wait for ever
        raise UserError(f"Each variant asks Ray for {gpus:g} GPU(s) and {cpus:g} CPU(s), but the largest node has "
                        f"{node_gpus:g} and {node_cpus:g}: lower --ray-gpus-per-variant / --ray-cpus-per-variant.")
    return gpus, cpus


@contextmanager
def _output_to(log_path: Path):
    """Send this process's stdout and stderr (C libraries included) to log_path while the block runs."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def ray_variant(job: Job) -> dict:
    """Ray task body: run one variant in a scratch folder on the worker; return its files as bytes."""
    import traceback

    from harness.quiet import quiet_third_party

    quiet_third_party()
    scratch = Path(tempfile.mkdtemp(prefix=f"asciitune-{job.name}-"))
    t0, code = time.perf_counter(), 0
    try:
        with _output_to(scratch / "logs" / f"{job.name}.log"):
            try:
                run_job(replace(job, run_dir=scratch))
            except UserError as exc:  # the one sentence, as the child process prints it
                print(f"error: {exc}", file=sys.stderr)
                code = 2
            except Exception:  # recorded as a failed variant with the log's tail, like a crashed child
                traceback.print_exc()
                code = 1
        skip = ("checkpoints", JOBS_DIR)  # trainer scratch, not results
        files = {str(p.relative_to(scratch)): p.read_bytes() for p in sorted(scratch.rglob("*"))
                 if p.is_file() and p.relative_to(scratch).parts[0] not in skip}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"code": code, "seconds": time.perf_counter() - t0, "files": files}


def unpack(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a task's returned files into the run folder."""
    root = Path(run_dir).resolve()
    for rel, data in files.items():
        path = (root / rel).resolve()
        if root not in path.parents:  # only ever our own relative paths; refuse anything that climbs out
            raise ValueError(f"refusing to write {rel} outside the run folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_ray(jobs: list[Job], say: Say, address: str | None = None, gpus: float | None = None,
            cpus: float | None = None, in_flight: int = 0) -> Finished:
    """Each job as a Ray task in a fresh worker process; yields each as it ends. in_flight > 0 caps tasks at once."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not jobs:
        return
    ray = import_ray()
    _connect(ray, address)
    try:
        gpus, cpus = ray_resources(ray, gpus, cpus, len(jobs))
        # max_calls=1: a worker process runs one variant and exits, so each gets a fresh interpreter (Unsloth first).
        # max_retries=0: a variant whose process died is recorded failed, as locally; --resume runs it again.
        task = ray.remote(max_calls=1, max_retries=0)(ray_variant).options(num_gpus=gpus, num_cpus=cpus)
        where = f"Ray cluster at {address}" if address else "a local Ray instance"
        say(f"{len(jobs)} variant(s) as Ray tasks on {where} ({ray.cluster_resources().get('CPU', 0):g} CPUs, "
            f"{ray.cluster_resources().get('GPU', 0):g} GPUs); each asks for {gpus:g} GPU(s), {cpus:g} CPU(s)")
        queue, pending = list(jobs), {}
        with Progress(TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            overall = bar.add_task("variants finished on Ray", total=len(jobs))
            try:
                while queue or pending:
                    while queue and (in_flight <= 0 or len(pending) < in_flight):
                        job = queue.pop(0)
                        variant_file(job.run_dir, job.name).unlink(missing_ok=True)
                        pending[task.remote(job)] = job
                        bar.console.print(f"   {job.name}: submitted, {describe(job)}", highlight=False, markup=False)
                    # A short timeout keeps the driver responsive to Ctrl-C between waits.
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in done:
                        job = pending.pop(ref)
                        yield job, *_finished(ray, ref, job)
                        bar.advance(overall)
            except BaseException:  # Ctrl-C or the runner stopped early: cancel what is queued or running
                # Only tasks still running: cancelling one that has just finished trips a check in Ray's core
                # worker ("Tried to complete task that was not pending", seen with ray 2.60) and aborts the
                # driver. force=False interrupts the task as Ctrl-C interrupts a local child; shutdown() below
                # then ends a local instance's workers.
                _, running = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in running:
                    ray.cancel(ref, force=False)
                raise
    finally:
        ray.shutdown()  # stops a local instance; only disconnects from a joined cluster


def _finished(ray, ref, job: Job) -> tuple[VariantResult, float]:
    log_path = Path(job.run_dir) / "logs" / f"{job.name}.log"
    try:
        out = ray.get(ref)
    except Exception as exc:  # the worker died (killed, out of memory) before returning anything
        cfg = job.config
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        return VariantResult(name=job.name, status="failed", config=cfg.to_dict(), config_hash=cfg.hash(),
                             backend=cfg.model.backend, error=f"Ray task failed: {lines[-1] if lines else exc}"), 0.0
    unpack(job.run_dir, out["files"])
    return collect(job, out["code"], log_path), out["seconds"]


def ray_executor(address: str | None = None, gpus: float | None = None, cpus: float | None = None,
                 in_flight: int = 0) -> Executor:
    """The Ray executor; checks that Ray is installed now, before any run folder exists."""
    import_ray()
    return lambda jobs, say: run_ray(jobs, say, address, gpus, cpus, in_flight)
