from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL_ARGS, run_entry
from gptsuite.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.optim import ScheduleConfig, get_lr
from model import GPT, GPTConfig
from train import main as train_main

TINY_ARGS = [
    *TINY_MODEL_ARGS,
    "--gradient_accumulation_steps=1",
    "--eval_iters=2",
    "--eval_interval=5",
    "--log_interval=1",
    "--warmup_iters=2",
    "--lr_decay_iters=10",
    "--dropout=0.0",
]


def test_lr_schedule_endpoints():
    s = ScheduleConfig(min_lr=1e-4, warmup_iters=10, lr_decay_iters=100)
    assert get_lr(0, s, 1e-3) == pytest.approx(1e-3 / 11)
    assert get_lr(9, s, 1e-3) < get_lr(10, s, 1e-3) == pytest.approx(1e-3)
    assert get_lr(55, s, 1e-3) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert get_lr(100, s, 1e-3) == pytest.approx(1e-4) and get_lr(10_000, s, 1e-3) == pytest.approx(1e-4)
    assert all(get_lr(i, s, 1e-3) >= get_lr(i + 1, s, 1e-3) for i in range(10, 200))
    assert get_lr(5, ScheduleConfig(decay_lr=False), 3e-4) == 3e-4


def test_checkpoint_round_trip_gives_identical_logits(tmp_path: Path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)).eval()
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "iter_num": 3}, tmp_path / "ckpt.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    again = model_from_checkpoint(load_checkpoint(tmp_path)).eval()
    x = torch.randint(0, 65, (2, 16))
    assert torch.equal(model(x, x)[0], again(x, x)[0])


def test_nanogpt_compiled_checkpoint_keys_load(tmp_path: Path):
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32))
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint({"model": state, "model_args": model.model_args(), "config": {"dataset": "x"}}, tmp_path / "ckpt.pt")
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "ckpt.pt")).state_dict()
    expected = model.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_pickled_code_is_refused(tmp_path: Path):
    import os

    marker = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for protocol in (2, 5):  # torch.save's default, and the newest pickle protocol
        torch.save({"model": Evil(), "model_args": {}}, tmp_path / "ckpt.pt", pickle_protocol=protocol)
        with pytest.raises(UserError, match="refusing to load .*(posix.system|weights_only)"):
            load_checkpoint(tmp_path / "ckpt.pt")
    assert not marker.exists()
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "ckpt.pt")


@pytest.mark.slow
def test_end_to_end_prepare_train_resume_sample(tmp_path: Path, text_file: Path):
    """The command-line smoke run: each entry point as its own process, as a user runs them."""
    data, out = tmp_path / "data", tmp_path / "out"
    run_entry("prepare.py", "shakespeare_char", f"--input={text_file}", f"--data_dir={data}")
    proc = run_entry("train.py", f"--data_dir={data}", f"--out_dir={out}", "--max_iters=10", "--learning_rate=3e-3", *TINY_ARGS)
    assert "step 10: train loss" in proc.stdout and (out / "ckpt.pt").exists()
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["iter_num"] == 10 and ckpt["tokenizer"]["kind"] == "char"
    assert {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config"} <= set(ckpt)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 10 + 3  # one per iteration, plus evals at 0, 5, 10

    proc = run_entry("train.py", f"--data_dir={data}", f"--out_dir={out}", "--max_iters=15", "--init_from=resume", *TINY_ARGS)
    assert "step 15:" in proc.stdout and "iter 11:" in proc.stdout and "iter 1:" not in proc.stdout

    proc = run_entry("sample.py", f"--out_dir={out}", "--start=First", "--num_samples=2", "--max_new_tokens=20", "--device=cpu")
    samples = proc.stdout.split("---------------\n")
    assert len(samples) == 3 and all(s.startswith("First") for s in samples[:2])


def test_loss_falls_when_training(tmp_path: Path, char_dataset: Path, capsys):
    out = tmp_path / "out"
    train_main(
        [f"--data_dir={char_dataset}", f"--out_dir={out}", "--max_iters=40", "--learning_rate=1e-2", *TINY_ARGS, "--eval_interval=40", "--lr_decay_iters=40"]
    )
    losses = [float(line.split("val loss ")[1]) for line in capsys.readouterr().out.splitlines() if "val loss" in line]
    assert len(losses) == 2 and losses[-1] < losses[0] - 0.5
