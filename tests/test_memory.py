"""The per-GPU memory estimate (gptsuite/memory.py) against real models and hand counts."""

import dataclasses

import pytest
import torch

from gptsuite.memory import estimate, memory_table, parameter_counts
from gptsuite.parallel import recompute_in_backward
from model import GPT, GPTConfig

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512)


def saved_for_backward(config: GPTConfig, batch: int, recompute: bool) -> int:
    """Bytes of the tensors a forward with loss saves for backward (parameters left out)."""
    torch.manual_seed(0)
    model = GPT(config)
    if recompute:
        for block in model.transformer.h:
            recompute_in_backward(block)
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randint(0, config.vocab_size, (batch, config.block_size))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, x)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def test_parameter_count_is_the_models():
    n, block, root = parameter_counts(SMALL)
    model = GPT(SMALL)
    assert n == sum(p.numel() for p in model.parameters())  # the tied head once
    assert block == sum(p.numel() for p in model.transformer.h[1].parameters())
    assert root == 512 * 64 + 64 * 64 + 64  # wte (= lm_head), wpe, ln_f


def test_ddp_and_fsdp_state_by_hand():
    n, block, root = parameter_counts(SMALL)
    ddp = estimate(SMALL, 2, "ddp", "float32", 1, 64)
    assert (ddp.parameters, ddp.gradients, ddp.optimizer) == (4 * n, 4 * n, 8 * n)  # the gradients are views into DDP's buckets
    for world in (2, 8):
        fsdp = estimate(SMALL, world, "fsdp", "bfloat16", 1, 64)
        assert fsdp.parameters == 4 * n // world + 2 * (2 * block + root)
        assert fsdp.gradients == 4 * n // world + 8 * block
        assert fsdp.optimizer == 8 * n // world
    big = GPTConfig(n_layer=48, n_head=25, n_embd=1600, vocab_size=50257)  # gpt2-xl: FSDP on 8 needs far less than DDP
    assert estimate(big, 8, "fsdp", "bfloat16", 4, 1024).total < 0.5 * estimate(big, 8, "ddp", "bfloat16", 4, 1024).total


@pytest.mark.parametrize("recompute", [False, True], ids=["stored", "recomputed"])
def test_activations_are_near_what_a_forward_saves(recompute: bool):
    got = saved_for_backward(SMALL, 2, recompute)
    est = estimate(SMALL, 1, "ddp", "float32", 2, 64, activation_checkpointing=recompute).activations
    est -= 8 * 2 * 64 * 512  # the loss's two gradients of the logits exist in backward only
    if recompute:  # the estimate also holds the one layer rebuilt during backward, which the forward does not save
        est -= 34 * 2 * 64 * 64 * 4 // 2
    print(f"activations saved by a forward: {got:,} bytes, estimated {est:,}")
    assert 0.7 * got <= est <= 1.3 * got


def test_the_loss_checkpointed_inputs_and_autocast_copies_by_hand():
    """The terms the estimate once missed, each isolated by changing one thing, against numbers
    counted by hand for 2 sequences of 64 tokens, 64 wide."""
    acts = lambda config, *a, **kw: estimate(config, *a, **kw).activations  # noqa: E731
    wider = dataclasses.replace(SMALL, vocab_size=1024)
    # the loss: 12 bytes a logit (log-softmax output, its gradient, the logits' gradient): 512 more ids x 128 tokens
    assert acts(wider, 1, "ddp", "float32", 2, 64) - acts(SMALL, 1, "ddp", "float32", 2, 64) == 786_432
    assert acts(wider, 1, "ddp", "bfloat16", 2, 64) - acts(SMALL, 1, "ddp", "bfloat16", 2, 64) == 786_432 + 2 * 512 * 64  # + the head's bf16 copy
    modern = dataclasses.replace(SMALL, arch="modern")  # the soft-cap's saved tanh on top: 4 bytes a logit in fp32
    assert acts(modern, 1, "fsdp", "float32", 2, 64) - acts(SMALL, 1, "fsdp", "float32", 2, 64) == 4 * 128 * 512
    # checkpointed block inputs: 2 layers more keep 128 x 64 values each, fp32 under DDP's autocast, bf16 under FSDP
    deeper = dataclasses.replace(SMALL, n_layer=4)
    for parallel, held in (("ddp", 65_536), ("fsdp", 32_768)):
        diff = acts(deeper, 2, parallel, "bfloat16", 2, 64, activation_checkpointing=True) - acts(
            SMALL, 2, parallel, "bfloat16", 2, 64, activation_checkpointing=True
        )
        assert diff == held, parallel
    # DDP's autocast copies: the blocks' Linear weights (2 x 12 x 64^2 x 2 bytes) and the head's (512 x 64 x 2); FSDP gathers in bf16
    ddp, fsdp = estimate(SMALL, 2, "ddp", "bfloat16", 2, 64), estimate(SMALL, 2, "fsdp", "bfloat16", 2, 64)
    assert ddp.activations - fsdp.activations == 196_608 + 65_536
    # LoRA's dropout copies: 7 x 128 x 64 values a layer, 4 bytes in fp32
    assert acts(SMALL, 1, "ddp", "float32", 2, 64, trainable=100) - acts(SMALL, 1, "ddp", "float32", 2, 64) == 2 * 229_376
    assert acts(SMALL, 1, "ddp", "float32", 2, 64, trainable=100, lora_dropout=0.0) == acts(SMALL, 1, "ddp", "float32", 2, 64)  # no dropout, no copies


