"""When a run evaluates and saves: the CheckpointPolicy's decisions, against schedules worked out by hand."""

from gptsuite.policy import CheckpointPolicy
from gptsuite.training import TrainConfig


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
            policy.saving()
            saves.append(it)
            if improved:
                bests.append(it)
        if stopping:
            break
        policy.record_step(True)
    return evals, saves, bests


LOSSES = {0: 3.0, 5: 2.5, 10: 2.7, 12: 2.4}


def test_saves_at_improving_evals_and_every_interval():
    cfg = TrainConfig(eval_interval=5, max_iters=12, checkpoint_interval=4, always_save_checkpoint=False)
    evals, saves, bests = run_schedule(CheckpointPolicy(cfg), 0, 12, LOSSES)
    assert evals == [0, 5, 10, 12]  # every eval_interval, and at max_iters
    assert saves == [4, 5, 8, 12]  # not at 0; not at 10, whose val loss did not improve
    assert bests == [5, 12]


def test_always_save_saves_at_every_eval():
    cfg = TrainConfig(eval_interval=5, max_iters=12, checkpoint_interval=0, always_save_checkpoint=True)
    assert run_schedule(CheckpointPolicy(cfg), 0, 12, LOSSES)[1] == [5, 10, 12]


def test_a_resumed_run_does_not_repeat_its_eval_or_save_at_once():
    cfg = TrainConfig(eval_interval=5, max_iters=12, checkpoint_interval=5, always_save_checkpoint=False)
    policy = CheckpointPolicy(cfg, start_iter=10, best_val_loss=2.5, last_eval_iter=10)  # saved right after its eval at 10
    evals, saves, bests = run_schedule(policy, 10, 12, LOSSES)
    assert evals == [12] and saves == [12] and bests == [12]


def test_a_stop_signal_saves_without_evaluating_and_eval_only_never_saves():
    cfg = TrainConfig(eval_interval=5, max_iters=12, checkpoint_interval=0, always_save_checkpoint=False)
    evals, saves, _ = run_schedule(CheckpointPolicy(cfg), 0, 12, LOSSES, stopping_at=10)
    assert evals == [0, 5] and saves == [5, 10]
    only = CheckpointPolicy(TrainConfig(eval_only=True, eval_interval=5))
    assert only.save_due(5, evaluated=True, improved=True, stopping=True, clock_due=True) is False


def test_the_nan_guard_counts_bad_steps_in_a_row_and_holds_periodic_saves():
    policy = CheckpointPolicy(TrainConfig(max_bad_steps=2, checkpoint_interval=4, eval_interval=1000))
    assert [policy.record_step(ok) for ok in (True, False, False, True, False, False, False)] == [False] * 6 + [True]
    assert policy.bad_steps == 3
    assert not policy.save_due(4, evaluated=False, improved=False, stopping=False, clock_due=False)  # not in the middle of bad steps
    assert policy.save_due(4, evaluated=False, improved=False, stopping=True, clock_due=False)  # a stop always saves
    policy.record_step(True)
    assert policy.save_due(4, evaluated=False, improved=False, stopping=False, clock_due=False)


def test_checkpoint_minutes_runs_from_the_last_save():
    now = [1000.0]
    policy = CheckpointPolicy(TrainConfig(checkpoint_minutes=1.0, eval_interval=1000), clock=lambda: now[0])
    now[0] += 59
    assert not policy.clock_due()
    now[0] += 2
    assert policy.clock_due() and policy.save_due(7, evaluated=False, improved=False, stopping=False, clock_due=True)
    policy.saving()
    assert not policy.clock_due()
    assert not CheckpointPolicy(TrainConfig(checkpoint_minutes=0.0), clock=lambda: now[0] + 1e9).clock_due()
