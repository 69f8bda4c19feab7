"""The main job: every variant of a plan, each in its own process, merged into one results.json.

    asciitune run                                   # default config: packaged model and cats, on CPU
    asciitune run --backend unsloth --model llama-3.2-3b --config seed   # the seed workflow on a GPU

Results go to reports/runs/<run-id>/. The dataset and the human reference are built once per
run and handed to every variant in its job file. results.json is rewritten atomically after
every variant, so an interrupted run keeps what finished; `--resume RUN` skips those variants.
How the variants execute (child processes here, N at once, or Ray tasks) is harness.train.executors.
"""
from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from harness import environment
from harness.config import Plan
from harness.data import Dataset, pieces_phrase
from harness.errors import UserError
from harness.results import (
    RESULTS_FILE,
    RUNS_DIR,
    RunResult,
    Scores,
    from_dict,
    new_run_id,
    resolve_run_dir,
)
from harness.train.executors import Executor, Say, local_executor
from harness.train.job import Job


def prepare(plan: Plan) -> dict[str, tuple[Dataset, Scores]]:
    """Dataset and human reference per distinct data setting, checked against the model before anything trains."""
    from harness.data import build_dataset, check_lengths, check_split, token_lengths
    from harness.judge.samples import human_reference
    from harness.models import counting_tokenizer, resolve
    from harness.train.fast import plan as fast

    out: dict[str, tuple[Dataset, Scores]] = {}
    checked: set[str] = set()
    for cfg in plan.variants.values():
        fast.check(cfg)  # what the fast plan cannot reproduce is refused here, before the run folder exists
        key = data_key(cfg)
        if key not in out:
            ds = build_dataset(cfg.data)
            check_split(ds, cfg.data)  # an uneven split stops here unless data.allow_uneven_split
            out[key] = (ds, human_reference(ds) if ds.heldout else Scores())
        ds = out[key][0]
        model_key = json.dumps([key, cfg.model.name, cfg.model.max_seq_length])
        if model_key not in checked:
            resolved = resolve(cfg.model.name)
            tok = counting_tokenizer(resolved.tokenizer_path or resolved.path)  # no transformers import
            check_lengths(ds.train + ds.heldout, token_lengths(ds.train + ds.heldout, tok), cfg.model.max_seq_length)
            checked.add(model_key)
    return out


def data_key(cfg) -> str:
    """Variants with equal data settings share one dataset."""
    return json.dumps(cfg.to_dict()["data"], sort_keys=True)


def _load_or_new(run_dir: Path, plan: Plan, command: str) -> RunResult:
    path = run_dir / RESULTS_FILE
    if path.is_file():
        return from_dict(json.loads(path.read_text(encoding="utf-8")))
    return RunResult(run_id=run_dir.name, created=datetime.now(UTC).isoformat(timespec="seconds"),
                     command=command, config_source=plan.source, base_config=plan.base.to_dict(),
                     config_hash=plan.base.hash())


def find_resumable(reports_dir: Path, plan: Plan) -> Path | None:
    """The newest run of the same config, for `--resume` without a run id."""
    for path in sorted((reports_dir / RUNS_DIR).glob("*/" + RESULTS_FILE), reverse=True):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("config_hash") == plan.base.hash():
                return path.parent
        except (OSError, ValueError):
            continue
    return None


def _run_dir(plan: Plan, reports_dir: Path, resume: str | None) -> Path:
    if resume == "latest":
        run_dir = find_resumable(reports_dir, plan)
        if run_dir is None:
            raise UserError("No earlier run of this config to resume: drop --resume or name a run id.")
        return run_dir
    if resume:
        return resolve_run_dir(resume, reports_dir)
    return reports_dir / RUNS_DIR / new_run_id(plan.base.hash())


def run_plan(plan: Plan, reports_dir: Path, resume: str | None = None, command: str = "",
             console=None, resume_from: str | None = None,
             executor: Executor | None = None, multi_adapter: bool = True) -> tuple[Path, RunResult]:
    """Train every variant not yet done, each in a fresh process; returns the run folder and results.

    multi_adapter: fast-plan variants over one base may train together in one process's multi-adapter engine
    (harness.train.multi.plan); False trains them one after another."""
    from harness.judge import seeds

    say: Say = console.print if console else print
    reports_dir = Path(reports_dir)
    run_dir = _run_dir(plan, reports_dir, resume)
    inputs = prepare(plan)  # bad data or a missing model fail here, before the run folder exists
    run = _load_or_new(run_dir, plan, command)
    ds, human = inputs[data_key(plan.base)] if data_key(plan.base) in inputs else next(iter(inputs.values()))
    run.data, run.human_reference = ds.summary(), human
    datasets = {name: inputs[data_key(cfg)][0] for name, cfg in plan.variants.items()}
    counts = {name: [len(d.train), len(d.heldout)] for name, d in datasets.items()}
    if len({tuple(n) for n in counts.values()}) > 1:  # variants' data settings differ: the header says so
        run.data["n_by_variant"] = counts
    run.environment = environment.snapshot(run.environment.get("device", "") if run.environment else "")
    run.save(run_dir)
    say(f"Run {run_dir}: {len(plan.variants)} variant(s), {pieces_phrase(run.data)}")
    jobs = []
    for i, (name, cfg) in enumerate(plan.variants.items(), 1):
        done = run.variants.get(name)
        if done and done.status == "done" and done.config_hash == cfg.hash():
            say(f"[{i}/{len(plan.variants)}] {name}: done earlier, skipped (--resume)")
            continue
        d, h = inputs[data_key(cfg)]
        jobs.append(Job(name, cfg, run_dir, d, h, resume_from, plan.seed_groups.get(name, ""),
                        multi_adapter=multi_adapter))
    order = {name: i for i, name in enumerate(plan.variants)}
    # closing(): if anything stops this loop (Ctrl-C, an error), the executor stops its children or tasks at once.
    with closing((executor or local_executor())(jobs, say)) as finished:
        for job, result, seconds in finished:
            run.variants[job.name] = result
            # Variants finish in any order with --jobs or Ray; results keep the config's order.
            run.variants = dict(sorted(run.variants.items(), key=lambda kv: order.get(kv[0], len(order))))
            run.seeds = seeds.summarize(run.variants)
            if result.device and not run.environment.get("device"):
                run.environment["device"] = result.device
            run.save(run_dir)
            if result.status != "done":
                say(f"{job.name}: FAILED ({result.error.splitlines()[-1] if result.error else '?'})")
            else:
                say(f"{job.name}: {result.verdict.verdict if result.verdict else '?'} in {seconds:.0f}s")
    return run_dir, run
