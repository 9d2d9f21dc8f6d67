"""When a training run evaluates and saves, and what the NaN guard keeps: the decisions of the
loop in one small object, with no torch in it, so that they can be tested on their own.

A run saves (ckpt.pt, and the names checkpoint.write_checkpoint links to it) when
  - it stops on a signal (SIGTERM, Ctrl-C), whatever else holds;
  - an evaluation improved the best val loss (then also as best.pt), or at every evaluation
    with always_save_checkpoint;
  - every checkpoint_interval iterations, or checkpoint_minutes after the last save, unless the
    run is in the middle of skipped (non-finite) steps or has not moved since it started;
never at iteration 0 and never with eval_only. The NaN guard remembers the state from before a
run of bad steps (`good`), which is what gets saved when more than max_bad_steps come in a row.
"""

import time
from collections.abc import Callable


class CheckpointPolicy:
    def __init__(self, cfg, start_iter: int = 0, best_val_loss: float = 1e9, last_eval_iter: int = -1, clock: Callable[[], float] = time.time):
        self.cfg, self.clock = cfg, clock
        self.start_iter, self.best_val_loss, self.last_eval_iter = start_iter, best_val_loss, last_eval_iter
        self.last_save = clock()
        self.bad_steps = 0  # non-finite steps in a row, just now
        self.good: dict | None = None  # the NaN guard's state from before them

    def eval_due(self, iter_num: int) -> bool:
        """At every eval_interval and at max_iters, but not twice for one iteration (a resumed run
        starts where its last evaluation was)."""
        due = iter_num % self.cfg.eval_interval == 0 or iter_num == self.cfg.max_iters
        return due and iter_num != self.last_eval_iter

    def hellaswag_due(self, iter_num: int) -> bool:
        """At every hellaswag_interval, but not again at the iteration a resumed run starts from
        (it was scored before that save)."""
        interval = self.cfg.hellaswag_interval
        return interval > 0 and iter_num % interval == 0 and (iter_num != self.start_iter or iter_num == 0)

    def record_eval(self, iter_num: int, val_loss: float) -> bool:
        """Take note of an evaluation; whether it improved the best val loss."""
        improved = val_loss < self.best_val_loss
        self.best_val_loss, self.last_eval_iter = min(self.best_val_loss, val_loss), iter_num
        return improved

    def clock_due(self) -> bool:
        return self.cfg.checkpoint_minutes > 0 and self.clock() - self.last_save >= 60 * self.cfg.checkpoint_minutes

    def save_due(self, iter_num: int, evaluated: bool, improved: bool, stopping: bool, clock_due: bool) -> bool:
        if iter_num == 0 or self.cfg.eval_only:
            return False
        interval = self.cfg.checkpoint_interval > 0 and iter_num % self.cfg.checkpoint_interval == 0
        periodic = iter_num != self.start_iter and self.bad_steps == 0 and (clock_due or interval)
        return stopping or periodic or (evaluated and (improved or self.cfg.always_save_checkpoint))

    def saving(self) -> None:
        """A save starts now: the checkpoint_minutes clock restarts."""
        self.last_save = self.clock()

    def record_step(self, ok: bool) -> bool:
        """Count a step (ok: its update was made); whether the run must stop, after more than
        max_bad_steps bad ones in a row."""
        self.bad_steps = 0 if ok else self.bad_steps + 1
        return self.bad_steps > self.cfg.max_bad_steps
