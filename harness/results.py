"""The results schema: one `results.json` per run, typed all the way down, written atomically.

Pure (no torch): reports and comparisons load results produced anywhere. A run folder is
`reports/runs/<run-id>/` with `results.json`, one `samples-<variant>.jsonl` per variant and,
once reported, `index.html`, `report.md` and PNG plots. Every block below is a dataclass; one
pydantic `TypeAdapter` turns the whole tree into JSON and back, checking types on the way in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fsutil import atomic_write_json, atomic_write_text

# 2: scores, copy analysis, verdicts, loss analysis, generation, exports and bench became typed blocks.
SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"
RUNS_DIR = "runs"


@dataclass
class Metric:
    """One number with its uncertainty over samples (lm-evaluation-harness style)."""

    value: float | None = None
    stderr: float | None = None
    ci_low: float | None = None  # seeded 95% percentile-bootstrap interval
    ci_high: float | None = None
    n: int = 0
    higher_is_better: bool = True


@dataclass
class Diversity:
    """How different a set's pieces are from each other (harness.judge.score.diversity)."""

    duplicate_rate: float | None = None
    mean_pairwise_distance: float | None = None
    distinct_ngrams: float | None = None
    n: int = 0
    pairs: int = 0
    pairs_sampled: bool = False


@dataclass
class Scores:
    """Metrics over a set of pieces; per-sample rows only where no samples file holds them (human reference)."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    diversity: Diversity = field(default_factory=Diversity)
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    # metric name -> the samples it is computed over: "all", "valid" or "well-formed" (harness.judge.score);
    # empty in results written before metrics had populations (then every metric was over all samples)
    populations: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        """A metric's value, or None when absent."""
        m = self.metrics.get(name)
        return None if m is None else m.value


@dataclass
class RankTest:
    """One typicality measure of the samples against the human reference's: a one-sided Mann-Whitney U test."""

    measure: str = ""
    direction: str = ""  # "greater": samples worse when higher (cross-entropy); "less": worse when lower
    statistic: float | None = None  # U of the samples
    effect: float | None = None  # U / (n_samples * n_human): P(a sample is worse than a human piece), ties half
    p_value: float | None = None
    n_samples: int = 0
    n_human: int = 0
    median_samples: float | None = None
    median_human: float | None = None
    flagged: bool = False  # beyond the set rule's p-value and effect (harness.judge.verdict)


@dataclass
class TypicalityEvidence:
    """How much the samples look like the training art, per sample and as a set (harness.judge.typicality)."""

    noise_rate: float = 0.0  # share of all samples that are well-formed but flagged noise
    typical_rate: Metric = field(default_factory=Metric)  # over well-formed samples
    human_typical_rate: Metric = field(default_factory=Metric)
    cross_entropy_bits: Metric = field(default_factory=Metric)  # 2-D character model, bits per character
    human_cross_entropy_bits: Metric = field(default_factory=Metric)
    set_noise: bool = False  # some rank test flagged
    tests: list[RankTest] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)  # the per-sample limits from the human reference


@dataclass
class RepetitionEvidence:
    """How often the samples write their lines again, per sample and as a set (harness.judge.repetition)."""

    loop_rate: float = 0.0  # share of all samples flagged looping
    human_loop_rate: float = 0.0  # share of the human pieces flagged looping by the same limit
    limits: dict[str, float] = field(default_factory=dict)  # per-sample bounds on each repeated share (human reference)
    repeated_line_share: Metric = field(default_factory=Metric)  # over the samples the set test reads
    human_repeated_line_share: Metric = field(default_factory=Metric)
    test: RankTest = field(default_factory=RankTest)  # samples repeat more than human pieces, as a set
    set_loop: bool = False  # the test beyond the rule's p-value and effect (harness.judge.verdict)


