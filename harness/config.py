"""The frozen config tree: defaults here, a TOML file on top, `section.key=value` overrides last.

A config file may also name variants (``[variants.NAME]`` tables of overrides) and a grid
(``[sweep]`` with a list of values per key); :func:`expand_variants` turns both into named
:class:`RunConfig` objects. Unknown sections or keys fail loudly with the list of known ones; a value out
of its range (:data:`RANGES`) fails in one sentence before anything runs, on every path (CLI, config
file, job file, saved config).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fsutil import sha256_json

SEED_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelConfig:
    """Which base model and backend, and how to load it."""

    name: str = "smollm2-135m"  # registry name, hub id, local folder, or random:<name-or-folder>
    backend: str = "peft"  # "unsloth" or "peft"; one per process
    max_seq_length: int = 2048
    dtype: str = "auto"  # auto = bf16 on a GPU that supports it, float32 on CPU
    load_in_4bit: bool = False


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings; the defaults are the seed notebook's."""

    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    bias: str = "none"
    target_modules: tuple[str, ...] = SEED_TARGET_MODULES
    use_rslora: bool = False
    random_state: int = 3407
    gradient_checkpointing: str = "unsloth"  # "unsloth" (offloaded, unsloth only), "true" or "false"


@dataclass(frozen=True)
class DataConfig:
    """Where the pieces come from and how they are split."""

    source: str = "cats"  # "cats" (built in), a folder of .txt, a .jsonl/.csv/.parquet, or a saved datasets folder
    text_column: str = ""  # empty = "text" or "ascii", whichever exists
    heldout_fraction: float = 0.15
    near_duplicate_similarity: float = 0.85  # pieces at least this similar are one drawing (near duplicates), grouped
    # False: near duplicates of training pieces are trained on (the same cat with another face is real training
    # data); True: only the first of each is, the rest are left out (copy checks still look at them)
    drop_near_duplicates: bool = False
    variant_similarity: float = 0.6  # pieces at least this similar are grouped: a group never straddles the split
    split_manifest: str = ""  # frozen split to honour; empty = data/splits/<source>.json when source is "cats"
    # 0 = all; N trains on N of the training pieces (quick runs, tests), chosen by a salted hash of their content
    # (harness.data.subset_rank): spread over the source like the held-out set, not its first N, and stable as
    # pieces are added
    max_train_pieces: int = 0
    max_piece_chars: int = 0  # 0 = all; else pieces longer than this many characters are left out (and counted)
    # False: a run refuses a split whose held-out share misses heldout_fraction by more than the tolerance
    # (harness.data.SPLIT_TOLERANCE; too few pieces, or groups too large); True: it trains on that split anyway
    allow_uneven_split: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults follow the seed notebook."""

    batch_size: int = 2
    grad_accum: int = 4
    epochs: float = 5.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 2e-4
    scheduler: str = "linear"
    warmup_steps: int = 5
    weight_decay: float = 0.01
    seed: int = 3407
    optim: str = "auto"  # auto = adamw_8bit on GPU, adamw_torch on CPU
    eval_points: int = 8  # times train and held-out loss are measured (plus step 0)
    eval_heldout_pieces: int = 0  # held-out pieces in the held-out probe; 0 = all
    eval_train_pieces: int = 0  # training pieces in the train-loss probe; 0 = as many as the held-out probe
    eval_batch_tokens: int = 2048  # padded tokens per probe batch (bounds the logits' memory)
    report_to: str = "none"  # TRL trackers, comma-separated: "tensorboard" (offline: <run>/tensorboard), "wandb"
    # How optimizer steps execute: "seed" = TRL's SFTTrainer as the seed notebook; "fast" = the same step math as
    # one packed micro-batch per step, fused AdamW, CUDA graphs on a GPU (harness.train.fast.plan).
    plan: str = "seed"
    # Seeds each variant runs over: N > 1 trains and samples it N times, replicate k with train.seed + k and
    # generate.seed + k (data order, sampling; lora.random_state stays), named NAME, NAME@s1 ... NAME@s<N-1>;
    # results and reports give each variant's verdict distribution and metric spread (harness.judge.seeds).
    seeds: int = 1
    # Which adapter a variant saves, samples, judges and exports (harness.train.keep): "best", the one at the held-out
    # loss minimum among the probe points (the default: after it a variant only memorizes), or "last".
    keep: str = "best"
    # "memorizing": end training at the first probe where the loss rule says memorizing (keeping the best adapter);
    # "never": train every planned step.
    stop_on: str = "never"


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling settings for generated art."""

    n_samples: int = 8
    batch_size: int = 8
    max_new_tokens: int = 320
    temperature: float = 0.8  # below 1 keeps art coherent; 1.0 drifts into noise on small models
    top_p: float = 0.95
    min_p: float = 0.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # ASCII art repeats characters on purpose: leave at 1.0
    seed: int = 3407
    prompt: str = "\n"  # the training texts start with "\n"; a tokenizer without BOS needs a start token


