"""How a run's variants execute here: child processes, `--jobs N` at once (Ray: harness.train.ray_executor).

    asciitune run --jobs 4                              # four processes at once, spread over the visible GPUs

An executor takes the run's jobs and yields `(job, result, seconds)` as each variant ends, in the
order they finish; the runner merges each into results.json at once, so an interrupt keeps what
finished and `--resume` (with either executor) trains the rest. Variants run in fresh processes:
Unsloth must be imported before transformers, and a process holds one backend. Fast-plan variants
over one base share a process (`units`): by default they train together in that process's multi-adapter engine
(harness.train.multi.plan), in engine groups whose size and number of processes at once come from the cards' free
memory (harness.train.multi.memory: `engine_plan`); a variant that still runs out of memory in a group is trained
again in a fresh process in groups half that size, down to one alone. Other fast-plan variants over one base run
one after another in a process, the model loaded once and the CUDA graphs captured once (harness.train.job);
every other variant gets a process of its own.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import procs
from harness.procs import last_error
from harness.results import VariantResult, build
from harness.train.job import (
    DONE_MARK,
    PROGRESS_MARK,
    SPAWNED_ENV,
    VARIANT_MARK,
    Job,
    failed_result,
    groups,
    share_key,
    variant_file,
)

Say = Callable[[str], None]
Finished = Generator[tuple[Job, VariantResult, float], None, None]
Executor = Callable[[list[Job], Say], Finished]


def describe(job: Job) -> str:
    """The variant's headline settings, for the line printed when it starts."""
    cfg = job.config
    return (f"training on {cfg.model.backend} (r={cfg.lora.r}, lr={cfg.train.lr:g}, epochs={cfg.train.epochs:g}, "
            f"max_steps={cfg.train.max_steps})")


def collect(job: Job, code: int, log_path: Path) -> VariantResult:
    """The variant's result file (done, or failed with its error), else a failed result with the log's error."""
    out_file = variant_file(job.run_dir, job.name)
    if out_file.is_file():
        return build(VariantResult, json.loads(out_file.read_text(encoding="utf-8")))
    return failed_result(job, last_error(log_path) or f"exit code {code}")


# A group's variants all start together, so one left when the run stops may have started: "before it finished".
STOPPED = "stopped before it finished (interrupted, or at a time cap)"


def stopped(job: Job) -> VariantResult:
    """A variant the run stopped before its result was written: its result file if a child wrote one, else failed with
    STOPPED (never another variant's error from a shared log)."""
    out_file = variant_file(job.run_dir, job.name)
    if out_file.is_file():
        return build(VariantResult, json.loads(out_file.read_text(encoding="utf-8")))
    return failed_result(job, STOPPED)


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


def units(jobs: list[Job], n: int, group: int | None = None, engines: int | None = None) -> list[list[Job]]:
    """Jobs per child process: fast-plan variants over one base share a process (the model loads once). Those that
    may share the multi-adapter engine come in engine groups of up to `group` (K adapters in one process's kernels
    beat K processes time-sharing a card), which the process trains one after another, each group's results written
    as it ends; the groups are dealt round-robin over up to `engines` processes (default n). The other fast-plan
    variants over one base (their CUDA graphs captured once) are spread round-robin over the n slots; every other
    variant runs alone."""
    out: list[list[Job]] = []
    by_key: dict[str, list[Job]] = {}
    for job in jobs:
        key = share_key(job)
        if key is None:
            out.append([job])
        else:
            by_key.setdefault(key, []).append(job)
    for members in by_key.values():
        grouped, alone = [], []
        for g in groups(members, group):
            (grouped if len(g) > 1 else alone).append(g)
        m = max(1, min(engines or n, len(grouped)))
        out += [[j for g in grouped[i::m] for j in g] for i in range(m) if grouped[i::m]]
        alone = [j for g in alone for j in g]
        m = max(1, min(n, len(alone)))
        out += [alone[i::m] for i in range(m) if alone[i::m]]
    return out


def multi_units(work_units: list[list[Job]], group: int | None = None) -> list[list[Job]]:
    """The units that will train in the multi-adapter engine, in one or more groups (their child groups them the
    same way: the executor hands it `group` through GROUP_ENV)."""
    return [u for u in work_units if len(u) > 1 and all(len(g) > 1 for g in groups(u, group))]


