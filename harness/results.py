"""The results schema: one `results.json` per run, written atomically after every variant.

Pure (no torch): reports and comparisons load results produced anywhere. A run folder is
`reports/runs/<run-id>/` with `results.json`, one `samples-<variant>.jsonl` per variant and,
once reported, `index.html`, `report.md` and PNG plots.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fsutil import atomic_write_json

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


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


@dataclass
class VariantResult:
    """Everything measured for one named variant."""

    name: str
    status: str = "running"  # running | done | failed
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    backend: str = ""
    backend_note: str = ""  # e.g. "Unsloth CPU fallback (transformers + PEFT underneath)"
    device: str = ""
    curves: LossCurves = field(default_factory=LossCurves)
    loss_analysis: dict = field(default_factory=dict)  # harness.memorization.LossAnalysis.to_dict()
    train: TrainStats = field(default_factory=TrainStats)
    generation: dict = field(default_factory=dict)  # n, tokens_per_s, cut_off, seconds, settings
    scores: dict = field(default_factory=dict)  # harness.score.score_pieces(...) minus per_sample
    copy_analysis: dict = field(default_factory=dict)  # harness.score.copy_verdict(...)
    verdict: dict = field(default_factory=dict)  # final memorization verdict, combining both
    samples_file: str = ""
    adapter_dir: str = ""
    exports: dict = field(default_factory=dict)  # format -> {path, bytes, load_s, scores}
    error: str = ""


@dataclass
class RunResult:
    """One run of `asciitune run` (or train / bench): config, environment, data, variants."""

    run_id: str
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    command: str = ""
    config_source: str = ""
    base_config: dict = field(default_factory=dict)
    config_hash: str = ""
    environment: dict = field(default_factory=dict)  # versions, device, machine, git commit
    data: dict = field(default_factory=dict)  # harness.data.Dataset.summary()
    human_reference: dict = field(default_factory=dict)  # held-out human pieces scored like samples
    variants: dict[str, VariantResult] = field(default_factory=dict)
    bench: dict = field(default_factory=dict)  # harness.bench results, when a benchmark ran

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    def save(self, run_dir: str | Path) -> Path:
        """Atomically (re)write results.json in run_dir."""
        return atomic_write_json(Path(run_dir) / RESULTS_FILE, self.to_dict())


def _build(cls, data: dict):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def from_dict(data: dict) -> RunResult:
    """Rebuild typed results from a dict, refusing other schema versions."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"Results use schema version {version}, this asciitune reads {SCHEMA_VERSION}: "
                        "re-run them with this version or use the matching asciitune.")
    run = _build(RunResult, data)
    run.variants = {name: variant_from_dict(v) for name, v in (data.get("variants") or {}).items()}
    return run


def variant_from_dict(data: dict) -> VariantResult:
    """Rebuild one typed variant result (as written to variants/<name>.json)."""
    vr = _build(VariantResult, data)
    vr.curves = _build(LossCurves, data.get("curves") or {})
    vr.train = _build(TrainStats, data.get("train") or {})
    return vr


def resolve_run_dir(run: str | Path, reports_dir: str | Path = "reports") -> Path:
    """Accept a run folder, its results.json, or a bare run id under reports/runs."""
    p = Path(run)
    if p.is_file() and p.name == RESULTS_FILE:
        return p.parent
    if (p / RESULTS_FILE).is_file():
        return p
    candidate = Path(reports_dir) / "runs" / str(run)
    if (candidate / RESULTS_FILE).is_file():
        return candidate
    raise UserError(f"Run '{run}' not found: pass a run folder (with results.json) or a run id under "
                    f"{Path(reports_dir) / 'runs'}.")


def load(run: str | Path, reports_dir: str | Path = "reports") -> RunResult:
    """Load a run's results.json (folder, file, or run id)."""
    path = resolve_run_dir(run, reports_dir) / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"Could not read {path} ({exc}): it is damaged; re-run or restore it.") from None
    return from_dict(data)


def read_samples(run_dir: str | Path, variant: VariantResult) -> list[dict]:
    """The stored samples of a variant (one JSON object per line), or [] if none."""
    if not variant.samples_file:
        return []
    path = Path(run_dir) / variant.samples_file
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
