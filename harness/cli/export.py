"""`asciitune export`: save a trained variant as an adapter, a merged 16-bit model, or GGUF.

    asciitune export RUN --variant learn --format adapter
    asciitune export RUN --variant learn --format merged gguf:f16 gguf:q8_0 gguf:q4_k_m --score
    asciitune export RUN --variant learn --score      # re-score the exports already recorded

RUN is a run folder or a run id under reports/runs. Each format goes to
`<run>/exports/<variant>/<format>/` unless --out is given, and is recorded in the run's
results.json under the variant's `exports`. GGUF needs `asciitune llama-cpp install`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from harness.cli.common import print_table
from harness.errors import UserError
from harness.judge.explain import explain
from harness.report.doc import fmt_metric
from harness.results import ExportRecord


def add_parser(subparsers) -> None:
    """Register the `export` subcommand."""
    p = subparsers.add_parser("export", help="export a trained variant (adapter, merged, gguf[:TYPE])",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder or run id under reports/runs")
    p.add_argument("--variant", help="variant name (default: the run's only trained variant)")
    p.add_argument("--format", dest="formats", nargs="+", metavar="FORMAT", default=[],
                   help="adapter, merged, or gguf[:TYPE] with TYPE f32, f16, bf16, q8_0 (default) or a "
                        "llama.cpp quant such as q4_0, q4_k_m, q5_k_m, q6_k")
    p.add_argument("--out", type=Path, help="output folder (with several formats: one subfolder each)")
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16",
                   help="dtype of the merged model (default bfloat16)")
    p.add_argument("--backend", choices=["unsloth", "peft"], help="backend that loads and merges (default: the "
                                                                  "variant's; one per process)")
    p.add_argument("--score", action="store_true", help="sample and score each format and the unexported "
                                                        "model with the run's generate settings")
    p.add_argument("--n-samples", type=int, help="samples per format when scoring (default: the run's)")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("llama-cpp", help="install or check llama.cpp's GGUF tools (for export and generate)",
                              description="llama.cpp's converter and llama-cpp-python, from one pinned PyPI sdist: "
                                          "`install` needs PyPI and a C++ compiler (minutes on 2 cores).")
    p.add_argument("action", choices=["install", "status"])
    p.add_argument("--sdist", help="a downloaded llama_cpp_python-*.tar.gz instead of fetching it")
    p.add_argument("--converter-only", action="store_true", help="skip building the library (f16/bf16/q8_0 only)")
    p.set_defaults(func=cmd_llama_cpp)


def run_export(args: argparse.Namespace) -> int:
    """Export the requested formats, record them, and optionally score every format."""
    from harness.export import formats, quality

    run, src = formats.run_source(args.run, args.variant, args.reports_dir)
    fmts = list(dict.fromkeys(formats.parse_format(f) for f in args.formats))
    recorded = run.variants[src.variant].exports
    if not fmts and not args.score:
        raise UserError("Nothing to do: pass --format adapter|merged|gguf[:TYPE], or --score to re-score "
                        "the exports already recorded.")
    backend = args.backend or src.cfg.model.backend
    entries: dict[str, ExportRecord] = {}
    if fmts:
        exporter = formats.Exporter(src, backend, args.dtype)
        try:
            for fmt in fmts:
                out = formats.default_out(src, fmt)
                if args.out:
                    out = args.out if len(fmts) == 1 else args.out / formats.slug(fmt)
                print(f"exporting {src.variant} as {fmt} to {out}", flush=True)
                entry = exporter.export(fmt, out)
                formats.record(src.run_dir, src.variant, fmt, entry)
                entries[fmt] = entry
                print(f"  {entry.path}: {entry.bytes / 1e6:.1f} MB in {entry.export_s:.1f}s ({entry.tool})", flush=True)
        finally:
            exporter.close()
    if args.score:
        if not entries:
            entries = {f: replace(e, path=str(_abs(src.run_dir, e.path))) for f, e in recorded.items()
                       if f != quality.UNEXPORTED and e.path}
        for fmt, e in entries.items():
            if not Path(e.path).exists():
                raise UserError(f"The {fmt} export at {e.path} is gone: export it again.")
        gcfg = quality.with_samples(src.cfg.generate, args.n_samples)
        scored = quality.score_formats(src, entries, backend, gcfg)
        for fmt, entry in scored.items():
            formats.record(src.run_dir, src.variant, fmt, entry)
        print_table(*_table(scored))
        for line in verdict_lines(scored, src.run_dir):
            print(line)
    return 0


def verdict_lines(scored: dict[str, ExportRecord], run_dir: Path | None) -> list[str]:
    """Per scored format: why its copy verdict is what it is (harness.judge.explain), with the samples behind it."""
    lines = []
    for fmt, e in scored.items():
        if e.copy_analysis is None:
            continue
        rows: list[dict] = []
        paths = [Path(e.samples_file), _abs(run_dir or Path("."), e.samples_file)] if e.samples_file else []
        path = next((p for p in paths if p.is_file()), None)
        try:
            rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path else []
        except (OSError, ValueError):  # a damaged samples file: the clause is printed without its samples
            rows = []
        lines.append(f"{fmt}: {explain(copy=e.copy_analysis, rows=rows).text()}")
    return lines


def _abs(run_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else run_dir / p


def _table(scored: dict[str, ExportRecord]) -> tuple[list[str], list[list[str]]]:
    """Format, size, load time, sampling speed and the main art scores with 95% intervals."""
    rows = []
    for fmt, e in scored.items():
        m = e.scores.metrics
        rows.append([fmt, f"{e.bytes / 1e6:.1f}", f"{e.load_s:.2f}", f"{e.generation.tokens_per_s:.0f}",
                     fmt_metric(m["width_consistency"]), fmt_metric(m["novelty"]), fmt_metric(m["valid_rate"]),
                     str(e.scores.metrics["valid_rate"].n), e.copy_analysis.verdict if e.copy_analysis else "-"])
    return ["format", "MB", "load s", "tok/s", "width consistency", "novelty", "valid rate", "n", "verdict"], rows


def cmd_llama_cpp(args: argparse.Namespace) -> int:
    """Install llama.cpp's converter and library, or say what is installed."""
    from harness.export import llama

    if args.action == "install":
        llama.install(args.sdist, build=not args.converter_only)
    else:
        print(f"converter: {llama.converter_dir() or 'not installed'}")
        print(f"llama-cpp-python: {llama.library_version() or 'not installed'} "
              f"(pinned {llama.LLAMA_CPP_PYTHON_VERSION})")
        print(f"GGUF types: {', '.join(llama.supported_types()) or 'none'}")
    return 0
