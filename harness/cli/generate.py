"""`asciitune generate`: draw art from a trained variant, an adapter folder, a merged model or a GGUF.

    asciitune generate RUN --variant learn                  # the run's adapter on its base model
    asciitune generate --adapter path/to/adapter --n-samples 3 --greedy
    asciitune generate --gguf reports/runs/RUN/exports/learn/gguf-q8_0/learn-q8_0.gguf --score
    asciitune generate --merged reports/runs/RUN/exports/learn/merged --out samples.jsonl

Settings start from the source's config (its `asciitune-config.json`, else the defaults) and
the flags override them; GGUF files are sampled by llama.cpp (llama-cpp-python) with the same
settings. --score rates the samples against the config's training pieces and held-out human
reference, as its run did, or with --train DATA against all of DATA, as `asciitune score` does.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from harness.cli.common import print_table
from harness.config import RunConfig, apply_overrides
from harness.errors import UserError
from harness.results import write_jsonl

_FLAGS = {"n_samples": int, "temperature": float, "top_p": float, "min_p": float, "top_k": int,
          "repetition_penalty": float, "seed": int, "max_new_tokens": int, "prompt": str}


def add_parser(subparsers) -> None:
    """Register the `generate` subcommand."""
    p = subparsers.add_parser("generate", help="sample art from a run, an adapter, a merged model or a GGUF",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="run folder or run id (with --variant)")
    p.add_argument("--variant", help="variant of RUN (default: its only trained one)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--adapter", type=Path, help="LoRA adapter folder (base model from its asciitune-config.json)")
    src.add_argument("--gguf", type=Path, help="GGUF file, sampled through llama.cpp")
    src.add_argument("--merged", type=Path, help="merged model folder (config.json + safetensors)")
    p.add_argument("--model", help="base model for --adapter when it has no asciitune-config.json")
    p.add_argument("--backend", choices=["unsloth", "peft"], help="backend for adapters (default: the config's)")
    for key, kind in _FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), type=kind, help=f"generate.{key} (default: the source's config)")
    p.add_argument("--greedy", action="store_true", help="temperature 0: the most likely token every step")
    p.add_argument("--out", type=Path, help="write samples (and per-sample scores) as JSONL here instead of printing")
    p.add_argument("--score", action="store_true", help="score the samples against the training pieces")
    p.add_argument("--train", metavar="DATA", help="data.source to score against (default: the config's, else cats)")
    p.set_defaults(func=run_generate)


def _source(args):
    """(format key, path to load, Source) for whichever input was named."""
    from harness.export import formats as export

    if args.run and (args.adapter or args.gguf or args.merged):
        raise UserError("Name one source: RUN (with --variant), --adapter, --gguf or --merged, not several.")
    if args.run:
        _, src = export.run_source(args.run, args.variant, args.reports_dir)
        return "unexported", src.adapter_dir, src
    if args.adapter:
        src = export.adapter_source(args.adapter, args.model)
        return "adapter", src.adapter_dir, src
    if args.gguf or args.merged:
        path = args.gguf or args.merged
        meta_file = (path.parent if args.gguf else path) / export.CONFIG_FILE
        if args.merged and not (path / "config.json").is_file():
            raise UserError(f"'{path}' is not a merged model folder (no config.json): pass the folder "
                            "`asciitune export --format merged` wrote.")
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        cfg = RunConfig.from_dict(meta.get("config") or {})
        name = meta.get("variant") or path.stem
        if args.gguf:
            from harness.export import llama as llama_tools
            llama_tools.check_gguf_file(path)
        return ("gguf:file" if args.gguf else "merged"), path, export.Source(path, cfg, name)
    raise UserError("Nothing to sample from: pass RUN --variant V, --adapter PATH, --gguf FILE or --merged PATH.")


def run_generate(args: argparse.Namespace) -> int:
    """Sample with the source's settings plus flags; print or write them, optionally with scores."""
    from harness.export.quality import sample_format

    fmt, path, src = _source(args)
    if args.greedy and args.temperature is not None:
        raise UserError("--greedy and --temperature both set how tokens are picked: give one of them.")
    # The flags go through the config's own checks (a temperature of 0 is refused there: --greedy says it)
    overrides = {f"generate.{k}": getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    gcfg = apply_overrides(src.cfg, overrides).generate
    if args.greedy:  # greedy decoding is a mode, not a temperature: generate_samples takes 0 to mean it
        gcfg = replace(gcfg, temperature=0.0)
    gcfg = replace(gcfg, batch_size=min(gcfg.batch_size, gcfg.n_samples))
    samples, stats, load_s = sample_format(fmt, path, src, gcfg, args.backend or src.cfg.model.backend)
    rows = [{"index": s.index, "text": s.text, "new_tokens": s.new_tokens, "cut_off": s.cut_off} for s in samples]
    if args.out:
        write_jsonl(args.out, _score(rows, src, args.train) if args.score else rows)
        print(f"wrote {len(rows)} samples to {args.out}")
    else:
        # Each sample under a header line that `asciitune score` reads back (harness.pieces.SAMPLE_HEADER), so this
        # output saved to a .txt file scores as the samples it shows; the scores follow under a marker line.
        for r in rows:
            end = "cut off" if r["cut_off"] else "eos"
            print(f"--- sample {r['index']} ({r['new_tokens']} tokens, {end}) ---\n{r['text']}\n")
        if args.score:
            print("--- scores ---")
            _score(rows, src, args.train)
    print(f"{fmt} from {path}: loaded in {load_s:.2f}s, {stats.new_tokens} tokens at {stats.tokens_per_s:.1f} tok/s",
          file=sys.stderr if not args.out else sys.stdout)  # status, not samples: stdout saved to a file stays samples
    return 0


def _score(rows: list[dict], src, train: str | None) -> list[dict]:
    """Score the samples (table and copy verdict printed); rows gain per-sample scores.

    Against the source config's data as its run did (training pieces, held-out human reference),
    or, with --train DATA, as `asciitune score` does (all of DATA is training).
    """
    from harness.cli.score import print_verdict, score_rows
    from harness.data import build_dataset, build_pool
    from harness.judge import reference
    from harness.judge.explain import explain
    from harness.judge.judge import judge

    if train:
        pool, groups = build_pool(replace(src.cfg.data, source=train), unit="drawing")
        ref, what = reference.external([p.text for p in pool], groups), f"all {len(pool)} pieces of '{train}'"
    else:
        ds = build_dataset(src.cfg.data)
        ref, what = reference.in_run(ds), f"the {len(ds.train)} training pieces of '{ds.name}'"
    judged = judge(ref, [r["text"] for r in rows], [r["cut_off"] for r in rows], meta=rows)
    print(f"scored against {what}")
    print_table(*score_rows({"samples": judged.scores, "human reference": ref.human}))
    if judged.copy is not None:
        print_verdict("copy verdict", explain(copy=judged.copy, rows=judged.rows))
    else:
        print("copy verdict: - (no human pieces to judge the samples against)")
    return [r.to_dict() for r in judged.rows]
