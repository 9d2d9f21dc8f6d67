"""A resumed run remembers its settings: --init_from=resume --out_dir=... is all it needs."""

import os
import shutil
import signal
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL_ARGS
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.settings import TrainConfig, read_settings
from model import GPT, GPTConfig
from train import main

RUN = [*TINY_MODEL_ARGS, "--gradient_accumulation_steps=2", "--eval_iters=2", "--eval_interval=4", "--warmup_iters=2", "--lr_decay_iters=20"]
RUN += ["--learning_rate=3e-3", "--max_iters=12", "--dropout=0.1", "--seed=7"]


def interrupt_at(monkeypatch, forward_call: int) -> None:
    """SIGINT to this process at the given training forward call (as Ctrl-C would)."""
    calls, forward = iter(range(10**6)), GPT.forward

    def patched(self, idx, targets=None, **kw):
        if self.training and targets is not None and next(calls) == forward_call:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(self, idx, targets, **kw)

    monkeypatch.setattr(GPT, "forward", patched)


def test_a_stopped_run_resumes_with_only_out_dir_bit_for_bit(tmp_path: Path, char_dataset: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the defaults (data/openwebtext, block 1024, ...) do not exist here
    main([f"--data_dir={char_dataset}", *RUN, "--out_dir=whole"])
    with monkeypatch.context() as m:
        interrupt_at(m, 2 * 6)
        main([f"--data_dir={char_dataset}", *RUN, "--out_dir=split"])
    out = capsys.readouterr().out
    assert "continue with: python train.py --init_from=resume --out_dir=split" in out
    assert load_checkpoint("split")["iter_num"] == 7

    main(["--init_from=resume", "--out_dir=split"])
    assert "resuming" in capsys.readouterr().out
    whole, split = load_checkpoint("whole"), load_checkpoint("split")
    assert split["iter_num"] == whole["iter_num"] == 12
    for k in whole["model"]:
        assert torch.equal(split["model"][k], whole["model"][k]), k
    where = ("out_dir", "device", "backend")  # where the run is, not what it is
    assert {k: v for k, v in split["config"].items() if k not in where} == {k: v for k, v in whole["config"].items() if k not in where} | {
        "init_from": "resume"
    }


def test_flags_given_now_override_and_the_changes_are_printed(tmp_path: Path, char_dataset: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run", "--max_iters=4"])
    capsys.readouterr()
    main(["--init_from=resume", "--out_dir=run", "--max_iters=6", "--device=cpu"])
    out = capsys.readouterr().out
    assert "resuming run/ckpt.pt with its settings, except: max_iters=6 (was 4)" in out
    ckpt = load_checkpoint("run")
    assert ckpt["iter_num"] == 6 and ckpt["config"]["dropout"] == 0.1 and ckpt["config"]["batch_size"] == 4


def test_a_moved_run_resumes_where_it_is_now(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([f"--data_dir={char_dataset}", *RUN, "--out_dir=first", "--max_iters=4"])
    shutil.move("first", "moved")
    main(["--init_from=resume", "--out_dir=moved", "--max_iters=5"])
    assert load_checkpoint("moved")["iter_num"] == 5 and not Path("first").exists()


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--n_layer=3", ["n_layer=2", "n_layer=3"]),
        ("--n_layer=12", ["n_layer=2", "n_layer=12"]),
        ("--bias=True", ["bias=False", "bias=True"]),
        ("--arch=modern", ["arch=gpt2", "arch=modern", "--arch=gpt2"]),
    ],
)
def test_the_model_shape_cannot_change(tmp_path: Path, char_dataset: Path, monkeypatch, flag: str, words: list[str]):
    monkeypatch.chdir(tmp_path)
    main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run", "--max_iters=2"])
    with pytest.raises(UserError) as e:
        main(["--init_from=resume", "--out_dir=run", flag])
    for w in words:
        assert w in str(e.value)


def test_a_checkpoint_without_a_recorded_config_needs_the_settings(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run", "--max_iters=2"])
    ckpt = load_checkpoint("run")
    save_checkpoint({k: v for k, v in ckpt.items() if k != "config"}, Path("run") / "ckpt.pt")
    with pytest.raises(UserError, match="no prepared dataset in data/openwebtext"):
        main(["--init_from=resume", "--out_dir=run"])
    main(["--init_from=resume", "--out_dir=run", f"--data_dir={char_dataset}", *RUN, "--max_iters=3"])
    assert load_checkpoint("run")["iter_num"] == 3


def test_a_checkpoint_from_before_arch_and_optimizer_resumes_as_gpt2_with_adamw(tmp_path: Path, char_dataset: Path, monkeypatch):
    """Checkpoints written before --arch and --optimizer existed record neither: they are GPT-2s
    trained with AdamW, and a resume that asks for something else is refused."""
    monkeypatch.chdir(tmp_path)
    main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run", "--max_iters=2"])
    ckpt = load_checkpoint("run")
    new_keys = ("arch", "optimizer", "muon_lr", "muon_momentum", "lr_schedule", "cooldown_frac")
    ckpt["model_args"] = {k: v for k, v in ckpt["model_args"].items() if k != "arch"}
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in new_keys}
    save_checkpoint(ckpt, Path("run") / "ckpt.pt")
    with pytest.raises(UserError) as e:
        main(["--init_from=resume", "--out_dir=run", "--arch=modern"])
    assert "arch=gpt2" in str(e.value) and "arch=modern" in str(e.value)
    with pytest.raises(UserError, match="--optimizer=adamw"):
        main(["--init_from=resume", "--out_dir=run", "--optimizer=muon"])
    main(["--init_from=resume", "--out_dir=run", "--max_iters=3"])
    assert load_checkpoint("run")["iter_num"] == 3


def test_a_resume_runs_where_it_is_now_with_what_the_run_was(tmp_path: Path):
    """device, backend and threads say where a run executes: a resume takes this machine's (the
    defaults, or what is set now), never the checkpoint's; the rest (seed here) it inherits."""
    machine = {"device": "cuda:1", "backend": "nccl", "threads": 3}
    model_args = asdict(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=65))
    save_checkpoint({"model": {}, "model_args": model_args, "config": machine | {"seed": 7}}, tmp_path / "ckpt.pt")  # what read_settings reads
    cfg, resumed = read_settings(["--init_from=resume", f"--out_dir={tmp_path}"])
    here = TrainConfig().system
    assert (cfg.system.device, cfg.system.backend, cfg.system.threads) == (here.device, here.backend, here.threads)
    assert cfg.system.seed == 7 and resumed.path == tmp_path / "ckpt.pt"
    cfg, _ = read_settings(["--init_from=resume", f"--out_dir={tmp_path}", "--threads=2"])
    assert cfg.system.threads == 2


