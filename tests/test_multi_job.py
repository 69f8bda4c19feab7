"""Fast-plan variants over one base through the multi-adapter engine as `asciitune run` runs them
(harness.train.job.run_jobs, in this process, tiny models on the CPU): grouped, trained together with each
variant's curves as its solo run's, saved, sampled (batched when settings match, each row with its own
adapter), judged; a variant that fails at sampling fails alone; the engine says which ran.

    pytest tests/test_multi_job.py
"""
from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_fast_plan import TEXTS, _model, _tiny_cfg, _tokenizer  # noqa: E402

from harness.config import GenerateConfig  # noqa: E402
from harness.train.generate import generate_copies, generate_samples  # noqa: E402
from harness.train.multi.engine import MultiEngine  # noqa: E402
from harness.train.multi.run import MultiRun  # noqa: E402

# Probe losses of a variant trained in the engine against the same variant trained alone: float32, the
# summation-order noise of tests/test_multi_engine.py carried through a few AdamW steps.
LOSS_RTOL = 1e-4


def _trained_engine(k: int = 2):
    from types import SimpleNamespace

    tok = _tokenizer()
    cfgs = [SimpleNamespace(batch_size=2, grad_accum=1, epochs=1.0, max_steps=-1, lr=lr, scheduler="constant",
                            warmup_steps=0, weight_decay=0.0, seed=11) for lr in (3e-2, 1e-1, 6e-2)[:k]]
    model = _model()
    engine = MultiEngine(model, k=k)
    run = MultiRun(engine, tok, [(TEXTS[:6], c) for c in cfgs], max_length=256)
    run.warm_up()
    run.run(run.total)
    run.pause()
    return model, tok, engine


def test_batched_sampling_runs_each_row_block_with_its_own_adapter():
    model, tok, engine = _trained_engine(3)
    greedy = GenerateConfig(n_samples=2, batch_size=2, max_new_tokens=12, temperature=0.0, prompt="\n")
    model.eval()
    engine.stack.install()
    engine.stack.window = (1, 3)  # adapters 1 and 2 only, as a later generate group would
    batched = generate_copies(model, tok, greedy, 2)
    engine.stack.window = (0, 3)
    engine.stack.uninstall()
    alone = []
    for j in (1, 2):
        engine.stack.export(j)
        alone.append(generate_samples(model, tok, greedy))
    texts = [[(s.text, s.new_tokens) for s in samples] for samples, _ in batched]
    assert texts == [[(s.text, s.new_tokens) for s in samples] for samples, _ in alone]
    assert texts[0] != texts[1]  # the two adapters do differ: rows did not all run one adapter
    assert batched[0][1].shared_with == 2 and alone[0][1].shared_with == 1
    engine.close()


def test_sample_variants_batches_when_settings_match_and_falls_back_when_asked(monkeypatch):
    from harness.train.multi import sample as multi

    model, tok, engine = _trained_engine(2)
    greedy = GenerateConfig(n_samples=2, batch_size=2, max_new_tokens=8, temperature=0.0, prompt="\n")
    model.eval()
    batched, how = multi.sample_variants(model, tok, engine, [greedy, greedy])
    assert how.startswith("batched: 2 adapters") and [st.shared_with for _, st in batched] == [2, 2]
    monkeypatch.setenv(multi.SAMPLING_ENV, "per-variant")
    alone, how = multi.sample_variants(model, tok, engine, [greedy, greedy])
    assert how == f"per variant ({multi.SAMPLING_ENV}=per-variant)"
    assert [[(s.text, s.new_tokens) for s in x] for x, _ in batched] == \
        [[(s.text, s.new_tokens) for s in x] for x, _ in alone]
    engine.close()


def test_groups_put_shareable_fast_variants_together(tmp_path):
    from harness.train.job import groups
    from harness.train.multi import plan as multi

    jobs = _jobs(tmp_path, True)
    seed = replace(jobs[0], name="seed", config=replace(jobs[0].config, train=replace(jobs[0].config.train,
                                                                                      plan="seed")))
    rank = replace(jobs[0], name="r4", config=replace(jobs[0].config, lora=replace(jobs[0].config.lora, r=4)))
    drop = replace(rank, name="drop", config=replace(rank.config, lora=replace(rank.config.lora, dropout=0.1)))
    drop2 = replace(drop, name="drop2")
    got = groups([jobs[0], seed, jobs[1], rank, drop, drop2, jobs[2]])
    # The three over one base and LoRA together where the first was; another rank alone; LoRA dropout: one at a time.
    assert [[j.name for j in g] for g in got] == [["a", "b", "bad"], ["seed"], ["r4"], ["drop"], ["drop2"]]
    assert "dropout" in multi.refusal([drop.config, drop2.config])
    assert [[j.name for j in g] for g in groups(_jobs(tmp_path, False))] == [["a"], ["b"], ["bad"]]