def engine_plan(jobs: list[Job], n: int, gpus: list[str]):
    """The memory plan (harness.train.multi.memory.EnginePlan) for the largest set of jobs that may share the
    multi-adapter engine, on the visible cards; None on CPU, for fewer than two such jobs, or when the model's
    architecture cannot be read (then groups of the default size over up to n processes, as before)."""
    from harness.train.fast import plan as fast
    from harness.train.multi import memory
    from harness.train.multi import plan as multi

    by_key: dict[str, list[Job]] = {}
    for job in jobs:
        if job.multi_adapter and not fast.refusal(job.config) and (key := share_key(job)) is not None:
            by_key.setdefault(key, []).append(job)
    members = max(by_key.values(), key=len, default=[])
    if len(members) < 2 or not gpus or multi.refusal([j.config for j in members[:2]]):
        return None
    arch = memory.arch_of(members[0].config.model.name)
    if arch is None:
        return None
    asked = os.environ.get(multi.GROUP_ENV)  # a group size the user set is the largest the plan may choose
    cost = memory.engine_cost(arch, members[0].config)
    return memory.plan_engines(len(members), memory.free_bytes_per_gpu(gpus), n, cost,
                               int(asked) if asked else multi.GROUP_ADAPTERS)


def out_of_memory(result: VariantResult) -> bool:
    """The variant failed for memory (torch's out-of-memory error, or the CUDA allocator's)."""
    return result.status != "done" and "out of memory" in (result.error or "").lower()


class _Child:
    """One `python -m harness.train.job` child over the jobs left in a unit: its log, its progress task, and
    which variant it is on (from the child's @@variant / @@done lines)."""

    def __init__(self, rest: list[Job], bar, where: str, emit, announce) -> None:
        self.rest, self.bar, self.where, self.emit, self.announce = rest, bar, where, emit, announce
        self.by_name = {job.name: job for job in rest}
        # A child's log is named after its first variant; the others' lines follow in the same file.
        self.log_path = Path(rest[0].run_dir) / "logs" / f"{rest[0].name}.log"
        self.task = bar.add_task(f"{rest[0].name}{where}: loading", total=None)
        self.job: Job | None = None
        self.t0, self.started = time.perf_counter(), 0  # the first variant's clock starts with the process

    def finish(self, job: Job, code: int) -> None:
        """Emit a variant's result (its file, else the log's error), once."""
        if job not in self.rest:
            return
        self.rest.remove(job)
        self.emit(job, collect(job, code, self.log_path), time.perf_counter() - self.t0)

    def on_line(self, line: str) -> None:
        """React to one line of the child's output (all of it also goes to the log)."""
        for mark in (VARIANT_MARK, DONE_MARK):
            at = line.find(mark + " ")
            if at >= 0 and (job := self.by_name.get(line[at + len(mark):].split()[0])) is not None:
                if mark == DONE_MARK:
                    self.job = None
                    self.finish(job, 0)
                    return
                if self.started:
                    self.t0 = time.perf_counter()
                self.job, self.started = job, self.started + 1
                self.announce(job)
                self.bar.update(self.task, description=f"{job.name}{self.where}: loading", completed=0, total=None)
                return
        name = (self.job or self.rest[0]).name
        # A tqdm bar redraws without a newline, so our own lines can arrive glued to its tail: find them.
        mark = line.find(PROGRESS_MARK)
        if mark >= 0:
            try:  # another stream's text can land inside the mark's line: a line that does not parse is skipped
                _, kind, done, total = line[mark:].split()[:4]
                self.bar.update(self.task, description=f"{name}{self.where}: {kind}", completed=int(done),
                                total=int(total))
            except ValueError:
                pass
            return
        at = line.find(f"[{name}] ")
        if at < 0 and line.split("\r")[-1].startswith("error: "):
            at = len(line) - len(line.split("\r")[-1])
        if at >= 0:  # the child's own summary lines and its one-sentence error; library chatter stays in the log
            self.bar.console.print("   " + line[at:].strip(), highlight=False, markup=False)


