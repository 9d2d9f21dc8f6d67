import math
import time
from pathlib import Path

import pytest

from bench import TRAIN_ONLY, BenchConfig, bench, main
from configurator import ConfigError, parse_config
from conftest import TINY_MODEL_ARGS
from gptsuite.datafiles import load_meta
from gptsuite.runtime import setup_runtime

TINY = [
    *TINY_MODEL_ARGS,
    "--warmup_steps=1",
    "--timed_steps=2",
]


def test_bench_prints_speed_memory_and_no_mfu_on_cpu(capsys):
    main([*TINY, "--vocab_size=128"])
    out = capsys.readouterr().out
    assert "random tokens, device cpu, float32, compile off" in out
    for words in ("ms/iter", "tokens/s", "peak memory", "peak RSS of the process", "MFU n/a"):
        assert words in out


def test_bench_on_real_data_with_a_peak_override(char_dataset: Path):
    cfg = parse_config(BenchConfig(), [*TINY, f"--data_dir={char_dataset}", "--real_data=True", "--peak_tflops=0.001", "--gradient_accumulation_steps=2"])
    t0 = time.perf_counter()
    result = bench(cfg, setup_runtime("cpu", "float32"))
    elapsed = time.perf_counter() - t0
    assert 0 < result["ms_per_iter"] * 2 / 1000 < elapsed  # the 2 timed steps took part of the whole call
    tokens_per_step = 2 * 4 * 16  # accumulation x batch x block
    assert result["tokens_per_s"] * result["ms_per_iter"] / 1000 == pytest.approx(tokens_per_step)
    vocab = load_meta(char_dataset)["vocab_size"]
    # parameters counted by hand: per layer 12 * 32^2 weights + 2 LayerNorm gains of 32; the tied
    # embedding vocab x 32 and the final gain (no biases); attention 12 * L * H * Q * T per token
    params = 2 * (12 * 32**2 + 2 * 32) + vocab * 32 + 32
    flops_per_step = (6 * params + 12 * 2 * 2 * 16 * 16) * tokens_per_step
    assert result["mfu"] == pytest.approx(flops_per_step / (result["ms_per_iter"] / 1000) / 1e9, rel=1e-6)
    assert abs(result["loss"] - math.log(vocab)) < 0.5 and result["peak_memory_bytes"] > 2**20


def test_bench_refuses_pretrained_weights_and_ignores_train_only_keys_of_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="freshly initialized.*--n_layer"):
        main(["--init_from=gpt2"])
    with pytest.raises(ConfigError, match="--eval_interval is not a setting of this command"):
        main(["--eval_interval=5"])
    config = tmp_path / "c.py"
    config.write_text("eval_interval = 5\nwandb_log = True\nn_layer = 3\n")  # train.py's keys bench does not use, and one it does
    assert parse_config(BenchConfig(), [str(config)], tolerate=TRAIN_ONLY).model.n_layer == 3