def test_units_give_a_multi_adapter_group_one_process(tmp_path):
    from harness.train.executors import multi_units, units

    jobs = _jobs(tmp_path, True)
    got = units(jobs, 3)
    assert [[j.name for j in u] for u in got] == [["a", "b", "bad"]] and multi_units(got) == got
    solo = units(_jobs(tmp_path, False), 2)  # without the engine: round-robin over the slots, as before
    assert [[j.name for j in u] for u in solo] == [["a", "bad"], ["b"]] and multi_units(solo) == []


def _jobs(tmp_path, multi: bool):
    from harness.data import build_dataset
    from harness.judge.samples import human_reference
    from harness.train.job import Job

    base = _tiny_cfg(plan="fast", max_steps=3, eval_points=1, optim="adamw_torch")
    base = replace(base, generate=replace(base.generate, n_samples=2, batch_size=2, max_new_tokens=8))
    cfgs = {"a": base, "b": replace(base, train=replace(base.train, lr=3e-3, max_steps=2, eval_points=2)),
            "bad": replace(base, generate=replace(base.generate, prompt=""))}  # fails at sampling, alone
    ds = build_dataset(base.data)
    human = human_reference(ds)
    return [Job(name, cfg, tmp_path, ds, human, multi_adapter=multi) for name, cfg in cfgs.items()]


@pytest.mark.slow
def test_run_jobs_trains_fast_variants_over_one_base_in_one_engine(tmp_path):
    from harness.results import VariantResult, build
    from harness.train.job import groups, run_jobs, variant_file

    jobs = _jobs(tmp_path / "multi", True)
    assert [[j.name for j in g] for g in groups(jobs)] == [["a", "b", "bad"]]
    assert run_jobs(jobs) == 1  # "bad" failed
    import json

    read = {j.name: build(VariantResult, json.loads(variant_file(j.run_dir, j.name).read_text())) for j in jobs}
    a, b, bad = read["a"], read["b"], read["bad"]
    assert a.status == b.status == "done" and bad.status == "failed" and "zero tokens" in bad.error
    assert a.train.engine == "multi-adapter, K=3" and a.train.plan_reason.startswith("multi-adapter engine, K=3")
    assert a.train.steps == 3 and b.train.steps == 2 and a.curves.steps == [0, 3] and b.curves.steps == [0, 1, 2]
    assert "per variant (generation settings differ" in a.generation.decode and a.generation.n == 2
    assert (tmp_path / "multi" / a.adapter_dir / "adapter_model.safetensors").is_file()
    assert set(a.timing.shared) >= {"load", "train", "generate"} and list(a.timing.phases)[-2:] == ["generate",
                                                                                                     "judge"]
    assert a.timing.phases["train"] == b.timing.phases["train"]  # one training for both

    solo = _jobs(tmp_path / "solo", False)[:2]
    assert [[j.name for j in g] for g in groups(solo)] == [["a"], ["b"]]
    assert run_jobs(solo) == 0
    for name in ("a", "b"):
        alone = build(VariantResult, json.loads(variant_file(tmp_path / "solo", name).read_text()))
        assert alone.train.engine == "solo"
        for key in ("train_loss", "heldout_loss"):
            assert getattr(read[name].curves, key) == pytest.approx(getattr(alone.curves, key), rel=LOSS_RTOL)
        assert [x for _, x in read[name].curves.running_train_loss] == \
            pytest.approx([x for _, x in alone.curves.running_train_loss], rel=LOSS_RTOL)


@pytest.mark.slow
def test_a_group_whose_engine_fails_is_trained_alone_and_says_so(tmp_path, monkeypatch):
    import json

    from harness.results import VariantResult, build
    from harness.train.job import run_jobs, variant_file
    from harness.train.multi import plan as multi

    def broken(*args, **kwargs):
        raise RuntimeError("no room on the card")

    monkeypatch.setattr(multi, "train_variants", broken)
    jobs = _jobs(tmp_path, True)[:2]
    assert run_jobs(jobs) == 0
    for job in jobs:
        r = build(VariantResult, json.loads(variant_file(job.run_dir, job.name).read_text()))
        assert r.status == "done" and r.train.engine == "solo"
        assert "trained alone: the multi-adapter engine failed (RuntimeError: no room on the card)" in r.backend_note


