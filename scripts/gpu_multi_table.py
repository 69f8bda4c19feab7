"""The short table a multi-adapter GPU call prints last (scripts/gpu_multi_call.sh), from what it wrote to OUT.

    python3 scripts/gpu_multi_table.py $OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(out: Path) -> None:
    """Print one line per measured item: tests, sweeps, parity, PEFT's fast arm."""
    rows = []
    tests = (out / "a-gpu-tests.log").read_text(errors="replace").strip().splitlines() if \
        (out / "a-gpu-tests.log").is_file() else []
    rows.append(("(a) gpu tests", next((x for x in reversed(tests) if " in " in x), "no log")))
    for backend in ("unsloth", "peft"):
        child = _read(out / f"multi-{backend}.json")
        if child:
            gen = [max(g["score_rel_diff_per_step"] or [float("nan")]) for g in child.get("generate", [])]
            rows.append((f"    multi vs solo, {backend} bf16", f"max rel diff per variant "
                         f"{[f'{x:.2e}' for x in child['max_rel_diff_per_variant']]}; generate scores "
                         f"{[f'{x:.1e}' for x in gen]}; multi {child['multi']['seconds']} s, "
                         f"solo {child['solo']['seconds']} s"))
    doc = _read(out / "seed-workload.json")
    sweep, solo, s32 = doc.get("sweep") or {}, doc.get("sweep_solo") or {}, doc.get("sweep_32") or {}
    for name, sw in (("(b) sweep", sweep), ("(c) sweep-32", s32)):
        if sw:
            phases = "; ".join(", ".join(f"{k} {v:.1f}" for k, v in p["phases"].items()) for p in sw["processes"])
            rows.append((name, f"{sw['done']}/{sw['variants']} done in {sw['wall_seconds']} s ({sw['status']}); "
                               f"phases s: {phases}"))
    if sweep.get("parity"):
        rows.append(("(b) parity vs solo", f"max {sweep['parity_max_rel_diff']:.3%} over "
                                           f"{len(sweep['parity'])} variants (bound 0.5%): "
                                           f"{'ok' if sweep['parity_ok'] else 'OVER'}"))
    if solo:
        rows.append(("(b) sweep-solo reference", f"{solo.get('status')} in {solo.get('wall_seconds')} s; steps s "
                                                 f"{sum((solo.get('sweep_train_seconds') or {}).values()):.1f}"))
    for arm in doc.get("arms", []):
        gib = (arm.get("peak_reserved_bytes") or 0) / 2 ** 30
        rows.append((f"(d) {arm['name']}", f"{arm['status']}: {arm['steps']}/{arm['steps_planned']} steps in "
                                           f"{arm['train_seconds']} s, warm-up {arm['warmup_seconds']} s, peak "
                                           f"{gib:.1f} GiB"))
    for skipped in doc.get("skipped", []):
        rows.append((f"    skipped {skipped['name']}", skipped["why"]))
    rows.append(("rc / setup", " | ".join(x.strip() for f in ("rc.txt", "setup.txt", "gpu.txt")
                                         if (out / f).is_file() for x in (out / f).read_text().splitlines())))
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
