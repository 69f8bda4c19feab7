"""The chunked loss over hidden states (harness.train.fast.chunked_loss) is the model's own causal-LM loss: the same
value, the same LoRA gradients, per row with its own normalisation, and the fast plan's per-step losses do not
move when it replaces the model's loss (tiny random Llama, float32 on the CPU, seconds).

    pytest tests/test_chunked_loss.py
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_fast_plan import TEXTS, _model, _tokenizer  # noqa: E402

from harness.train.fast import chunked_loss  # noqa: E402
from harness.train.fast.stepmath import block_causal_mask, pack_step, tokenize_like_sft  # noqa: E402

# float32: the chunked and the model's loss differ only in summation order (logsumexp per chunk vs over the
# batch, a gradient computed in forward vs by autograd), ~1e-7 relative; a missed target or a wrong shift
# moves the loss by 1e-2 or more.
RTOL = 1e-5


def _rows(tok, groups):
    """Packed rows of equal length (the longest, shorter ones padded with a masked segment), stacked."""
    packed = [pack_step(g, tok.pad_token_id) for g in groups]
    width = max(len(r.ids) for r in packed)
    rows = [pack_step(g, tok.pad_token_id, width) if len(p.ids) < width else p for g, p in zip(groups, packed)]
    stack = lambda key: torch.tensor([getattr(r, key) for r in rows])  # noqa: E731
    return stack("ids"), stack("positions"), stack("labels"), stack("segments"), [r.n_items for r in rows]


def test_chunked_rows_equal_the_models_loss_and_gradients():
    tok = _tokenizer()
    seqs = tokenize_like_sft(tok, TEXTS[:6])
    ids, pos, labels, seg, n_items = _rows(tok, [seqs[0:2], seqs[2:5], seqs[5:6]])
    mask = torch.cat([block_causal_mask(seg[r:r + 1]) for r in range(3)])
    model = _model()
    params = [p for p in model.parameters() if p.requires_grad]

    # The model's own loss, one row at a time, each over its own target count: the reference.
    want, want_grads = [], []
    for r in range(3):
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids[r:r + 1], position_ids=pos[r:r + 1], labels=labels[r:r + 1],
                    attention_mask=mask[r:r + 1], num_items_in_batch=torch.tensor(n_items[r]))
        out.loss.backward()
        want.append(out.loss.item())
        want_grads.append([p.grad.clone() for p in params])

    assert chunked_loss.supported(model) == ""
    model.zero_grad(set_to_none=True)
    hidden, head = chunked_loss.final_hidden(model, ids, pos, attention_mask=mask)
    scale = 1.0 / torch.tensor(n_items, dtype=torch.float32)
    per_row = chunked_loss.chunked_row_losses(hidden, head, labels, scale, chunk=7)  # chunks straddle rows
    assert per_row.tolist() == pytest.approx(want, rel=RTOL)
    per_row.sum().backward()
    summed = [sum(g[i] for g in want_grads) for i in range(len(params))]  # the rows' gradients add up
    for p, g in zip(params, summed):
        assert ((p.grad - g).norm() / g.norm()).item() < RTOL
    # A row scaled by 0 adds nothing: an empty row in the multi-adapter engine.
    with torch.no_grad():
        zeroed = chunked_loss.chunked_row_losses(hidden, head, labels, scale * torch.tensor([1.0, 0.0, 1.0]))
    assert zeroed[1].item() == 0.0 and zeroed[0].item() == pytest.approx(want[0], rel=RTOL)


def test_fast_plan_losses_do_not_move_with_the_chunked_loss():
    from types import SimpleNamespace

    from harness.train.fast.engine import Engine
    from harness.train.fast.run import FastRun

    tok = _tokenizer()
    cfg = SimpleNamespace(batch_size=2, grad_accum=2, epochs=1.0, max_steps=-1, lr=5e-3, scheduler="linear",
                          warmup_steps=1, weight_decay=0.01, seed=11)
    runs = {}
    for loss in ("model", "chunked"):
        engine = Engine(_model(), cfg, loss=loss, micro_tokens=40)
        run = FastRun(engine, tok, TEXTS, cfg, max_length=256)
        run.warm_up()
        run.run(run.total)
        runs[loss] = (run.losses(), run.stats())
    (model_losses, _), (chunked_losses, stats) = runs["model"], runs["chunked"]
    assert stats.loss == "chunked" and runs["model"][1].loss.startswith("model")
    assert len(chunked_losses) == 3 and chunked_losses == pytest.approx(model_losses, rel=1e-4)  # through AdamW
