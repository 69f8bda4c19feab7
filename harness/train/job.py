"""Variants, end to end, in a fresh process: load, train, save adapter, sample, judge.

    python -m harness.train.job RUN_DIR/jobs/NAME.json [MORE.json ...]   # what `asciitune run` starts

A process can hold only one backend (Unsloth patches transformers globally) and a crash then
costs its variants, not the run. The runner writes a job file per variant (its config, the run's
dataset and human reference, computed once per run) and starts this module on one or more of them;
each variant's result lands in `<run-dir>/variants/<name>.json` as it finishes, and the runner merges
it. Fast-plan variants over the same base (`share_key`) share one loaded model. With `multi_adapter` (the
runner's default, `asciitune run --no-multi-adapter` turns it off) up to 32 of them train together in the
multi-adapter engine (`run_group`, harness.train.multi.plan: one forward/backward for all per micro-batch, each
adapter with its own step math), then are saved, sampled (in shared generate calls when their generate settings
match) and judged. Otherwise they run one after
another: the CUDA graphs captured for the first are replayed by the rest (each starts from the same LoRA
weights and a zeroed optimizer: harness.train.fast.engine.Engine.begin). A variant that fails is recorded
and the next one starts over a freshly loaded model; a multi-adapter group whose engine fails is trained
again one variant at a time.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.data import Dataset
from harness.errors import UserError
from harness.fsutil import atomic_write_json
from harness.results import Scores, Timing, VariantResult, build, to_jsonable, write_jsonl

VARIANTS_DIR = "variants"
JOBS_DIR = "jobs"
PROGRESS_MARK = "@@progress"  # "@@progress KIND DONE TOTAL": the runner's progress bar
VARIANT_MARK = "@@variant"  # "@@variant NAME": this process starts NAME
DONE_MARK = "@@done"  # "@@done NAME": NAME's result file is written (done or failed)
SPAWNED_ENV = "ASCIITUNE_SPAWNED_AT"  # epoch seconds the executor started this process: the start phase's clock
_first_in_process = [True]


@dataclass
class Job:
    """Everything one variant's process needs, handed over whole (no re-reading, no re-building)."""

    name: str
    config: RunConfig
    run_dir: Path
    dataset: Dataset
    human_reference: Scores
    resume_from: str | None = None
    seed_group: str = ""  # the variant this job is a seed replicate of (config.Plan.seed_groups), else ""
    multi_adapter: bool = False  # may train in one engine with the fast-plan variants over its base (train.multi)

    def write(self) -> Path:
        """The job file the child process reads."""
        data = {"name": self.name, "config": self.config.to_dict(), "run_dir": str(self.run_dir),
                "dataset": self.dataset.to_dict(), "human_reference": to_jsonable(self.human_reference),
                "resume_from": self.resume_from, "seed_group": self.seed_group, "multi_adapter": self.multi_adapter}
        return atomic_write_json(Path(self.run_dir) / JOBS_DIR / f"{self.name}.json", data)

    @classmethod
    def read(cls, path: str | Path) -> Job:
        """Load a job file written by `write`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["name"], RunConfig.from_dict(data["config"]), Path(data["run_dir"]),
                   Dataset.from_dict(data["dataset"]), build(Scores, data["human_reference"]), data.get("resume_from"),
                   data.get("seed_group") or "", bool(data.get("multi_adapter", False)))


def variant_file(run_dir: Path, name: str) -> Path:
    """Where a finished variant's result is written."""
    return Path(run_dir) / VARIANTS_DIR / f"{name}.json"


def progress(kind: str, done: int, total: int) -> None:
    """A machine-readable line the runner turns into a progress bar."""
    print(f"{PROGRESS_MARK} {kind} {done} {total}", file=sys.stderr, flush=True)


def share_key(job: Job) -> str | None:
    """Jobs with equal keys may share a process and its loaded model: fast-plan variants over one base and LoRA."""
    cfg = job.config
    if cfg.train.plan != "fast" or job.resume_from:
        return None
    d = cfg.to_dict()
    return json.dumps([d["model"], d["lora"]], sort_keys=True)


