"""
Benchmark generation: tokens/s of GPT.generate with and without the KV cache.

    python bench_generate.py                                           # GPT-2 124M shape, random weights
    python bench_generate.py --device=cuda --dtype=bfloat16            # on a GPU
    python bench_generate.py --batch_sizes=(1,) --new_tokens=(512,)    # one setting
    python bench_generate.py --out_dir=out-shakespeare-char            # a trained checkpoint's model

For each batch size and number of new tokens it times one generate call per mode (after one
short warm-up call) from a random prompt of --prompt_tokens tokens, and prints tokens/s
(batch * new tokens / seconds) with the cache, without it (the full context recomputed for every
token) and the ratio. Greedy decoding, so both modes produce the same tokens.
--without_cache=False skips the slow cache-less runs. CPU numbers depend on how busy the
machine is: compare the modes within one run.
"""

import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from configurator import parse_config, print_config
from errors import UserError, cli
from model import GPT, GPTConfig
from runtime import Runtime, setup_runtime


@dataclass
class BenchGenerateConfig:
    n_layer: int = 12  # GPT-2 124M
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304
    out_dir: str = ""  # benchmark this checkpoint's model instead of a random one
    prompt_tokens: int = 16
    new_tokens: tuple = (128, 512)
    batch_sizes: tuple = (1, 8)
    without_cache: bool = True  # also time the cache-less loop
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 1337


def sync(rt: Runtime) -> None:
    if rt.device_type == "cuda":
        torch.cuda.synchronize()


def time_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, rt: Runtime) -> float:
    """Seconds for one generate call."""
    sync(rt)
    t0 = time.perf_counter()
    with torch.no_grad(), rt.autocast():
        out = model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
    sync(rt)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchGenerateConfig(), argv)
    print_config(cfg)
    if cfg.prompt_tokens <= 0 or not cfg.new_tokens or not cfg.batch_sizes or min(*cfg.new_tokens, *cfg.batch_sizes) <= 0:
        raise UserError("prompt_tokens, new_tokens and batch_sizes must be positive")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    if cfg.out_dir:
        from sample import load_model

        model = load_model(SimpleNamespace(init_from="resume", out_dir=cfg.out_dir))[0]
    else:
        try:
            model = GPT(GPTConfig(cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd))
        except ValueError as e:
            raise UserError(f"bad model shape: {e}") from None
    model.eval().to(rt.device)
    if cfg.prompt_tokens + max(cfg.new_tokens) > model.config.block_size:
        print(f"note: prompt + new tokens exceed block_size {model.config.block_size}: past it both modes recompute the window each step")
    print(
        f"{model.get_num_params() / 1e6:.1f}M parameters, block {model.config.block_size}, device {rt.device}, {rt.dtype}, {torch.get_num_threads()} CPU threads"
    )
    time_generate(model, torch.randint(0, model.config.vocab_size, (1, cfg.prompt_tokens), device=rt.device), 4, True, rt)  # warm-up: allocator, kernels
    print("| batch | new tokens | cache tok/s | no-cache tok/s | speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for batch in cfg.batch_sizes:
        for n in cfg.new_tokens:
            prompt = torch.randint(0, model.config.vocab_size, (batch, cfg.prompt_tokens), device=rt.device)
            cached = batch * n / time_generate(model, prompt, n, True, rt)
            plain = batch * n / time_generate(model, prompt, n, False, rt) if cfg.without_cache else None
            ratio = f"{cached / plain:.1f}x" if plain else "-"
            print(f"| {batch} | {n} | {cached:,.1f} | {f'{plain:,.1f}' if plain else '-'} | {ratio} |", flush=True)


if __name__ == "__main__":
    cli(main)
