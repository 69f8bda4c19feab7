"""How a run's variants execute: local child processes (`--jobs N` at once) or Ray tasks.

    asciitune run --jobs 4                              # four variants at once, spread over the visible GPUs
    asciitune run --executor ray                        # a local Ray instance started for this run
    asciitune run --executor ray --ray-address auto     # join the cluster `ray start` made

An executor takes the run's jobs and yields `(job, result, seconds)` as each variant ends, in the
order they finish; the runner merges each into results.json at once, so an interrupt keeps what
finished and `--resume` (with either executor) trains the rest. Every variant runs in a fresh
process either way: Unsloth must be imported before transformers, and a process holds one backend.

Ray outputs come home through the object store: the task runs the variant in a scratch folder on
its worker and returns the variant's files (result JSON, samples, adapter, log) as bytes, which the
driver unpacks into the one run folder. No shared file system is needed; the model cache is the
only thing each node must have (see README, "Scaling out").
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from harness import procs
from harness.errors import UserError
from harness.procs import last_error
from harness.results import VariantResult, build
from harness.train.job import JOBS_DIR, PROGRESS_MARK, Job, run_job, variant_file

Say = Callable[[str], None]
Finished = Generator[tuple[Job, VariantResult, float], None, None]
Executor = Callable[[list[Job], Say], Finished]
RAY_INSTALL = "pip install -e '.[ray]'"


def describe(job: Job) -> str:
    """The variant's headline settings, for the line printed when it starts."""
    cfg = job.config
    return (f"training on {cfg.model.backend} (r={cfg.lora.r}, lr={cfg.train.lr:g}, epochs={cfg.train.epochs:g}, "
            f"max_steps={cfg.train.max_steps})")


def collect(job: Job, code: int, log_path: Path) -> VariantResult:
    """The variant's result file if it finished, else a failed result with its one-sentence error or log tail."""
    out_file = variant_file(job.run_dir, job.name)
    if code == 0 and out_file.is_file():
        return build(VariantResult, json.loads(out_file.read_text(encoding="utf-8")))
    cfg = job.config
    error = last_error(log_path) or f"exit code {code}"
    if "out of memory" in error.lower():  # concurrent variants share a GPU: say what to change
        error = f"Out of memory (lower --jobs or train.batch_size): {error.splitlines()[-1]}"
    return VariantResult(name=job.name, status="failed", config=cfg.to_dict(), config_hash=cfg.hash(),
                         backend=cfg.model.backend, error=error)


# ---- local: child processes, N at once --------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The CUDA device ids a child may be given: CUDA_VISIBLE_DEVICES' entries if set, else 0..n-1; none on CPU."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in listed.split(",") if x.strip()] if listed is not None else []
    return ids[:count] if listed is not None else [str(i) for i in range(count)]


def child_env(gpu: str | None, threads: int | None) -> dict[str, str]:
    """Environment additions for one child: its GPU, and on a shared CPU its share of the cores."""
    env = {}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if threads is not None:  # torch sizes its intra-op pool from these; N children x all cores would thrash
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def least_loaded(load: dict[str, int]) -> str:
    """The GPU running the fewest children (the first of equals): round-robin while all run alike."""
    return min(load, key=lambda g: (load[g], list(load).index(g)))


class Children:
    """The running child processes, so an interrupt can stop every one of them from the main thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen | None:
        """Start cmd with output piped, unless the run is stopping (then None)."""
        with self.lock:  # checked and registered together, so no child starts after stop() has looked
            if self.stopping:
                return None
            proc = procs.start(cmd, env)
            self.procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        """Forget a child that ended."""
        with self.lock:
            self.procs.discard(proc)

    def stop(self) -> None:
        """Stop every child as Ctrl-C in a terminal would, and start no new one."""
        with self.lock:
            self.stopping = True
            running = list(self.procs)
        procs.stop(running)


def run_child(job: Job, children: Children, bar, env: dict[str, str]) -> VariantResult:
    """One variant in a fresh `python -m harness.train.job` process, with its own task in the shared progress bar."""
    variant_file(job.run_dir, job.name).unlink(missing_ok=True)
    log_path = Path(job.run_dir) / "logs" / f"{job.name}.log"
    where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
    task = bar.add_task(f"{job.name}{where}: loading", total=None)

    def on_line(line: str) -> None:
        # A tqdm bar redraws without a newline, so our own lines can arrive glued to its tail: find them.
        mark = line.find(PROGRESS_MARK)
        if mark >= 0:
            _, kind, done, total = line[mark:].split()[:4]
            bar.update(task, description=f"{job.name}{where}: {kind}", completed=int(done), total=int(total))
            return
        at = line.find(f"[{job.name}] ")
        if at < 0 and line.split("\r")[-1].startswith("error: "):
            at = len(line) - len(line.split("\r")[-1])
        if at >= 0:  # the child's own summary lines and its one-sentence error; library chatter stays in the log
            bar.console.print("   " + line[at:].strip(), highlight=False, markup=False)

    code = -signal.SIGINT  # never started: the run is stopping
    try:
        proc = children.start([sys.executable, "-m", "harness.train.job", str(job.write())], env)
        if proc is not None:
            code = procs.pump(proc, log_path, on_line)
            children.done(proc)
    finally:
        bar.remove_task(task)
    return collect(job, code, log_path)


def run_local(jobs: list[Job], say: Say, n: int = 1) -> Finished:
    """Each job in its own child process, n at once, spread over the visible GPUs; yields each as it ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not jobs:
        return
    n = max(1, min(n, len(jobs)))
    gpus = visible_gpus()
    load = dict.fromkeys(gpus, 0)
    # On CPU, n children share the cores; one child keeps torch's own default (all of them).
    threads = max(1, (os.cpu_count() or 1) // n) if not gpus and n > 1 else None
    children, lock, started = Children(), threading.Lock(), iter(range(1, len(jobs) + 1))
    bar = Progress(TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=True)

    def work(job: Job) -> tuple[Job, VariantResult, float] | None:
        with lock:
            if children.stopping:
                return None
            gpu = least_loaded(load) if gpus else None
            if gpu is not None:
                load[gpu] += 1
            i = next(started)
        bar.console.print(f"[{i}/{len(jobs)}] {job.name}: {describe(job)}", highlight=False, markup=False)
        t0 = time.perf_counter()
        try:
            return job, run_child(job, children, bar, child_env(gpu, threads)), time.perf_counter() - t0
        finally:
            if gpu is not None:
                with lock:
                    load[gpu] -= 1

    if n > 1:
        say(f"{n} variants at once" + (f" over GPUs {', '.join(gpus)}" if gpus else f", {threads} CPU thread(s) each"))
    with bar, ThreadPoolExecutor(n, thread_name_prefix="variant") as pool:
        futures = [pool.submit(work, job) for job in jobs]
        try:
            for fut in as_completed(futures):
                if (out := fut.result()) is not None:
                    yield out
        except BaseException:  # Ctrl-C, or the runner stopped early (GeneratorExit): no child may outlive the run
            for fut in futures:
                fut.cancel()
            children.stop()
            raise


def local_executor(n: int = 1) -> Executor:
    """The local executor running n variants at once."""
    return lambda jobs, say: run_local(jobs, say, n)


# ---- Ray: one task per variant, outputs returned through the object store -----------------------------------------

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
