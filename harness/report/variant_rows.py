"""One row per variant across runs, each config key that varies among them its own column: a table pandas can pivot.

    asciitune runs --variants                       # one row per variant (a seed replicate its own row)
    asciitune runs --variants --csv > variants.csv  # pandas: pivot_table(index="train.lr", columns="lora.r", ...)

Pure (no torch). Verdicts and quality come from harness.judge.verdict, the onset step as the story says it
(harness.report.sweep.onset_of), the copy rate as `asciitune runs` gives it; nothing is re-derived here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.config import flatten
from harness.judge.verdict import final_verdict, quality
from harness.report.doc import fmt
from harness.report.runs import Column, Listing, cell_table, config_label, data_labels
from harness.report.sweep import fmt_value, onset_of, varying_keys
from harness.results import RunResult, VariantResult

SEED_KEYS = ("train.seed", "generate.seed")  # their own columns, train_seed and generate_seed


@dataclass
class VariantRow:
    """One variant of one run as flat columns (numbers stay numbers, None where unmeasured)."""

    run_id: str
    variant: str  # the configuration: the variant a seed replicate replicates, else the variant itself
    replicate: str  # the variant's own name: NAME, NAME@s1, ...
    train_seed: int | None
    generate_seed: int | None
    status: str  # done | failed | running
    verdict: str
    loss_verdict: str | None
    copy_verdict: str | None
    borderline: bool  # the verdict sat within a rule's seed band of its bound (harness.judge.verdict)
    quality: float | None
    valid_rate: float | None
    width_consistency: float | None
    novelty: float | None
    copy_rate: float | None  # the copy rule's: copies over valid samples, as `asciitune runs` gives it
    near_copy_rate: float | None  # the scored rate with an interval: exact or >= 0.85 similar, over valid samples
    heldout_min: float | None
    heldout_min_step: int | None
    final_heldout_loss: float | None
    onset_step: int | None  # where memorization began, for a variant whose loss curves say memorizing
    train_drop: float | None
    steps: int | None
    train_seconds: float | None
    config: str  # the run's config and its command line's overrides
    data: str
    path: str  # the run folder, relative to the reports folder
    keys: dict[str, Any] = field(default_factory=dict)  # each varying config key -> this variant's value


HEAD = ("run_id", "variant", "replicate", "train_seed", "generate_seed")  # the key columns follow these


def _seed(v: VariantResult, section: str) -> int | None:
    value = (v.config.get(section) or {}).get("seed")
    return value if isinstance(value, int) else None


def variant_row(run: RunResult, v: VariantResult, path: str, config: str, data: str,
                keys: list[str]) -> VariantRow:
    """One variant's row; keys: the config keys that get a column."""
    la, ca, sc = v.loss_analysis, v.copy_analysis, v.scores
    flat = flatten(v.config)
    return VariantRow(
        run_id=run.run_id, variant=v.seed_group or v.name, replicate=v.name, train_seed=_seed(v, "train"),
        generate_seed=_seed(v, "generate"), status=v.status, verdict=final_verdict(v),
        loss_verdict=v.verdict.loss_verdict if v.verdict and v.verdict.loss_verdict else (la.verdict if la else None),
        copy_verdict=ca.verdict if ca else None, borderline=bool(v.verdict and v.verdict.borderline),
        quality=quality(v), valid_rate=sc.value("valid_rate"), width_consistency=sc.value("width_consistency"),
        novelty=sc.value("novelty"), copy_rate=ca.evidence.copy_rate if ca else None,
        near_copy_rate=sc.value("near_copy_rate"), heldout_min=la.heldout_min if la else None,
        heldout_min_step=la.heldout_min_step if la else None,
        final_heldout_loss=la.final_heldout_loss if la else None, onset_step=onset_of(v),
        train_drop=la.train_drop if la else None, steps=v.train.steps or None, train_seconds=v.train.seconds or None,
        config=config, data=data, path=path, keys={k: flat.get(k) for k in keys})


def key_columns(listing: Listing) -> list[str]:
    """The config keys whose values differ among the listed variants (the seeds have columns of their own)."""
    configs = [flatten(v.config) for _, run in listing.runs for v in run.variants.values() if v.config]
    return [k for k in varying_keys(configs) if k not in SEED_KEYS]


def variant_rows(listing: Listing) -> tuple[list[str], list[VariantRow]]:
    """(the key columns, one row per variant of every run, in run order then the run's own order)."""
    keys = key_columns(listing)
    runs = {r.path: r for r in listing.rows()}
    labels = data_labels(list(runs.values()))
    return keys, [variant_row(run, v, path, config_label(runs[path]), labels[path], keys)
                  for path, run in listing.runs for v in run.variants.values()]


def variant_dicts(listing: Listing) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows as flat dicts): the head, each key as its own column ("train.lr"), then the outcomes."""
    keys, rows = variant_rows(listing)
    rest = [f.name for f in fields(VariantRow) if f.name not in HEAD and f.name != "keys"]
    out = []
    for r in rows:
        d = asdict(r)
        out.append({**{h: d[h] for h in HEAD}, **r.keys, **{n: d[n] for n in rest}})
    return [*HEAD, *keys, *rest], out


def csv_value(value: Any) -> Any:
    """A cell for CSV: a list or table as JSON, anything else as it is."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _onset(r: VariantRow, d: str) -> str:
    return fmt(r.onset_step)


def _key_column(key: str, header: str) -> Column:
    return Column(header, lambda r, d: fmt_value(r.keys.get(key)) if key in r.keys else "-", 85)


def variant_columns(listing: Listing, wide: bool = False) -> list[Column]:
    """The variants table's columns: who, each varying key, verdict and numbers (--wide: every one)."""
    keys = key_columns(listing)
    short = [k.split(".")[-1] for k in keys]
    cols = [Column("run", lambda r, d: r.run_id, 100, no_wrap=True),
            Column("variant", lambda r, d: r.replicate, 100, no_wrap=True),
            *(_key_column(k, s if short.count(s) == 1 else k) for k, s in zip(keys, short, strict=True)),
            Column("verdict", lambda r, d: r.verdict + (" (borderline)" if r.borderline else ""), 95),
            Column("quality", lambda r, d: fmt(r.quality), 40, number=lambda r: r.quality),
            Column("valid", lambda r, d: fmt(r.valid_rate), 60, number=lambda r: r.valid_rate),
            Column("novelty", lambda r, d: fmt(r.novelty), 50, number=lambda r: r.novelty),
            Column("copies", lambda r, d: fmt(r.copy_rate), 0, number=lambda r: r.copy_rate),
            Column("final held-out loss", lambda r, d: fmt(r.final_heldout_loss), 55,
                   number=lambda r: r.final_heldout_loss),
            Column("onset", _onset, 45),
            Column("train seed", lambda r, d: fmt(r.train_seed), 0),
            Column("data", lambda r, d: d, 0),
            Column("config", lambda r, d: r.config or "-", 0)]
    return [c for c in cols if c.keep > 0 or wide]


def variant_table(listing: Listing, columns: list[Column] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and the variants as text cells (every column by default)."""
    _, rows = variant_rows(listing)
    labels = {r.path: r.data for r in rows}
    return cell_table(rows, columns if columns is not None else variant_columns(listing, wide=True), labels)

