"""A sweep read as an answer: which runs are sweeps, the plots' data, the map, the answer's noise test, the table."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import sweep_fixture
from run_fixture import make_run
from sweep_fixture import LRS, RS, make_sweep_run, name

from harness.cli.main import main
from harness.judge import seeds
from harness.report import sweep_plots
from harness.report.compare import NOISE_SIGMAS, classify
from harness.report.run import write_report
from harness.report.sweep import answer, answer_text, find_sweep
from harness.results import Metric, RunResult, VariantResult

SE, TAU_NOVELTY = 0.02, seeds.TAU["novelty"]  # the fixture's stderr on every score; the seed model's novelty tau


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return make_sweep_run(tmp_path_factory.mktemp("sweep") / "runs" / "sweep-a")


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return make_sweep_run(tmp_path_factory.mktemp("sweep2") / "runs" / "sweep-b", seeds=2, run_id="sweep-b")


def _run(configs: dict[str, dict]) -> RunResult:
    return RunResult(run_id="x", variants={n: VariantResult(name=n, status="done", config=c)
                                           for n, c in configs.items()})


def test_a_grid_is_a_sweep_and_a_comparison_is_not(one_seed: RunResult, tmp_path: Path) -> None:
    sweep = find_sweep(one_seed)
    assert [(f.keys, f.label, [lv[0] for lv in f.levels]) for f in sweep.factors] == [
        (("train.lr",), "lr", list(LRS)), (("lora.r",), "r", list(RS))]
    assert len(sweep.cells) == 6 and sweep.seeds == 1
    one_key = _run({"a": {"lora": {"r": 8}}, "b": {"lora": {"r": 16}}})  # named variants differing in one key
    assert [f.keys for f in find_sweep(one_key).factors] == [("lora.r",)]
    three_keys = _run({n: {"train": {"lr": lr, "epochs": e}, "data": {"max_train_pieces": p}}  # the default's
                       for n, lr, e, p in (("seed", 2e-4, 1, 16), ("learn", 3e-3, 2, 0), ("memorize", 3e-3, 10, 16))})
    assert find_sweep(three_keys) is None
    picked = _run({f"{a}-{b}": {"train": {"lr": a}, "lora": {"r": b}} for a, b in ((1, 4), (2, 8), (3, 16), (1, 8))})
    assert find_sweep(picked) is None  # 4 of a 3 x 3 grid: picked by hand, not crossed
    assert find_sweep(make_run(tmp_path / "r")) is None  # r8, r32 and a failed r64 with no config


def _by(sweep, f: int, key: str) -> dict[str, list]:
    return {s.label: [(x, p.value, p.low, p.high) for x, p in zip(s.x, s.points, strict=True)]
            for s in sweep_plots.outcome_series(sweep, f, key)}


def test_outcome_series_at_one_seed_are_the_variants_numbers_with_the_gates_intervals(one_seed: RunResult) -> None:
    sweep = find_sweep(one_seed)
    half = NOISE_SIGMAS * math.hypot(SE, TAU_NOVELTY)  # the score's own stderr and the seed tau, in quadrature
    novelty = _by(sweep, 0, "novelty")
    assert list(novelty) == ["r 4", "r 8"]
    assert [(x, v) for x, v, _, _ in novelty["r 4"]] == [(1e-4, 0.6), (1e-3, 0.55), (1e-2, 0.05)]
    assert [(x, v) for x, v, _, _ in novelty["r 8"]] == [(1e-4, 0.62), (1e-3, 0.5), (1e-2, 0.04)]
    for _, v, lo, hi in novelty["r 4"]:
        assert lo == pytest.approx(max(0.0, v - half)) and hi == pytest.approx(v + half)
    loss = _by(sweep, 0, "final_heldout_loss")["r 8"]
    assert [v for _, v, _, _ in loss] == [1.98, 1.48, 2.6]
    tau = seeds.TAU_RELATIVE["final_heldout_loss"]
    for _, v, lo, hi in loss:  # a loss has no stderr: the relative tau alone
        assert (lo, hi) == pytest.approx((v * (1 - 2 * tau), v * (1 + 2 * tau)))
    onset = _by(sweep, 0, "onset_step")
    assert [v for _, v, _, _ in onset["r 4"]] == [None, None, 20] and onset["r 8"][2][1:] == (10, None, None)
    by_r = _by(sweep, 1, "valid_rate")  # against the other factor: one line per learning rate
    assert list(by_r) == ["lr 0.0001", "lr 0.001", "lr 0.01"]
    assert [(x, v) for x, v, _, _ in by_r["lr 0.01"]] == [(4.0, 1.0), (8.0, 1.0)]
    assert all(hi <= 1.0 for _, _, _, hi in by_r["lr 0.01"])  # a rate's interval stays within 0-1


def test_outcome_series_over_seeds_carry_each_seed_and_their_spread(two_seeds: RunResult) -> None:
    sweep = find_sweep(two_seeds)
    assert sweep.seeds == 2 and len(sweep.cells) == 6
    series = {s.label: s for s in sweep_plots.outcome_series(sweep, 0, "novelty")}
    best = series["r 4"].points[1]
    assert best.values == pytest.approx([0.56, 0.54]) and best.value == pytest.approx(0.55)
    # the gate's stderr over seeds: the larger of the seeds' sd and one seed's modelled spread, over sqrt(n)
    se = max(0.01 * math.sqrt(2), math.hypot(SE, TAU_NOVELTY)) / math.sqrt(2)
    assert (best.low, best.high) == pytest.approx((0.55 - 2 * se, 0.55 + 2 * se))
    onset = {s.label: s for s in sweep_plots.outcome_series(sweep, 0, "onset_step")}["r 8"].points[2]
    assert (onset.value, onset.low, onset.high, onset.values) == (15, 10, 20, [10, 20])  # the seeds' range
    low = {s.label: s for s in sweep_plots.outcome_series(sweep, 0, "heldout_min")}["r 4"].points[0]
    assert low.interval == "range" and low.values == [1.6, 1.6]


def test_the_figures_draw_exactly_the_series(one_seed: RunResult, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    figures = {}
    monkeypatch.setattr(sweep_plots, "save_png", lambda fig, out, file: figures.setdefault(file, fig) and file)
    sweep = find_sweep(one_seed)
    assert sweep_plots.plot_sweep(sweep, tmp_path) == ["sweep-map.png", "sweep-outcomes-1.png",
                                                       "sweep-outcomes-2.png"]
    axes = figures["sweep-outcomes-1.png"].axes
    for ax, (key, label, _) in zip(axes, sweep_plots.OUTCOMES, strict=False):
        assert ax.get_title() == label
        drawn = [list(line.get_ydata()) for line in ax.get_lines() if line.get_marker() == "o"]
        want = [[p.value for p in s.points if p.value is not None] for s in sweep_plots.outcome_series(sweep, 0, key)]
        assert drawn == [w for w in want if w], key
    texts = [t.get_text() for t in figures["sweep-map.png"].axes[0].texts]
    assert len(texts) == 6 and "memorizing\nloss curves: memorizing\nonset 10\nquality 0.0388" in texts


def test_the_map_colours_by_tier_and_writes_onset_and_quality(one_seed: RunResult, two_seeds: RunResult) -> None:
    (panel,) = sweep_plots.map_panels(find_sweep(one_seed))
    assert (panel.columns, panel.rows) == (["0.0001", "0.001", "0.01"], ["4", "8"])
    assert [[c.tier for c in row] for row in panel.cells] == [[1, 0, 2], [1, 0, 2]]
    assert panel.cells[0][2].lines == ["memorizing", "loss curves: memorizing", "onset 20", "quality 0.0485"]
    assert panel.cells[0][1].lines[2:] == ["no onset", "quality 0.446"]
    (panel,) = sweep_plots.map_panels(find_sweep(two_seeds))
    assert panel.cells[1][2].lines[:3] == ["memorizing 2/2", "loss curves: memorizing", "onset 10-20 (2/2)"]


def _novelty_change(a: float, b: float) -> str:
    """What the gate says of two single-seed novelties with the fixture's stderr: its own classify, tau included."""
    return classify(Metric(a, SE), Metric(b, SE), True, seeds.seed_sd("novelty", Metric(a), Metric(b)))[2]