@dataclass
class CopyEvidence:
    """The numbers behind a copy verdict."""

    valid_rate: float = 0.0
    copy_rate: float = 0.0  # share of the valid samples that are copies
    copy_similarity_threshold: float = 0.0
    novelty_valid: Metric = field(default_factory=Metric)
    human_novelty_valid: Metric = field(default_factory=Metric)
    copied_line_share_valid: Metric = field(default_factory=Metric)
    human_copied_line_share_valid: Metric = field(default_factory=Metric)
    novelty_within_human: bool = False
    copied_lines_within_human: bool = False
    # the human novelty and copied-line share above are reweighted to the valid samples' lengths (score.length_weights)
    length_matched: bool = False
    well_formed_rate: float | None = None  # no failure but noise: non-empty, >= 3 lines, ASCII, not prose, not cut off
    typicality: TypicalityEvidence | None = None  # None when the samples or the reference were scored without it
    repetition: RepetitionEvidence | None = None  # None likewise (judge versions before 3 did not measure it)
    checks: list[RuleCheck] = field(default_factory=list)  # each rate the rule compares with a bound


@dataclass
class SampleRow:
    """One judged piece: where it came from, its form flags, width, copy evidence and typicality (samples-*.jsonl).

    Written by harness.judge.judge.judge, one per sample; the keys are those of the samples files, so a row
    read back from JSONL (`SampleRow.from_dict`) is the same row.
    """

    text: str = ""
    index: int | None = None  # the sample's position in its generation batch
    new_tokens: int | None = None
    cut_off: bool = False  # generation hit max_new_tokens before EOS
    # form and noise flags (harness.judge.score.validity; noise also when atypical for the training art)
    valid: bool = False
    well_formed: bool = False  # no flag but noise: shaped like art
    empty: bool = False
    too_few_lines: bool = False
    non_printable: bool = False
    non_ascii: bool = False
    prose: bool = False
    noise: bool = False
    looping: bool = False  # repeats its lines beyond the human reference's limit (harness.judge.repetition)
    width_consistency: float = 0.0
    width_percentile: float = 0.0  # among the training pieces' width consistency
    chars: int = 0  # characters after normalize()
    # copy evidence against the training pieces (and the near duplicates a run left out)
    nearest_train_index: int | None = None
    nearest_train_text: str = ""
    similarity: float = 0.0
    novelty: float = 1.0
    exact_copy: bool = False
    near_copy: bool = False
    head_train_index: int | None = None
    head_similarity: float | None = None
    copied_line_share: float = 0.0
    copy: bool = False  # a copy by the copy rule's threshold (exact, or copy similarity >= it); valid samples only
    # typicality under the training pieces' character model (absent when the reference has none)
    cross_entropy_bits: float | None = None
    structure_bits: float | None = None
    structure_score: float | None = None
    vertical_bits: float | None = None
    # loops (harness.judge.repetition): lines repeating the block right above them; characters in one repeated unit
    repeated_line_share: float | None = None
    repeated_unit_share: float | None = None
    typicality_percentile: float | None = None
    atypical: bool | None = None
    atypical_reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The row as the samples file stores it."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleRow:
        """A row from a samples file (keys this version does not know are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        return build(cls, {k: v for k, v in data.items() if k in known})


@dataclass
class CopyAnalysis:
    """Copy-evidence verdict of a variant's samples (harness.judge.verdict.copy_verdict)."""

    verdict: str = ""
    rule: str = ""
    evidence: CopyEvidence = field(default_factory=CopyEvidence)


@dataclass
class RuleCheck:
    """One quantity a verdict rule compares with a bound, and how near the bound it came."""

    name: str = ""  # e.g. "ratio_growth"
    value: float = 0.0
    bound: float = 0.0
    bad_when_high: bool = True  # the rule fires at or above the bound (False: below it)
    fired: bool = False
    band: float = 0.0  # within this distance of the bound the check is near it (harness.judge.verdict)
    borderline: bool = False  # near the bound, and the other side would have given another verdict
    text: str = ""  # e.g. "ratio growth 1.50 against 1.5"


