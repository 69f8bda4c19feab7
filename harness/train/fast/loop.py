"""The one timed step loop of both engines: the solo fast plan's FastRun and the multi-adapter engine's MultiRun
run their optimizer steps through it, so timing, synchronisation and per-step device times are measured alike.

    class FastRun(StepLoop): def _step(self, i): ...       # one optimizer step, no host sync
    run.warm_up(); run.run(stop); run.step_ms(); run.train_s, run.warmup_s

A segment of steps is synchronized at both ends (its seconds are the steps' and nothing else's); each step
records a pair of CUDA events, read only when stats are asked for, so the loop itself never waits on the device.
"""
from __future__ import annotations

import time
from collections.abc import Callable


class StepLoop:
    """Optimizer steps done..stop-1 in timed segments; subclasses say what a step and a warm-up are."""

    def __init__(self, total: int, cuda: bool) -> None:
        """total: the steps planned; cuda: record per-step CUDA events and synchronize around segments."""
        import torch

        self.total, self.cuda = total, cuda
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(2 * total)] if cuda else []
        self.done, self.train_s, self.warmup_s = 0, 0.0, 0.0

    def _step(self, i: int) -> None:
        """Optimizer step i, queued on the device (no host sync)."""
        raise NotImplementedError

    def _warm(self) -> None:
        """Whatever must run before the first timed step (captures, first calls); weights and AdamW untouched."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for the device (nothing on the CPU)."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def warm_up(self, also: Callable[[], object] | None = None) -> float:
        """Run _warm (and also(), e.g. the probes' captures) between synchronisations; returns the warm-up seconds
        so far."""
        self.sync()
        t0 = time.perf_counter()
        self._warm()
        if also is not None:
            also()
        self.sync()
        self.warmup_s += time.perf_counter() - t0
        return self.warmup_s

    def run(self, stop: int, on_step: Callable[[int, int], None] | None = None) -> float:
        """Steps done..stop-1, synchronized at both ends; returns this segment's seconds."""
        stop = min(stop, self.total)
        self.sync()
        t0 = time.perf_counter()
        for i in range(self.done, stop):
            if self.events:
                self.events[2 * i].record()
            self._step(i)
            if self.events:
                self.events[2 * i + 1].record()
            if on_step:  # no sync: the caller's progress line runs ahead of the device by a few steps
                on_step(i + 1, self.total)
        self.sync()
        seconds = time.perf_counter() - t0
        self.done = max(self.done, stop)
        self.train_s += seconds
        return seconds

    def step_ms(self) -> list[float]:
        """Each step done, in device milliseconds (CUDA events; empty on the CPU)."""
        return [round(self.events[2 * i].elapsed_time(self.events[2 * i + 1]), 3)
                for i in range(self.done)] if self.events else []
