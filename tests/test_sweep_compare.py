"""Sweeps through `asciitune run` with --resume, and `asciitune compare` on real tiny runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import asciitune, only_run

QUICK = ("train.max_steps=4", "train.eval_points=2", "generate.n_samples=2", "generate.max_new_tokens=24")


def _run(reports: Path, *args: str):
    proc = asciitune("--reports-dir", str(reports), "run", "--no-report", *args)
    return proc


def test_sweep_of_four_variants_and_resume_skips_finished(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(Path("harness/configs/tiny.toml").read_text() + '\n[sweep]\n"lora.r" = [4, 8]\n'
                    '"train.lr" = [1e-3, 3e-3]\n')
    reports = tmp_path / "reports"
    first = _run(reports, "--config", str(grid), *QUICK, "--variants", "r4-lr0.001,r8-lr0.003")
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = only_run(reports)
    done = json.loads((run_dir / "results.json").read_text())["variants"]
    assert sorted(done) == ["r4-lr0.001", "r8-lr0.003"]
    before = {n: v["train"]["seconds"] for n, v in done.items()}

    resumed = _run(reports, "--config", str(grid), *QUICK, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.count("done earlier, skipped") == 2, resumed.stdout
    assert only_run(reports) == run_dir  # the same run folder grew; no second run
    variants = json.loads((run_dir / "results.json").read_text())["variants"]
    assert sorted(variants) == ["r4-lr0.001", "r4-lr0.003", "r8-lr0.001", "r8-lr0.003"]
    assert all(v["status"] == "done" for v in variants.values())
    assert {n: variants[n]["train"]["seconds"] for n in before} == before  # untouched, not retrained
    assert variants["r8-lr0.003"]["config"]["lora"]["r"] == 8
    assert variants["r8-lr0.003"]["config"]["train"]["lr"] == 3e-3


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Two runs of one config and seed, and one made worse on purpose (a single optimizer step)."""
    root = tmp_path_factory.mktemp("cmp")
    dirs = []
    for name, steps in (("a", 12), ("b", 12), ("worse", 1)):
        reports = root / name
        proc = _run(reports, "--config", "tiny", f"train.max_steps={steps}", "train.lr=1e-2",
                    "train.eval_points=2", "generate.n_samples=2", "generate.max_new_tokens=24", "--variants", "base")
        assert proc.returncode == 0, proc.stderr[-2000:]
        dirs.append(only_run(reports))
    return dirs


def test_compare_same_config_and_seed_passes(three_runs):
    a, b, _ = three_runs
    proc = asciitune("compare", str(a), str(b), "--fail-on", "final_heldout_loss=0.01")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compare_gates_a_run_made_worse(three_runs):
    a, _, worse = three_runs
    # One step instead of twelve at lr 1e-2 leaves the tiny model's held-out loss ~10% higher (measured:
    # 10.26 after 12 steps, 11.5 at the start), beyond compare's 5% noise band for numbers without a
    # stderr; 0.01 nats is far above the run-to-run noise, which is zero (same seed, same kernels).
    proc = asciitune("compare", str(a), str(worse), "--fail-on", "final_heldout_loss=0.01")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "final_heldout_loss" in proc.stderr


def test_compare_refuses_other_schema(three_runs, tmp_path):
    a = three_runs[0]
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((a / "results.json").read_text())
    data["schema_version"] = 999
    (other / "results.json").write_text(json.dumps(data))
    proc = asciitune("compare", str(a), str(other))
    assert proc.returncode == 2 and "schema version 999" in proc.stderr


# A 3 x 2 grid of the tiny config. The fast plan trains the configurations of one LoRA rank in one process (the
# multi-adapter engine), so six variants cost two model loads; the smallest data and probes that still give loss
# curves keep each configuration to seconds.
GRID = '\n[sweep]\n"train.lr" = [1e-4, 1e-3, 1e-2]\n"lora.r" = [4, 8]\n'
SMALL = ("train.plan=fast", "train.max_steps=4", "train.eval_points=2", "train.eval_heldout_pieces=4",
         "data.max_train_pieces=4", "generate.n_samples=2", "generate.max_new_tokens=16")