def test_checkpointed_block_inputs_stay_float32_under_autocast():
    """What the recomputed model saves under CPU bf16 autocast (DDP's case): its block inputs in fp32."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = saved_for_backward(SMALL, 2, recompute=True)
    plain = saved_for_backward(SMALL, 2, recompute=True)
    # fp32 run: the same block inputs; under autocast the head's bf16 weight copy and ln_f's bf16 output are saved on top
    assert autocast - plain == 2 * 512 * 64 + 2 * 128 * 64 - 4 * 128 * 64


def test_lora_and_muon_hold_less_and_the_table_prints_both():
    from gptsuite.lora import LoraConfig, adapt, freeze_base_dtype, trainable_counts

    n, _, _ = parameter_counts(SMALL)
    model = adapt(GPT(SMALL), LoraConfig(rank=4))
    freeze_base_dtype(model, torch.bfloat16)  # what a bf16 LoRA run holds: measured, tied weights once
    held = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    trained = trainable_counts(model)[0]
    full, lora = estimate(SMALL, 1, "ddp", "bfloat16", 1, 64), estimate(SMALL, 1, "ddp", "bfloat16", 1, 64, trainable=trained)
    assert lora.parameters == held and lora.optimizer == 8 * trained < full.optimizer
    assert estimate(SMALL, 1, "ddp", "float32", 1, 64, optimizer="muon").optimizer == 8 * n - 4 * 2 * 12 * 64**2
    table = memory_table(SMALL, 2, "bfloat16", 1, 64)
    assert "| total |" in table and "DDP | FSDP" in table


def test_the_tool_refuses_what_train_py_refuses(capsys, monkeypatch):
    """tools.memory asks train.py's own checks (settings.check_train_config): LoRA with Muon is
    refused with train.py's fix, which works; a refused FSDP column is said; a bad shape is one line."""
    import sys

    from configurator import ConfigError
    from gptsuite.errors import UserError, cli
    from tools.memory import main

    args = ["--init_from=gpt2", "--lora_rank=8", "--nproc=2"]
    with pytest.raises(UserError, match="train.py refuses this run.*LoRA trains its low-rank factors with AdamW.*drop --optimizer=muon"):
        main([*args, "--optimizer=muon"])
    main(args)
    out = capsys.readouterr().out
    assert "| total |" in out and "note: train.py refuses this run under FSDP (parallel=fsdp: LoRA adapters" in out
    main(["--init_from=gpt2"])
    assert "note:" not in capsys.readouterr().out
    with pytest.raises(ConfigError):
        main(["--n_embd=100", "--n_head=3"])
    monkeypatch.setattr(sys, "argv", ["memory.py", "--n_embd=100", "--n_head=3"])
    with pytest.raises(SystemExit) as e:
        cli(main)
    assert e.value.code == 2 and capsys.readouterr().err == "error: n_embd=100 is not divisible by n_head=3; pick an n_embd that is a multiple of n_head\n"


def test_float16_counts_as_many_bytes_as_bfloat16():
    """Both are 2-byte autocast dtypes: whatever the formulas, a float16 run is estimated as a
    bfloat16 one, and below a float32 one."""
    for parallel in ("ddp", "fsdp"):
        for recompute in (False, True):
            fp16, bf16, fp32 = (estimate(SMALL, 2, parallel, d, 2, 64, activation_checkpointing=recompute) for d in ("float16", "bfloat16", "float32"))
            assert fp16.activations == bf16.activations < fp32.activations, (parallel, recompute)
            assert fp16 == bf16, (parallel, recompute)
