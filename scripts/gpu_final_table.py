"""The short table scripts/gpu_final_call.sh prints last, from what it wrote to OUT.

    python3 scripts/gpu_final_table.py $OUT 1
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

GIB = 2 ** 30


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last(path: Path, word: str) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return next((x for x in reversed(lines) if word in x), f"no '{word}' line in {path.name}")


def main(out: Path, part: str) -> None:
    """One line per measured item."""
    print(f"tests: {_last(out / f'gpu-tests-part{part}.log', ' in ')}")
    child = _read(out / "multi-unsloth.json")
    if child.get("decode_graphs"):
        d = child["decode_graphs"]
        print(f"  batched decode: graphs '{d['graphs'][:60]}', eager '{d['eager'][:40]}', same tokens "
              f"{d['same_tokens']}, seconds {d.get('seconds')}")
    mem = _read(out / "multi-memory.json")
    for k, rec in (mem.get("ks") or {}).items():
        peaks = [rec.get(p, {}).get("peak_reserved", 0) for p in ("after_warmup", "after_steps", "after_probe")]
        peaks += [s["after"].get("peak_reserved", 0) for s in (rec.get("sampling") or {}).values()]
        samp = {m: s["seconds"] for m, s in (rec.get("sampling") or {}).items()}
        print(f"  memory K={k}: peak reserved {max(peaks + [0]) / GIB:.1f} GiB (train {max(peaks[:3]) / GIB:.1f}), "
              f"warm-up {rec.get('warmup_s')} s, {rec.get('steps')} steps {rec.get('steps_s')} s, sampling {samp} "
              f"{rec.get('error', '')}")
    doc = _read(out / f"bench-part{part}.json")
    print(f"card: {doc.get('card')}")
    for a in doc.get("arms", []):
        print(f"  arm {a['name']}: {a['status']}, {a.get('train_seconds')} s of steps, warm-up "
              f"{a.get('warmup_seconds')} s, peak {round((a.get('peak_reserved_bytes') or 0) / GIB, 2)} GiB")
    for key in ("sweep", "sweep_32"):
        s = doc.get(key)
        if s:
            print(f"  {key}: {s['counts']} of {s['variants']} in {s['wall_seconds']} s ({s['status']}); plan: "
                  f"{s.get('memory_plan')}; device peak "
                  f"{ {g: round(b / GIB, 1) for g, b in (s.get('device_memory_peak_bytes') or {}).items()} } GiB")
            for p in s.get("processes", []):
                print(f"    process {p['pid']}: {len(p['variants'])} variants, "
                      + ", ".join(f"{k} {v:.1f}" for k, v in p["phases"].items()))
            if s.get("parity"):
                print(f"    parity vs solo: max {s['parity_max_rel_diff']}, ok {s['parity_ok']}")
    solo = (doc.get("sweep_solo") or {}).get("parity")
    if solo:
        print(f"  sweep-solo rerun spread max {solo.get('max_rerun_spread')}")
    for name, t in (doc.get("targets") or {}).items():
        if t.get("met") is not None:
            print(f"  target {name}: {t['value']} (bound {t['bound']}): {t['met']}")
    for s in doc.get("skipped", []):
        print(f"  skipped {s}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "1")
