"""Training that takes other objectives than next-token loss on every token, with no change to
train.py's loop; a frozen reference model; the run's build order; a checkpoint written before
the settings were split into parts resumes bit for bit."""

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import train
from conftest import TINY_MODEL_ARGS
from gptsuite.batches import Batches, open_training_data
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError
from gptsuite.lora import LoraConfig, adapt
from gptsuite.objectives import OBJECTIVES, Objective, Reference, agree, token_losses, weighted_mean
from gptsuite.runtime import Runtime, setup_runtime
from gptsuite.settings import read_settings
from gptsuite.start import start_run
from model import GPT, GPTConfig

FIXTURES = Path(__file__).parent / "fixtures"


class EveryOtherTarget(Objective):
    """A second objective, as small as one can be: next-token loss on the even positions only,
    carried as per-token weights in batches of its own (x, y, weights), and a metric of its own."""

    name = "every_other_target"
    metrics = ("counted",)

    def with_weights(self, batch):
        x, y = batch
        w = torch.zeros_like(y, dtype=torch.float32)
        w[:, ::2] = 1.0
        return x, y, w

    def train_batches(self, iter_num: int):
        return map(self.with_weights, self.batches.train(iter_num))

    def eval_batch(self, split: str, k: int):
        return self.with_weights(self.batches.eval(split, k))

    def loss(self, model, batch):
        x, y, w = batch
        return weighted_mean(token_losses(model, x, y), w), {"counted": w.sum()}


def masked_reference_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> float:
    """The same loss, computed another way: the odd targets set to -1, which cross-entropy ignores."""
    masked = y.clone()
    masked[:, 1::2] = -1
    with torch.no_grad():
        logits = model(x, all_logits=True)[0]
        return F.cross_entropy(logits.flatten(0, 1), masked.flatten(), ignore_index=-1).item()


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_second_objective_trains_through_the_unchanged_loop(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, EveryOtherTarget.name, EveryOtherTarget)
    monkeypatch.chdir(tmp_path)
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, f"--init_from={tiny_checkpoint}", "--dropout=0.0", "--gradient_accumulation_steps=2"]
    args += ["--eval_iters=2", "--eval_interval=1000", "--log_interval=1", "--warmup_iters=1", "--lr_decay_iters=3", "--seed=5"]
    train.main([*args, "--out_dir=run", "--max_iters=2", "--objective=every_other_target"])

    # the reference: the model it started from, on the batches the run drew (same seed), masked by hand
    cfg, _ = read_settings([*args, "--out_dir=run"])
    rt, data = setup_runtime("cpu", "float32", 5), open_training_data(cfg.data, 16)
    model = start_run(cfg, None, data, rt).model.eval()
    batches = Batches(data, cfg.data, 16, 5, rt)
    evals = {s: sum(masked_reference_loss(model, *batches.eval(s, k)) for k in range(2)) / 2 for s in ("train", "val")}
    micro = batches.train(0)
    first_step = sum(masked_reference_loss(model, *next(micro)) for _ in range(2)) / 2  # iteration 0: micro-batches 0 and 1
    plain = sum(model(*batches.eval("val", k))[1].item() for k in range(2)) / 2  # next-token loss on every target

    logged = records(tmp_path / "run")
    at_start = next(r for r in logged if "val_loss" in r and r["iter"] == 0)
    assert at_start["train_loss"] == pytest.approx(evals["train"], rel=1e-5)
    assert at_start["val_loss"] == pytest.approx(evals["val"], rel=1e-5) and abs(at_start["val_loss"] - plain) > 1e-4
    steps = [r for r in logged if "ms_per_iter" in r]
    assert steps[0]["loss"] == pytest.approx(first_step, rel=1e-5)  # the first step's loss, before its update
    assert [r["counted"] for r in steps] == [4 * 8, 4 * 8]  # its own metric: 4 sequences x 8 of 16 targets, per micro-batch
    assert at_start["val_counted"] == 4 * 8  # and at evals, per split
    assert load_checkpoint(tmp_path / "run")["config"]["objective"] == "every_other_target"
    with pytest.raises(UserError, match="unknown objective 'nope'; use one of next_token, dpo, every_other_target"):
        train.main([*args, "--out_dir=other", "--max_iters=1", "--objective=nope"])


