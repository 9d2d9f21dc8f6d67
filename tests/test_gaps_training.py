"""Gaps a mutation audit found in the training tests: each test checks behaviour against an
independent reference (autograd on the whole batch, plain SGD, hand-computed windows, an
uninterrupted run), not against the implementation's own formula."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import conftest
import train
from conftest import TINY_MODEL_ARGS, train_config
from gptsuite.batches import Batches, TrainingData, get_batch
from gptsuite.checkpoint import load_checkpoint
from gptsuite.objectives import Objective, estimate_loss
from gptsuite.optim import get_lr
from gptsuite.runtime import Runtime
from gptsuite.settings import read_settings
from gptsuite.start import start_run
from model import GPT, GPTConfig

CPU = Runtime("cpu", "cpu", "float32")


def tiny_model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    args = dict(block_size=8, vocab_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True) | kw
    return GPT(GPTConfig(**args))


def random_batch(seed: int, batch_size: int = 3, block_size: int = 8, vocab: int = 16) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch_size, block_size), generator=g), torch.randint(0, vocab, (batch_size, block_size), generator=g)


def no_scaler():
    return torch.amp.GradScaler("cpu", enabled=False)


def train_step(model, optimizer, batches: list, accum_steps: int, grad_clip: float):
    return conftest.train_step(model, optimizer, no_scaler(), batches, accum_steps, grad_clip, CPU)


# 1. gradient accumulation averages the micro-steps' gradients


def test_accumulated_gradient_is_the_gradient_of_the_mean_loss():
    model = tiny_model().double()  # float64: the comparison does not depend on summation order
    b1, b2, leftover = random_batch(1), random_batch(2), random_batch(3)

    # reference: autograd on the two micro-batches concatenated (equal sizes: the mean of the two means)
    ref = tiny_model().double()
    ref.load_state_dict(model.state_dict())
    _, ref_loss = ref(torch.cat([b1[0], b2[0]]), torch.cat([b1[1], b2[1]]))
    ref_loss.backward()
    expected = {n: (p.detach() - p.grad).clone() for n, p in ref.named_parameters()}  # SGD, lr=1

    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0)
    result, micro = train_step(model, optimizer, [b1, b2, leftover], 2, 0.0)
    assert result.stepped and micro.ahead is leftover
    assert result.loss == pytest.approx(ref_loss.item(), rel=1e-6)  # the step sums its loss in float32
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12, msg=n)


# 2. the NaN guard: a non-finite gradient norm skips the step even when the loss is finite


def test_inf_gradient_with_finite_loss_skips_the_step_and_leaves_weights():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    handle = model.transformer.h[0].mlp.c_fc.weight.register_hook(lambda g: g * math.inf)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result, _ = train_step(model, optimizer, [random_batch(1), random_batch(2)], 1, 1.0)
    handle.remove()
    assert math.isfinite(result.loss)
    assert not result.stepped
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
        assert p.grad is None, n  # the bad gradients are dropped, not carried into the next step

    # and the next, clean step is exactly the step a fresh model takes
    fresh = tiny_model()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    train_step(fresh, fresh_opt, [random_batch(4), random_batch(5)], 1, 1.0)
    assert train_step(model, optimizer, [random_batch(4), random_batch(5)], 1, 1.0)[0].stepped
    for (n, p), q in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), n


# 3. a resumed run keeps the best val loss it had: best.pt is not overwritten by a worse eval


def scripted_val_losses(monkeypatch, losses: dict[int, float]) -> None:
    """estimate_loss returns losses[iter] for the iteration being evaluated (read from get_lr)."""
    current = {}

    def fake_get_lr(it, schedule, learning_rate):
        current["it"] = it
        return get_lr(it, schedule, learning_rate)

    def fake_estimate_loss(model, objective, eval_iters, rt):
        v = losses[current["it"]]
        return {"train": v, "val": v}

    monkeypatch.setattr(train, "get_lr", fake_get_lr)
    monkeypatch.setattr(train, "estimate_loss", fake_estimate_loss)


def test_resume_keeps_best_val_loss_and_best_pt(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scripted_val_losses(monkeypatch, {0: 5.0, 4: 1.0, 8: 3.0, 12: 2.0})  # best at 4, later evals worse
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=4"]
    args += ["--always_save_checkpoint=False", "--warmup_iters=2", "--lr_decay_iters=12", "--learning_rate=3e-3"]
    train.main([*args, "--out_dir=whole", "--max_iters=12"])
    train.main([*args, "--out_dir=split", "--max_iters=4"])
    assert load_checkpoint("split/best.pt")["iter_num"] == 4
    train.main(["--init_from=resume", "--out_dir=split", "--max_iters=12", "--device=cpu"])
    whole, split = load_checkpoint("whole/best.pt"), load_checkpoint("split/best.pt")
    assert whole["iter_num"] == 4 and whole["best_val_loss"] == 1.0  # the uninterrupted run
    assert split["iter_num"] == whole["iter_num"] and split["best_val_loss"] == whole["best_val_loss"]
    assert load_checkpoint("split/ckpt.pt")["best_val_loss"] == 1.0


# 4. GPT-2 init: residual projections at 0.02 / sqrt(2 * n_layer)


def test_init_std_of_every_weight():
    torch.manual_seed(0)
    n_layer = 8
    model = GPT(GPTConfig(block_size=256, vocab_size=512, n_layer=n_layer, n_head=4, n_embd=256, bias=True))
    resid_std = 0.02 / math.sqrt(2 * n_layer)  # 0.005
    seen_proj = 0
    for name, p in model.named_parameters():
        w = p.detach()
        if name.endswith("c_proj.weight"):
            seen_proj += 1
            assert w.std().item() == pytest.approx(resid_std, rel=0.03), name
            assert abs(w.mean().item()) < 0.1 * resid_std, name
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            assert torch.equal(w, torch.ones_like(w)), name
        elif name.endswith(".bias"):
            assert torch.equal(w, torch.zeros_like(w)), name
        else:  # c_attn, c_fc, wte (tied to lm_head), wpe
            assert w.dim() == 2, name
            assert w.std().item() == pytest.approx(0.02, rel=0.03), name
            assert abs(w.mean().item()) < 0.002, name
    assert seen_proj == 2 * n_layer  # attention and MLP in every block


# 5. get_batch: targets are the inputs shifted by one position in the source


def token_file(tmp_path: Path, n: int = 1000) -> Path:
    path = tmp_path / "tokens.bin"
    np.arange(n, dtype=np.uint16).tofile(path)  # token k at position k: a value is its own offset
    return path


def test_get_batch_windows_and_shifted_targets(tmp_path: Path):
    n, bs, T = 1000, 16, 8
    path = token_file(tmp_path, n)
    data = np.arange(n)
    for seed in range(5):
        x, y = get_batch(path, "uint16", bs, T, (seed, 0, 0), CPU)
        assert x.shape == y.shape == (bs, T) and x.dtype == y.dtype == torch.int64
        for i in range(bs):
            start = int(x[i, 0])
            assert 0 <= start <= n - T - 1
            assert x[i].tolist() == data[start : start + T].tolist()  # a window of the data
            assert y[i].tolist() == data[start + 1 : start + T + 1].tolist()
        assert torch.equal(y[:, :-1], x[:, 1:])
    again = get_batch(path, "uint16", bs, T, (4, 0, 0), CPU)  # the same seed, the same batch
    assert torch.equal(again[0], x) and torch.equal(again[1], y)


# further: the batch streams


def fake_data(tmp_path: Path, n: int = 5000) -> TrainingData:
    path = tmp_path / "data"
    path.mkdir(parents=True)
    for s in ("train", "val"):
        np.arange(n, dtype=np.uint16).tofile(path / f"{s}.bin")
    return TrainingData(path, {"dtype": "uint16"}, n)


def batches(data: TrainingData, rt: Runtime = CPU, **flat) -> Batches:
    cfg = train_config(**flat)
    return Batches(data, cfg.data, cfg.model.block_size, cfg.system.seed, rt)


def take(it, k: int) -> list:
    return [next(it) for _ in range(k)]


def test_ddp_ranks_split_the_micro_batches_of_a_single_process_run(tmp_path: Path):
    """Iteration n's global batch is the same for 1 or 2 ranks: rank r takes its contiguous share."""
    data = fake_data(tmp_path)
    cfg = dict(gradient_accumulation_steps=4, batch_size=2, block_size=8, seed=3)
    single = take(batches(data, **cfg).train(5), 8)  # iterations 5 and 6
    ranks = [take(batches(data, Runtime("cpu", "cpu", "float32", rank=r, world_size=2), **cfg).train(5), 4) for r in (0, 1)]
    for it in range(2):
        expected = single[4 * it : 4 * it + 4]
        got = ranks[0][2 * it : 2 * it + 2] + ranks[1][2 * it : 2 * it + 2]
        for (ex, ey), (gx, gy) in zip(expected, got, strict=True):
            assert torch.equal(ex, gx) and torch.equal(ey, gy)
    # a run that starts at iteration 6 draws what the run from 5 drew at 6 (resume)
    later = take(batches(data, **cfg).train(6), 4)
    for (ex, _), (gx, _) in zip(single[4:], later, strict=True):
        assert torch.equal(ex, gx)
    # and different iterations / micro-steps differ
    assert not torch.equal(single[0][0], single[1][0]) and not torch.equal(single[0][0], single[4][0])


