import json
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


def test_a_new_run_does_not_replace_another_unless_asked(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [f"--data_dir={char_dataset}", *TINY_ARGS, "--out_dir=run", "--eval_interval=2", "--keep_last=2"]
    train_main([*args, "--max_iters=4"])
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert {"ckpt.pt", "best.pt", "metrics.jsonl"} <= before.keys() and any(n.startswith("ckpt-") for n in before)
    with pytest.raises(
        UserError, match=r"run holds a run's checkpoint ckpt.pt, which a new run would replace; continue it with --init_from=resume.*--overwrite=True"
    ):
        train_main([*args, "--max_iters=2"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before  # nothing changed
    train_main([*args, "--max_iters=2", "--overwrite=True"])
    assert load_checkpoint(tmp_path / "run")["iter_num"] == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt-*.pt")) == ["ckpt-000002.pt"]  # the earlier run's are gone
    iters = [json.loads(line)["iter"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert iters[0] == 0 and max(iters) == 2 and iters.count(0) == 1  # one run's metrics, from its start
    assert "overwrite" not in load_checkpoint(tmp_path / "run")["config"]  # a permission for that run, not a setting to resume with


def test_a_run_from_a_checkpoint_of_ours_takes_its_arch_and_context(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, monkeypatch):
    """The weights decide the architecture (another --arch is refused, not recorded while the old one
    trains) and the context (no --block_size needed for a base of another context than 1024)."""
    monkeypatch.chdir(tmp_path)
    base = ["--device=cpu", "--compile=False", "--batch_size=2", "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=2", "--max_iters=2"]
    with pytest.raises(UserError, match=r"is an arch=gpt2 model, and its weights cannot become arch=modern; drop --arch"):
        train_main([f"--data_dir={char_dataset}", *base, f"--init_from={tiny_checkpoint}", "--arch=modern", "--out_dir=a"])
    train_main([f"--data_dir={char_dataset}", *base, f"--init_from={tiny_checkpoint}", "--lora_rank=2", "--out_dir=lora"])  # no --block_size: the base's 16
    ckpt = load_checkpoint(tmp_path / "lora")
    assert ckpt["model_args"]["block_size"] == 16 == ckpt["config"]["block_size"] and ckpt["iter_num"] == 2
    # a modern run of ours, fine-tuned without --arch, is recorded as what it is
    train_main(
        [
            f"--data_dir={char_dataset}",
            *base,
            *TINY_ARGS[:3],
            "--n_layer=1",
            "--n_head=2",
            "--n_embd=16",
            "--block_size=16",
            "--arch=modern",
            "--out_dir=modern",
        ]
    )
    train_main([f"--data_dir={char_dataset}", *base, "--init_from=modern", "--out_dir=tuned"])
    tuned = load_checkpoint(tmp_path / "tuned")
    assert tuned["config"]["arch"] == tuned["model_args"]["arch"] == "modern"


def test_checkpoint_saves_do_not_count_in_ms_per_iter(tmp_path: Path, char_dataset: Path, monkeypatch):
    """ms/iter, tokens/s and MFU time the training steps: a save every iteration (made slow here,
    0.4 s each) leaves them as they are."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT_SUITE_TEST_SLOW_SAVE", "0.4")
    train_main([f"--data_dir={char_dataset}", *TINY_ARGS, "--out_dir=run", "--max_iters=4", "--checkpoint_interval=1", "--eval_interval=1000"])
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "ms_per_iter" in line]
    assert len(steps) == 4 and all(r["ms_per_iter"] < 300 for r in steps), [r["ms_per_iter"] for r in steps]