@dataclass
class LossAnalysis:
    """The numbers behind a loss-based verdict (harness.judge.verdict.loss_verdict)."""

    verdict: str
    rule: str
    heldout_min: float
    heldout_min_step: int
    final_train_loss: float
    final_heldout_loss: float
    final_gap: float  # held-out minus train, at the last point
    final_ratio: float  # held-out over train, at the last point
    initial_ratio: float
    train_drop: float  # relative fall of train loss from step 0
    onset_step: int | None  # first step held-out loss is RISE above its running minimum while train keeps falling
    checks: list[RuleCheck] = field(default_factory=list)  # each bound of the rule and the value measured


@dataclass
class Verdict:
    """The final memorization verdict, combining the loss and copy verdicts."""

    verdict: str = ""
    rule: str = ""
    loss_verdict: str = ""
    copy_verdict: str = ""
    # The checks behind the verdict that sat near their bound with the verdict depending on them
    # ("ratio growth 1.50 against 1.5"); empty when the verdict was decided with room to spare.
    borderline: list[str] = field(default_factory=list)


@dataclass
class LossCurves:
    """Train (eval mode, fixed probe) and held-out loss at the same optimizer steps."""

    steps: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    heldout_loss: list[float] = field(default_factory=list)
    running_train_loss: list[list[float]] = field(default_factory=list)  # [step, trainer's logged loss]


@dataclass
class TrainStats:
    """Cost of training one variant."""

    seconds: float = 0.0
    steps: int = 0
    epochs: float = 0.0
    tokens: int = 0  # real (non-padding) tokens seen by the optimizer
    tokens_per_s: float = 0.0
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""  # "cuda_max_reserved" or "cpu_max_rss"
    trainable_parameters: int = 0
    eval_seconds: float = 0.0  # time spent measuring the loss curves, excluded from tokens_per_s
    plan: str = "seed"  # train.plan that ran: "seed" (TRL SFTTrainer) or "fast" (harness.train.fast.plan)
    plan_reason: str = ""  # how the plan executed and why, e.g. "CUDA graphs over 512-token buckets; ..."
    warmup_seconds: float = 0.0  # the fast plan's warm-up and graph captures (inside seconds, before the steps)
    # The fast plan's engine: "solo" (harness.train.fast.plan) or "multi-adapter, K=8" (harness.train.multi.plan: this
    # variant trained with 7 others in the same kernels, seconds and peak memory shared); "" for the seed plan.
    engine: str = ""
    kept: str = "last"  # train.keep: which adapter was saved, sampled and judged (harness.train.keep)
    kept_step: int | None = None  # the step of that adapter (with "best": the held-out minimum among the probes)
    stopped_at: int | None = None  # the probe step where train.stop_on ended training, else None
    steps_planned: int = 0  # the optimizer steps the config asked for
    steps_saved: int = 0  # planned steps not run because training stopped


@dataclass
class GenerationStats:
    """How sampling went: count, time, speed, how many hit max_new_tokens, and the settings."""

    n: int = 0
    seconds: float = 0.0
    new_tokens: int = 0
    tokens_per_s: float = 0.0
    cut_off: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    dtype: str = ""
    sampler: str = ""  # for llama.cpp (GGUF) sampling, which draws sample i with seed + i
    decode: str = ""  # how each token's step ran, e.g. "CUDA graphs (Unsloth): ..." or "eager" (backend.decode_mode)
    shared_with: int = 1  # variants sampled in the same generate calls (harness.train.multi.plan): seconds are shared


