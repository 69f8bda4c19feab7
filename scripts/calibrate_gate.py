"""Measure the regression gate's error rates on real runs: reseeds must pass it, worse art must fail it.

    .venv/bin/python scripts/calibrate_gate.py                      # trains the default config over 6 seeds first
    .venv/bin/python scripts/calibrate_gate.py --run reports/runs/ID  # reuse a finished `asciitune run --seeds N`

Writes reports/examples/gate-calibration.json: {"pairs", "false_alarm_rate", "miss_rate", "thresholds", "how",
"cases", "seed_spread"}. What is retrained and what is resampled:

- retrained: the default config's three variants at N seeds (`asciitune run --seeds N`): `learn` (learning),
  `memorize` (memorizing: the art got worse by copying) and `seed` (lr 2e-4, undertrained: prose, no art);
- resampled, not retrained: `noise` = each learn replicate's own adapter sampled again at a temperature that
  breaks its art, the min-p filter off (`asciitune generate ... --temperature T --min-p 0`), and `looping` = the same
  adapter sampled at a low-entropy setting that makes a small model write lines again and again (temperature 0.6,
  min_p 0.2: the default of judge version 2), each judged against the same data. Their loss curves are learn's: what
  got worse is the art alone.

Pairs (A, B) are compared with `harness.report.compare.compare` at its defaults (no --fail-on), B's variant named
like A's, as `asciitune compare A B` would see two runs:
- must pass (a false alarm if the gate fails): A and B the same variant at different seeds;
- must fail (a miss if the gate passes): A = learn, B = memorize, seed, noise or looping at another seed.
Each kind is paired one seed against one (every pair of distinct seeds) and three seeds against three (every
split of six seeds into two disjoint triples, compared as seed groups).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

from harness.config import RunConfig
from harness.data import build_dataset
from harness.fsutil import atomic_write_json
from harness.judge import seeds as seed_model
from harness.judge.judge import judge
from harness.judge.reference import for_run
from harness.judge.rejudge import rejudge_variant
from harness.judge.samples import read_samples
from harness.judge.verdict import BANDS, JUDGE_VERSION, SET_MIN_EFFECT, combine_verdicts, final_verdict
from harness.report.compare import NOISE_SIGMAS, compare
from harness.results import RunResult, VariantResult, load, resolve_run_dir

OUT = Path("reports/examples/gate-calibration.json")
# Samplers broken by a change. Noise: temperature 1.6 with the min-p filter off, which turns SmolLM2's art into
# symbol soup (at 1.6 with min_p 0.2 the art still looked like learn's worst seeds). Loops: temperature 0.6 with
# min_p 0.2, the default sampler of judge version 2, under which learn's adapter wrote 8-14 of 16 samples as loops
# (reports/examples/default-cpu of 2026-12-02; tests/golden/learn-samples-judge-v2.jsonl).
RESAMPLED = {"noise": (1.6, 0.0), "looping": (0.6, 0.2)}  # kind: (temperature, min_p)
KINDS = {"learn": "learning", "memorize": "memorizing", "seed": "undertrained", "noise": "noise", "looping": "looping"}


def asciitune(*args: str) -> None:
    """The real CLI in a child process (one backend per process)."""
    subprocess.run([sys.executable, "-m", "harness", *args], check=True)


def resampled(run_dir: Path, run: RunResult, v: VariantResult, kind: str) -> VariantResult:
    """v's adapter sampled again with a RESAMPLED kind's broken sampler, judged against v's data: v with its art
    made worse."""
    temperature, min_p = RESAMPLED[kind]
    out = run_dir / "calibration" / f"{kind}-{v.name}.jsonl"
    if not out.is_file():
        out.parent.mkdir(exist_ok=True)
        asciitune("generate", str(run_dir), "--variant", v.name, "--temperature", str(temperature),
                  "--min-p", str(min_p), "--out", str(out))
    samples, cut = read_samples(out)
    ds = build_dataset(RunConfig.from_dict(v.config).data)
    judged = judge(for_run(ds, run.human_reference), samples, cut)
    worse = copy.deepcopy(v)
    worse.scores, worse.copy_analysis, worse.judge_version = judged.scores, judged.copy, judged.version
    worse.verdict = combine_verdicts(v.loss_analysis, judged.copy)
    worse.config = {**v.config, "generate": {**v.config["generate"], "temperature": temperature, "min_p": min_p}}
    return worse


def as_run(template: RunResult, reps: list[VariantResult], label: str) -> RunResult:
    """A run holding one variant named 'learn': one replicate, or several as a seed group."""
    run = copy.deepcopy(template)
    run.run_id, run.variants = label, {}
    for k, v in enumerate(reps):
        v = copy.deepcopy(v)
        v.name = "learn" if k == 0 else f"learn@s{k}"
        v.seed_group = "learn" if len(reps) > 1 else ""
        run.variants[v.name] = v
    run.seeds = seed_model.summarize(run.variants)
    return run


@contextlib.contextmanager
def gated(metrics: tuple):
    """compare.GATED set to metrics for a while."""
    from harness.report import compare as module

    saved, module.GATED = module.GATED, metrics
    try:
        yield
    finally:
        module.GATED = saved


def pairs(pools: dict[str, list[VariantResult]]) -> list[dict]:
    """Every pair of the plan in the module docstring, compared; one record each."""
    n = min(len(p) for p in pools.values())
    idx = range(n)
    plans = []  # (kind, expect_fail, A replicates, B replicates)
    for kind in ("learn", "memorize", "seed"):
        plans += [(f"{kind} vs {kind}", False, [i], [j]) for i, j in itertools.combinations(idx, 2)]
    for bad in ("memorize", "seed", *RESAMPLED):
        plans += [(f"learn vs {bad}", True, [i], [j]) for i, j in itertools.permutations(idx, 2)]
    if n >= 6:
        splits = [(list(t), [i for i in idx if i not in t]) for t in itertools.combinations(idx, 3) if 0 in t]
        for kind in ("learn", "memorize", "seed"):
            plans += [(f"{kind} vs {kind}", False, a, b) for a, b in splits]
        for bad in ("memorize", "seed", *RESAMPLED):
            plans += [(f"learn vs {bad}", True, a, b) for a, b in splits]
    template = RunResult(run_id="")
    records = []
    for name, expect_fail, a, b in plans:
        kind_a, kind_b = name.split(" vs ")
        ra = as_run(template, [pools[kind_a][i] for i in a], "A")
        rb = as_run(template, [pools[kind_b][i] for i in b], "B")
        comp = compare([ra, rb])
        with gated(()):  # the same pair judged on verdicts alone: what the gated metrics add
            by_verdicts = compare([ra, rb]).failed
        records.append({"pair": name, "seeds_a": a, "seeds_b": b, "expect": "fail" if expect_fail else "pass",
                        "gate": "fail" if comp.failed else "pass",
                        "verdicts": [f"{v.metric}: {v.a} -> {v.b} ({v.change})" for v in comp.verdicts],
                        "failures": [f.message() for f in comp.failures],
                        "gate_on_verdicts_alone": "fail" if by_verdicts else "pass",
                        "correct": comp.failed == expect_fail})
    return records


def spread_table(pools: dict[str, list[VariantResult]]) -> dict:
    """Per kind: its verdicts over seeds and each number's spread; and per number the pooled seed sd over the
    retrained kinds (root of the mean variance): what verdict.SEED_SD and seeds.TAU rest on."""
    out, variances = {}, {}
    for kind, reps in pools.items():
        s = seed_model.summarize_group(kind, reps)
        out[kind] = {"verdicts": s.verdicts, "borderline": s.borderline,
                     "metrics": {k: {"mean": m.mean, "sd": m.sd, "min": m.min, "max": m.max, "n": m.n}
                                 for k, m in s.metrics.items()}}
        if kind not in RESAMPLED:
            for k, m in s.metrics.items():
                if m.sd is not None:
                    variances.setdefault(k, []).append(m.sd ** 2)
    out["pooled_sd"] = {k: math.sqrt(sum(v) / len(v)) for k, v in sorted(variances.items())}
    return out


def seed_table(pools: dict[str, list[VariantResult]]) -> str:
    """The README's table: each retrained variant's final verdict (loss verdict; copy verdict) per seed."""
    kinds = [k for k in ("seed", "learn", "memorize") if pools.get(k)]
    n = min(len(pools[k]) for k in kinds)
    rows = ["| train.seed, generate.seed | " + " | ".join(f"`{k}`" for k in kinds) + " |",
            "|---|" + "---|" * len(kinds)]
    for i in range(n):
        seeds = pools[kinds[0]][i].config
        cells = []
        for k in kinds:
            v = pools[k][i]
            cells.append(f"{final_verdict(v)} ({v.verdict.loss_verdict}; {v.verdict.copy_verdict})"
                         + (" *" if v.verdict.borderline else ""))
        rows.append(f"| {seeds['train']['seed']}, {seeds['generate']['seed']} | " + " | ".join(cells) + " |")
    counts = [Counter(final_verdict(pools[k][i]) for i in range(n)) for k in kinds]
    rows.append("| over the seeds | " + " | ".join(", ".join(f"{v} {c}/{n}" for v, c in cs.most_common())
                                                   for cs in counts) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse) the seeds, resample the noise, compare every pair, write the calibration file."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a finished run of the default config with --seeds >= 6 (default: make one)")
    p.add_argument("--seeds", type=int, default=6, help="seeds to train when making the run (default 6)")
    p.add_argument("--reports-dir", default="reports", help="where a new run goes (default: reports)")
    p.add_argument("--out", default=str(OUT), help=f"output JSON (default {OUT})")
    args = p.parse_args(argv)
    if args.run:
        run_dir = resolve_run_dir(args.run, args.reports_dir)
    else:
        before = set((Path(args.reports_dir) / "runs").glob("*"))
        asciitune("--reports-dir", args.reports_dir, "run", "--seeds", str(args.seeds), "--no-report")
        (run_dir,) = set((Path(args.reports_dir) / "runs").glob("*")) - before
    run = load(run_dir)
    # judged again by this judge from the run folder, so the file measures the rules as they are now
    pools = {kind: [rejudge_variant(run, run_dir, v) for v in run.variants.values()
                    if (v.seed_group or v.name) == kind and v.status == "done"]
             for kind in ("learn", "memorize", "seed")}
    for kind in RESAMPLED:
        pools[kind] = [resampled(run_dir, run, v, kind) for v in pools["learn"]]
    records = pairs(pools)
    must_pass = [r for r in records if r["expect"] == "pass"]
    must_fail = [r for r in records if r["expect"] == "fail"]
    result = {
        "pairs": len(records),
        "false_alarm_rate": sum(r["gate"] == "fail" for r in must_pass) / len(must_pass),
        "miss_rate": sum(r["gate"] == "pass" for r in must_fail) / len(must_fail),
        "thresholds": {"judge_version": JUDGE_VERSION, "noise_sigmas": NOISE_SIGMAS,
                       "verdict_alpha": seed_model.VERDICT_ALPHA, "bands": BANDS,
                       "set_min_effect": SET_MIN_EFFECT,
                       "tau": seed_model.TAU, "tau_relative": seed_model.TAU_RELATIVE,
                       "resampled": {k: {"temperature": t, "min_p": p} for k, (t, p) in RESAMPLED.items()}},
        "how": (f"Run {run.run_id} (`asciitune run --seeds {len(pools['learn'])}` of the default config, "
                f"{run.environment.get('device', '?')}): learn, memorize and seed retrained at every seed; "
                + "; ".join(f"{k} = each learn adapter resampled at temperature {t} with min_p {p}"
                            for k, (t, p) in RESAMPLED.items())
                + ", not retrained. Pairs compared by harness.report.compare.compare at its defaults; one seed "
                "against one and three against three. "
                "The seed-noise model it uses (seeds.TAU, verdict.SEED_SD) was measured on these same seeds, so the "
                "rates are in-sample. "
                "Re-make: .venv/bin/python scripts/calibrate_gate.py [--run RUN]."),
        "on_verdicts_alone": {"false_alarms": sum(r["gate_on_verdicts_alone"] == "fail" for r in must_pass),
                              "misses": sum(r["gate_on_verdicts_alone"] == "pass" for r in must_fail)},
        "counts": {"must_pass": len(must_pass), "must_fail": len(must_fail),
                   "false_alarms": sum(r["gate"] == "fail" for r in must_pass),
                   "misses": sum(r["gate"] == "pass" for r in must_fail)},
        "verdicts_by_seed": {k: [final_verdict(v) for v in reps] for k, reps in pools.items()},
        "seed_spread": spread_table(pools),
        "seed_table": seed_table(pools),
        "cases": records,
    }
    atomic_write_json(args.out, result)
    print(result["seed_table"])
    c = result["counts"]
    print(f"{result['pairs']} pairs: false alarms {c['false_alarms']}/{c['must_pass']} "
          f"({result['false_alarm_rate']:.1%}), misses {c['misses']}/{c['must_fail']} ({result['miss_rate']:.1%}); "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