@dataclass(frozen=True)
class BenchConfig:
    """GPU benchmark grid (see harness.gpu.bench)."""

    batch_sizes: tuple[int, ...] = (2, 8)
    seq_lens: tuple[int, ...] = (512, 1024)
    steps: int = 15
    warmup_steps: int = 3
    loss_steps: int = 10  # per-step losses kept for the parity check


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one variant's training and evaluation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, tuples as lists (JSON/TOML friendly)."""
        return _listify(dataclasses.asdict(self))

    def hash(self) -> str:
        """Short content hash of what trains a variant: not `bench` (only the benchmark reads it), where the
        training is reported (`train.report_to`), `train.seeds` or `data.allow_uneven_split`, so changing one
        never makes `--resume` retrain a variant."""
        d = {k: v for k, v in self.to_dict().items() if k != "bench"}
        # seeds: how many replicates the plan makes, not how one trains (each replicate's own seeds are in train
        # and generate), so a run resumed with more seeds keeps the replicates it has
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("report_to", "seeds")}
        # data.allow_uneven_split only decides whether a run may start on an uneven split, never what it trains on
        d["data"] = {k: v for k, v in d["data"].items() if k != "allow_uneven_split"}
        return sha256_json(d)[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from nested tables (a saved config, a job file); unknown keys and bad values fail as everywhere."""
        return check(apply_overrides(cls(), flatten(data)))


SECTIONS = {f.name: f.type for f in fields(RunConfig)}

# transformers' SchedulerType and OptimizerNames values (5.17), copied so that checking a config never imports
# torch (5 s); tests/test_config.py fails when the installed transformers differs.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor", "adamw_anyprecision",
    "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit", "adamw_8bit",
    "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
    "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise",
    "stable_adamw")
NON_EMPTY = "non-empty"
SEED = "[0, 4294967296)"  # numpy's seed range, which transformers' set_seed passes the seed to

# Every key with a natural range, in one table, written as the error states it: ">= 1", "> 0", an interval
# "[0, 1)", NON_EMPTY, or the tuple of allowed names. A list's range applies to each item. apply_overrides
# checks every value it sets; check() checks whole configs and the one rule across keys (epochs or max_steps).
RANGES: dict[str, str | tuple[str, ...]] = {
    "model.name": NON_EMPTY, "model.backend": ("unsloth", "peft"), "model.max_seq_length": ">= 16",
    "model.dtype": ("auto", "bfloat16", "float16", "float32"),
    "lora.r": ">= 1", "lora.alpha": "> 0", "lora.dropout": "[0, 1)", "lora.bias": ("none", "all", "lora_only"),
    "lora.target_modules": NON_EMPTY, "lora.random_state": SEED,
    "lora.gradient_checkpointing": ("unsloth", "true", "false"),
    "data.source": NON_EMPTY, "data.heldout_fraction": "(0, 1)", "data.near_duplicate_similarity": "(0, 1]",
    "data.variant_similarity": "(0, 1]", "data.max_train_pieces": ">= 0", "data.max_piece_chars": ">= 0",
    "train.batch_size": ">= 1", "train.grad_accum": ">= 1",
    "train.epochs": ">= 0", "train.max_steps": ">= -1",  # -1 or 0: epochs decide; one of the two must be > 0
    "train.lr": "> 0", "train.scheduler": SCHEDULERS, "train.warmup_steps": ">= 0", "train.weight_decay": ">= 0",
    "train.seed": SEED, "train.optim": ("auto", *OPTIMIZERS), "train.eval_points": ">= 1",
    "train.eval_heldout_pieces": ">= 0", "train.eval_train_pieces": ">= 0", "train.eval_batch_tokens": ">= 1",
    "train.plan": ("seed", "fast"), "train.seeds": ">= 1", "train.keep": ("best", "last"),
    "train.stop_on": ("never", "memorizing"),
    "generate.n_samples": ">= 1", "generate.batch_size": ">= 1", "generate.max_new_tokens": ">= 1",
    "generate.temperature": "> 0", "generate.top_p": "(0, 1]", "generate.min_p": "[0, 1)", "generate.top_k": ">= 0",
    "generate.repetition_penalty": "> 0", "generate.seed": SEED,
    # as harness.gpu.bench.plan_points needs them
    "bench.batch_sizes": ">= 1", "bench.seq_lens": ">= 1", "bench.steps": ">= 1", "bench.warmup_steps": ">= 0",
    "bench.loss_steps": ">= 1",
}


def in_range(allowed: str | tuple[str, ...], value: Any) -> bool:
    """Whether value (already of its field's type) lies in a RANGES entry; a list needs every item in it."""
    if isinstance(allowed, tuple):
        return value in allowed
    if allowed == NON_EMPTY:
        return len(value) > 0
    if isinstance(value, tuple):
        return all(in_range(allowed, v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if allowed.startswith(">"):
        op, bound = allowed.split()
        return value > float(bound) if op == ">" else value >= float(bound)
    low, high = (float(b) for b in allowed[1:-1].split(","))
    low_ok = value > low if allowed[0] == "(" else value >= low
    high_ok = value < high if allowed[-1] == ")" else value <= high
    return low_ok and high_ok


def _describe(allowed: str | tuple[str, ...], value: Any) -> str:
    if isinstance(allowed, tuple):
        return "one of " + ", ".join(allowed)
    if allowed == NON_EMPTY:
        return "non-empty"
    prefix = "a list of values " if isinstance(value, tuple) else ""
    return prefix + (allowed if allowed.startswith(">") else f"in {allowed}")


def _show(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _check_value(where: str, value: Any) -> None:
    allowed = RANGES.get(where)
    if allowed is not None and not in_range(allowed, value):
        raise UserError(f"Config key '{where}' cannot be {_show(value)}: it must be {_describe(allowed, value)}.")


def check(cfg: RunConfig) -> RunConfig:
    """Raise UserError (one sentence) unless every value of cfg is in range; return cfg."""
    for where in RANGES:
        section, key = where.split(".")
        _check_value(where, getattr(getattr(cfg, section), key))
    t = cfg.train
    if t.epochs <= 0 and t.max_steps <= 0:
        raise UserError(f"Config keys train.epochs={t.epochs:g} and train.max_steps={t.max_steps} train nothing: "
                        "set train.epochs > 0 or train.max_steps > 0.")
    return cfg


def _listify(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _listify(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_listify(v) for v in obj]
    return obj


def _section_class(section: str) -> type:
    return {"model": ModelConfig, "lora": LoraSettings, "data": DataConfig, "train": TrainConfig,
            "generate": GenerateConfig, "bench": BenchConfig}[section]


def _coerce(section: str, key: str, value: Any) -> Any:
    """Check a value against the field's default type and convert ints to floats, lists to tuples."""
    cls = _section_class(section)
    default = getattr(cls(), key)
    where = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"Config key '{where}' must be true or false, not {value!r}.")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"Config key '{where}' must be a list, not {value!r}.")
        kind = type(default[0]) if default else str
        try:
            return tuple(kind(v) for v in value)
        except (TypeError, ValueError):
            raise UserError(f"Config key '{where}' must be a list of {kind.__name__}, not {value!r}.") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, str) and isinstance(value, bool) and {"true", "false"} <= set(RANGES.get(where, ())):
        # A switch such as lora.gradient_checkpointing: users type `=false`, which TOML reads as a boolean.
        return "true" if value else "false"
    if type(value) is not type(default):
        kind = {"int": "an integer", "float": "a number", "str": "a string"}.get(type(default).__name__)
        raise UserError(f"Config key '{where}' must be {kind}, not {value!r}.")
    return value


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return cfg with dotted-key overrides applied; unknown keys raise UserError."""
    by_section: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise UserError(f"Unknown config key '{dotted}': use section.key with a section from "
                            f"{', '.join(SECTIONS)}.")
        known = [f.name for f in fields(_section_class(section))]
        if key not in known:
            raise UserError(f"Unknown config key '{dotted}': [{section}] has {', '.join(known)}.")
        value = _coerce(section, key, value)
        _check_value(dotted, value)
        by_section.setdefault(section, {})[key] = value
    return replace(cfg, **{s: replace(getattr(cfg, s), **kv) for s, kv in by_section.items()})


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one command-line `section.key=value`; the value is read as TOML, else as a plain string."""
    if "=" not in text:
        raise UserError(f"Malformed override '{text}': write it as section.key=value, e.g. lora.r=8.")
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys: {"lora": {"r": 8}} -> {"lora.r": 8}."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


SEED_MARK = "@s"  # replicate k > 0 of variant NAME is NAME@s<k>


@dataclass(frozen=True)
class Plan:
    """A base config plus the named variants a run trains (seed replicates included, see TrainConfig.seeds)."""

    base: RunConfig
    variants: dict[str, RunConfig]
    source: str  # where the config came from, for the results file
    seed_groups: dict[str, str] = field(default_factory=dict)  # replicate name -> its variant (train.seeds > 1)

    def only(self, names: list[str]) -> Plan:
        """The same plan restricted to the named variants, with their seed replicates (in the config's order)."""
        keep = {k: v for k, v in self.variants.items() if k in names or self.seed_groups.get(k) in names}
        return Plan(self.base, keep, self.source, {k: g for k, g in self.seed_groups.items() if k in keep})


def replicate(variants: dict[str, RunConfig]) -> tuple[dict[str, RunConfig], dict[str, str]]:
    """Each variant with train.seeds = N > 1 as N replicates (TrainConfig.seeds), and replicate -> variant."""
    out: dict[str, RunConfig] = {}
    groups: dict[str, str] = {}
    for name, cfg in variants.items():
        n = cfg.train.seeds
        if n == 1:
            out[name] = cfg
            continue
        for k in range(n):
            rep = name if k == 0 else f"{name}{SEED_MARK}{k}"
            if k and rep in variants:
                raise UserError(f"Variant '{rep}' clashes with seed replicate {k} of '{name}': rename it.")
            out[rep] = replace(cfg, train=replace(cfg.train, seed=(cfg.train.seed + k) % 2**32),
                               generate=replace(cfg.generate, seed=(cfg.generate.seed + k) % 2**32))
            groups[rep] = name
    return out, groups


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped in harness/configs."""
    return Path(str(resources.files("harness") / "configs" / f"{name}.toml"))


def load_plan(path: str | None = None, overrides: list[str] | None = None, on_gpu: bool = False) -> Plan:
    """Read a TOML config (a built-in name or a path), apply CLI overrides, expand variants and sweeps.

    An ``[on_gpu]`` table of overrides applies only when on_gpu is true, so one config can be
    sized for a CPU demo and still run the full workflow on a GPU.
    """
    path = path or "default"
    file = Path(path)
    if not file.suffix and not file.exists():
        file = builtin_config_path(path)
    if not file.is_file():
        raise UserError(f"Config '{path}' not found: pass a .toml file or one of the built-in names "
                        f"({', '.join(sorted(p.stem for p in builtin_config_path('default').parent.glob('*.toml')))}).")
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"Config '{file}' is not valid TOML ({exc}).") from None
    variants_tbl = doc.pop("variants", {})
    sweep_tbl = doc.pop("sweep", {})
    gpu_tbl = flatten(doc.pop("on_gpu", {}))
    for section in doc:
        if section not in SECTIONS:
            raise UserError(f"Unknown config section [{section}] in {file}: known are "
                            f"{', '.join([*SECTIONS, 'variants', 'sweep', 'on_gpu'])}.")
    cli = dict(parse_override(o) for o in overrides or [])
    base = apply_overrides(RunConfig(), flatten(doc))
    gpu_checked = apply_overrides(base, gpu_tbl)  # validate the keys even where no GPU is present
    if on_gpu:
        base = gpu_checked
    variants = expand_variants(base, variants_tbl, sweep_tbl)
    # CLI overrides win over everything the file says, variants included.
    variants = {n: check(apply_overrides(v, cli)) for n, v in variants.items()}
    variants, groups = replicate(variants)
    return Plan(base=check(apply_overrides(base, cli)), variants=variants, source=str(file), seed_groups=groups)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("/", "_").replace(" ", "")


def expand_variants(base: RunConfig, variants: dict[str, Any], sweep: dict[str, Any]) -> dict[str, RunConfig]:
    """Named variants from [variants.*] and the cross product of [sweep]; with neither, one 'base' variant."""
    named: dict[str, dict[str, Any]] = {n: flatten(t) for n, t in variants.items()}
    grid = flatten(sweep)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"Sweep key '{key}' must be a non-empty list of values.")
    if grid:
        keys = list(grid)
        parents = named or {"": {}}
        combined: dict[str, dict[str, Any]] = {}
        for pname, pover in parents.items():
            for combo in itertools.product(*(grid[k] for k in keys)):
                label = "-".join(f"{k.split('.')[-1]}{_fmt(v)}" for k, v in zip(keys, combo))
                combined[f"{pname}-{label}" if pname else label] = {**pover, **dict(zip(keys, combo))}
        named = combined
    if not named:
        named = {"base": {}}
    return {name: apply_overrides(base, over) for name, over in named.items()}