def test_train_py_has_no_objective_of_its_own():
    """What a step computes is the objective's: train.py names none of them, nor any loss."""
    source = (Path(train.__file__)).read_text()
    for word in ("cross_entropy", "next_token", "every_other", "(x, y)", "loss ="):
        assert word not in source, word


def tiny_lora_model(seed: int = 0) -> tuple[GPT, GPT]:
    torch.manual_seed(seed)
    base = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=16, bias=True, dropout=0.1))
    frozen = GPT(base.config)
    frozen.load_state_dict(base.state_dict())
    model = adapt(base, LoraConfig(rank=4, dropout=0.1))
    with torch.no_grad():  # trained adapters: B is no longer zero, so the adapted model differs from its base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, frozen.eval()


def test_a_lora_reference_is_the_base_with_the_adapters_off_and_without_gradients():
    model, base = tiny_lora_model()
    model.train()
    x = torch.randint(0, 32, (2, 16))
    reference = Reference(model, lora=True)
    assert reference.model is model  # no second copy of the weights
    got = reference.logits(x)
    assert torch.equal(got, base(x, all_logits=True)[0])  # the base's logits, without dropout
    assert not got.requires_grad and model.training  # no graph; the model is as it was
    model.eval()
    assert not torch.allclose(model(x, all_logits=True)[0], got)  # the adapters are on again afterwards


def test_a_full_reference_is_a_frozen_copy_of_the_starting_weights():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16))
    x = torch.randint(0, 32, (2, 16))
    before = model(x, all_logits=True)[0].detach()
    reference = Reference(model, lora=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)  # the trained model moves on
    assert torch.equal(reference.logits(x), before)
    assert not any(p.requires_grad for p in reference.model.parameters())


class LossAgainstReference(Objective):
    """An objective that needs the reference: next-token loss, and the reference's loss as a metric."""

    name = "with_reference"
    metrics = ("reference_loss",)
    needs_reference = True

    def loss(self, model, batch):
        x, y = batch
        ref = self.reference.logits(x)
        return model(x, y)[1], {"reference_loss": F.cross_entropy(ref.flatten(0, 1).float(), y.flatten())}


def test_an_objective_gets_the_reference_under_lora_from_the_loop(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, LossAgainstReference.name, LossAgainstReference)
    monkeypatch.chdir(tmp_path)
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, f"--init_from={tiny_checkpoint}", "--lora_rank=2", "--learning_rate=0.05", "--seed=5"]
    args += ["--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=1000", "--log_interval=1", "--warmup_iters=0", "--lr_decay_iters=4"]
    train.main([*args, "--out_dir=run", "--max_iters=4", "--objective=with_reference"])
    steps = [r for r in records(tmp_path / "run") if "ms_per_iter" in r]
    # the reference is the untrained base: its loss on each step's batch, computed here from the checkpoint
    cfg, _ = read_settings([*args, "--out_dir=run"])
    rt, data = setup_runtime("cpu", "float32", 5), open_training_data(cfg.data, 16)
    base = start_run(cfg, None, data, rt).model.eval()
    batches = Batches(data, cfg.data, 16, 5, rt).train(0)
    with torch.no_grad():
        expected = [base(*next(batches))[1].item() for _ in steps]  # adapters start at zero: the base's loss
    assert [r["reference_loss"] for r in steps] == pytest.approx(expected, rel=1e-5)
    assert steps[-1]["loss"] < steps[-1]["reference_loss"]  # the adapters trained; the reference stayed
    with pytest.raises(UserError, match="parallel=fsdp: objective=with_reference keeps a reference model"):
        train.main([*args, "--out_dir=other", "--objective=with_reference", "--parallel=fsdp", "--lora_rank=0"])