def test_eval_batches_are_the_same_every_time_and_differ_from_training(tmp_path: Path):
    data = fake_data(tmp_path)
    cfg = dict(gradient_accumulation_steps=1, batch_size=4, block_size=8, seed=3)
    first, second = batches(data, **cfg), batches(data, **cfg)
    for split in ("train", "val"):
        for k in range(3):
            a, b, c = first.eval(split, k), second.eval(split, k), first.eval(split, k)
            assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
    # eval batches are not the training batches (the files are equal here: only the seeds differ)
    training = take(first.train(0), 3)
    for k in range(3):
        assert not torch.equal(first.eval("train", k)[0], training[k][0])
        assert not torch.equal(first.eval("train", k)[0], first.eval("val", k)[0])


# further: a resumed run takes the dropout it is given now


def test_resume_applies_the_dropout_given_now(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=2"]
    train.main([*args, "--out_dir=run", "--max_iters=2", "--dropout=0.0"])
    cfg, resumed = read_settings(["--init_from=resume", "--out_dir=run", "--dropout=0.2"])
    assert cfg.model.dropout == 0.2
    data = train.open_training_data(cfg.data, cfg.model.block_size)
    model = start_run(cfg, resumed, data, CPU).model
    assert model.config.dropout == 0.2
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}
    assert all(m.attn.dropout == 0.2 for m in model.transformer.h)