def test_a_resume_onto_another_number_of_processes_reseeds_each_rank(monkeypatch, capsys):
    """A checkpoint holds one RNG state per rank: the same number of ranks each take back their
    own; another number (1 -> 2, 2 -> 1) cannot, and each rank is reseeded, differently."""
    from gptsuite import start
    from gptsuite.runtime import Runtime

    calls = []
    monkeypatch.setattr(start, "set_rng_state", lambda state, device: calls.append(("restored", state)))
    monkeypatch.setattr(start, "seed_everything", lambda seed: calls.append(("seeded", seed)))

    def resume(states: list, world_size: int) -> list:
        calls.clear()
        point = start.StartingPoint(model=None, ckpt={"iter_num": 10, "rng": states})
        for rank in range(world_size):
            point.restore_rng(7, Runtime("cpu", "cpu", "float32", distributed=world_size > 1, rank=rank, world_size=world_size))
        return list(calls)

    assert resume(["state 0", "state 1"], 2) == [("restored", "state 0"), ("restored", "state 1")]
    one_to_two = resume(["state 0"], 2)
    assert [kind for kind, _ in one_to_two] == ["seeded", "seeded"] and one_to_two[0][1] != one_to_two[1][1]
    assert "RNG states for 1 process(es), this run has 2" in capsys.readouterr().out
    assert [kind for kind, _ in resume(["state 0", "state 1"], 1)] == ["seeded"]