def run_unit(unit: list[Job], children: Children, bar, env: dict[str, str],
             emit: Callable[[Job, VariantResult, float], None], announce: Callable[[Job], None],
             group: int | None = None) -> None:
    """A unit's jobs in `python -m harness.train.job` children, one progress task at a time; each result is
    emitted as its variant ends. If a child dies, the variant it was on fails and a new child takes the rest.
    group: the unit's engine group size (multi-adapter units): its variants that fail for memory are trained again
    in a fresh child in groups half that size (down to one alone), and only their last result is emitted."""
    from harness.train.multi.plan import GROUP_ENV

    for job in unit:
        variant_file(job.run_dir, job.name).unlink(missing_ok=True)
    held: list[Job] = []

    def keep(job: Job, result: VariantResult, seconds: float) -> None:
        if group and group > 1 and out_of_memory(result) and not children.stopping:
            held.append(job)
        else:
            emit(job, result, seconds)

    rest = list(unit)
    where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
    while rest and not children.stopping:
        child = _Child(rest, bar, where, keep, announce)
        code = -signal.SIGINT  # never started: the run is stopping
        try:
            paths = [str(j.write()) for j in rest]
            proc = children.start([sys.executable, "-m", "harness.train.job", *paths],
                                  {**env, SPAWNED_ENV: f"{time.time():.3f}"})
            if proc is not None:
                code = procs.pump(proc, child.log_path, child.on_line)
                children.done(proc)
        finally:
            bar.remove_task(child.task)
        # The variant it was on failed with the log's error. A child that died before starting any variant
        # (an import error, Ctrl-C) fails every variant left with that error: no retry loop.
        for job in [child.job] if child.job is not None else list(rest) if not child.started else []:
            child.finish(job, code)
    for job in list(rest):  # stopping: never started
        rest.remove(job)
        emit(job, stopped(job), 0.0)
    if held and not children.stopping:
        smaller = max(1, group // 2)
        bar.console.print(f"   {len(held)} variant(s) ran out of memory in engine groups of {group}: training them "
                          f"again in groups of {smaller}", highlight=False, markup=False)
        run_unit(held, children, bar, {**env, GROUP_ENV: str(smaller)}, emit, lambda job: None, smaller)
    elif held:  # stopping: their failed results stand
        for job in held:
            emit(job, stopped(job), 0.0)


def run_local(jobs: list[Job], say: Say, n: int = 1, children: Children | None = None) -> Finished:
    """The jobs in child processes, n at once, spread over the visible GPUs; yields each variant as it ends.

    children: the caller's Children, whose stop() (from any thread, e.g. a time cap) stops every child as Ctrl-C
    would; the variants it stops are yielded as failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not jobs:
        return
    from harness.train.multi.plan import GROUP_ADAPTERS, GROUP_ENV

    n = max(1, min(n, len(jobs)))
    gpus = visible_gpus()
    plan = engine_plan(jobs, n, gpus)
    group = plan.group if plan else None
    work_units = units(jobs, n, group, plan.processes if plan else None)
    load = dict.fromkeys(gpus, 0)
    # On CPU, n children share the cores; one child keeps torch's own default (all of them).
    threads = max(1, (os.cpu_count() or 1) // n) if not gpus and n > 1 else None
    children, lock, started = children or Children(), threading.Lock(), iter(range(1, len(jobs) + 1))
    finished: queue.Queue = queue.Queue()
    bar = Progress(TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=True)

    def announce(job: Job) -> None:
        with lock:
            i = next(started, None)  # a retried variant (smaller group) is announced again
        if i is not None:
            bar.console.print(f"[{i}/{len(jobs)}] {job.name}: {describe(job)}", highlight=False, markup=False)

    def work(unit: list[Job]) -> None:
        with lock:
            stopping = children.stopping
            gpu = least_loaded(load) if gpus and not stopping else None
            if gpu is not None:
                load[gpu] += 1
        if stopping:  # never started: each variant is yielded as stopped, so the run counts it
            for job in unit:
                finished.put((job, stopped(job), 0.0))
            return
        env, size = child_env(gpu, threads), None
        if unit in multi:  # the child groups its variants as the plan did
            size = group or multi_size
            env[GROUP_ENV] = str(size)
        try:
            run_unit(unit, children, bar, env, lambda job, result, seconds: finished.put((job, result, seconds)),
                     announce, size)
        finally:
            if gpu is not None:
                with lock:
                    load[gpu] -= 1

    multi = multi_units(work_units, group)
    multi_size = int(os.environ.get(GROUP_ENV) or 0) or GROUP_ADAPTERS  # without a plan: what the child reads too
    shared = [u for u in work_units if len(u) > 1 and u not in multi]
    if n > 1:
        say(f"{n} variants at once" + (f" over GPUs {', '.join(gpus)}" if gpus else f", {threads} CPU thread(s) each"))
    if plan is not None and multi:
        say(f"memory plan: {plan.why}")
    if multi:
        engines = sum(len(groups(u, group)) for u in multi)
        say(f"{sum(map(len, multi))} fast-plan variants train together in {engines} multi-adapter engine group(s) "
            f"in {len(multi)} process(es): one forward/backward per micro-batch for all of a group's variants, each "
            "group's results kept as it ends (--no-multi-adapter: one after another)")
    if shared:
        say(f"{sum(map(len, shared))} fast-plan variants share {len(shared)} process(es): "
            "each loads the model and captures its CUDA graphs once")
    with bar, ThreadPoolExecutor(n, thread_name_prefix="variant") as pool:
        futures = [pool.submit(work, unit) for unit in work_units]
        try:
            for _ in range(len(jobs)):
                while True:  # a short timeout keeps Ctrl-C responsive; a worker's own crash surfaces here
                    try:
                        item = finished.get(timeout=0.5)
                        break
                    except queue.Empty:
                        for fut in futures:
                            if fut.done() and (exc := fut.exception()) is not None:
                                raise exc from None
                yield item
        except BaseException:  # Ctrl-C, or the runner stopped early (GeneratorExit): no child may outlive the run
            for fut in futures:
                fut.cancel()
            children.stop()
            raise


def local_executor(n: int = 1, children: Children | None = None) -> Executor:
    """The local executor running n variants at once (children: see run_local)."""
    return lambda jobs, say: run_local(jobs, say, n, children)