@dataclass
class ExportRecord:
    """One exported format of a variant (harness.export), with its quality once scored."""

    format: str = ""
    path: str = ""
    bytes: int = 0
    tool: str = ""
    backend: str = ""
    export_s: float | None = None
    created: str = ""
    dtype: str = ""
    gguf_type: str = ""
    gguf_file: str = ""
    load_s: float | None = None
    generation: GenerationStats | None = None
    scores: Scores | None = None
    copy_analysis: CopyAnalysis | None = None  # the copy verdict of its samples against the run's human reference
    samples_file: str = ""


@dataclass
class BenchPoint:
    """One backend at one benchmark point (harness.gpu.bench.summarize_point)."""

    backend: str = ""
    workload: str = ""
    batch_size: int = 0
    seq_len: int = 0
    grad_accum: int = 1
    optim: str = ""
    label: str = ""
    status: str = ""  # ok | oom | error
    error: str = ""
    median_step_s: float | None = None
    step_s_iqr: float | None = None
    median_compute_s: float | None = None
    step_s: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    setup_s: float | None = None
    load_s: float | None = None
    tokens_per_s: float | None = None
    real_tokens_per_step: float | None = None
    padding_fraction: float | None = None
    flops_per_token: float | None = None
    mfu: float | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    losses: list[float] = field(default_factory=list)
    batch_fingerprint: str = ""
    padding_free: bool = False
    max_grad_norm: float | None = None


@dataclass
class BenchResult:
    """A benchmark run: card, measured matmul peak, points per backend, loss parity, worker details."""

    card: str = ""
    card_info: dict[str, Any] = field(default_factory=dict)
    matmul_tflops: float | None = None
    matmul_note: str = ""
    points: list[BenchPoint] = field(default_factory=list)
    extra_points: list[BenchPoint] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    bare_loop: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Timing:
    """Where one variant's wall time went, in the process that ran it (harness.train.job)."""

    pid: int = 0  # the process: variants of one process ran one after another
    spawned_at: float = 0.0  # epoch seconds its process started (0: not started by the local executor)
    # Wall seconds per phase, in order: start (interpreter and imports, a process's first variant only),
    # load (backend import and model load; 0 when the model was kept from the variant before), train (warm-up,
    # probes, steps), save, generate, judge.
    phases: dict[str, float] = field(default_factory=dict)
    # Phases spent once for several variants together (the multi-adapter engine's train and generate): each
    # of them shows the same seconds, so summing them over variants counts that time more than once.
    shared: list[str] = field(default_factory=list)


@dataclass
class VariantResult:
    """Everything measured for one named variant."""

    name: str
    status: str = "running"  # running | done | failed
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    backend: str = ""
    backend_note: str = ""  # e.g. "Unsloth CPU fallback (transformers + PEFT underneath)"
    device: str = ""
    curves: LossCurves = field(default_factory=LossCurves)
    loss_analysis: LossAnalysis | None = None
    train: TrainStats = field(default_factory=TrainStats)
    generation: GenerationStats = field(default_factory=GenerationStats)
    scores: Scores = field(default_factory=Scores)
    copy_analysis: CopyAnalysis | None = None
    verdict: Verdict | None = None
    samples_file: str = ""
    adapter_dir: str = ""
    exports: dict[str, ExportRecord] = field(default_factory=dict)
    error: str = ""
    timing: Timing = field(default_factory=Timing)
    seed_group: str = ""  # the variant this is a seed replicate of (train.seeds > 1), else ""
    judge_version: int = 1  # harness.judge.verdict.JUDGE_VERSION that judged the samples (1: before it was recorded)
    data_hash: str = ""  # harness.data.Dataset.hash() of the data it trained and was judged on ("": not recorded)


@dataclass
class Spread:
    """One number across a variant's seed replicates: mean, sample standard deviation, range, each value."""

    mean: float | None = None
    sd: float | None = None  # ddof=1; None with fewer than two values
    min: float | None = None
    max: float | None = None
    n: int = 0
    higher_is_better: bool = True
    values: list[float] = field(default_factory=list)  # in replicate order


