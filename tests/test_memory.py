"""The per-GPU memory estimate (gptsuite/memory.py) against real models and hand counts."""

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
    assert (ddp.parameters, ddp.gradients, ddp.optimizer) == (4 * n, 8 * n, 8 * n)
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
    if recompute:  # the estimate also holds the one layer rebuilt during backward, which the forward does not save
        est -= 34 * 2 * 64 * 64 * 4 // 2
    print(f"activations saved by a forward: {got:,} bytes, estimated {est:,}")
    assert 0.7 * got <= est <= 1.3 * got


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