def test_nothing_draws_from_the_generators_after_a_resumed_run_restores_them(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, "--dropout=0.1", "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=2"]
    train.main([*args, "--out_dir=run", "--max_iters=2"])
    saved = load_checkpoint(tmp_path / "run")["rng"][0]
    torch.manual_seed(123)  # anything else
    cfg, resumed = read_settings(["--init_from=resume", "--out_dir=run"])
    train.setup(cfg, setup_runtime("cpu", "float32", cfg.system.seed), resumed)
    assert torch.equal(torch.get_rng_state(), saved["torch"])  # setup's last act: what the loop draws next is what the run would have


def test_a_checkpoint_written_before_the_settings_were_split_resumes_bit_for_bit(tmp_path: Path, char_dataset: Path, monkeypatch):
    """tests/fixtures: a run of the earlier code (259f172: one flat TrainConfig) saved at iter 2
    (dropout 0.1, 2 micro-steps, AdamW), and the weights that code reached at iter 4 resuming it."""
    monkeypatch.chdir(tmp_path)  # the checkpoint recorded data_dir='data': char_dataset is tmp_path/data, the same text
    (tmp_path / "run").mkdir()
    shutil.copy(FIXTURES / "ckpt_259f172_iter2.pt", tmp_path / "run" / "ckpt.pt")
    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=4", "--device=cpu"])
    ours, theirs = load_checkpoint(tmp_path / "run")["model"], torch.load(FIXTURES / "ckpt_259f172_iter4_model.pt", weights_only=True)["model"]
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k


def test_a_resume_runs_each_config_file_once_and_reads_its_checkpoint_once(tmp_path: Path, char_dataset: Path, monkeypatch):
    """One layered parse: defaults, the checkpoint's settings, config files, flags."""
    import gptsuite.checkpoint

    monkeypatch.chdir(tmp_path)
    train.main(
        [
            f"--data_dir={char_dataset}",
            *TINY_MODEL_ARGS,
            "--gradient_accumulation_steps=1",
            "--eval_iters=1",
            "--eval_interval=2",
            "--out_dir=run",
            "--max_iters=2",
        ]
    )
    config = tmp_path / "more.py"  # a config file with a side effect: one line per execution
    config.write_text(f"open({str(tmp_path / 'runs.log')!r}, 'a').write('ran\\n')\nmax_iters = 4\n")
    reads = []
    load = gptsuite.checkpoint.load_checkpoint
    monkeypatch.setattr(gptsuite.checkpoint, "load_checkpoint", lambda *a, **k: reads.append(a[0]) or load(*a, **k))
    for module in ("gptsuite.settings", "gptsuite.start", "gptsuite.loading", "gptsuite.checkpointer"):
        if hasattr(importlib.import_module(module), "load_checkpoint"):
            monkeypatch.setattr(f"{module}.load_checkpoint", gptsuite.checkpoint.load_checkpoint)
    train.main(["--init_from=resume", "--out_dir=run", str(config), "--device=cpu"])
    assert (tmp_path / "runs.log").read_text() == "ran\n"
    assert len(reads) == 1, reads
    assert load_checkpoint(tmp_path / "run")["iter_num"] == 4


def test_ddp_ranks_agree_on_the_mean_loss_and_on_any_bad_step_or_flag(monkeypatch):
    """agree() under DDP: one all-reduce (a sum; the other rank's numbers are stood in for), from
    which each rank reads the mean of the values, and whether anything was bad or flagged on any rank."""
    other = torch.tensor([1.0, 3.0, 0.0, 1.0])  # rank 1's: a non-finite gradient, loss 3.0, no stop signal, its clock due
    reduced = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: reduced.append(t.clone()) or t.add_(other))
    rt = Runtime("cpu", "cpu", "float32", distributed=True, world_size=2)
    values, bad, flags = agree([torch.tensor(1.0)], [torch.tensor(0.5)], [False, False], rt)
    assert len(reduced) == 1 and values == [2.0] and bad and flags == [False, True]
    one = Runtime("cpu", "cpu", "float32")
    assert agree([torch.tensor(1.0)], [torch.tensor(float("inf"))], [True], one) == ([1.0], True, [True])
