"""The one-line-per-variant table printed at the end of a run (no torch)."""
from __future__ import annotations

from harness.results import RunResult


def _metric(scores: dict, name: str) -> str:
    m = (scores.get("metrics") or {}).get(name)
    if not m or m.get("value") is None:
        return "-"
    return f"{m['value']:.2f}"


def summary_rows(run: RunResult) -> list[dict[str, str]]:
    """One row per variant with the numbers people look at first."""
    rows = []
    for name, v in run.variants.items():
        c = v.curves
        la = v.loss_analysis or {}
        rows.append({
            "variant": name if v.status == "done" else f"{name} ({v.status})",
            "verdict": (v.verdict or {}).get("verdict") or la.get("verdict", "-"),
            "train loss": f"{c.train_loss[0]:.2f}->{c.train_loss[-1]:.2f}" if c.train_loss else "-",
            "held-out loss (min@step)": (f"{c.heldout_loss[0]:.2f}->{c.heldout_loss[-1]:.2f} "
                                         f"({la['heldout_min']:.2f}@{la['heldout_min_step']})") if la else "-",
            "width": _metric(v.scores, "width_consistency"), "novelty": _metric(v.scores, "novelty"),
            "valid": _metric(v.scores, "valid_rate"),
            "train s": f"{v.train.seconds:.0f}" if v.train.seconds else "-",
            "tok/s": f"{v.train.tokens_per_s:.0f}" if v.train.tokens_per_s else "-",
        })
    if run.human_reference:
        rows.append({"variant": "human reference", "verdict": "", "train loss": "", "held-out loss (min@step)": "",
                     "width": _metric(run.human_reference, "width_consistency"),
                     "novelty": _metric(run.human_reference, "novelty"),
                     "valid": _metric(run.human_reference, "valid_rate"), "train s": "", "tok/s": ""})
    return rows


def print_summary(run: RunResult, console) -> None:
    """Print the summary table with rich."""
    from rich.table import Table

    rows = summary_rows(run)
    if not rows:
        return
    backends = sorted({v.backend for v in run.variants.values() if v.backend})
    table = Table(title=f"run {run.run_id} ({', '.join(backends)} on {run.environment.get('device', '?')})")
    for col in rows[0]:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
