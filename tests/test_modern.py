"""arch='modern' (RoPE, RMSNorm, QK-norm, ReLU², untied zero head, soft-capped logits), the Muon
optimizer and the wsd schedule, each checked against an independent reference: a complex-number
rotation, a forward pass written out by hand, FlopCounterMode, hand-computed values, a run
without the step under test."""

import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval import printed_result, reference_nats
from test_novelty import brute_longest
from torch import nn

import sample
from conftest import TINY_MODEL_ARGS, train_config, train_step
from eval import main as eval_main
from export import main as export_main
from gptsuite.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from gptsuite.datafiles import load_meta, open_split
from gptsuite.errors import UserError
from gptsuite.flops import model_flops_per_token
from gptsuite.optim import OptimConfig, Optimizers, build_optimizer, get_lr, set_lr
from gptsuite.runtime import Runtime
from gptsuite.settings import TrainConfig, check_train_config
from gptsuite.tokenizer import GPT2_META, CharTokenizer
from model import GPT, GPTConfig, apply_rotary, rotary_tables
from tools.novelty import main as novelty_main
from train import main as train_main

TINY = dict(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=32)
CPU = Runtime("cpu", "cpu", "float32")


def modern(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, "arch": "modern", **kw}))


def randomize(model: GPT, scale: float = 0.3) -> GPT:
    """Non-zero weights everywhere (the modern init zeroes the output projections and the head) and
    gains away from 1, so that every part of the forward pass shows in its output."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, scale)
            else:
                p.normal_(1.0, 0.2)
    return model


# a. structure and init


def test_modern_structure_and_a_uniform_start():
    model = modern()
    assert "wpe" not in model.transformer and not any("wpe" in n for n, _ in model.named_parameters())
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()  # untied: not even shared storage
    hs = 32 // 4
    for block in model.transformer.h:
        for norm in (block.attn.q_norm, block.attn.k_norm):
            assert isinstance(norm, nn.RMSNorm) and tuple(norm.normalized_shape) == (hs,)
        assert isinstance(block.ln_1, nn.RMSNorm) and isinstance(block.ln_2, nn.RMSNorm)
    assert isinstance(model.transformer.ln_f, nn.RMSNorm)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    gpt2 = GPT(GPTConfig(**TINY))  # the default arch keeps GPT-2's layout
    assert not any(isinstance(m, nn.RMSNorm) for m in gpt2.modules()) and not hasattr(gpt2.transformer.h[0].attn, "q_norm")

    # RoPE's tables are buffers the model derives, not weights to save
    assert {n for n, _ in model.named_buffers()} == {"rope_cos", "rope_sin"}
    assert not any("rope" in k for k in model.state_dict())

    # counted by hand for TINY: wte 65*32 = 2080 and an untied lm_head of 2080; a block: ln_1 32,
    # c_attn 32*96 = 3072, attn c_proj 1024, q_norm 8, k_norm 8, ln_2 32, c_fc 4096, mlp c_proj 4096,
    # together 12368; ln_f 32. Without the looked-up (untied) token embedding: 2080 less
    assert model.get_num_params(non_embedding=False) == 2 * 2080 + 2 * 12368 + 32 == 28928
    assert model.get_num_params() == 28928 - 2080

    # zero output projections and head: every block starts as the identity, the logits are all 0,
    # so the first loss is ln(vocab_size) whatever the tokens
    x = torch.randn(2, 16, 32)
    rope = (model.rope_cos[:16], model.rope_sin[:16])
    for block in model.transformer.h:
        assert torch.equal(block(x, rope=rope), x)
    idx, targets = torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16))
    logits, loss = model(idx, targets)
    assert torch.equal(logits, torch.zeros_like(logits))
    assert loss.item() == pytest.approx(math.log(65), abs=1e-6)


def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * w


def rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as a complex multiplication: the pair (x[..., i], x[..., i + hs/2]) at position t is
    the complex number x_i + 1j x_{i+hs/2}, times exp(1j * t * base^(-2i/hs)). x: (..., T, hs)."""
    T, hs = x.shape[-2:]
    z = torch.complex(x[..., : hs // 2].double(), x[..., hs // 2 :].double())
    t = torch.arange(T, dtype=torch.float64)[:, None]
    i = torch.arange(hs // 2, dtype=torch.float64)[None, :]
    theta = t * base ** (-2 * i / hs)
    z = z * torch.polar(torch.ones_like(theta), theta)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


def reference_forward(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The modern arch written out from its description: RMSNorm pre-norm blocks, q and k of each
    head RMS-normalized and then rotated (complex RoPE), causal softmax attention, ReLU² MLP, final
    RMSNorm, untied head, logits soft-capped at 15. Returns the logits and the logits before the cap."""
    B, T = idx.shape
    C, nh = model.config.n_embd, model.config.n_head
    x = model.transformer.wte.weight[idx]  # no position embedding
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for block in model.transformer.h:
        a, m = block.attn, block.mlp
        h = rms(x, block.ln_1.weight)
        q, k, v = (h @ a.c_attn.weight.T).split(C, dim=-1)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        q, k = rotate(rms(q, a.q_norm.weight)), rotate(rms(k, a.k_norm.weight))
        att = (q @ k.transpose(-2, -1) / math.sqrt(C // nh)).masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(1, 2).reshape(B, T, C) @ a.c_proj.weight.T
        x = x + torch.relu(rms(x, block.ln_2.weight) @ m.c_fc.weight.T).pow(2) @ m.c_proj.weight.T
    raw = rms(x, model.transformer.ln_f.weight) @ model.lm_head.weight.T
    return 15.0 * torch.tanh(raw / 15.0), raw


def test_modern_forward_equals_a_forward_written_out_by_hand():
    model = randomize(modern(), scale=0.5).double().eval()
    idx = torch.randint(0, 65, (3, 16))
    with torch.no_grad():
        logits, _ = model(idx, idx)
        expected, raw = reference_forward(model, idx)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)  # not closer: RoPE's tables are float32
    assert (raw - expected).abs().max() > 0.5  # large logits: the soft cap really bends them
    assert logits.abs().max() < 15.0


# b. RoPE


def test_apply_rotary_is_a_complex_rotation():
    torch.manual_seed(0)
    hs, T = 16, 64
    x = torch.randn(2, 3, T, hs)
    cos, sin = rotary_tables(hs, T)
    torch.testing.assert_close(apply_rotary(x, cos, sin), rotate(x), atol=2e-5, rtol=1e-5)
    assert torch.equal(apply_rotary(x[:, :, :1], cos[:1], sin[:1]), x[:, :, :1])  # position 0: no rotation


def test_rotated_dot_products_depend_only_on_the_relative_position():
    torch.manual_seed(0)
    hs, L = 16, 64
    cos, sin = rotary_tables(hs, L)
    q, k = torch.randn(hs, dtype=torch.float64), torch.randn(hs, dtype=torch.float64)

    def dot(m: int, n: int) -> float:
        rq = apply_rotary(q.view(1, 1, 1, hs), cos[m : m + 1], sin[m : m + 1])
        rk = apply_rotary(k.view(1, 1, 1, hs), cos[n : n + 1], sin[n : n + 1])
        return float((rq * rk).sum())

    for m, n in [(0, 0), (3, 1), (1, 7), (10, 2)]:
        for s in (1, 5, 40):
            assert dot(m + s, n + s) == pytest.approx(dot(m, n), abs=1e-4), (m, n, s)
    assert abs(dot(3, 1) - dot(3, 2)) > 1e-3 and abs(dot(3, 1) - float(q @ k)) > 1e-3  # and it does depend on m - n


# c. the KV cache: tests/test_generate.py runs its cache tests for both archs


# d. FLOPs


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_flops_per_token_matches_a_flop_counter(arch):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=96, n_layer=2, n_head=4, n_embd=64, arch=arch))
    B, T = 2, 64
    x = torch.randint(0, 96, (B, T))
    # the math kernel: matmuls the counter sees (it has no formula for the fused CPU attention kernel)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    counted = counter.get_total_flops()
    assert counted == pytest.approx(model_flops_per_token(model, T) * B * T, rel=0.01)


# e. Muon: which parameters, learning rates, state


def muon_config(**kw) -> TrainConfig:
    return train_config(
        **{"optimizer": "muon", "learning_rate": 1e-3, "muon_lr": 0.02, "weight_decay": 0.1, "warmup_iters": 10, "lr_decay_iters": 100, "min_lr": 1e-4, **kw}
    )


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = modern(bias=True)  # biases too: 1-D, so AdamW's
    opt = build_optimizer(model, muon_config().optim, "cpu")
    assert isinstance(opt, Optimizers) and set(opt.optimizers) == {"muon", "adamw"}
    muon, adamw = opt.optimizers["muon"], opt.optimizers["adamw"]
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = [names[id(p)] for g in muon.param_groups for p in g["params"]]
    in_adamw = [names[id(p)] for g in adamw.param_groups for p in g["params"]]
    hidden = [f"transformer.h.{i}.{w}.weight" for i in range(2) for w in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    assert sorted(in_muon) == sorted(hidden)
    assert sorted(in_adamw) == sorted(set(names.values()) - set(hidden))
    assert {
        "transformer.wte.weight",
        "lm_head.weight",
        "transformer.ln_f.weight",
        "transformer.h.0.attn.q_norm.weight",
        "transformer.h.1.mlp.c_fc.bias",
    } <= set(in_adamw)
    assert len(in_muon) + len(in_adamw) == len(names) == len(list(model.parameters()))  # each exactly once
    decay, no_decay = adamw.param_groups  # weight decay on the embedding and the head, not on gains and biases
    assert sorted(names[id(p)] for p in decay["params"]) == ["lm_head.weight", "transformer.wte.weight"] and decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0

    cfg = muon_config()
    set_lr(opt, get_lr(cfg.schedule.warmup_iters, cfg.schedule, cfg.optim.learning_rate))  # the peak
    assert all(g["lr"] == pytest.approx(0.02, rel=1e-12) for g in muon.param_groups)
    assert all(g["lr"] == pytest.approx(1e-3, rel=1e-12) for g in adamw.param_groups)
    set_lr(
        opt, get_lr(cfg.schedule.lr_decay_iters, cfg.schedule, cfg.optim.learning_rate)
    )  # the end: min_lr = learning_rate / 10, so Muon's is a tenth of its peak too
    assert all(g["lr"] == pytest.approx(0.002, rel=1e-12) for g in muon.param_groups)
    assert all(g["lr"] == pytest.approx(1e-4, rel=1e-12) for g in adamw.param_groups)
    plain = build_optimizer(modern(), OptimConfig(learning_rate=1e-3), "cpu")  # optimizer='adamw': one AdamW, as before
    assert type(plain) is torch.optim.AdamW


def sgd_batches(seed: int, n: int) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 65, (4, 16), generator=g), torch.randint(0, 65, (4, 16), generator=g)) for _ in range(n)]


def steps(model: GPT, opt, batches: list[tuple]) -> None:
    for x, y in batches:
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_muon_state_dict_round_trips_bit_for_bit():
    cfg = muon_config()
    model = modern()
    opt = build_optimizer(model, cfg.optim, "cpu")
    set_lr(opt, cfg.optim.learning_rate)
    steps(model, opt, sgd_batches(0, 3))  # momentum buffers and Adam moments that matter
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # as a checkpoint holds it
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"muon", "adamw"} and len(state["muon"]["state"]) == 8  # a momentum buffer per hidden matrix

    copies = {}
    for name in ("loaded", "fresh"):
        other = modern(seed=1)
        other.load_state_dict(model.state_dict())
        other_opt = build_optimizer(other, cfg.optim, "cpu")
        set_lr(other_opt, cfg.optim.learning_rate)
        if name == "loaded":
            other_opt.load_state_dict(state)
        copies[name] = other, other_opt
    nxt = sgd_batches(1, 1)
    for m, o in [(model, opt), *copies.values()]:
        steps(m, o, nxt)
    loaded, fresh = copies["loaded"][0], copies["fresh"][0]
    for (n, p), q in zip(model.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(p, q), n
    assert not all(torch.equal(p, r) for p, r in zip(model.parameters(), fresh.parameters(), strict=True))  # the state mattered
    with pytest.raises(ValueError):  # an AdamW run's state is not a Muon run's: start.py turns this into a clear error
        copies["fresh"][1].load_state_dict(state["adamw"])


# f. the wsd schedule


def test_wsd_schedule_by_hand():
    cfg = train_config(lr_schedule="wsd", learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=100, cooldown_frac=0.4)
    # warmup to 1.0 over 10 iterations ((it + 1) / 11), constant until 60 = 100 - 0.4 * 100, then a
    # straight line from 1.0 at 60 to 0.1 at 100, then 0.1
    expected = {0: 1 / 11, 4: 5 / 11, 9: 10 / 11, 10: 1.0, 35: 1.0, 59: 1.0, 60: 1.0, 70: 0.775, 80: 0.55, 90: 0.325, 99: 0.1225, 100: 0.1, 150: 0.1}
    for it, lr in expected.items():
        assert get_lr(it, cfg.schedule, cfg.optim.learning_rate) == pytest.approx(lr, rel=1e-12), it
    # all of it a cooldown: from the end of warmup (10) straight down to 0.1 at 110
    whole = train_config(lr_schedule="wsd", learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, cooldown_frac=1.0)
    assert [get_lr(it, whole.schedule, whole.optim.learning_rate) for it in (10, 60, 110)] == pytest.approx([1.0, 0.55, 0.1], rel=1e-12)


# g. resume: the optimizer must stay what it was


@pytest.mark.parametrize("first, then", [("adamw", "muon"), ("muon", "adamw")])
def test_resume_with_another_optimizer_is_refused(tmp_path: Path, char_dataset: Path, first: str, then: str):
    out = tmp_path / "out"
    args = [f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=100"]
    train_main([*args, "--max_iters=2", f"--optimizer={first}", "--arch=modern"])
    with pytest.raises(UserError) as e:
        train_main(["--init_from=resume", f"--out_dir={out}", f"--optimizer={then}", "--max_iters=4"])
    msg = str(e.value)
    assert "\n" not in msg and f"optimizer={first}" in msg and f"--optimizer={first}" in msg and f"optimizer={then}" in msg
    assert load_checkpoint(out)["iter_num"] == 2
    train_main(["--init_from=resume", f"--out_dir={out}", "--max_iters=3"])  # with its own optimizer it goes on
    assert load_checkpoint(out)["iter_num"] == 3


def test_modern_arch_with_gpt2_weights_is_refused_before_anything_loads(tmp_path: Path, char_dataset: Path):
    with pytest.raises(UserError, match="--arch=modern") as e:
        train_main([f"--data_dir={char_dataset}", f"--out_dir={tmp_path / 'out'}", *TINY_MODEL_ARGS, "--init_from=gpt2", "--arch=modern"])
    assert "\n" not in str(e.value) and "arch=gpt2" in str(e.value)
    assert not (tmp_path / "out").exists()


# h. export


def test_export_refuses_a_modern_model_and_writes_nothing(tmp_path: Path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16, arch="modern"))  # GPT-2 BPE: it would export but for arch
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": dict(GPT2_META)}, tmp_path / "out" / "ckpt.pt")
    with pytest.raises(UserError, match="arch=modern") as e:
        export_main([f"--out_dir={tmp_path / 'out'}", "--to=hf", str(tmp_path / "hf")])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "hf").exists()


# i. end to end


def test_a_modern_muon_run_trains_samples_evaluates_and_checks_novelty(tmp_path: Path, char_dataset: Path, capsys):
    out = tmp_path / "out"
    args = [*TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=4", "--eval_interval=60", "--max_iters=60", "--warmup_iters=2"]
    args += ["--lr_decay_iters=60", "--learning_rate=1e-2", "--arch=modern", "--optimizer=muon", "--muon_lr=0.05", "--lr_schedule=wsd"]
    train_main([f"--data_dir={char_dataset}", f"--out_dir={out}", *args])
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    vocab = load_meta(char_dataset)["tokenizer"]["vocab"]
    assert evals[0]["iter"] == 0 and evals[0]["val_loss"] == pytest.approx(math.log(len(vocab)), abs=1e-5)  # the zero head
    assert evals[-1]["iter"] == 60 and evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learns
    ckpt = load_checkpoint(out)
    assert ckpt["model_args"]["arch"] == "modern" and set(ckpt["optimizer"]) == {"muon", "adamw"}
    assert "transformer.wpe.weight" not in ckpt["model"] and not any("rope" in k for k in ckpt["model"])

    # sample.py, greedy, past block_size: what the checkpoint's model gives without the cache
    model = model_from_checkpoint(ckpt).eval()
    tok = CharTokenizer(vocab)
    expected = tok.decode(model.generate(torch.tensor([tok.encode("First")]), 30, temperature=0, use_cache=False)[0].tolist())
    capsys.readouterr()
    sample.main([f"--out_dir={out}", "--device=cpu", "--start=First", "--num_samples=1", "--max_new_tokens=30", "--temperature=0", "--check_novelty"])
    printed = capsys.readouterr().out
    assert printed.startswith(expected + "\nnovelty: longest span also in train.bin: ")
    text = expected.removeprefix("First")

    # the novelty tool on that sample: the longest span found by trying every span of the training text
    novelty_main([f"--data_dir={char_dataset}", f"--text={text}"])
    report = capsys.readouterr().out
    longest = brute_longest(tok.encode(text), open_split(char_dataset, "train").tolist())
    assert longest >= 8  # it learned the text well enough to repeat some of it
    assert f"longest span also in train.bin: {longest} tokens;" in report
    assert report.split("novelty: ")[1] == printed.split("novelty: ")[1].split("---------------")[0]  # the same report as sample.py's

    # eval.py: the whole val split, against scoring it window by window directly
    eval_main([f"--out_dir={out}", "--device=cpu"])
    loss = printed_result(capsys.readouterr().out)[0]
    val = open_split(char_dataset, "val").astype(np.int64)
    assert loss == pytest.approx(reference_nats(model, val, 16) / (len(val) - 1), abs=1e-4)


# j. the NaN guard with Muon


class NanLoss(nn.Module):
    """The model, with its loss made NaN."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        logits, loss = self.model(x, y)
        return logits, loss * float("nan")


def optimizer_state(opt: Optimizers) -> dict:
    return {(name, i, k): v.clone() for name, o in opt.optimizers.items() for i, s in enumerate(o.state.values()) for k, v in s.items()}


@pytest.mark.parametrize("bad", ["inf gradient of a Muon matrix", "inf gradient of the head", "nan loss"])
def test_a_non_finite_step_leaves_weights_and_muon_momentum(bad: str):
    cfg = muon_config()
    model = modern()
    opt = build_optimizer(model, cfg.optim, "cpu")
    set_lr(opt, cfg.optim.learning_rate)
    steps(model, opt, sgd_batches(0, 3))  # momentum buffers and moments, not zeros
    reference = copy.deepcopy((model, opt))  # the run that never saw the bad step
    weights, state = copy.deepcopy(model.state_dict()), optimizer_state(opt)
    assert any(v.abs().sum() > 0 for (name, _, k), v in state.items() if name == "muon" and k == "momentum_buffer")

    target, handle = model, None
    if bad == "nan loss":
        target = NanLoss(model)
    else:
        p = model.transformer.h[0].mlp.c_fc.weight if "Muon" in bad else model.lm_head.weight
        handle = p.register_hook(lambda g: g * math.inf)
    batch, later = sgd_batches(5, 2)
    stepped = train_step(target, opt, torch.amp.GradScaler("cpu", enabled=False), [batch, later], 1, 1.0, CPU)[0].stepped
    if handle:
        handle.remove()
    assert not stepped
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = optimizer_state(opt)
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k
    assert all(p.grad is None for p in model.parameters())

    # the next, clean step is the one the run without the bad step takes
    ref_model, ref_opt = reference
    steps(model, opt, [later])
    steps(ref_model, ref_opt, [later])
    for (n, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_iterations_past_a_decay_to_zero_are_refused(tmp_path: Path):
    """Resuming a wsd run that decayed to min_lr=0 with only a larger --max_iters would train at lr 0."""
    cfg = train_config(out_dir=str(tmp_path), min_lr=0.0, max_iters=400, lr_decay_iters=350)
    with pytest.raises(UserError, match=r"lr_decay_iters=350, where the learning rate reaches min_lr=0.*--lr_decay_iters=400"):
        check_train_config(cfg)
    check_train_config(train_config(out_dir=str(tmp_path), min_lr=0.0, max_iters=400, lr_decay_iters=400))  # decays to 0 at the end: fine
    check_train_config(train_config(out_dir=str(tmp_path), min_lr=1e-4, max_iters=400, lr_decay_iters=350))  # nanoGPT's: a floor above 0
