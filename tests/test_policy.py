"""When a run evaluates and saves: the CheckpointPolicy's decisions, against schedules worked out by hand."""

import pytest

from conftest import train_config
from gptsuite.checkpointer import NanGuard
from gptsuite.errors import UserError
from gptsuite.objectives import StepResult
from gptsuite.policy import CheckpointPolicy


def policy_of(clock=None, **flat) -> CheckpointPolicy:
    """The policy train.py builds for these settings (flat keys, as on the command line)."""
    start = {k: flat.pop(k) for k in ("start_iter", "best_val_loss", "last_eval_iter") if k in flat}
    cfg = train_config(**flat)
    return CheckpointPolicy(cfg.checkpoint, cfg.evals, cfg.schedule.max_iters, cfg.hellaswag.interval, **start, **({"clock": clock} if clock else {}))


def run_schedule(policy: CheckpointPolicy, start: int, stop: int, val_losses: dict[int, float], stopping_at: int | None = None) -> tuple[list, list, list]:
    """Drive the policy as train.py's loop does: (evaluations, saves, best.pt saves) by iteration."""
    evals, saves, bests = [], [], []
    for it in range(start, stop + 1):
        stopping = it == stopping_at
        evaluated = improved = False
        if policy.eval_due(it) and not stopping:
            evals.append(it)
            evaluated, improved = True, policy.record_eval(it, val_losses[it])
        if policy.save_due(it, evaluated, improved, stopping, clock_due=False):
            policy.saved()
            saves.append(it)
            if improved:
                bests.append(it)
        if stopping:
            break
    return evals, saves, bests


LOSSES = {0: 3.0, 5: 2.5, 10: 2.7, 12: 2.4}


def test_saves_at_improving_evals_and_every_interval():
    cfg = dict(eval_interval=5, max_iters=12, checkpoint_interval=4, always_save_checkpoint=False)
    evals, saves, bests = run_schedule(policy_of(**cfg), 0, 12, LOSSES)
    assert evals == [0, 5, 10, 12]  # every eval_interval, and at max_iters
    assert saves == [4, 5, 8, 12]  # not at 0; not at 10, whose val loss did not improve
    assert bests == [5, 12]


def test_always_save_saves_at_every_eval():
    cfg = dict(eval_interval=5, max_iters=12, checkpoint_interval=0, always_save_checkpoint=True)
    assert run_schedule(policy_of(**cfg), 0, 12, LOSSES)[1] == [5, 10, 12]


def test_a_resumed_run_does_not_repeat_its_eval_or_save_at_once():
    cfg = dict(eval_interval=5, max_iters=12, checkpoint_interval=5, always_save_checkpoint=False)
    policy = policy_of(**cfg, start_iter=10, best_val_loss=2.5, last_eval_iter=10)  # saved right after its eval at 10
    evals, saves, bests = run_schedule(policy, 10, 12, LOSSES)
    assert evals == [12] and saves == [12] and bests == [12]


def test_hellaswag_scores_the_start_of_a_new_run_but_not_that_of_a_resumed_one():
    """A new run scores its untrained model at iter 0 (the curve's first point); a resumed run
    scored its start iteration before the save it resumes from."""
    new = policy_of(hellaswag_interval=5, max_iters=12)
    assert [it for it in range(13) if new.hellaswag_due(it)] == [0, 5, 10]
    resumed = policy_of(hellaswag_interval=5, max_iters=12, start_iter=5, last_eval_iter=5)
    assert [it for it in range(5, 13) if resumed.hellaswag_due(it)] == [10]
    assert not any(policy_of(max_iters=12).hellaswag_due(it) for it in range(13))  # hellaswag_interval=0: never


def test_a_stop_signal_saves_without_evaluating_and_eval_only_never_saves():
    cfg = dict(eval_interval=5, max_iters=12, checkpoint_interval=0, always_save_checkpoint=False)
    evals, saves, _ = run_schedule(policy_of(**cfg), 0, 12, LOSSES, stopping_at=10)
    assert evals == [0, 5] and saves == [5, 10]
    only = policy_of(eval_only=True, eval_interval=5)
    assert only.save_due(5, evaluated=True, improved=True, stopping=True, clock_due=True) is False


class FakeSaver:
    out_dir = "out"

    def __init__(self):
        self.saves, self.snapshots = [], 0

    def snapshot(self, iter_num: int) -> dict:
        self.snapshots += 1
        return {"iter_num": iter_num, "rng": f"rng at {iter_num}"}

    def save(self, iter_num: int, progress: dict, best: bool = False, rng=None) -> None:
        self.saves.append((iter_num, progress, rng))


def test_the_nan_guard_stops_after_max_bad_steps_in_a_row_with_the_state_from_before_them():
    saver = FakeSaver()
    guard = NanGuard(2, saver, lambda: {"best_val_loss": 2.0})
    outcomes = iter([True, False, False, True, False, False, False])  # bad steps at iters 1-2, then 4-6
    step = lambda: StepResult(1.0, next(outcomes), [False, False])
    for it in range(6):
        guard.step(it, step)
    assert guard.bad_steps == 2 and not saver.saves
    with pytest.raises(UserError, match=r"not finite for 3 steps in a row \(iters 4-6, more than max_bad_steps=2\).*holds the state from before \(iter 4\)"):
        guard.step(6, step)
    assert saver.saves == [(4, {"best_val_loss": 2.0}, "rng at 4")]  # what the run had before its bad steps
    assert saver.snapshots == 3  # taken before iters 0, 1 and 4: the steps that follow a good one (or start the run)


def test_no_periodic_save_in_the_middle_of_bad_steps():
    policy = policy_of(checkpoint_interval=4, eval_interval=1000)
    assert not policy.save_due(4, evaluated=False, improved=False, stopping=False, clock_due=False, bad_run=True)
    assert policy.save_due(4, evaluated=False, improved=False, stopping=True, clock_due=False, bad_run=True)  # a stop always saves
    assert policy.save_due(4, evaluated=False, improved=False, stopping=False, clock_due=False)


def test_checkpoint_minutes_runs_from_the_last_save():
    now = [1000.0]
    policy = policy_of(clock=lambda: now[0], checkpoint_minutes=1.0, eval_interval=1000)
    now[0] += 59
    assert not policy.clock_due()
    now[0] += 2
    assert policy.clock_due() and policy.save_due(7, evaluated=False, improved=False, stopping=False, clock_due=True)
    policy.saved()
    assert not policy.clock_due()
    assert not policy_of(clock=lambda: now[0] + 1e9, checkpoint_minutes=0.0).clock_due()
