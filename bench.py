"""
Time training steps of a GPT (forward + backward + optimizer step, after a warm-up) and print
ms/iter, tokens/s, peak memory and MFU.

    python bench.py                                                  # GPT-2 124M, block 1024, batch 12, random tokens
    python bench.py --batch_size=32 --dtype=bfloat16                 # as large a batch as fits
    python bench.py config/train_gpt2.py --gradient_accumulation_steps=1 --real_data=True
    python bench.py config/train_shakespeare_char_cpu.py --real_data=True  # nanoGPT's CPU recipe
    python bench.py config/train_shakespeare_char_modern_cpu.py --real_data=True  # the same with the modern preset (arch, Muon)
    python bench.py --device=cpu --compile=False --block_size=256 --batch_size=4

Settings: train.py's (model shape and arch, optimizer, batch, dtype, compile, device, dataset) and the BenchConfig
fields below. A step is gradient_accumulation_steps micro-batches (default 1), exactly as
train.py runs it. MFU is the model's FLOPs (6N + 12*L*H*Q*T per token, PaLM appendix B) per
second over the GPU's dense peak at this precision (flops.GPU_PEAK_TFLOPS, or --peak_tflops);
on a CPU only tokens/s mean much. Peak memory: CUDA's max allocated, elsewhere the process's peak RSS.
"""

import itertools
import sys
import time
from dataclasses import dataclass

import torch

from configurator import option, parse_config, print_config
from gptsuite.errors import UserError, cli
from gptsuite.flops import model_flops_per_token
from gptsuite.loading import new_model
from gptsuite.optim import build_optimizer
from gptsuite.runtime import CpuThreads, Runtime, setup_runtime, teardown_runtime
from gptsuite.training import TrainConfig, check_train_config, get_batch, open_training_data, train_step
from model import GPTConfig


@dataclass
class BenchConfig(TrainConfig):
    # bench
    gradient_accumulation_steps: int = option(1, gt=0)  # micro-batches per timed step
    real_data: bool = False  # batches from the prepared dataset (dataset, data_dir), else random tokens
    vocab_size: int = option(GPTConfig.vocab_size, gt=0)  # of the random tokens: GPT-2's 50257 padded to a multiple of 64
    warmup_steps: int = option(10, ge=0)  # untimed: compilation, the allocator and kernel choice settle here
    timed_steps: int = option(20, gt=0)  # steps timed after the warm-up
    peak_tflops: float = option(0.0, ge=0)  # the accelerator's dense peak TFLOP/s at this dtype; 0 looks the GPU up


def peak_memory(rt: Runtime) -> tuple[int, str]:
    if rt.device_type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device), "CUDA max allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024, "peak RSS of the process"  # Linux counts KiB


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchConfig(), argv)
    check_train_config(cfg)
    if cfg.init_from != "scratch":
        raise UserError("bench.py times a freshly initialized model (weights do not change the speed); drop init_from and set n_layer, n_head, n_embd instead")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, cfg.backend)
    try:
        bench(cfg, rt)
    finally:
        teardown_runtime(rt)


def bench(cfg: BenchConfig, rt: Runtime) -> dict:
    if rt.ddp:
        raise UserError("bench.py times one process; run it with python, not torchrun")
    print_config(cfg)
    if cfg.real_data:
        data = open_training_data(cfg)
        tokenizer_meta = data.tokenizer
        batches = (get_batch(data.dir / "train.bin", data.dtype, cfg.batch_size, cfg.block_size, (cfg.seed, 0, k), rt) for k in itertools.count())
    else:
        tokenizer_meta = {"kind": "random", "vocab_size": cfg.vocab_size}
        tokens = (torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1), device=rt.device) for _ in itertools.count())
        batches = ((t[:, :-1], t[:, 1:].contiguous()) for t in tokens)

    CpuThreads(cfg.threads, adaptive=False)  # a benchmark keeps its thread count: --threads=N, else torch's default
    model = new_model(cfg, tokenizer_meta).to(rt.device)
    optimizer = build_optimizer(model, cfg, rt.device_type)
    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    compiled = rt.maybe_compile(model, cfg.compile)
    tokens_per_step = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    print(
        f"{model.get_num_params() / 1e6:.2f}M parameters, {cfg.gradient_accumulation_steps} x {cfg.batch_size} x {cfg.block_size} tokens per step, "
        f"{'real data' if cfg.real_data else 'random tokens'}, device {rt.device}, {rt.dtype}, compile {'on' if compiled is not model else 'off'}"
    )

    def run(steps: int) -> float:
        batch, loss = next(batches), None
        for _ in range(steps):
            loss, _, _, batch = train_step(compiled, optimizer, scaler, batch, batches, cfg.gradient_accumulation_steps, cfg.grad_clip, rt)
        rt.synchronize()
        return loss if loss is not None else float("nan")

    print(f"warming up for {cfg.warmup_steps} steps, then timing {cfg.timed_steps}")
    run(cfg.warmup_steps)
    t0 = time.perf_counter()
    loss = run(cfg.timed_steps)
    dt = (time.perf_counter() - t0) / cfg.timed_steps

    memory, memory_kind = peak_memory(rt)
    peak = cfg.peak_tflops * 1e12 or rt.peak_flops()
    mfu = model_flops_per_token(model, cfg.block_size) * tokens_per_step / dt / peak if peak else None
    result = {"ms_per_iter": dt * 1000, "tokens_per_s": tokens_per_step / dt, "peak_memory_bytes": memory, "mfu": mfu, "loss": loss}
    where = torch.cuda.get_device_name(rt.device) if rt.device_type == "cuda" else rt.device_type
    print(f"loss {loss:.4f}")
    print(f"{dt * 1000:.1f} ms/iter, {tokens_per_step / dt:,.0f} tokens/s, peak memory {memory / 2**30:.2f} GiB ({memory_kind})")
    if mfu is None:
        print(f"MFU n/a: no peak FLOP/s known for {where} at {rt.dtype}; pass --peak_tflops=N to compute one")
    else:
        print(f"MFU {mfu * 100:.1f}% of {peak / 1e12:g} TFLOP/s ({where}, {rt.dtype})")
    return result


if __name__ == "__main__":
    cli(main)
