"""The fast plan keeps the seed plan's math: one packed step equals one grad-accumulated padded step,
its batches and per-step losses are SFTTrainer's, and as a variant (train.plan=fast) it reports the
same curves as the seed plan, on tiny random Llamas on the CPU (seconds).

    pytest tests/test_fast_plan.py
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from harness.train.fast.plan import (  # noqa: E402
    block_causal_mask,
    pack_step,
    seed_plan_batches,
    split_step,
    tokenize_like_sft,
    train_fast,
)

# float32 on the CPU: the packed and padded executions differ only in summation order (matmuls of
# another shape, micro-batch gradients summed vs one batch), each ~1e-7 relative per operation; a
# few hundred chained operations stay under 1e-5. A real difference (a target counted twice, one
# missing, attention crossing a sequence boundary) moves gradients by 1e-2 or more.
GRAD_RTOL = 1e-5
# Per-step losses over a few optimizer steps: the same summation-order noise, carried through AdamW,
# whose first steps divide by sqrt(v) ~ |g| and so amplify relative gradient noise in the updates.
LOSS_RTOL = 1e-4

TEXTS = ["\n /\\_/\\\n( o.o )\n > ^ <\n", "\n=^.^=\n", "\n  |\\__/,|   (`\\\n  |_ _  |.--.) )\n",
         "\n(=^-^=)\n", "\n /\\ /\\\n(  o o )\n", "\n ~(=^.^)\n", "\n  ^--^\n (o  o)\n  \\__/\n",
         "\n(^._.^)~\n", "\n m(_ _)m cat\n", "\n" + "=^..^= " * 50 + "\n"]  # the last one: over max_length


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: F401
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i) if 32 <= i < 127 else f"<0x{i:02X}>": i for i in range(128)}
    vocab["\n"] = 10
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0x00>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<0x01>", eos_token="<0x02>", pad_token="<0x03>")


def _model(seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    base = LlamaForCausalLM(cfg)
    torch.manual_seed(seed + 1)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                            "gate_proj", "up_proj", "down_proj"]))
    # LoRA B starts at zero (its gradient would be the only non-zero one): give both factors values.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _seed_style_grads(model, micro_batches, pad_id):
    """As transformers' Trainer: padded micro-batches, each loss summed over targets / the step's count."""
    model.zero_grad(set_to_none=True)
    padded = []
    for mb in micro_batches:
        width = max(len(s) for s in mb)
        ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in mb])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in mb])
        padded.append((ids, mask, ids.masked_fill(mask == 0, -100)))
    n_items = sum((lab[:, 1:] != -100).sum() for _, _, lab in padded)
    total = 0.0
    for ids, mask, lab in padded:
        loss = model(input_ids=ids, attention_mask=mask, labels=lab, num_items_in_batch=n_items).loss
        loss.backward()
        total += float(loss.detach())
    return total, _grads(model)


def _fast_grads(model, seqs, pad_id, bucket=0):
    model.zero_grad(set_to_none=True)
    row = pack_step(seqs, pad_id, bucket)
    view = lambda xs: torch.tensor(xs).view(1, -1)
    loss = model(input_ids=view(row.ids), position_ids=view(row.positions), labels=view(row.labels),
                 attention_mask=block_causal_mask(view(row.segments)),
                 num_items_in_batch=torch.tensor(row.n_items)).loss
    loss.backward()
    return float(loss.detach()), _grads(model)


@pytest.mark.parametrize("bucket", [0, 64])
def test_one_fast_step_equals_one_seed_step(bucket):
    tok = _tokenizer()
    seqs = tokenize_like_sft(tok, TEXTS[:6])
    model = _model()
    micro_batches = [seqs[0:2], seqs[2:4], seqs[4:6]]  # batch 2 x grad_accum 3, lengths differ: real padding
    seed_loss, seed_g = _seed_style_grads(model, micro_batches, tok.pad_token_id)
    fast_loss, fast_g = _fast_grads(model, seqs[:6], tok.pad_token_id, bucket)
    assert abs(fast_loss - seed_loss) <= GRAD_RTOL * abs(seed_loss)
    assert seed_g.keys() == fast_g.keys() and len(seed_g) == 2 * 7 * 2
    for name, g in seed_g.items():
        err = (fast_g[name] - g).norm() / g.norm()
        assert err < GRAD_RTOL, f"{name}: relative gradient difference {err:.2e}"


def test_pack_step_counts_targets_like_transformers():
    row = pack_step([[5, 6, 7], [8, 9]], pad_id=3, bucket=8)
    assert row.ids == [5, 6, 7, 8, 9, 3, 3, 3]
    assert row.positions == [0, 1, 2, 0, 1, 0, 1, 2]
    assert row.labels == [-100, 6, 7, -100, 9, -100, -100, -100]  # shifted: 5->6, 6->7, 8->9
    assert row.n_items == 3 and row.lengths == [3, 2, 3]
    keep = block_causal_mask(torch.tensor(row.segments).view(1, -1))[0, 0]
    assert keep[4].tolist() == [False, False, False, True, True, False, False, False]


def test_seed_plan_epoch_chunking():
    plan = seed_plan_batches(n_examples=9, batch_size=2, grad_accum=2, epochs=2, max_steps=-1, data_seed=3)
    assert len(plan) == 6  # 5 batches per epoch -> steps of 2, 2, 1 batches
    assert [len(s) for s in plan] == [2, 2, 1, 2, 2, 1]
    assert sorted(i for s in plan[:3] for mb in s for i in mb) == list(range(9))


def test_batches_and_losses_match_sft_trainer(tmp_path):
    """SFTTrainer's own run on the CPU: the same sequences per step, and train_fast's losses agree."""
    from types import SimpleNamespace

    import datasets
    from trl import SFTConfig, SFTTrainer

    from harness.backends import trl_cpu

    trl_cpu.install_if_no_cuda()  # TRL's fused LM-head loss is a Triton kernel; the harness's CPU stand-in
    tok = _tokenizer()
    settings = SimpleNamespace(batch_size=2, grad_accum=2, epochs=2.0, max_steps=-1, lr=5e-3, scheduler="linear",
                               warmup_steps=1, weight_decay=0.01, seed=11)
    args = SFTConfig(output_dir=str(tmp_path), dataset_text_field="text", max_length=256, packing=False,
                     per_device_train_batch_size=2, gradient_accumulation_steps=2, num_train_epochs=2,
                     learning_rate=settings.lr, lr_scheduler_type="linear", warmup_steps=1, weight_decay=0.01,
                     seed=11, data_seed=11, optim="adamw_torch", logging_steps=1, save_strategy="no",
                     report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, dataset_num_proc=1)
    trainer = SFTTrainer(model=_model(), processing_class=tok, args=args,
                         train_dataset=datasets.Dataset.from_dict({"text": TEXTS}))
    seen, collate = [], trainer.data_collator
    trainer.data_collator = lambda examples: (seen.append([list(e["input_ids"]) for e in examples]),
                                              collate(examples))[1]
    trainer.train()
    trainer_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]

    assert max(len(x) for x in tokenize_like_sft(tok, TEXTS)) > 256  # TRL's truncation is part of the plan
    seqs = tokenize_like_sft(tok, TEXTS, max_length=256)
    plan = seed_plan_batches(len(TEXTS), 2, 2, 2.0, -1, 11)
    assert [[seqs[i] for i in mb] for step in plan for mb in step] == seen

    # One row per step, and steps cut into rows of <= 40 tokens (the GPU's memory cap, made small here).
    for micro_tokens, rows in ((0, 6), (40, None)):
        losses, stats = train_fast(_model(), tok, TEXTS, settings, max_length=256, micro_tokens=micro_tokens)
        assert stats.mode == "eager" and stats.steps == len(trainer_losses) == 6  # 5 batches/epoch: 2+2+1
        assert stats.rows == rows if rows else stats.rows > 6
        # The 256-token sequence is a row of its own over the cap: it ran with checkpointed decoder layers.
        assert stats.checkpointed_rows == (0 if micro_tokens == 0 else 2)
        for k, (a, b) in enumerate(zip(losses, trainer_losses)):
            assert abs(a - b) <= LOSS_RTOL * abs(b), f"rows <= {micro_tokens}, step {k + 1}: {a:.6f} vs {b:.6f}"


def test_split_step_fills_rows_first_fit_decreasing():
    seqs = [[0] * n for n in (30, 5, 22, 40, 9, 60)]
    parts = split_step(seqs, 40)
    assert sorted(i for p in parts for i in p) == list(range(6))  # every sequence once
    assert [sum(len(seqs[i]) for i in p) for p in parts] == [60, 40, 39, 27]  # 60 alone (over the cap)
    assert parts == [[5], [3], [0, 4], [1, 2]]
    assert split_step(seqs, 0) == [list(range(6))] == split_step(seqs, 500)


def test_engine_reuse_equals_fresh_engines():
    """Variants trained one after another on one Engine (as a sweep's process does) match fresh processes:
    LoRA weights, AdamW state and grads are reset in place, not carried over."""
    from types import SimpleNamespace

    from harness.train.fast.engine import Engine
    from harness.train.fast.run import FastRun

    tok = _tokenizer()
    runs = [SimpleNamespace(batch_size=2, grad_accum=2, epochs=1.0, max_steps=-1, lr=lr, scheduler="linear",
                            warmup_steps=1, weight_decay=wd, seed=seed) for lr, wd, seed in
            ((5e-3, 0.01, 11), (2e-2, 0.0, 12), (5e-3, 0.01, 11))]

    def train(engine, settings):
        run = FastRun(engine, tok, TEXTS, settings, max_length=256)
        run.warm_up()
        run.run(run.total)
        run.pause()
        assert run.stats().rows > run.stats().steps  # stats outlive the rows pause() frees
        return run.losses(), {n: p.detach().clone() for n, p in engine.model.named_parameters() if p.requires_grad}

    fresh = [train(Engine(_model(), s, micro_tokens=40), s) for s in runs]
    model = _model()
    shared = Engine(model, runs[0], micro_tokens=40)
    again = [train(shared, s) for s in runs]
    assert shared.variants == 3 and fresh[0][0] != fresh[1][0]  # the two settings train differently
    for (a_losses, a_w), (b_losses, b_w) in zip(fresh, again):
        assert b_losses == pytest.approx(a_losses, rel=1e-6, abs=0)
        for name, w in a_w.items():
            assert torch.allclose(b_w[name], w, rtol=1e-6, atol=0), name


def _tiny_cfg(**train):
    from dataclasses import replace

    from harness.config import load_plan

    cfg = load_plan("tiny", ['model.dtype="float32"']).base
    return replace(cfg, train=replace(cfg.train, **train))


def test_fast_variant_matches_seed_variant_on_cpu(tmp_path):
    """train_variant_fast is a drop-in: same eval steps, same probe and running losses as train_variant."""
    from harness import backends
    from harness.data import build_dataset
    from harness.models import resolve
    from harness.train.fast.plan import train_variant_fast
    from harness.train.sft import train_variant

    backend = backends.get("peft")
    runs = {}
    for plan in ("seed", "fast"):
        cfg = _tiny_cfg(plan=plan, grad_accum=2, max_steps=4, eval_points=2, optim="adamw_torch")
        ds = build_dataset(cfg.data)
        model, tok, _ = backend.load(resolve(cfg.model.name), cfg)
        train = train_variant_fast if plan == "fast" else train_variant
        runs[plan] = train(model, tok, ds, cfg, tmp_path / plan)
    (seed_curves, seed_stats), (fast_curves, fast_stats) = runs["seed"], runs["fast"]
    assert fast_curves.steps == seed_curves.steps == [0, 2, 4]
    assert fast_curves.epochs == pytest.approx(seed_curves.epochs, abs=1e-3)
    assert fast_stats.steps == seed_stats.steps == 4 and fast_stats.tokens == seed_stats.tokens
    assert fast_stats.plan == "fast" and fast_stats.plan_reason.startswith("eager on CPU")
    assert seed_stats.plan == "seed"
    # Probe losses (eval mode, padded batches) after identical updates: the summation-order noise only.
    for key in ("train_loss", "heldout_loss"):
        assert getattr(fast_curves, key) == pytest.approx(getattr(seed_curves, key), rel=LOSS_RTOL), key
    assert [s for s, _ in fast_curves.running_train_loss] == [1, 2, 3, 4]
    assert [x for _, x in fast_curves.running_train_loss] == \
        pytest.approx([x for _, x in seed_curves.running_train_loss], rel=LOSS_RTOL)


@pytest.mark.parametrize("key, value, words", [("scheduler", "reduce_lr_on_plateau", "eval metric"),
                                               ("optim", "adafactor", "fused AdamW"),
                                               ("report_to", "tensorboard", "no Trainer")])
def test_fast_plan_refuses_what_it_cannot_reproduce(key, value, words):
    from harness.errors import UserError
    from harness.train.fast import plan as fast

    cfg = _tiny_cfg(plan="fast", **{key: value})
    why = fast.refusal(cfg)
    assert why and words in why and why.count(". ") == 0  # one sentence
    with pytest.raises(UserError, match="train.plan=seed"):
        fast.check(cfg)
    assert fast.refusal(_tiny_cfg(plan="fast")) is None
    fast.check(_tiny_cfg(plan="seed", **{key: value}))  # the seed plan takes it


def test_fast_plan_loads_without_checkpointing():
    from dataclasses import replace

    from harness.train.fast import plan as fast

    cfg = _tiny_cfg(plan="fast")
    cfg = replace(cfg, lora=replace(cfg.lora, gradient_checkpointing="unsloth"))
    assert fast.load_config(cfg).lora.gradient_checkpointing == "false"
    seed = replace(cfg, train=replace(cfg.train, plan="seed"))
    assert fast.load_config(seed) is seed


def test_job_dispatches_the_fast_plan(tmp_path):
    """A whole variant through harness.train.job with train.plan=fast: trained, sampled, judged, recorded."""
    from dataclasses import replace

    from conftest import run_job_here

    cfg = _tiny_cfg(plan="fast", max_steps=2, eval_points=1)
    cfg = replace(cfg, generate=replace(cfg.generate, n_samples=1, max_new_tokens=8))
    result = run_job_here("fast", cfg, tmp_path)
    assert result.status == "done" and result.train.plan == "fast" and result.train.steps == 2
    assert "eager on CPU" in result.train.plan_reason and result.curves.steps == [0, 2]


@pytest.mark.gpu
def test_graphs_replay_the_eager_steps_on_a_gpu():
    """CUDA graphs (rows under a cap, a checkpointed long row, the end-of-step graph) give the eager plan's
    losses, and a second variant on the same Engine replays the graphs into a fresh start's losses."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from types import SimpleNamespace

    from harness.train.fast.engine import Engine
    from harness.train.fast.run import FastRun

    tok = _tokenizer()
    settings = [SimpleNamespace(batch_size=2, grad_accum=2, epochs=2.0, max_steps=-1, lr=lr, scheduler="linear",
                                warmup_steps=1, weight_decay=0.01, seed=11) for lr in (5e-3, 2e-2)]

    def train(engine, cfg):
        run = FastRun(engine, tok, TEXTS, cfg, max_length=256)
        run.warm_up()
        run.run(run.total)
        run.pause()
        return run.losses(), run.stats()

    eager = [train(Engine(_model().cuda(), s, mode="eager", attention="mask", micro_tokens=64), s)[0]
             for s in settings]
    graphs = Engine(_model().cuda(), settings[0], mode="graphs", micro_tokens=64, bucket=16)
    (first, st1), (second, st2) = (train(graphs, s) for s in settings)
    assert st1.mode == "graphs" and st1.checkpointed_rows > 0 and st2.reused_graphs == len(st2.buckets)
    # float32 on the GPU: the same kernels eager or replayed, so only atomics' order may differ.
    assert first == pytest.approx(eager[0], rel=1e-4) and second == pytest.approx(eager[1], rel=1e-4)
    # Probes: forward-only graphs of the packed rows (captured on first use, then replayed) give the padded-batch
    # probe of the seed plan (harness.train.sft.probe_loss), with LoRA moved off its start (B is zero there).
    from harness.train.sft import probe_loss

    run = FastRun(graphs, tok, TEXTS[:6], settings[1], max_length=256)
    with torch.no_grad():
        for p in graphs.params:
            p.add_(0.05 * torch.randn_like(p))
    rows, n = run.probe_set(tok, TEXTS[:6])
    first, again = torch.zeros(1, device="cuda"), torch.zeros(1, device="cuda")
    graphs.probe(rows, n, first)
    graphs.probe(rows, n, again)
    assert graphs.probe_graphs and not graphs.probe_eager
    assert first.item() == pytest.approx(probe_loss(graphs.model, tok, TEXTS[:6]), rel=1e-4)
    assert again.item() == pytest.approx(first.item(), rel=1e-6)
