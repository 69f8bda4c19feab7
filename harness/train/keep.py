"""Which adapter a variant keeps, and when it stops: train.keep and train.stop_on, at the loss probes.

    keeper = Keeper(model, cfg.train)
    ... at each probe:  if keeper.observe(curves): stop training
    keeper.finish(model, stats)          # the kept adapter back in the model; stats say which and why

keep="best" (the default): the adapter at the held-out loss minimum among the probe points is the one saved,
sampled, judged and exported; the loss curves still show the whole run. The held-out minimum is the adapter
that predicts unseen art best; after it, a variant that memorizes only gets worse at drawing new pieces, and
"last" would hand a user the memorized one. keep="last": the adapter as training left it.

stop_on="memorizing": training ends at the first probe where the loss rule (harness.judge.verdict.analyse, the
rule the verdict uses) says memorizing, and the best adapter is kept; the steps it did not run are recorded.
"""
from __future__ import annotations

from harness.judge.verdict import analyse
from harness.results import LossCurves, TrainStats


class Keeper:
    """Follows the probes: a copy of the trainable weights at the best held-out loss, and the memorization rule."""

    def __init__(self, model, cfg, params: list | None = None) -> None:
        """cfg: a TrainConfig (keep, stop_on); params: (name, tensor) pairs to follow instead of the model's
        trainable parameters (the multi-adapter engine follows one adapter's row of its stacked weights)."""
        self.keep, self.stop_on = cfg.keep, cfg.stop_on
        self.params = params if params is not None else [(n, p) for n, p in model.named_parameters()
                                                         if p.requires_grad]
        self.best_loss, self.best_step = float("inf"), -1
        self.saved: list | None = None
        self.stopped_at: int | None = None

    def observe(self, curves: LossCurves) -> bool:
        """Take the probe just measured; True when training should stop here (stop_on fired)."""
        step, loss = curves.steps[-1], curves.heldout_loss[-1]
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            if self.keep == "best":  # the trainable weights only (LoRA): small, and copied on the host
                self.saved = [p.detach().to("cpu", copy=True) for _, p in self.params]
        if self.stop_on == "memorizing" and len(curves.steps) >= 2 and self.stopped_at is None:
            if analyse(curves.steps, curves.train_loss, curves.heldout_loss).verdict == "memorizing":
                self.stopped_at = step
                return True
        return False

    def finish(self, stats: TrainStats, planned_steps: int) -> None:
        """Put the kept adapter back in the model and record in stats what was kept and whether training stopped."""
        import torch

        last = stats.steps
        if self.keep == "best" and self.saved is not None and self.best_step != last:
            with torch.no_grad():
                for (_, p), saved in zip(self.params, self.saved, strict=True):
                    p.copy_(saved.to(p.device))
        stats.kept = self.keep
        stats.kept_step = self.best_step if self.keep == "best" and self.saved is not None else last
        stats.stopped_at = self.stopped_at
        stats.steps_planned = planned_steps
        stats.steps_saved = max(planned_steps - last, 0) if self.stopped_at is not None else 0
        self.saved = None