@pytest.mark.parametrize(("n_seeds", "runner_up", "beyond"), [
    (1, 0.40, True),  # 0.15 behind: beyond noise at one seed
    (1, 0.50, False),  # 0.05 behind: within
    (1, 0.48, False),  # 0.07: beyond the stderrs alone (2 x 0.028), within once the seed tau is added (2 x 0.042)
    (2, 0.48, True),  # the same gap over two seeds: the mean's stderr falls with sqrt(n)
])
def test_the_answer_weighs_the_lead_by_the_gates_noise_model(tmp_path: Path, n_seeds: int, runner_up: float,
                                                            beyond: bool) -> None:
    sweep = find_sweep(make_sweep_run(tmp_path, seeds=n_seeds, runner_up_novelty=runner_up))
    ans = answer(sweep)
    assert (ans.best.name, ans.runner_up.name) == (name(1e-3, 4), name(1e-3, 8))
    assert ans.beyond_noise is beyond
    if n_seeds == 1:  # the same call the regression gate makes
        assert (_novelty_change(0.55, runner_up) == "regression") is beyond
    text = answer_text(sweep, ans)
    assert text.startswith(f"Best by the ranking rule: lr 0.001, r 4 (learning{' 2/2' if n_seeds > 1 else ''}")
    if beyond:
        assert "ahead of lr 0.001, r 8" in text and f"novelty 0.55 against {runner_up:g}" in text
    else:
        assert "; not distinguishable from lr 0.001, r 8" in text and "at this sample size" in text
        assert "valid_rate" not in text  # equal on both sides: nothing that tells them apart