def groups(jobs: list[Job], per_group: int | None = None) -> list[list[Job]]:
    """The jobs in the order a process runs them: fast-plan variants over one base that may share the multi-adapter
    engine in engine groups of up to per_group (harness.train.multi.plan.group_sizes: results are written group by
    group), placed where the first of them was; every other job alone (those over one base still share the loaded
    model)."""
    from harness.train.fast import plan as fast
    from harness.train.multi import plan as multi

    out: list[list[Job]] = []
    shared: dict[str, list[Job]] = {}
    for job in jobs:
        key = share_key(job) if job.multi_adapter and not fast.refusal(job.config) else None
        if key is None:
            out.append([job])
        elif key not in shared:
            shared[key] = [job]
            out.append(shared[key])
        else:
            shared[key].append(job)
    final: list[list[Job]] = []
    for members in out:  # a group the engine refuses (LoRA dropout, trained biases) runs one variant at a time
        at = 0
        for size in multi.group_sizes(len(members), per_group):
            group, at = members[at:at + size], at + size
            final += [group] if len(group) > 1 and multi.refusal([j.config for j in group]) is None \
                else [[j] for j in group]
    return final


class Clock:
    """A variant's Timing: wall seconds per phase, each phase from the end of the one before."""

    def __init__(self) -> None:
        spawned = float(os.environ.get(SPAWNED_ENV) or 0)
        self.timing = Timing(pid=os.getpid(), spawned_at=spawned)
        if spawned and _first_in_process[0]:  # interpreter start and imports, before this variant's own work
            self.timing.phases["start"] = round(max(0.0, time.time() - spawned), 3)
        _first_in_process[0] = False
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The phase that just ended."""
        now = time.perf_counter()
        self.timing.phases[phase] = round(self.timing.phases.get(phase, 0.0) + now - self.last, 3)
        self.last = now


class Session:
    """What a process keeps between its jobs: the loaded model, its tokenizer, and the engine over it (the fast plan's
    Engine, or the multi-adapter engine's MultiEngine, whose graphs the next group of as many variants replays)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.model = self.tok = self.info = self.engine = None

    def close_engine(self) -> None:
        """Close the engine kept over the model (the model stays loaded, as loaded)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    def drop(self) -> None:
        """Forget the model (after a failure, or before a job over another base): its memory goes back."""
        self.close_engine()
        self.key = self.model = self.tok = self.info = None
        gc.collect()
        if cuda := _loaded_cuda():
            cuda.empty_cache()


def failed_result(job: Job, error: str) -> VariantResult:
    """A failed variant's result with its one-line error; out of memory says what to change."""
    if "out of memory" in error.lower():  # concurrent variants share a GPU
        error = f"Out of memory (lower --jobs or train.batch_size): {error.splitlines()[-1]}"
    cfg = job.config
    return VariantResult(name=job.name, status="failed", config=cfg.to_dict(), config_hash=cfg.hash(),
                         backend=cfg.model.backend, error=error, seed_group=job.seed_group)


def run_job(job: Job, session: Session | None = None, note: str = "") -> VariantResult:
    """Train and judge one variant in this process; the backend is imported first, as Unsloth requires.

    session: the process's Session when it runs several jobs; a shareable job reuses its model and engine.
    note: why it trains alone though it could have shared the multi-adapter engine (its backend_note says so).
    """
    from harness import backends

    clock = Clock()
    cfg, name, run_dir, ds = job.config, job.name, Path(job.run_dir), job.dataset
    backend = backends.get(cfg.model.backend)
    clock.mark("import")  # the backend's stack (Unsloth, transformers, PEFT, TRL): paid once per process
    from harness.models import resolve
    from harness.train.generate import generate_samples
    from harness.train.sft import train_variant

    train = train_variant
    load_cfg = cfg
    if cfg.train.plan == "fast":  # the same step math, executed fast (harness.train.fast.plan); refused up front if not
        from harness.train.fast import plan as fast

        fast.check(cfg)
        train, load_cfg = fast.train_variant_fast, fast.load_config(cfg)
    key = share_key(job) if session else None
    reuse = key is not None and session.key == key
    if session and not reuse:
        session.drop()
    if cuda := _loaded_cuda():
        cuda.reset_peak_memory_stats()  # each variant's peak, also when it shares a process
    result = VariantResult(name=name, config=cfg.to_dict(), config_hash=cfg.hash(), backend=cfg.model.backend,
                           data_hash=ds.hash(), seed_group=job.seed_group)
    if reuse:
        model, tok, info = session.model, session.tok, session.info
    elif job.resume_from:
        model, tok, info = backend.load_adapter(job.resume_from, resolve(cfg.model.name), load_cfg, is_trainable=True)
    else:
        model, tok, info = backend.load(resolve(cfg.model.name), load_cfg)
    clock.mark("load")
    extra_note = f"continued from {job.resume_from}" if job.resume_from else ""
    if reuse:
        extra_note = "model shared with the variant before it in this process (loaded once, graphs captured once)"
    result.backend_note = "; ".join(x for x in (info["backend_note"], extra_note, note) if x)
    result.device = info["device"]
    print(f"[{name}] {info['backend_note']} on {info['device']} ({info['dtype']}); "
          f"{len(ds.train)} train / {len(ds.heldout)} held-out pieces", file=sys.stderr, flush=True)

    def report(step: int, tr: float, ho: float) -> None:
        print(f"[{name}] step {step}: train loss {tr:.4f}, held-out loss {ho:.4f}", file=sys.stderr, flush=True)

    backend.for_training(model)
    extra = {}
    if key is not None:  # kept for the next job over this base; its engine made before any step, at LoRA's start
        if not reuse:
            session.key, session.model, session.tok, session.info = key, model, tok, info
        if not isinstance(session.engine, fast.Engine):  # none yet, or a multi-adapter group's
            session.close_engine()
            session.engine = fast.Engine(model, cfg.train)
        extra["engine"] = session.engine
    result.curves, result.train = train(model, tok, ds, cfg, run_dir / "checkpoints" / name, on_eval=report,
                                        on_step=lambda d, t: progress("train", d, t), **extra)
    clock.mark("train")
    save_adapter(job, result, model, tok)
    clock.mark("save")

    backend.for_inference(model)
    counts = backend.decode_counts(model)
    progress("generate", 0, cfg.generate.n_samples)
    samples, result.generation = generate_samples(model, tok, cfg.generate,
                                                  progress=lambda d: progress("generate", d, cfg.generate.n_samples))
    result.generation.decode = backend.decode_mode(model, counts)
    clock.mark("generate")
    judge_and_write(job, result, samples)
    clock.mark("judge")
    result.timing = clock.timing
    atomic_write_json(variant_file(run_dir, name), to_jsonable(result))
    return result


def save_adapter(job: Job, result: VariantResult, model, tok) -> None:
    """The trained adapter as a PEFT folder under the run, and the loss analysis of its curves."""
    from harness.judge.verdict import analyse

    run_dir = Path(job.run_dir)
    adapter_dir = run_dir / "adapters" / job.name
    model.save_pretrained(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    atomic_write_json(adapter_dir / "asciitune-config.json", {"variant": job.name, "config": job.config.to_dict()})
    result.adapter_dir = str(adapter_dir.relative_to(run_dir))
    result.loss_analysis = analyse(result.curves.steps, result.curves.train_loss, result.curves.heldout_loss)


def judge_and_write(job: Job, result: VariantResult, samples: list) -> None:
    """Judge the samples, write them beside the run, and mark the variant done (its result file is the caller's)."""
    from harness.judge.judge import judge
    from harness.judge.reference import for_run
    from harness.judge.verdict import combine_verdicts
    from harness.train.sft import log_scores

    run_dir = Path(job.run_dir)
    judged = judge(for_run(job.dataset, job.human_reference), [s.text for s in samples], [s.cut_off for s in samples],
                   meta=[asdict(s) for s in samples])
    result.scores, result.copy_analysis, result.judge_version = judged.scores, judged.copy, judged.version
    result.verdict = combine_verdicts(result.loss_analysis, judged.copy)
    log_scores(job.config, run_dir / "checkpoints" / job.name, result)  # beside the curves, when report_to asks
    result.samples_file = f"samples-{job.name}.jsonl"
    write_jsonl(run_dir / result.samples_file, [r.to_dict() for r in judged.rows])
    result.status = "done"


def _loaded_cuda():
    """torch.cuda when torch is already imported and a GPU is usable, else None (never imports torch itself)."""
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            return torch.cuda
    return None


class Declined(Exception):
    """The multi-adapter engine cannot serve the loaded model (its message says why); nothing was trained."""


def run_group(jobs: list[Job], session: Session) -> int:
    """Fast-plan variants over one base through the multi-adapter engine (harness.train.multi.plan): loaded once,
    trained, probed and sampled together, each variant saved, judged and written on its own (a failure there is
    its own). Returns 0, or 1 when a variant failed; raises Declined when the engine declines the loaded model
    before any step (the caller then trains the variants solo)."""
    from harness import backends
    from harness.models import resolve
    from harness.train.fast import plan as fast
    from harness.train.multi import plan as multi
    from harness.train.multi import sample as multi_sample
    from harness.train.multi.engine import MultiEngine

    for job in jobs:
        print(f"{VARIANT_MARK} {job.name}", file=sys.stderr, flush=True)
    clock, cfg, key = Clock(), jobs[0].config, share_key(jobs[0])
    backend = backends.get(cfg.model.backend)
    clock.mark("import")  # the backend's stack (Unsloth, transformers, PEFT, TRL): paid once per process
    if session.key != key:
        session.drop()
        session.model, session.tok, session.info = backend.load(resolve(cfg.model.name), fast.load_config(cfg))
        session.key = key
    model, tok, info = session.model, session.tok, session.info
    clock.mark("load")
    if cuda := _loaded_cuda():
        cuda.reset_peak_memory_stats()
    backend.for_training(model)
    engine = session.engine
    if not isinstance(engine, MultiEngine) or engine.k != len(jobs):  # else an earlier group's, graphs and all
        session.close_engine()
        try:
            engine = session.engine = MultiEngine(model, len(jobs))
        except ValueError as exc:  # the loaded model's LoRA or head: nothing trained yet
            raise Declined(f"declined this model ({exc})") from None
    note = f"trained with {len(jobs) - 1} other variant(s) over one load in the multi-adapter engine"
    results = [VariantResult(name=j.name, config=j.config.to_dict(), config_hash=j.config.hash(),
                             backend=j.config.model.backend, data_hash=j.dataset.hash(), seed_group=j.seed_group,
                             device=info["device"], backend_note=f"{info['backend_note']}; {note}") for j in jobs]
    print(f"[multi] {len(jobs)} variants on {info['backend_note']} on {info['device']} ({info['dtype']})",
          file=sys.stderr, flush=True)

    def report(k: int, step: int, tr: float, ho: float) -> None:
        print(f"[{jobs[k].name}] step {step}: train loss {tr:.4f}, held-out loss {ho:.4f}", file=sys.stderr,
              flush=True)

    save_s = []
    try:
        trained, _ = multi.train_variants(model, tok, [j.dataset for j in jobs], [j.config for j in jobs], engine,
                                          on_eval=report, on_step=lambda d, t: progress("train", d, t))
        clock.mark("train")
        engine.stack.uninstall()  # saving reads the PEFT weights, one adapter exported at a time
        for k, (job, r, (curves, stats)) in enumerate(zip(jobs, results, trained)):
            t0 = time.perf_counter()
            r.curves, r.train = curves, stats
            engine.stack.export(k)
            save_adapter(job, r, model, tok)
            save_s.append(round(time.perf_counter() - t0, 3))
        clock.mark("save")
        backend.for_inference(model)
        counts = backend.decode_counts(model)
        n = cfg.generate.n_samples
        sampled, how = multi_sample.sample_variants(model, tok, engine, [j.config.generate for j in jobs],
                                                    progress=lambda d: progress("generate", d, n))
        decode = f"{backend.decode_mode(model, counts)}; {how}"
        clock.mark("generate")
    except BaseException:
        session.close_engine()
        raise
    group, code = clock.timing.phases, 0
    for k, (job, r) in enumerate(zip(jobs, results)):
        t0 = time.perf_counter()
        try:
            if isinstance(sampled[k], Exception):
                raise sampled[k]
            samples, r.generation = sampled[k]
            r.generation.decode = decode
            judge_and_write(job, r, samples)
        except Exception as exc:  # noqa: BLE001  (this variant's failure; the others are judged)
            traceback.print_exc()
            r, code = failed_result(job, f"{type(exc).__name__}: {exc}"), 1
        phases = {p: group[p] for p in ("start", "import", "load", "train") if p in group}
        phases |= {"save": save_s[k], "generate": group["generate"], "judge": round(time.perf_counter() - t0, 3)}
        r.timing = Timing(pid=clock.timing.pid, spawned_at=clock.timing.spawned_at, phases=phases,
                          shared=[p for p in phases if p not in ("save", "judge")])
        atomic_write_json(variant_file(job.run_dir, job.name), to_jsonable(r))
        print(f"{DONE_MARK} {job.name}", file=sys.stderr, flush=True)
    return code


def run_jobs(jobs: list[Job]) -> int:
    """The jobs in this process, marked for the runner: fast-plan variants over one base together in the
    multi-adapter engine where they may (`groups`), the rest one at a time; a failed one is recorded and the
    rest go on (a multi-adapter group that fails as a whole is trained again one variant at a time)."""
    session, code = Session(), 0
    for group in groups(jobs):
        why = ""
        if len(group) > 1:
            try:
                code = max(code, run_group(group, session))
                continue
            except Declined as exc:
                why = f"the multi-adapter engine {exc}"
            except Exception as exc:  # noqa: BLE001  (the group's engine failed: each variant gets its solo run)
                traceback.print_exc()
                why = (f"the multi-adapter engine failed ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})")
                session.drop()
            print(f"[multi] {why}: training the {len(group)} variants one at a time", file=sys.stderr, flush=True)
        code = max(code, _run_solo(group, session, f"trained alone: {why}" if why else ""))
    return code


def _run_solo(jobs: list[Job], session: Session, note: str = "") -> int:
    """Each job in turn over the session; its exit code contribution (2: a user error, 1: another failure)."""
    code = 0
    for job in jobs:
        print(f"{VARIANT_MARK} {job.name}", file=sys.stderr, flush=True)
        try:
            result = run_job(job, session, note)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            result, code = failed_result(job, str(exc)), 2
        except Exception as exc:  # noqa: BLE001  (any failure is this variant's; the next starts clean)
            traceback.print_exc()
            print(f"[{job.name}] failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  file=sys.stderr, flush=True)
            result, code = failed_result(job, f"{type(exc).__name__}: {exc}"), max(code, 1)
        if result.status != "done":
            session.drop()
            atomic_write_json(variant_file(job.run_dir, job.name), to_jsonable(result))
        print(f"{DONE_MARK} {job.name}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Child entry point: run the job files in order; a user error ends in one sentence, like the CLI."""
    from harness.quiet import quiet_third_party

    quiet_third_party()
    p = argparse.ArgumentParser(prog="python -m harness.train.job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jobs", type=Path, nargs="+", help="job files written by the runner (RUN_DIR/jobs/NAME.json)")
    args = p.parse_args(argv)
    return run_jobs([Job.read(path) for path in args.jobs])


if __name__ == "__main__":
    sys.exit(main())
