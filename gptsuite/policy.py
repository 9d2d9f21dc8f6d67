"""When a training run evaluates and saves, and what the NaN guard keeps: the decisions of the
loop in one small object, with no torch in it, so that they can be tested on their own.

A run saves (ckpt.pt, and the names checkpoint.write_checkpoint links to it) when
  - it stops on a signal (SIGTERM, Ctrl-C), whatever else holds;
  - an evaluation improved the best val loss (then also as best.pt), or at every evaluation
    with always_save_checkpoint;
  - every checkpoint_interval iterations, or checkpoint_minutes after the last save, unless the
    run is in the middle of skipped (non-finite) steps or has not moved since it started;
never at iteration 0 and never with eval_only. (The NaN guard, which saves the state from before
a run of bad steps, is checkpointer.NanGuard.)
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from configurator import option

NO_LOSS = 1e9  # the best val loss before any evaluation (nanoGPT's checkpoints record it too)


@dataclass
class EvalConfig:
    # evaluation
    eval_interval: int = option(2000, gt=0)  # evaluate (and save) every this many iterations
    eval_iters: int = option(200, gt=0)  # batches per split in each evaluation
    eval_only: bool = False  # evaluate once and exit


@dataclass
class CheckpointConfig:
    # checkpoints and the NaN guard
    always_save_checkpoint: bool = True  # save at every eval; else only when val loss improves
    checkpoint_interval: int = option(0, ge=0)  # also save every this many iterations (0: off)
    checkpoint_minutes: float = option(0.0, ge=0)  # also save when this many minutes passed since the last save (0: off)
    keep_last: int = option(0, ge=0)  # also keep the newest K saves as ckpt-<iter>.pt (ckpt.pt is always the newest, best.pt the best)
    max_bad_steps: int = option(10, ge=0)  # steps with a non-finite loss or grad norm are skipped; more than this in a row stop the run


class CheckpointPolicy:
    def __init__(
        self,
        ckpt: CheckpointConfig,
        evals: EvalConfig,
        max_iters: int,
        hellaswag_interval: int = 0,
        start_iter: int = 0,
        best_val_loss: float = NO_LOSS,
        last_eval_iter: int = -1,
        clock: Callable[[], float] = time.time,
    ):
        self.ckpt, self.evals, self.max_iters, self.hellaswag_interval, self.clock = ckpt, evals, max_iters, hellaswag_interval, clock
        self.start_iter, self.best_val_loss, self.last_eval_iter = start_iter, best_val_loss, last_eval_iter
        self.last_save = clock()

    def eval_due(self, iter_num: int) -> bool:
        """At every eval_interval and at max_iters, but not twice for one iteration (a resumed run
        starts where its last evaluation was)."""
        due = iter_num % self.evals.eval_interval == 0 or iter_num == self.max_iters
        return due and iter_num != self.last_eval_iter

    def hellaswag_due(self, iter_num: int) -> bool:
        """At every hellaswag_interval, but not again at the iteration a resumed run starts from
        (it was scored before that save)."""
        interval = self.hellaswag_interval
        return interval > 0 and iter_num % interval == 0 and (iter_num != self.start_iter or iter_num == 0)

    def record_eval(self, iter_num: int, val_loss: float) -> bool:
        """Take note of an evaluation; whether it improved the best val loss."""
        improved = val_loss < self.best_val_loss
        self.best_val_loss, self.last_eval_iter = min(self.best_val_loss, val_loss), iter_num
        return improved

    def clock_due(self) -> bool:
        return self.ckpt.checkpoint_minutes > 0 and self.clock() - self.last_save >= 60 * self.ckpt.checkpoint_minutes

    def save_due(self, iter_num: int, evaluated: bool, improved: bool, stopping: bool, clock_due: bool, bad_run: bool = False) -> bool:
        """bad_run: the run is in the middle of skipped (non-finite) steps: no periodic save then."""
        if iter_num == 0 or self.evals.eval_only:
            return False
        interval = self.ckpt.checkpoint_interval > 0 and iter_num % self.ckpt.checkpoint_interval == 0
        periodic = iter_num != self.start_iter and not bad_run and (clock_due or interval)
        return stopping or periodic or (evaluated and (improved or self.ckpt.always_save_checkpoint))

    def progress(self) -> dict:
        """What a checkpoint records of the evaluations so far."""
        return {"best_val_loss": float(self.best_val_loss), "last_eval_iter": self.last_eval_iter}

    def saved(self) -> None:
        """A save was made: the checkpoint_minutes clock restarts."""
        self.last_save = self.clock()