def test_a_better_verdict_against_a_better_number_is_a_trade_off_not_a_lead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner-up is a tier down (mixed) but far more novel: each side is ahead on something beyond noise, so
    the answer names both and calls neither the winner."""
    monkeypatch.setitem(sweep_fixture.OUTCOMES, (1e-3, 8), ("mixed", 0.9, 0.9, None, 1.48, None))
    sweep = find_sweep(make_sweep_run(tmp_path, runner_up_novelty=0.8))
    ans = answer(sweep)
    assert (ans.best.name, ans.runner_up.name) == (name(1e-3, 4), name(1e-3, 8))  # the tier ranks first
    assert not ans.beyond_noise and ans.ahead == ["verdict learning against mixed"]
    assert ans.behind == ["novelty 0.55 against 0.8"]
    assert answer_text(sweep, ans).endswith("at this sample size: ahead on verdict learning against mixed, behind "
                                            "on novelty 0.55 against 0.8, each beyond noise.")


def test_the_report_answers_first_then_maps_and_plots(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "sweep-a"
    make_sweep_run(run_dir)
    page = write_report(run_dir).read_text(encoding="utf-8")
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    answer_at = page.index('<div class="answer">\n<p>Best by the ranking rule: lr 0.001, r 4 (learning')
    assert answer_at < page.index('<ul class="sentences">') < page.index(">Sweep</h2>")
    assert page.index(">Sweep</h2>") < page.index(">Leaderboard</h2>")
    assert md.index("Best by the ranking rule") < md.index("## Sweep") < md.index("## Leaderboard")
    for png in ("sweep-map.png", "sweep-outcomes-1.png", "sweep-outcomes-2.png"):
        assert (run_dir / png).stat().st_size > 10_000 and f"]({png})" in md
    assert "| 1 | 0.001 | 4 | learning | 0.446 |" in md
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_runs_variants_gives_one_row_per_variant_with_each_swept_key_a_column(
        two_seeds: RunResult, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "reports"
    make_sweep_run(root / "runs" / "sweep-b", seeds=2, run_id="sweep-b")
    make_run(root / "runs" / "run-a", run_id="run-a", bench=False)
    assert main(["--reports-dir", str(root), "runs", "--variants", "--csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"train.lr", "lora.r", "model.name"} <= set(frame.columns)
    assert "train.seed" not in frame.columns and frame.train_seed.dropna().astype(int).tolist()[:2] == [3407, 3408]
    sweep = frame[frame.run_id == "sweep-b"]
    assert len(sweep) == 12 and list(sweep.replicate[:2]) == ["lr0.0001-r4", "lr0.0001-r4@s1"]
    assert set(sweep.variant) == {name(lr, r) for lr in LRS for r in RS}
    table = sweep.pivot_table(index="train.lr", columns="lora.r", values="novelty")
    assert table.loc[1e-3, 4] == pytest.approx(0.55) and table.loc[1e-2, 8] == pytest.approx(0.04)
    assert sweep.set_index("replicate").loc["lr0.01-r8@s1", "onset_step"] == 20
    assert len(frame[frame.run_id == "run-a"]) == 3  # the other run's variants, its own keys filled in
    assert main(["--reports-dir", str(root), "runs", "--variants", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    first = next(r for r in rows if r["run_id"] == "sweep-b")
    assert len(rows) == 15 and (first["train.lr"], first["lora.r"], first["replicate"]) == (1e-4, 4, "lr0.0001-r4")
    assert main(["--reports-dir", str(root), "runs", "--variants"]) == 0
    out = capsys.readouterr().out
    assert "variants under" in out and "lr0.01-r8@s1" in out