@pytest.mark.slow
def test_keep_and_stop_on_per_variant_as_each_would_alone(monkeypatch):
    """train.keep=best and train.stop_on=memorizing act per variant in the engine as in its solo run: the same
    stopping probe, the same kept step, the same kept adapter (the loss rule is made to fire at the third probe)."""
    from types import SimpleNamespace

    from harness import backends
    from harness.data import build_dataset
    from harness.models import resolve
    from harness.train import keep
    from harness.train.fast.plan import run_fast_variant
    from harness.train.multi import plan as multi

    monkeypatch.setattr(keep, "analyse", lambda steps, tr, ho: SimpleNamespace(
        verdict="memorizing" if len(steps) >= 3 else "learning"))
    base = _tiny_cfg(plan="fast", max_steps=6, eval_points=6, optim="adamw_torch", keep="best",
                     stop_on="memorizing")
    cfgs = [base, replace(base, train=replace(base.train, lr=3e-3, max_steps=5))]
    backend, ds = backends.get("peft"), build_dataset(base.data)
    model, tok, _ = backend.load(resolve(base.model.name), base)
    engine = MultiEngine(model, k=2)
    trained, _ = multi.train_variants(model, tok, [ds, ds], cfgs, engine)
    for j, cfg in enumerate(cfgs):
        alone_model, _, _ = backend.load(resolve(base.model.name), cfg)
        curves, stats, _ = run_fast_variant(alone_model, tok, ds, cfg)
        got_curves, got = trained[j]
        assert got.stopped_at == stats.stopped_at == 2 and got.steps == stats.steps == 2
        assert got.steps_saved == stats.steps_saved == cfg.train.max_steps - 2
        assert got.kept_step == stats.kept_step and got.kept == "best"
        assert got_curves.heldout_loss == pytest.approx(curves.heldout_loss, rel=LOSS_RTOL)
        kept = torch.cat([p.detach().reshape(-1) for p in alone_model.parameters() if p.requires_grad])
        row = engine.stack.row(j)
        assert ((row - kept).norm() / kept.norm()).item() < LOSS_RTOL
    engine.close()


def test_group_sizes_split_a_sweep_into_even_engine_groups(monkeypatch):
    from harness.train.multi import plan as multi

    assert multi.group_sizes(8) == [8] and multi.group_sizes(32) == [8, 8, 8, 8]
    assert multi.group_sizes(9) == [5, 4] and multi.group_sizes(2) == [2]
    monkeypatch.setenv(multi.GROUP_ENV, "3")
    assert multi.group_sizes(7) == [3, 2, 2]


def test_a_sweep_keeps_each_engine_group_as_it_ends_and_one_process_trains_them_all(tmp_path, monkeypatch):
    from harness.train.executors import multi_units, units
    from harness.train.job import groups, run_jobs, variant_file
    from harness.train.multi import plan as multi

    monkeypatch.setenv(multi.GROUP_ENV, "2")
    first = [replace(j, config=replace(j.config, train=replace(j.config.train, eval_heldout_pieces=2)))
             for j in _jobs(tmp_path, True)[:2]]  # a and b, both fine; small probes (seconds on the CPU)
    jobs = first + [replace(j, name=f"{j.name}2", config=replace(j.config, train=replace(j.config.train, lr=4e-3)))
                    for j in first]
    assert [[j.name for j in g] for g in groups(jobs)] == [["a", "b"], ["a2", "b2"]]
    assert [[j.name for j in u] for u in units(jobs, 1)] == [["a", "b", "a2", "b2"]]  # one process, one load
    assert multi_units(units(jobs, 1)) == units(jobs, 1)
    assert [[j.name for j in u] for u in units(jobs, 2)] == [["a", "b"], ["a2", "b2"]]
    real, calls = multi.train_variants, []

    def stop_at_the_second_group(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 2:  # a cap or Ctrl-C while the second group trains: the first group's results are written
            assert all(variant_file(tmp_path, n).is_file() for n in ("a", "b"))
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(multi, "train_variants", stop_at_the_second_group)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs)
    import json

    assert calls == [2, 2]
    for name in ("a", "b"):
        done = json.loads(variant_file(tmp_path, name).read_text())
        assert done["status"] == "done" and done["train"]["engine"] == "multi-adapter, K=2", done["error"]
    assert not variant_file(tmp_path, "a2").exists() and not variant_file(tmp_path, "b2").exists()
