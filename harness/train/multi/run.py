"""K variants' fast-plan training on a MultiEngine (harness.train.multi.engine): each variant's own steps, rows,
lr schedule and AdamW factors, batched into [K, T] micro-batches; timings, per-step losses and probes.

    run = MultiRun(engine, tokenizer, [(texts, cfg.train), ...])   # every micro-batch on the device, up front
    run.warm_up(); run.run(run.total); losses = run.losses(k); stats = run.stats(k); run.pause()

Variant k's steps are exactly its solo plan's (harness.train.fast.stepmath: seed_plan_batches, lr_schedule,
split_step under the engine's row cap, its step's target count); global step s holds step s of every
variant that has one. Variants that differ in data, epochs, lr, seed, warm-up or weight decay share the
engine; a finished variant's rows are empty and its AdamW factors are no-ops.
"""
from __future__ import annotations

from harness.train.fast.loop import StepLoop
from harness.train.fast.run import FastStats
from harness.train.fast.stepmath import (
    PackedRow,
    lr_schedule,
    pack_step,
    seed_plan_batches,
    split_step,
    tokenize_like_sft,
)
from harness.train.multi.engine import MultiEngine
from harness.train.multi.ops import adamw_coefficients

# Tokens in one probe forward on a GPU: forward only, a layer's activations live only while it runs (estimated
# from Llama-3.2-3B's widths, not measured: ~70 KB per token at the MLP), so 64k tokens take a few GB beside the
# training graphs' pool, and a probe point of K = 8 adapters is one or two forwards instead of one per [K, T] row.
PROBE_TOKENS = 65536


def pad_row(row: PackedRow | None, width: int, pad_id: int) -> PackedRow:
    """A packed row padded to width with a masked segment of its own; None: an empty row (no targets)."""
    row = row or PackedRow([], [], [], [], [], 0)
    pad = width - len(row.ids)
    seg = (row.segments[-1] + 1) if row.segments else 0
    return PackedRow(row.ids + [pad_id] * pad, row.positions + list(range(pad)), row.labels + [-100] * pad,
                     row.segments + [seg] * pad, row.lengths + ([pad] if pad else []), row.n_items)