@dataclass
class SeedSummary:
    """A variant run over several seeds (train.seeds): its verdicts as a distribution, its metrics' spread."""

    variant: str = ""
    replicates: list[str] = field(default_factory=list)  # variant names, replicate 0 first
    seeds: list[list[int]] = field(default_factory=list)  # [train.seed, generate.seed] per replicate
    verdicts: dict[str, int] = field(default_factory=dict)  # final verdict -> replicates, finished ones only
    verdict: str = ""  # the most frequent verdict (a tie goes to the worse tier)
    agreement: str = ""  # "4/5": replicates with that verdict / finished replicates
    borderline: int = 0  # replicates whose verdict sat within a rule's borderline band
    metrics: dict[str, Spread] = field(default_factory=dict)


@dataclass
class RunResult:
    """One run of `asciitune run` (or train / bench): config, environment, data, variants."""

    run_id: str
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    command: str = ""
    config_source: str = ""
    base_config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    environment: dict[str, Any] = field(default_factory=dict)  # versions, device, machine, git commit
    data: dict[str, Any] = field(default_factory=dict)  # harness.data.Dataset.summary()
    human_reference: Scores = field(default_factory=Scores)  # held-out human pieces scored like samples
    variants: dict[str, VariantResult] = field(default_factory=dict)
    bench: BenchResult | None = None  # when a benchmark ran
    seeds: dict[str, SeedSummary] = field(default_factory=dict)  # per variant run over several seeds

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return to_jsonable(self)

    def save(self, run_dir: str | Path) -> Path:
        """Atomically (re)write results.json in run_dir."""
        return atomic_write_json(Path(run_dir) / RESULTS_FILE, self.to_dict())


@cache
def _adapter(cls: type):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def to_jsonable(obj: Any) -> Any:
    """Any result block (dataclass tree) as plain JSON types."""
    return _adapter(type(obj)).dump_python(obj, mode="json")


def build(cls: type, data: Any) -> Any:
    """A result block of type cls from plain data; a damaged file ends in one sentence."""
    from pydantic import ValidationError

    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"Results field '{where}' is malformed ({first['msg']}): the file is damaged; re-run or "
                        "restore it.") from None


def new_run_id(cfg_hash: str) -> str:
    """Sortable, unique-enough id: UTC time plus the config hash."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + f"-{cfg_hash[:6]}"


def from_dict(data: dict) -> RunResult:
    """Rebuild typed results from a dict, refusing other schema versions."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(f"These results use schema version {version}, but this asciitune reads version "
                        f"{SCHEMA_VERSION}: re-run them with this asciitune, or read them with the asciitune "
                        "version that wrote them.")
    return build(RunResult, data)


def resolve_run_dir(run: str | Path, reports_dir: str | Path = "reports") -> Path:
    """Accept a run folder, its results.json, or a bare run id under reports/runs."""
    p = Path(run)
    if p.is_file() and p.name == RESULTS_FILE:
        return p.parent
    if (p / RESULTS_FILE).is_file():
        return p
    candidate = Path(reports_dir) / RUNS_DIR / str(run)
    if (candidate / RESULTS_FILE).is_file():
        return candidate
    raise UserError(f"Run '{run}' not found: pass a run folder (with results.json) or a run id under "
                    f"{Path(reports_dir) / RUNS_DIR}.")


def load(run: str | Path, reports_dir: str | Path = "reports") -> RunResult:
    """Load a run's results.json (folder, file, or run id)."""
    path = resolve_run_dir(run, reports_dir) / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"Could not read {path} ({exc}): it is damaged; re-run or restore it.") from None
    return from_dict(data)


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Rows as JSON Lines (UTF-8, art kept as is), atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_samples(run_dir: str | Path, variant: VariantResult) -> list[dict]:
    """The stored samples of a variant (one JSON object per line), or [] if none."""
    if not variant.samples_file:
        return []
    path = Path(run_dir) / variant.samples_file
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
