"""tools/bench_lora.py on a tiny shape: its numbers against references computed here."""

import sys
from pathlib import Path

import pytest

from configurator import parse_config
from gptsuite.errors import UserError
from tools.bench_lora import BenchLoraConfig, bench, main, param_counts, run_measured, table

# a 2-layer, 32-wide base of context 16, trained on sequences of 8 tokens (its position embeddings cropped)
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--train_block_size=8", "--batch_size=2", "--max_iters=2", "--threads=1"]
D, T, VOCAB = 32, 8, 50257
LINEARS = [(D, 3 * D), (D, D), (D, 4 * D), (4 * D, D)]  # (in, out) of c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj in each block
# the trained model with bias=True: per block the Linears with their biases and two LayerNorms (weight and bias);
# the token embedding (tied to lm_head), the position embeddings cropped to T, the final LayerNorm
BASE = 2 * (sum(i * o + o for i, o in LINEARS) + 4 * D) + VOCAB * D + T * D + 2 * D


def tiny(*extra: str) -> BenchLoraConfig:
    return parse_config(BenchLoraConfig(), [*TINY, *extra])


def test_trainable_parameters_are_rank_times_in_plus_out_of_each_adapted_linear():
    cfg = tiny()
    adapters = 2 * sum(8 * (i + o) for i, o in LINEARS)  # rank 8 on c_attn, c_proj (both) and c_fc of 2 blocks
    assert param_counts(cfg, None) == (BASE, BASE)
    assert param_counts(cfg, cfg.lora) == (adapters, BASE + adapters)
    cfg = tiny("--lora_rank=4", "--lora_targets=c_attn")
    assert param_counts(cfg, cfg.lora) == (2 * 4 * (D + 3 * D), BASE + 2 * 4 * (D + 3 * D))


def test_peak_rss_is_the_childs_own_not_its_parents_or_an_earlier_childs(tmp_path: Path):
    held = b"x" * (400 << 20)  # this process holds 400 MiB more than either child needs
    code, big = run_measured([sys.executable, "-c", "b = b'x' * (200 << 20)"], tmp_path / "big.log")
    assert code == 0 and 200 << 20 < big < 300 << 20
    code, small = run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "small.log")
    assert code == 3 and 0 < small < 100 << 20
    del held


@pytest.mark.slow  # two train.py runs, each importing peft (seconds)
def test_lora_checkpoint_is_a_fraction_of_the_full_one_and_both_runs_report_memory_and_speed(tmp_path: Path):
    full, lora = bench(tiny(), tmp_path)
    adapters = 2 * sum(8 * (i + o) for i, o in LINEARS)
    assert (full.trainable, lora.trainable) == (BASE, adapters)
    for run, out in ((full, "full"), (lora, "lora")):
        assert run.ckpt_bytes == (tmp_path / out / "ckpt.pt").stat().st_size
        assert run.ckpt_bytes > 3 * 4 * run.trainable  # float32 weights, AdamW's two moments
        assert run.peak_rss > 100e6 and run.ms_per_iter > 0  # a Python process with torch: over 100 MB
    assert lora.ckpt_bytes / full.ckpt_bytes < 0.05
    rows = table([full, lora]).splitlines()
    assert rows[2].startswith(f"| full fine-tuning | {BASE:,} | 100.00% | {full.ckpt_bytes:,} | 100.00% |")
    assert rows[3].startswith(f"| LoRA rank 8 (c_attn,c_proj,c_fc) | {adapters:,} | {100 * adapters / (BASE + adapters):.2f}% |")


def test_the_temporary_folder_is_removed_when_a_run_fails(tmp_path: Path):
    with pytest.raises(UserError, match="c_nope"):
        main([*TINY, "--lora_targets=c_nope", f"--dir={tmp_path}"])
    assert list(tmp_path.iterdir()) == []
