"""The package's imports run one way (docs/architecture.md): parsed from the source, not assumed.

Every `import` in harness/, at module level or inside a function, is read with `ast`. A module may
import the floor below it and its own wing, never a wing at its own level or above, and no two
modules may import each other, directly or round a longer circle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "harness"

# Lower number = lower layer. A wing is a subpackage; the floor is the modules loose in harness/.
LAYERS = {
    "harness": 0, "harness.errors": 0, "harness.fsutil": 0, "harness.quiet": 0, "harness.procs": 0,
    "harness.environment": 0,
    "harness.config": 1, "harness.pieces": 1,
    "harness.data": 2, "harness.models": 2, "harness.results": 2,
    "harness.backends": 3,
    "harness.judge": 4,
    "harness.train": 5, "harness.report": 5,
    "harness.export": 6, "harness.gpu": 6,
    "harness.cli": 7,
    "harness.__main__": 8,
}
# Wings that judge results anywhere, without a model: they must never pull in torch or a backend.
TORCH_FREE = ("harness.judge.score", "harness.judge.verdict", "harness.judge.samples", "harness.judge.typicality",
              "harness.judge.explain", "harness.pieces",
              "harness.judge.reference", "harness.report.run", "harness.report.story", "harness.report.runs",
              "harness.report.compare", "harness.results", "harness.config", "harness.data")


def module_name(path: Path) -> str:
    """harness/judge/score.py -> harness.judge.score; harness/cli/__init__.py -> harness.cli."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to: its wing (first subpackage) or itself on the floor."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def harness_imports(path: Path) -> set[str]:
    """Every harness module this file imports, anywhere in it (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            for a in node.names:  # `from harness.judge import score` imports the module harness.judge.score
                sub = f"{node.module}.{a.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file()
                          or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else node.module)
    return found


GRAPH = {module_name(p): harness_imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer() -> None:
    missing = sorted({unit(m) for m in GRAPH} - set(LAYERS))
    assert not missing, f"add these to LAYERS (and the wings table in docs/architecture.md): {missing}"


def test_imports_only_go_down_or_stay_in_the_wing() -> None:
    bad = []
    for module, imports in GRAPH.items():
        for target in imports:
            here, there = unit(module), unit(target)
            if here == there or there == "harness":
                continue
            if LAYERS[there] >= LAYERS[here]:
                bad.append(f"{module} -> {target} ({here} is layer {LAYERS[here]}, {there} is {LAYERS[there]})")
    assert not bad, "imports that run sideways or up:\n" + "\n".join(sorted(bad))


def test_no_import_circles() -> None:
    edges = {m: {t for t in ts if t in GRAPH and t != m} for m, ts in GRAPH.items()}
    # Package __init__ files are imported implicitly by every submodule; they hold no imports of their own here.
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_children_are_not_hidden_cli_commands() -> None:
    # Child processes have their own entry points; the public parser holds only commands with help.
    from harness.cli.main import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions if hasattr(a, "choices"))
    listed = {a.dest for a in sub._choices_actions}
    assert set(sub.choices) == listed
    for child in ("harness.train.job", "harness.gpu.worker", "harness.export.llama"):
        assert "def main(" in (PACKAGE.parent / (child.replace(".", "/") + ".py")).read_text()


@pytest.mark.parametrize("module", TORCH_FREE)
def test_judging_and_reporting_never_import_torch(module: str) -> None:
    code = f"import sys, {module}; bad = [m for m in ('torch', 'unsloth', 'peft', 'trl') if m in sys.modules]; " \
           "print(','.join(bad)); sys.exit(1 if bad else 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{module} imports {out.stdout.strip() or out.stderr[-500:]}"


def test_the_fast_plan_stands_without_the_multi_adapter_engine() -> None:
    # harness.train.fast (the solo plan, its step math, loss and timed loop) is the floor the multi-adapter engine
    # builds on: the engine imports it, never the other way round.
    bad = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if m.startswith("harness.train.fast")
                 for t in ts if t.startswith("harness.train.multi"))
    assert not bad, "the fast plan imports the multi-adapter engine:\n" + "\n".join(bad)


def test_both_engines_time_their_steps_in_the_one_loop() -> None:
    # The solo FastRun and the multi-adapter MultiRun run their steps through harness.train.fast.loop.StepLoop,
    # not a copy of its timed loop each.
    from harness.train.fast.loop import StepLoop
    from harness.train.fast.run import FastRun
    from harness.train.multi.run import MultiRun

    for cls in (FastRun, MultiRun):
        assert issubclass(cls, StepLoop)
        assert "run" not in vars(cls) and "warm_up" not in vars(cls), f"{cls.__name__} times its own steps"
