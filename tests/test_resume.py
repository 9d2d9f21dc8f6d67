"""A resumed run remembers its settings: --init_from=resume --out_dir=... is all it needs."""

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL_ARGS
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from model import GPT
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
