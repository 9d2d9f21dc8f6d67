"""
Benchmark generation: tokens/s of GPT.generate with and without the KV cache.

    python -m tools.bench_generate                                           # GPT-2 124M shape, random weights
    python -m tools.bench_generate --device=cuda --dtype=bfloat16            # on a GPU
    python -m tools.bench_generate --batch_sizes=(1,) --new_tokens=(512,)    # one setting
    python -m tools.bench_generate --out_dir=out-shakespeare-char            # a trained checkpoint's model

For each batch size and number of new tokens it times one generate call per mode (after one
short warm-up call) from a random prompt of --prompt_tokens tokens, and prints tokens/s
(batch * new tokens / seconds) with the cache, without it (the full context recomputed for every
token) and the ratio. Greedy decoding, so both modes produce the same tokens.
--without_cache=False skips the slow cache-less runs. --compile=True also times cached decoding
with the model compiled (GPT.compile(), what sample.py --compile does), after a call of the same
shapes that compiles it (its seconds are printed). CPU numbers depend on how busy the
machine is: compare the modes within one run.
"""

import copy
import time
from dataclasses import dataclass

import torch

from configurator import option, parse_config, part, print_config
from gptsuite.errors import UserError, cli
from gptsuite.loading import load_model
from gptsuite.runtime import DTYPE_CHOICES, Runtime, setup_runtime
from model import GPT, GPTConfig


@dataclass
class BenchGenerateConfig:
    out_dir: str = ""  # benchmark this training run's model instead of a random one of the shape below
    model: GPTConfig = part(GPTConfig, hide=("dropout",))  # GPT-2 124M's by default
    # what to time
    prompt_tokens: int = option(16, gt=0)  # random prompt tokens before generating
    new_tokens: tuple = (128, 512)  # tokens generated per call, one setting each
    batch_sizes: tuple = (1, 8)  # samples per call, one setting each
    without_cache: bool = True  # also time the cache-less loop
    compile: bool = False  # also time cached decoding with the model compiled (as sample.py --compile), after a call that compiles it
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)
    seed: int = option(1337, ge=0)


def time_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, rt: Runtime) -> float:
    """Seconds for one generate call."""
    rt.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad(), rt.autocast():
        out = model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
    rt.synchronize()
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchGenerateConfig(), argv)
    print_config(cfg)
    if not cfg.new_tokens or not cfg.batch_sizes or min(*cfg.new_tokens, *cfg.batch_sizes) <= 0:
        raise UserError("new_tokens and batch_sizes must be non-empty tuples of positive numbers, e.g. --new_tokens=(128,)")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model = load_model("resume", cfg.out_dir).model if cfg.out_dir else GPT(cfg.model)
    model.eval().to(rt.device)
    if cfg.prompt_tokens + max(cfg.new_tokens) > model.config.block_size:
        print(f"note: prompt + new tokens exceed block_size {model.config.block_size}: past it both modes recompute the window each step")
    print(
        f"{model.get_num_params() / 1e6:.1f}M parameters, block {model.config.block_size}, device {rt.device}, {rt.dtype}, {torch.get_num_threads()} CPU threads"
    )
    time_generate(model, torch.randint(0, model.config.vocab_size, (1, cfg.prompt_tokens), device=rt.device), 4, True, rt)  # warm-up: allocator, kernels
    compiled = None
    if cfg.compile:
        compiled = copy.deepcopy(model)
        compiled.compile()
    print("| batch | new tokens | cache tok/s | no-cache tok/s | cache speed-up | compiled cache tok/s | compile speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch in cfg.batch_sizes:
        for n in cfg.new_tokens:
            prompt = torch.randint(0, model.config.vocab_size, (batch, cfg.prompt_tokens), device=rt.device)
            cached = batch * n / time_generate(model, prompt, n, True, rt)
            plain = batch * n / time_generate(model, prompt, n, False, rt) if cfg.without_cache else None
            fast = None
            if compiled:  # a first call compiles for these shapes (the batch, the cache's length)
                print(f"compiled for batch {batch}, {n} new tokens in {time_generate(compiled, prompt, n, True, rt):.1f} s", flush=True)
                fast = batch * n / time_generate(compiled, prompt, n, True, rt)
            cells = [f"{plain:,.1f}", f"{cached / plain:.1f}x"] if plain else ["-", "-"]
            cells += [f"{fast:,.1f}", f"{fast / cached:.2f}x"] if fast else ["-", "-"]
            print(f"| {batch} | {n} | {cached:,.1f} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    cli(main)
