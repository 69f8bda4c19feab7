"""The multi-adapter engine trains K variants as K solo fast-plan runs would: one multi-adapter micro-batch gives
each adapter its solo gradient, K variants that differ in lr, data, epochs, schedule, seed and weight decay
reproduce their solo per-step losses and final weights, and an adapter saved from the engine reloads as a
normal PEFT adapter with the engine's loss (tiny random Llamas, float32 on the CPU, seconds).

    pytest tests/test_multi_engine.py
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_fast_plan import TEXTS, _model, _tokenizer  # noqa: E402

from harness.train.fast import engine as fast_engine  # noqa: E402
from harness.train.fast.engine import Engine  # noqa: E402
from harness.train.fast.run import FastRun  # noqa: E402
from harness.train.multi import layers as multi_layers  # noqa: E402
from harness.train.multi import ops as multi_ops  # noqa: E402
from harness.train.multi.engine import MultiEngine  # noqa: E402
from harness.train.multi.run import MultiRun  # noqa: E402

# float32 on the CPU: a stacked bmm against peft's per-layer matmuls, K rows in one batch against one: only
# summation order differs, as in tests/test_fast_plan.py (GRAD_RTOL); through AdamW over several steps its
# first steps divide by sqrt(v) ~ |g| and amplify that noise (LOSS_RTOL). A row normalised by another
# variant's target count, or a clip over all adapters together, moves them by 1e-2 or more.
GRAD_RTOL = 1e-5
LOSS_RTOL = 1e-4
CAP = 40  # tokens per adapter row: steps split into several micro-batches, the long cat a row of its own


def _cfg(**kw):
    base = dict(batch_size=2, grad_accum=2, epochs=1.0, max_steps=-1, lr=5e-3, scheduler="linear", warmup_steps=1,
                weight_decay=0.01, seed=11)
    return SimpleNamespace(**{**base, **kw})


# Three variants that share nothing but the base: data, epochs, batch shape, lr, schedule, warm-up, decay, seed.
VARIANTS = [(TEXTS, _cfg()),
            (TEXTS[:7], _cfg(epochs=2.0, lr=2e-2, scheduler="cosine", warmup_steps=0, weight_decay=0.0, seed=12)),
            (TEXTS[2:], _cfg(batch_size=1, grad_accum=3, lr=1e-2, warmup_steps=2, weight_decay=0.1, seed=13))]


def _solo_first_step_grads(texts, cfg, tok):
    """The solo fast plan's gradient of its first step (before clipping), flattened in PEFT's parameter order."""
    engine = Engine(_model(), cfg, micro_tokens=CAP)
    run = FastRun(engine, tok, texts, cfg, max_length=256)
    for row in run.rows[0]:
        engine.forward_backward(*row[:4], run.n_items[0], *row[4:])
    return torch.cat([p.grad.reshape(-1) for p in engine.params])


def test_one_multi_step_gives_each_adapter_its_solo_gradient():
    tok = _tokenizer()
    engine = MultiEngine(_model(), k=3, micro_tokens=CAP)
    run = MultiRun(engine, tok, VARIANTS, max_length=256)
    assert len(run.batches[0]) > 1  # the step is several [K, T] micro-batches, some with empty rows
    for batch in run.batches[0]:
        engine.forward_backward(*batch)
    for k, (texts, cfg) in enumerate(VARIANTS):
        want = _solo_first_step_grads(texts, cfg, tok)
        got = engine.stack.grads[k]
        assert got.shape == want.shape and want.norm() > 0
        assert ((got - want).norm() / want.norm()).item() < GRAD_RTOL, f"adapter {k}"
    engine.close()


def _solo(texts, cfg, tok):
    engine = Engine(_model(), cfg, micro_tokens=CAP)
    run = FastRun(engine, tok, texts, cfg, max_length=256)
    run.warm_up()
    run.run(run.total)
    return run.losses(), torch.cat([p.detach().reshape(-1) for p in engine.params])


@pytest.fixture
def tight_clip(monkeypatch):
    """Clip at 0.3 in both engines: the tiny model's step gradients (~0.4-0.5) are then clipped, each adapter by
    its own factor, so a clip over the K adapters together would show."""
    monkeypatch.setattr(fast_engine, "MAX_GRAD_NORM", 0.3)
    monkeypatch.setattr(multi_ops, "MAX_GRAD_NORM", 0.3)


def test_k_variants_train_as_their_solo_runs(tight_clip):
    tok = _tokenizer()
    solo = [_solo(texts, cfg, tok) for texts, cfg in VARIANTS]
    engine = MultiEngine(_model(), k=3, micro_tokens=CAP)
    run = MultiRun(engine, tok, VARIANTS, max_length=256)
    assert run.totals == [3, 4, 3] and run.total == 4  # adapters 0 and 2 sit out the last step
    first = torch.linalg.vector_norm(_first_grads(run), dim=1)
    assert (first > 0.3).all() and first.max() / first.min() > 1.02  # clipped, each by its own factor
    engine.zero_grads()
    run.warm_up()
    run.run(2)
    run.run(run.total)  # in two segments, as between eval points
    for k, (losses, weights) in enumerate(solo):
        assert run.losses(k) == pytest.approx(losses, rel=LOSS_RTOL), f"adapter {k}"
        got = engine.stack.row(k)
        assert ((got - weights).norm() / weights.norm()).item() < LOSS_RTOL, f"adapter {k} weights"
        assert run.stats(k).steps == len(losses)
    engine.close()


def _first_grads(run):
    for batch in run.batches[0]:
        run.engine.forward_backward(*batch)
    return run.engine.stack.grads.clone()


def test_a_finished_adapter_is_left_exactly_as_it_was():
    tok = _tokenizer()
    engine = MultiEngine(_model(), k=3, micro_tokens=CAP)
    run = MultiRun(engine, tok, VARIANTS, max_length=256)
    run.warm_up()
    run.run(3)
    before = engine.stack.weights.clone(), engine.exp_avg.clone(), engine.exp_avg_sq.clone()
    run.run(4)  # only adapter 1 steps
    after = engine.stack.weights, engine.exp_avg, engine.exp_avg_sq
    for b, a in zip(before, after):
        assert torch.equal(b[0], a[0]) and torch.equal(b[2], a[2])  # bit for bit
        assert not torch.equal(b[1], a[1])
    engine.close()


def test_a_saved_adapter_reloads_with_the_engines_loss(tmp_path):
    from peft import PeftModel

    tok = _tokenizer()
    model = _model()
    engine = MultiEngine(model, k=3, micro_tokens=CAP)
    run = MultiRun(engine, tok, VARIANTS, max_length=256)
    run.warm_up()
    run.run(run.total)
    probe = run.probe_batches(tok, [[TEXTS[:4]] * 3])
    in_engine = torch.zeros(1, 3)
    engine.probe(probe, in_engine)
    in_engine = in_engine[0]
    engine.stack.uninstall()
    engine.stack.export(1)
    model.save_pretrained(str(tmp_path / "adapter"))
    engine.close()

    loaded = PeftModel.from_pretrained(_base(), str(tmp_path / "adapter"))
    from harness.train.sft import probe_loss

    assert probe_loss(loaded, tok, TEXTS[:4]) == pytest.approx(in_engine[1].item(), rel=GRAD_RTOL)
    assert in_engine[0].item() != pytest.approx(in_engine[1].item(), rel=1e-3)  # the adapters did differ


def test_probes_batch_every_adapter_and_set_into_few_forwards_each_row_to_its_own_sum(monkeypatch):
    from harness.train.multi import run as multi_run
    from harness.train.sft import probe_loss

    tok, model = _tokenizer(), _model()
    engine = MultiEngine(model, k=3, micro_tokens=CAP)
    run = MultiRun(engine, tok, VARIANTS, max_length=256)
    run.warm_up()
    run.run(2)
    sets = [[TEXTS[:4], TEXTS[2:6], TEXTS[:3]], [TEXTS[4:9], TEXTS[:2], TEXTS[1:5]]]  # [set][adapter]
    together = run.probe_batches(tok, sets)
    assert len(together) == 1  # the CPU's layout: one forward, every row padded to the longest
    engine.bucket = 16  # the GPU's layout: rows grouped by bucketed width, at most PROBE_TOKENS per forward
    monkeypatch.setattr(multi_run, "PROBE_TOKENS", 3 * 2 * 48)
    split = run.probe_batches(tok, sets)
    assert len(split) > 2 and all(b[0].shape[0] % 3 == 0 and b[0].shape[1] % 16 == 0 for b in split)
    a, b = torch.zeros(2, 3), torch.zeros(2, 3)
    engine.probe(together, a)
    engine.probe(split, b)
    assert torch.allclose(a, b, rtol=GRAD_RTOL, atol=0)
    engine.stack.uninstall()
    for k in range(3):  # each adapter's probe is probe_loss of its own texts with its own weights
        engine.stack.export(k)
        for i in range(2):
            assert probe_loss(model, tok, sets[i][k]) == pytest.approx(a[i, k].item(), rel=GRAD_RTOL), (i, k)
    engine.close()


def _base():
    """The base _model() wraps (the same seed, so the same frozen weights), without LoRA."""
    from transformers import LlamaForCausalLM

    config = _model().config
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def test_the_stack_refuses_what_it_cannot_stack():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj"]))
    assert "dropout" in multi_layers.refusal(model)
    with pytest.raises(ValueError, match="dropout"):
        MultiEngine(model, k=2)
    assert multi_layers.refusal(_model()) == ""
