"""One variant's fast-plan training on an Engine (harness.train.fast.engine): its steps' rows, lr schedule,
timings and losses.

    run = FastRun(engine, tokenizer, texts, cfg.train)       # LoRA back at its start, every row on the device
    run.warm_up(); run.run(run.total); losses = run.losses(); stats = run.stats(); run.pause()
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.train.fast.engine import Engine
from harness.train.fast.loop import StepLoop
from harness.train.fast.stepmath import lr_schedule, pack_step, seed_plan_batches, split_step, tokenize_like_sft


@dataclass
class FastStats:
    """What the fast plan did for one variant and how long it took."""

    mode: str  # "eager" or "graphs"
    device: str  # "cuda" or "cpu"
    attention: str  # "mask" or "varlen"
    backend: str
    steps: int
    real_tokens: int  # tokens in the packed rows before bucket padding
    padded_tokens: int  # tokens computed (bucket padding included)
    train_seconds: float  # optimizer steps only, synchronized at both ends of every segment
    warmup_seconds: float  # warm-up forward/backward and graph captures this variant needed
    tokens_per_s: float
    step_ms: list[float] = field(default_factory=list)  # per step, from CUDA events (device time)
    buckets: list[int] = field(default_factory=list)  # row lengths (graph mode: one graph each)
    micro_tokens: int = 0  # the cap on a row's tokens (0: the whole step in one row)
    rows: int = 0  # rows (micro-batches) over the steps done
    checkpointed_rows: int = 0  # rows over the cap (one long sequence each), run with checkpointed layers
    reused_graphs: int = 0  # graphs an earlier variant in this process captured and this one replayed
    peak_reserved_bytes: int = 0
    optimizer: str = "torch AdamW (fused)"
    probes: str = ""  # how the probes ran: "graphs", "eager", or "eager (<why a capture failed>)"
    loss: str = ""  # "chunked" (harness.train.fast.chunked_loss) or "model (<why not chunked>)"


class FastRun(StepLoop):
    """One variant's fast-plan training on an Engine: rows packed and on the device, steps run in segments."""

    def __init__(self, engine: Engine, tokenizer, texts: list[str], cfg, *, max_length: int | None = 2048,
                 limit: int = 0):
        """limit > 0 runs only the first limit steps (same schedule)."""
        import torch

        self.engine = engine
        self.seqs = tokenize_like_sft(tokenizer, texts, max_length)
        full = seed_plan_batches(len(self.seqs), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.seed)
        self.lrs = lr_schedule(cfg, len(full))  # the whole run's schedule, also when limit cuts it short
        self.plan = full[:limit] if limit > 0 else full
        self.total, self.planned = len(self.plan), len(full)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = device = next(engine.model.parameters()).device
        # Every step's rows go to the device once, up front: per step only views (eager) or D2D copies.
        self.rows: list[list[tuple]] = []
        self.row_lengths: list[list[int]] = []  # kept after pause() frees the rows
        n_items = []
        for step in self.plan:
            rows, n = self._rows([self.seqs[i] for mb in step for i in mb])
            self.rows.append(rows)
            self.row_lengths.append([r[0].shape[-1] for r in rows])
            n_items.append(n)
        self.n_items = torch.tensor(n_items, dtype=torch.long).to(device)
        engine.begin(cfg)
        engine.model.train()
        self.loss_dev = torch.zeros(self.total, dtype=torch.float32, device=device)
        StepLoop.__init__(self, self.total, engine.cuda)
        self.reused = 0

    def _rows(self, seqs: list[list[int]]) -> tuple[list[tuple], int]:
        """Sequences packed into rows under the engine's cap, on the device; and their target count."""
        import torch

        def dev(values):
            return torch.tensor(values, dtype=torch.long).view(1, -1).to(self.device, non_blocking=True)

        packed = [pack_step([seqs[i] for i in part], self.pad_id, self.engine.bucket)
                  for part in split_step(seqs, self.engine.micro_tokens)]
        return ([(dev(r.ids), dev(r.positions), dev(r.labels), dev(r.segments),
                  torch.tensor(r.lengths, dtype=torch.int32)) for r in packed], sum(r.n_items for r in packed))

    def probe_set(self, tokenizer, texts: list[str]) -> tuple[list[tuple], object]:
        """A probe's texts as packed rows on the device, tokenized as harness.train.sft.probe_loss tokenizes them
        (every token a target but each text's first), and their target count as a device tensor."""
        import torch

        rows, n = self._rows(tokenizer(texts, add_special_tokens=False)["input_ids"])
        return rows, torch.tensor(n, dtype=torch.long, device=self.device)

    def lengths(self) -> list[int]:
        """The row lengths this variant's steps use."""
        return sorted({t for step in self.row_lengths for t in step})

    def _warm(self) -> None:
        """Graph mode: capture the row lengths no earlier variant captured (eager: one forward/backward)."""
        e = self.engine
        if e.mode == "eager":
            e.forward_backward(*self.rows[0][0][:4], self.n_items[0], *self.rows[0][0][4:])
        else:
            examples = {}
            for i, step in enumerate(self.rows):
                for r in step:
                    examples.setdefault(r[0].shape[-1], (*r[:4], self.n_items[i]))
            self.reused = sum(t in e.graphs for t in examples)
            e.capture(examples)
        e.zero_grads()  # the warm-up's gradients; weights and AdamW state were not touched (captures do not run)

    def _step(self, i: int) -> None:
        self.engine.step(self.rows[i], self.n_items[i], self.lrs[i], self.loss_dev[i:i + 1])

    def losses(self) -> list[float]:
        """Per-step training losses of the steps done (one host read)."""
        return self.loss_dev[: self.done].tolist()

    def real_tokens(self) -> int:
        """Real tokens of the steps done (bucket padding excluded), as num_input_tokens_seen counts them."""
        return sum(len(self.seqs[j]) for s in self.plan[: self.done] for mb in s for j in mb)

    def stats(self) -> FastStats:
        """Timings, tokens, row lengths and peak memory so far."""
        import torch

        e, real = self.engine, self.real_tokens()
        step_ms = self.step_ms()
        return FastStats(mode=e.mode, device="cuda" if e.cuda else "cpu", attention=e.attention, backend=e.backend,
                         steps=self.done, real_tokens=real, padded_tokens=sum(map(sum, self.row_lengths[: self.done])),
                         train_seconds=round(self.train_s, 4), warmup_seconds=round(self.warmup_s, 3),
                         tokens_per_s=round(real / max(self.train_s, 1e-9), 1), step_ms=step_ms,
                         buckets=self.lengths(), micro_tokens=e.micro_tokens,
                         rows=sum(len(s) for s in self.row_lengths[: self.done]), reused_graphs=self.reused,
                         checkpointed_rows=sum(t > e.long_over for s in self.row_lengths[: self.done]
                                               for t in s) if e.checkpoint_long else 0,
                         peak_reserved_bytes=int(torch.cuda.max_memory_reserved()) if e.cuda else 0,
                         optimizer="torch AdamW (fused" + (", capturable)" if e.mode == "graphs" else ")")
                         if e.cuda else "torch AdamW",
                         probes=f"eager ({e.probe_eager})" if e.probe_eager
                         else "graphs" if e.probe_graphs else "eager",
                         loss=e.loss if e.loss == "chunked" else f"model ({e.loss_note})")

    def pause(self) -> None:
        """This variant's training is over: its device rows freed (their lengths kept for stats), Unsloth's
        settings back for sampling."""
        self.rows = []
        self.engine.pause()