@pytest.fixture(scope="module", params=[pytest.param(1, marks=pytest.mark.slow), 2], ids=["1-seed", "2-seeds"])
def tiny_sweep(request, tmp_path_factory) -> tuple[Path, Path, int]:
    """(reports folder, run folder, seeds) of the grid run through the real CLI, report included."""
    root = tmp_path_factory.mktemp(f"grid{request.param}")
    grid = root / "grid.toml"
    grid.write_text(Path("harness/configs/tiny.toml").read_text() + GRID)
    reports = root / "reports"
    proc = asciitune("--reports-dir", str(reports), "run", "--config", str(grid), *SMALL, "--seeds", str(request.param))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return reports, only_run(reports), request.param


def test_a_tiny_sweep_reports_the_answer_the_map_and_the_plots(tiny_sweep) -> None:
    import html

    from harness.report.sweep import answer, answer_text, find_sweep
    from harness.report.sweep_plots import outcome_series
    from harness.results import load

    _, run_dir, n_seeds = tiny_sweep
    run = load(run_dir)
    assert len(run.variants) == 6 * n_seeds
    sweep = find_sweep(run)
    assert [f.label for f in sweep.factors] == ["lr", "r"] and (len(sweep.cells), sweep.seeds) == (6, n_seeds)
    for png in ("sweep-map.png", "sweep-outcomes-1.png", "sweep-outcomes-2.png"):
        assert (run_dir / png).stat().st_size > 10_000, png
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    ans = answer(sweep)
    first = page.index('<div class="answer">')
    assert page.index(html.escape(answer_text(sweep, ans)), first) < page.index('<ul class="sentences">')
    assert ans.best is sweep.ranked()[0] and ans.runner_up is sweep.ranked()[1]
    # the plotted losses are the variants' own, the mean over seeds, at each learning rate and rank
    for s, r in zip(outcome_series(sweep, 0, "final_heldout_loss"), (4, 8), strict=True):
        assert s.label == f"r {r}" and s.x == [1e-4, 1e-3, 1e-2]
        for lr, p in zip(s.x, s.points, strict=True):
            own = [v.loss_analysis.final_heldout_loss for v in run.variants.values()
                   if v.config["train"]["lr"] == lr and v.config["lora"]["r"] == r]
            assert len(own) == n_seeds and p.value == pytest.approx(sum(own) / n_seeds)
            assert p.low < p.value < p.high  # the gate's interval: the seed tau at one seed, the seeds' spread at two


def _docs_example() -> str:
    doc = Path("docs/sweeps.md").read_text(encoding="utf-8")
    return doc.split("## Tables a user can load", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_runs_variants_csv_pivots_as_the_docs_say(tiny_sweep, tmp_path, monkeypatch, capsys) -> None:
    reports, run_dir, n_seeds = tiny_sweep
    proc = asciitune("--reports-dir", str(reports), "runs", "--variants", "--csv")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "variants.csv").write_text(proc.stdout, encoding="utf-8")
    code = _docs_example()
    assert len(code.strip().splitlines()) == 3
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)  # the documentation's own three lines, on the real output
    printed = capsys.readouterr().out
    assert "lora.r" in printed and "train.lr" in printed
    table = scope["variants"].pivot_table(index="train.lr", columns="lora.r", values="final_heldout_loss")
    assert table.shape == (3, 2)
    results = json.loads((run_dir / "results.json").read_text())["variants"]
    for v in results.values():
        lr, r = v["config"]["train"]["lr"], v["config"]["lora"]["r"]
        same = [w["loss_analysis"]["final_heldout_loss"] for w in results.values()
                if w["config"]["train"]["lr"] == lr and w["config"]["lora"]["r"] == r]
        assert table.loc[lr, r] == pytest.approx(sum(same) / len(same))
        assert f"{table.loc[lr, r]:.6f}"[:5] in printed
