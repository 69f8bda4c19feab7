"""Judge a stored run again with this judge, so two runs are compared by the same rules.

    runs = same_judge([(load(a), dir_a), (load(b), dir_b)])   # what `asciitune compare` does first

Every variant records the judge version that judged it (harness.judge.verdict.JUDGE_VERSION). When the runs
being compared were judged by different versions, each variant judged by another version than this one is
judged again from what its run folder keeps: its samples file, its loss curves, and its dataset rebuilt
from its config (which must hash as it did when it ran). Where that is impossible the comparison stops in one
sentence: a verdict never changes because the judge did. Pure (no torch).
"""
from __future__ import annotations

import copy
from pathlib import Path

from harness.config import RunConfig
from harness.data import build_dataset
from harness.errors import UserError
from harness.judge import reference
from harness.judge.judge import judge
from harness.judge.verdict import JUDGE_VERSION, analyse, combine_verdicts
from harness.results import RunResult, VariantResult, read_samples


def versions(run: RunResult) -> set[int]:
    """The judge versions of a run's judged variants."""
    return {v.judge_version for v in run.variants.values() if v.status == "done" and v.verdict is not None}


def _why_not(run: RunResult, run_dir: Path | None, v: VariantResult) -> str | None:
    """Why a variant cannot be judged again (None when it can)."""
    if run_dir is None or not v.samples_file or not (Path(run_dir) / v.samples_file).is_file():
        return f"its samples file is not in {run_dir or 'the run folder'}"
    if not v.curves.steps:
        return "it has no loss curves"
    return None


def rejudge_variant(run: RunResult, run_dir: Path, v: VariantResult) -> VariantResult:
    """One variant judged by this judge: loss rule on its curves, samples against its rebuilt dataset."""
    cfg = RunConfig.from_dict(v.config)
    ds = build_dataset(cfg.data)
    recorded = v.data_hash or ((run.data or {}).get("hash") if v.config.get("data") == run.base_config.get("data")
                               else None)
    if recorded != ds.hash():
        raise UserError(f"Variant {v.name} of run {run.run_id} was judged by judge version {v.judge_version}, and its "
                        f"data now splits differently (hash {ds.hash()} vs {recorded}), so it cannot be judged again: "
                        "re-run it with this asciitune.")
    samples = read_samples(run_dir, v)
    judged = judge(reference.in_run(ds), [s["text"] for s in samples], [bool(s.get("cut_off")) for s in samples],
                   meta=samples)
    out = copy.deepcopy(v)
    out.loss_analysis = analyse(v.curves.steps, v.curves.train_loss, v.curves.heldout_loss)
    out.scores, out.copy_analysis, out.judge_version = judged.scores, judged.copy, judged.version
    out.verdict = combine_verdicts(out.loss_analysis, judged.copy)
    return out


def same_judge(runs: list[tuple[RunResult, Path | None]]) -> list[RunResult]:
    """The runs as they are when one judge version judged all of them; else each judged again by this one."""
    if len(set().union(*(versions(r) for r, _ in runs))) <= 1:
        return [r for r, _ in runs]
    out = []
    for run, run_dir in runs:
        run = copy.deepcopy(run)
        for name, v in run.variants.items():
            if v.status != "done" or v.verdict is None or v.judge_version == JUDGE_VERSION:
                continue
            why = _why_not(run, run_dir, v)
            if why:
                raise UserError(f"Run {run.run_id} was judged by judge version {v.judge_version} and another run by "
                                f"version {JUDGE_VERSION} or another, and variant {name} cannot be judged again "
                                f"({why}): compare runs judged by one asciitune version.")
            run.variants[name] = rejudge_variant(run, Path(run_dir), v)
        out.append(run)
    return out