class MultiRun(StepLoop):
    """K variants' fast-plan training on one MultiEngine, run in segments of global steps."""

    def __init__(self, engine: MultiEngine, tokenizer, variants: list[tuple[list[str], object]], *,
                 max_length: int | None = 2048, limit: int = 0):
        """variants: (training texts, TrainConfig) per adapter, in the engine's adapter order; limit > 0 runs only
        each variant's first limit steps (same schedule)."""
        import torch

        if len(variants) != engine.k:
            raise ValueError(f"{len(variants)} variants for an engine of {engine.k} adapters")
        self.engine, self.k = engine, engine.k
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = engine.stack.weights.device
        self.seqs, self.plans, self.lrs, self.totals = [], [], [], []
        for texts, cfg in variants:
            seqs = tokenize_like_sft(tokenizer, texts, max_length)
            full = seed_plan_batches(len(seqs), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.seed)
            self.seqs.append(seqs)
            self.lrs.append(lr_schedule(cfg, len(full)))  # the whole run's schedule, also when limit cuts it short
            self.plans.append(full[:limit] if limit > 0 else full)
            self.totals.append(len(self.plans[-1]))
        self.total = max(self.totals)
        self.batches: list[list[tuple]] = []  # per global step: its [K, T] micro-batches on the device
        self.lengths_by_step: list[list[int]] = []  # T per micro-batch (kept after pause() frees the batches)
        self.rows_of: list[list[int]] = [[0] * self.total for _ in range(self.k)]  # [k][s]: adapter k's rows
        self.padded_of: list[list[int]] = [[0] * self.total for _ in range(self.k)]  # tokens computed for k
        coeffs = []
        for s in range(self.total):
            parts = [self._parts(k, s) for k in range(self.k)]
            batches, widths = self._batches(parts)
            for k in range(self.k):
                self.rows_of[k][s] = len(parts[k][0])
                self.padded_of[k][s] = sum(widths[: len(parts[k][0])])
            self.batches.append(batches)
            self.lengths_by_step.append(widths)
            coeffs.append([adamw_coefficients(self.lrs[k][s], variants[k][1].weight_decay, s + 1)
                           if s < self.totals[k] else adamw_coefficients(0.0, 0.0, None) for k in range(self.k)])
        self.coeffs = torch.tensor(coeffs, dtype=torch.float32).to(self.device)  # [S, K, COEFFS]
        engine.begin()
        self.loss_dev = torch.zeros(self.total, self.k, dtype=torch.float32, device=self.device)
        StepLoop.__init__(self, self.total, engine.cuda)

    def _parts(self, k: int, s: int) -> tuple[list[PackedRow], int]:
        """Adapter k's rows at global step s (none once its training is over) and its step's target count."""
        if s >= self.totals[k]:
            return [], 0
        seqs = [self.seqs[k][i] for mb in self.plans[k][s] for i in mb]
        rows = [pack_step([seqs[i] for i in part], self.pad_id) for part in split_step(seqs, self.engine.micro_tokens)]
        return rows, sum(r.n_items for r in rows)

    def _batches(self, parts: list[tuple[list[PackedRow], int]]) -> tuple[list[tuple], list[int]]:
        """[K, T] micro-batches from each adapter's rows (j-th row of each adapter together), on the device."""
        import torch

        batches, widths = [], []
        bucket = self.engine.bucket
        for j in range(max(len(rows) for rows, _ in parts)):
            mine = [rows[j] if j < len(rows) else None for rows, _ in parts]
            width = max(len(r.ids) for r in mine if r is not None)
            width = -(-width // bucket) * bucket if bucket else width
            padded = [pad_row(r, width, self.pad_id) for r in mine]

            def dev(key: str, rows=padded):
                return torch.tensor([getattr(r, key) for r in rows], dtype=torch.long).to(self.device,
                                                                                          non_blocking=True)

            scale = [1.0 / n if r is not None and n else 0.0 for r, (_, n) in zip(mine, parts)]
            batches.append((dev("ids"), dev("positions"), dev("labels"), dev("segments"),
                            torch.tensor(scale, dtype=torch.float32).to(self.device)))
            widths.append(width)
        return batches, widths

    def probe_batches(self, tokenizer, sets: list[list[list[str]]]) -> list[tuple]:
        """Probe sets for every adapter (sets[i][k]: set i's texts for adapter k, tokenized as probe_loss tokenizes
        them) packed into rows under the engine's cap and batched into as few forwards as PROBE_TOKENS allows: rows
        of one bucketed width together, [K * m, T] with adapter k's m rows in block k (the stacked layers' layout).
        Each row is scaled by 1 / its adapter's target count in its set; a batch's last tensor holds each row's
        flat index set * K + k, where its loss adds up (MultiEngine.probe: sums[set, k] token-weighted means)."""
        import torch

        bucket, cap = self.engine.bucket, self.engine.micro_tokens
        by_width: dict[int, list[list[tuple]]] = {}  # bucketed width (0: one group, eager) -> per adapter its rows
        for i, texts in enumerate(sets):
            for k in range(self.k):
                seqs = tokenizer(texts[k], add_special_tokens=False)["input_ids"]
                rows = [pack_step([seqs[j] for j in part], self.pad_id) for part in split_step(seqs, cap)]
                n = sum(r.n_items for r in rows)
                for r in rows:
                    width = -(-len(r.ids) // bucket) * bucket if bucket else 0
                    by_width.setdefault(width, [[] for _ in range(self.k)])[k].append((r, 1.0 / n if n else 0.0,
                                                                                       i * self.k + k))
        batches = []
        for width, per in sorted(by_width.items()):
            m = max(len(rows) for rows in per)
            width = width or max(len(r.ids) for rows in per for r, _, _ in rows)
            step = max(1, PROBE_TOKENS // (self.k * width)) if bucket else m  # rows per adapter in one forward
            for lo in range(0, m, step):
                hi = min(m, lo + step)
                block = [x for k, rows in enumerate(per) for x in rows[lo:hi] + [(None, 0.0, k)] * (hi - lo -
                                                                                                     len(rows[lo:hi]))]
                padded = [pad_row(r, width, self.pad_id) for r, _, _ in block]

                def dev(key: str, rows=padded):
                    return torch.tensor([getattr(r, key) for r in rows], dtype=torch.long).to(self.device,
                                                                                              non_blocking=True)

                batches.append((dev("ids"), dev("positions"), dev("labels"), dev("segments"),
                                torch.tensor([s for _, s, _ in block], dtype=torch.float32).to(self.device),
                                torch.tensor([x for _, _, x in block], dtype=torch.long).to(self.device)))
        return batches

    def _warm(self) -> None:
        """Graph mode: capture every row length the steps use (eager: one forward/backward); grads zeroed after."""
        e = self.engine
        if e.mode == "eager":
            e.forward_backward(*self.batches[0][0])
        else:
            examples = {}
            for step in self.batches:
                for b in step:
                    examples.setdefault(b[0].shape[-1], b)
            e.capture(examples)
        e.zero_grads()  # the warm-up's gradients; weights and AdamW state untouched (captures do not run)

    def _step(self, s: int) -> None:
        self.engine.step(self.batches[s], self.coeffs[s], self.loss_dev[s])

    def stop(self, k: int) -> None:
        """Adapter k's training ends after the global steps done (train.stop_on fired at its probe): its later rows
        are scaled by 0 (no loss, no gradient) and its AdamW factors become no-ops, so it stays as it is now."""
        import torch

        noop = torch.tensor(adamw_coefficients(0.0, 0.0, None), dtype=torch.float32, device=self.device)
        self.coeffs[self.done:, k] = noop
        for step in self.batches[self.done:]:
            for batch in step:
                batch[4][k] = 0.0
        self.totals[k] = min(self.totals[k], self.done)
        self.total = max(self.totals)

    def losses(self, k: int) -> list[float]:
        """Adapter k's per-step training losses of the steps done (one host read)."""
        return self.loss_dev[: min(self.done, self.totals[k]), k].tolist()

    def real_tokens(self, k: int) -> int:
        """Adapter k's real tokens over its steps done."""
        return sum(len(self.seqs[k][j]) for s in self.plans[k][: min(self.done, self.totals[k])] for mb in s
                   for j in mb)

    def stats(self, k: int) -> FastStats:
        """Adapter k's stats: its own steps, tokens and rows; seconds and memory are the K adapters' together."""
        import torch

        e, steps = self.engine, min(self.done, self.totals[k])
        step_ms = self.step_ms()
        real = self.real_tokens(k)
        return FastStats(mode=e.mode, device="cuda" if e.cuda else "cpu", attention="mask", backend=e.backend,
                         steps=steps, real_tokens=real, padded_tokens=sum(self.padded_of[k][:steps]),
                         train_seconds=round(self.train_s, 4), warmup_seconds=round(self.warmup_s, 3),
                         tokens_per_s=round(real / max(self.train_s, 1e-9), 1), step_ms=step_ms,
                         buckets=sorted({t for step in self.lengths_by_step[: self.done] for t in step}),
                         micro_tokens=e.micro_tokens, rows=sum(self.rows_of[k][:steps]),
                         checkpointed_rows=sum(t > e.long_over for step in self.lengths_by_step[:steps]
                                               for t in step) if e.checkpoint_long else 0,
                         peak_reserved_bytes=int(torch.cuda.max_memory_reserved()) if e.cuda else 0,
                         optimizer="per-adapter AdamW over stacked rows" + (" (graphed)" if e.mode == "graphs" else ""),
                         probes=f"eager ({e.probe_eager})" if e.probe_eager
                         else "graphs" if e.probe_graphs else "eager", loss="chunked")

    def all_real_tokens(self) -> int:
        """Real tokens of every adapter's steps done."""
        return sum(self.real_tokens(k) for k in range(self.k))

    def pause(self) -> None:
        """Training is over: the device batches freed, Unsloth's settings back for sampling."""
        self.batches = []
        self.engine.pause()
