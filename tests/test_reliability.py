"""A run survives being stopped, killed or fed NaNs, and continues exactly where it was."""

import errno
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_MODEL_ARGS, child_pids, rank_of
from gptsuite import checkpoint
from gptsuite.checkpoint import load_checkpoint, newest_checkpoint
from gptsuite.errors import UserError
from model import GPT
from train import main

TINY = [
    *TINY_MODEL_ARGS,
    "--gradient_accumulation_steps=1",
    "--eval_iters=2",
    "--eval_interval=4",
    "--warmup_iters=2",
    "--lr_decay_iters=20",
    "--learning_rate=3e-3",
]


def records(out: Path) -> list[dict]:
    """The losses of metrics.jsonl (timings vary from run to run)."""
    keep = ("iter", "loss", "train_loss", "val_loss", "skipped_steps")
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in (out / "metrics.jsonl").read_text().splitlines()]


def on_training_forward(monkeypatch, action) -> None:
    """Make GPT.forward call action(k, loss) on its k-th call in training mode and return its result."""
    calls, forward = itertools.count(), GPT.forward

    def patched(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if self.training and targets is not None:
            loss = action(next(calls), loss)
        return logits, loss

    monkeypatch.setattr(GPT, "forward", patched)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def optimizer_states(state: dict) -> dict:
    """The per-parameter states of an optimizer's state_dict, keyed (optimizer name, param index):
    one AdamW's, or each of the several an `Optimizers` (optimizer=muon) holds by name."""
    if "state" in state:
        return {("", i): s for i, s in state["state"].items()}
    return {(name, i): s for name, sub in state.items() for (_, i), s in optimizer_states(sub).items()}


LORA = ["--init_from={base}", "--lora_rank=4", "--lora_dropout=0.1", "--lora_bias=lora_only"]  # adapters on a trained checkpoint of ours


@pytest.mark.parametrize(
    "variant", [[], ["--arch=modern", "--optimizer=muon", "--lr_schedule=wsd", "--muon_lr=0.02"], LORA], ids=["adamw", "modern-muon", "lora"]
)
def test_interrupted_run_resumes_bit_for_bit(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, monkeypatch, variant: list[str]):
    """CPU fp32 with dropout: 12 iterations in one go, or stopped by Ctrl-C in iteration 6 and
    resumed, give the same losses and the same final weights (a LoRA run's: its adapters) to the bit."""
    variant = [v.format(base=tiny_checkpoint) for v in variant]
    args = [f"--data_dir={char_dataset}", *TINY, "--max_iters=12", "--dropout=0.1", "--gradient_accumulation_steps=2", *variant]
    main([*args, f"--out_dir={tmp_path / 'whole'}"])

    def interrupt(call: int, loss):
        if call == 2 * 6:  # first micro-step of iteration 6
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    with monkeypatch.context() as m:
        on_training_forward(m, interrupt)
        main([*args, f"--out_dir={tmp_path / 'split'}"])
    stopped = load_checkpoint(tmp_path / "split")
    assert stopped["iter_num"] == 7 and len(stopped["rng"]) == 1 and stopped["sampler"]["iter_num"] == 7
    shutil.copytree(tmp_path / "split", tmp_path / "reseeded")
    main([*args, f"--out_dir={tmp_path / 'split'}", "--init_from=resume"])

    assert records(tmp_path / "split") == records(tmp_path / "whole")
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    assert split["iter_num"] == whole["iter_num"] == 12
    assert_same_tensors(split["model"], whole["model"])
    states, whole_states = optimizer_states(split["optimizer"]), optimizer_states(whole["optimizer"])
    assert states.keys() == whole_states.keys() and len(states) == len(whole["model"]) - (0 if variant else 1)  # every parameter's (gpt2: wte is lm_head)
    for key, state in states.items():
        assert_same_tensors(state, whole_states[key])

    # the RNG states are what makes it exact: without them dropout draws differ
    state = load_checkpoint(tmp_path / "reseeded")
    checkpoint.save_checkpoint({k: v for k, v in state.items() if k != "rng"}, tmp_path / "reseeded" / "ckpt.pt")
    main([*args, f"--out_dir={tmp_path / 'reseeded'}", "--init_from=resume"])
    reseeded = load_checkpoint(tmp_path / "reseeded")["model"]
    assert not all(torch.equal(reseeded[k], whole["model"][k]) for k in whole["model"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_interrupted_run_on_cuda_continues_the_curve(tmp_path: Path, char_dataset: Path, monkeypatch):
    """The same on a GPU in bfloat16: the CUDA RNG state is saved and the curve matches within noise."""
    args = [f"--data_dir={char_dataset}", *TINY, "--device=cuda", "--dtype=bfloat16", "--max_iters=12", "--dropout=0.1"]
    main([*args, f"--out_dir={tmp_path / 'whole'}"])
    with monkeypatch.context() as m:
        on_training_forward(m, lambda call, loss: (os.kill(os.getpid(), signal.SIGINT) if call == 6 else None) or loss)
        main([*args, f"--out_dir={tmp_path / 'split'}"])
    assert load_checkpoint(tmp_path / "split")["rng"][0]["cuda"].numel() > 0
    main([*args, f"--out_dir={tmp_path / 'split'}", "--init_from=resume"])
    whole, split = records(tmp_path / "whole"), records(tmp_path / "split")
    assert [r["iter"] for r in split] == [r["iter"] for r in whole]
    for a, b in zip(whole, split, strict=True):
        for key in a.keys() - {"iter"}:
            assert b[key] == pytest.approx(a[key], rel=2e-2), (key, a, b)


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_0(tmp_path: Path, char_dataset: Path):
    out = tmp_path / "out"
    cmd = [sys.executable, "train.py", f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--max_iters=100000", "--eval_interval=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("iter 3:"):
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=60)
    stdout = "".join(lines) + stdout
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in stdout and stderr == ""
    stopped_at = int(stdout.split("stopped at iter ")[1].split(";")[0])
    assert stopped_at >= 4 and load_checkpoint(out)["iter_num"] == stopped_at
    assert f"iter {stopped_at}: loss" in stdout and f"iter {stopped_at + 1}:" not in stdout


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the torchrun workers through /proc (Linux)")
def test_ddp_ranks_agree_to_stop_when_one_is_signalled(tmp_path: Path, char_dataset: Path):
    """SIGTERM to rank 1 only: both ranks stop after the same step, rank 0 writes one checkpoint
    with both ranks' RNG states, and everything exits 0."""
    out = tmp_path / "out"
    args = [f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--gradient_accumulation_steps=2", "--max_iters=100000", "--eval_interval=100000"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("iter 2:"):
            rank1 = [p for p in child_pids(proc.pid) if rank_of(p) == 1]
            assert len(rank1) == 1
            os.kill(rank1[0], signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    stdout = "".join(lines) + stdout
    assert proc.returncode == 0, stderr
    stopped_at = int(stdout.split("stopped at iter ")[1].split(";")[0])
    assert stdout.count("stopped at iter") == 1  # rank 0 reports
    ckpt = load_checkpoint(out)
    assert ckpt["iter_num"] == stopped_at and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # seeded seed + rank


def test_keep_last_rotation_best_and_interval(tmp_path: Path, char_dataset: Path):
    out = tmp_path / "out"
    base = [f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--always_save_checkpoint=False", "--checkpoint_interval=3", "--keep_last=2"]
    main([*base, "--max_iters=10"])
    # which saves there should have been: every 3 iterations, and at evals that improved the val loss
    evals = [(r["iter"], r["val_loss"]) for r in records(out) if "val_loss" in r]
    best, improved = 1e9, []
    for it, loss in evals:
        if loss < best:
            best = loss
            improved.append(it)
    saves = sorted({3, 6, 9} | {it for it in improved if it > 0})
    numbered = sorted(p.name for p in out.glob("ckpt-*.pt"))
    assert numbered == [f"ckpt-{it:06d}.pt" for it in saves[-2:]]
    assert load_checkpoint(out / "ckpt.pt")["iter_num"] == saves[-1]
    assert (out / f"ckpt-{saves[-1]:06d}.pt").samefile(out / "ckpt.pt")  # a link, not a copy
    assert load_checkpoint(out / "best.pt")["iter_num"] == improved[-1]
    # a longer resumed run keeps rotating, and leaves no temp files
    main([*base, "--max_iters=12", "--init_from=resume"])
    kept = sorted(p.name for p in out.glob("ckpt-*.pt"))
    assert kept[-1] == "ckpt-000012.pt" and len(kept) == 2
    assert not list(out.glob(".*"))
    main([*base, "--max_iters=15", "--init_from=resume", "--keep_last=0"])  # off: the numbered files are left alone
    assert sorted(p.name for p in out.glob("ckpt-*.pt")) == kept and load_checkpoint(out)["iter_num"] == 15


@pytest.mark.parametrize("keep_last, left", [(0, [2, 5, 9]), (1, [2, 5, 9]), (2, [2, 4, 5, 9]), (10, [1, 2, 3, 4, 5, 9])])
def test_a_sharded_run_rotates_its_folders_and_keeps_best(tmp_path: Path, keep_last: int, left: list[int]):
    """A sharded (FSDP) run's checkpoints are the ckpt-<iter>.dcp folders themselves: it keeps the
    newest max(keep_last, 1) and the one best.dcp points at; folders numbered past this run (an
    earlier, longer run's) are not its to delete. One process, no process group: DCP saves alone."""
    for i in (1, 2, 3, 4, 9):
        (tmp_path / f"ckpt-{i:06d}.dcp").mkdir()
        (tmp_path / f"ckpt-{i:06d}.dcp" / checkpoint.SHARDED_META).write_text("{}")
    os.symlink("ckpt-000002.dcp", tmp_path / checkpoint.BEST_SHARDED_NAME)
    model = torch.nn.Linear(2, 2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")  # the single-process save DCP says it assumes
        checkpoint.write_sharded_checkpoint(model, torch.optim.AdamW(model.parameters()), {"iter_num": 5}, None, tmp_path, keep_last, False, True)
    assert [p.name for p in checkpoint.numbered_sharded(tmp_path)] == [f"ckpt-{i:06d}.dcp" for i in left]
    assert checkpoint.newest_sharded(tmp_path) == tmp_path / "ckpt-000005.dcp"


def test_checkpoint_minutes_saves_on_the_clock(tmp_path: Path, char_dataset: Path):
    out = tmp_path / "out"
    main([f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--max_iters=3", "--eval_interval=100", "--checkpoint_minutes=1e-9", "--keep_last=10"])
    assert sorted(p.name for p in out.glob("ckpt-*.pt")) == ["ckpt-000001.pt", "ckpt-000002.pt", "ckpt-000003.pt"]


def test_resume_takes_the_newest_complete_checkpoint_and_clears_partial_ones(tmp_path: Path, char_dataset: Path, capsys):
    out = tmp_path / "out"
    args = [f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--checkpoint_interval=2", "--keep_last=3", "--eval_interval=100"]
    main([*args, "--max_iters=6"])
    (out / "ckpt.pt").unlink()  # as if a user deleted it: the newest numbered one is next
    dead, alive = 2**22 + 12345, 1  # above pid_max: no such process; pid 1 always runs
    (out / f".ckpt.pt.{dead}.tmp").write_bytes(b"partial")
    (out / f".ckpt-000008.pt.{dead}.tmp").write_bytes(b"partial")
    (out / f".ckpt.pt.{alive}.tmp").write_bytes(b"another writer, still running")
    assert newest_checkpoint(out) == out / "ckpt-000006.pt"
    capsys.readouterr()
    main([*args, "--max_iters=8", "--init_from=resume"])
    stdout = capsys.readouterr().out
    assert f"resuming from {out / 'ckpt-000006.pt'} at iter 6" in stdout
    assert sorted(p.name for p in out.glob(".*")) == [f".ckpt.pt.{alive}.tmp"]
    assert load_checkpoint(out)["iter_num"] == 8


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_a_killed_writer_nobody_reaped_is_not_taken_for_a_live_one(tmp_path: Path):
    """A writer killed with its parent (torchrun's workers after kill -9) stays a zombie until
    something reaps it, and a container's init may never do it: its temp file is still stale."""
    from gptsuite.atomic import remove_stale_temps

    child = subprocess.Popen(["sleep", "0"])
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not yet reaped
        pass
    partial = tmp_path / f".ckpt-000006.dcp.{child.pid}.tmp"
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"partial")
    try:
        assert remove_stale_temps(tmp_path) == [partial] and not partial.exists()
    finally:
        child.wait()


def fill_disk_after(nbytes: int):
    def save(obj, f, *args, **kwargs):
        f.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path: Path, char_dataset: Path, monkeypatch):
    out = tmp_path / "out"
    args = [f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--keep_last=2"]
    main([*args, "--max_iters=4"])
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.pt")}
    monkeypatch.setattr(checkpoint.torch, "save", fill_disk_after(1000))
    with pytest.raises(UserError) as e:
        main([*args, "--max_iters=8", "--init_from=resume"])
    msg = str(e.value)
    assert "disk is full" in msg and f"{out / 'ckpt.pt'} still holds the previous checkpoint" in msg and "\n" not in msg
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.pt")} == before
    assert not list(out.glob(".*")) and load_checkpoint(out)["iter_num"] == 4


@pytest.mark.parametrize("variant", [[], ["--arch=modern", "--optimizer=muon"]], ids=["adamw", "modern-muon"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path: Path, char_dataset: Path, monkeypatch, variant: list[str]):
    out = tmp_path / "out"
    on_training_forward(monkeypatch, lambda call, loss: loss * float("nan") if call in (2, 3) else loss)
    main([f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--max_iters=8", *variant])
    logged = [r for r in records(out) if "loss" in r]  # one per iteration: log_interval=1
    assert [r.get("skipped_steps", 0) for r in logged] == [0, 0, 1, 2, 2, 2, 2, 2]
    assert logged[2]["loss"] != logged[2]["loss"]  # NaN: iteration 2 had no good step to average
    ckpt = load_checkpoint(out)
    assert ckpt["iter_num"] == 8 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    states = optimizer_states(ckpt["optimizer"])  # Adam moments, Muon momentum buffers: no NaN got in
    assert states and all(torch.isfinite(v).all() for s in states.values() for v in s.values())


def test_divergence_stops_with_the_state_from_before_it(tmp_path: Path, char_dataset: Path, monkeypatch):
    args = [f"--data_dir={char_dataset}", *TINY, "--eval_interval=100", "--max_bad_steps=2"]
    main([*args, f"--out_dir={tmp_path / 'clean'}", "--max_iters=5"])
    with monkeypatch.context() as m:
        on_training_forward(m, lambda call, loss: loss * float("inf") if call >= 5 else loss)
        with pytest.raises(UserError, match=r"3 steps in a row \(iters 5-7, more than max_bad_steps=2\).*iter 5"):
            main([*args, f"--out_dir={tmp_path / 'bad'}", "--max_iters=20"])
    clean, bad = load_checkpoint(tmp_path / "clean"), load_checkpoint(tmp_path / "bad")
    assert bad["iter_num"] == clean["iter_num"] == 5
    assert_same_tensors(bad["model"], clean["model"])
    assert torch.equal(bad["rng"][0]["torch"], clean["rng"][0]["torch"])
    main([*args, f"--out_dir={tmp_path / 'bad'}", "--max_iters=7", "--init_from=resume"])  # and it resumes from there
    assert load_checkpoint(tmp_path / "bad")["iter_num"] == 7


class BoostGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by 1e30, which overflows float16."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 1e30


def test_float16_overflow_is_the_grad_scalers_job(tmp_path: Path, char_dataset: Path, monkeypatch):
    out = tmp_path / "out"
    on_training_forward(monkeypatch, lambda call, loss: BoostGrad.apply(loss) if call == 2 else loss)
    main([f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--max_iters=4", "--dtype=float16"])
    assert all("skipped_steps" not in r for r in records(out))  # not counted as a bad step
    assert load_checkpoint(out)["scaler"]["scale"] == 2.0**15  # the scaler skipped it and halved its scale


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_a_checkpoint(tmp_path: Path, char_dataset: Path):
    """A few trials here; tests/stress_kill.py runs many."""
    from stress_kill import run_trials

    stats = run_trials(3, tmp_path / "out", char_dataset, seed=0)
    assert stats["trials"] == 3 and stats["failures"] == [], stats
    assert stats["killed_mid_write"] >= 1 and stats["final_iter"] > 0