def test_get_batch_draws_every_window_including_the_last(tmp_path: Path):
    n, T = 20, 8
    path = token_file(tmp_path, n)
    starts = set()
    for seed in range(20):
        x, _ = get_batch(path, "uint16", 16, T, (seed, 0, 0), CPU)
        starts |= set(x[:, 0].tolist())
    assert starts == set(range(n - T))  # every window whose target fits: the last one ends at token n-1


# further: what decides the batches is recorded, so a resume can tell when they change


@pytest.mark.parametrize("key, value", [("seed", 4), ("gradient_accumulation_steps", 2), ("batch_size", 3), ("block_size", 6)])
def test_sampler_state_records_everything_that_changes_the_batches(tmp_path: Path, key: str, value):
    data = fake_data(tmp_path)
    cfg = dict(gradient_accumulation_steps=4, batch_size=2, block_size=8, seed=3)
    ours, other = batches(data, **cfg), batches(data, **cfg | {key: value})
    # the reference: the batches of iteration 1 do change with this setting
    a, b = take(ours.train(1), 1)[0][0], take(other.train(1), 1)[0][0]
    assert a.shape != b.shape or not torch.equal(a, b)
    assert ours.sampler_state() != other.sampler_state()
    assert ours.sampler_state() != batches(fake_data(tmp_path / "other", 4000), **cfg).sampler_state()  # other data
    assert ours.sampler_state() == batches(data, **cfg).sampler_state()


def test_resume_with_another_batch_size_notes_that_the_batches_differ(tmp_path: Path, char_dataset: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=2"]
    train.main([*args, "--out_dir=run", "--max_iters=2"])
    capsys.readouterr()
    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=3", "--batch_size=2", "--device=cpu"])
    out = capsys.readouterr().out
    assert "note: batch_size=2 (was 4): the batches from here on differ" in out


# further: DDP ranks share the eval batches and add up to what one process computes


def test_estimate_loss_rank_shares_add_up_to_the_mean_loss(tmp_path: Path):
    data = fake_data(tmp_path, 200)
    model = tiny_model(vocab_size=256, block_size=8)
    objective = Objective(batches(data, batch_size=2, block_size=8, seed=3))
    with torch.no_grad():  # the reference: the mean of the eval batches' losses, computed directly
        expected = {s: sum(model(*objective.eval_batch(s, k))[1].item() for k in range(4)) / 4 for s in ("train", "val")}
    single = estimate_loss(model, objective, 4, CPU)
    # two ranks, without the all-reduce: each returns its share of the sum over eval_iters
    shares = [estimate_loss(model, objective, 4, Runtime("cpu", "cpu", "float32", rank=r, world_size=2)) for r in (0, 1)]
    for s in ("train", "val"):
        assert single[s] == pytest.approx(expected[s], rel=1e-5)
        assert shares[0][s] + shares[1][s] == pytest.approx(expected[s], rel=1e-5)
    assert model.training  # training mode again (dropout) after the evaluation


def test_every_rank_runs_as_many_eval_forwards_when_eval_iters_is_not_a_multiple(tmp_path: Path):
    """Under FSDP each forward is a collective: a rank that stopped early would leave the others
    waiting. 3 batches on 2 ranks: both run 2 forwards a split, and the shares still add up to the
    mean of the 3 batches."""
    data = fake_data(tmp_path, 200)
    model = tiny_model(vocab_size=256, block_size=8)
    objective = Objective(batches(data, batch_size=2, block_size=8, seed=3))
    with torch.no_grad():
        expected = {s: sum(model(*objective.eval_batch(s, k))[1].item() for k in range(3)) / 3 for s in ("train", "val")}
    calls, shares = [], []
    for r in (0, 1):
        handle = model.register_forward_hook(lambda *_: calls.append(r))
        shares.append(estimate_loss(model, objective, 3, Runtime("cpu", "cpu", "float32", rank=r, world_size=2)))
        handle.remove()
    assert calls.count(0) == calls.count(1) == 4  # 2 forwards for each of the 2 splits
    for s in ("train", "val"):
        assert shares[0][s] + shares[1][s] == pytest.approx(expected[s], rel=1e-5)
