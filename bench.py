"""
Time training steps of a GPT (forward + backward + optimizer step, after a warm-up) and print
ms/iter, tokens/s, peak memory and MFU.

    python bench.py                                                  # GPT-2 124M, block 1024, batch 12, random tokens
    python bench.py --batch_size=32 --dtype=bfloat16                 # as large a batch as fits
    python bench.py config/train_gpt2.py --gradient_accumulation_steps=1 --real_data=True
    python bench.py config/train_shakespeare_char_cpu.py --real_data=True  # nanoGPT's CPU recipe
    python bench.py config/train_shakespeare_char_modern_cpu.py --real_data=True  # the same with the modern preset (arch, Muon)
    python bench.py --device=cpu --compile=False --block_size=256 --batch_size=4
    torchrun --standalone --nproc_per_node=8 bench.py --parallel=fsdp --n_layer=48 --n_head=25 --n_embd=1600 --batch_size=4 --gradient_accumulation_steps=8  # gpt2-xl's shape, sharded

Settings: the parts of train.py's it uses (model shape and arch, optimizer, data and batch, device
and dtype, parallelism and compile) and the bench keys below; a train.py config file may set
others, which bench ignores. A step is gradient_accumulation_steps micro-batches in all (default
1; under torchrun a multiple of the process count, as in train.py), exactly as train.py runs it. MFU is the model's FLOPs (6N + 12*L*H*Q*T per token, PaLM appendix B) per
second over the GPU's dense peak at this precision (flops.GPU_PEAK_TFLOPS, or --peak_tflops);
on a CPU only tokens/s mean much. Peak memory: CUDA's max allocated, elsewhere the process's peak RSS.
Under torchrun (--parallel=ddp or fsdp) tokens/s counts all ranks, MFU is per GPU, and "held per
rank" is the bytes of parameters, gradients and optimizer state one rank keeps (its shards under FSDP).
"""

import itertools
import sys
import time
from dataclasses import dataclass

import torch

from configurator import config_keys, option, parse_config, part, print_config
from gptsuite.batches import Batches, DataConfig, open_training_data
from gptsuite.errors import cli
from gptsuite.flops import model_flops_per_token
from gptsuite.loading import new_model
from gptsuite.objectives import MicroBatches, Objective, Stepper
from gptsuite.optim import OptimConfig
from gptsuite.parallel import ParallelConfig, accumulating, check_parallel, parallelize
from gptsuite.runtime import CpuThreads, Runtime, SystemConfig, setup_runtime, teardown_runtime
from gptsuite.settings import TrainConfig
from model import GPTConfig


@dataclass
class BenchConfig:
    # bench
    real_data: bool = False  # batches from the prepared dataset (dataset, data_dir), else random tokens (of vocab_size)
    warmup_steps: int = option(10, ge=0)  # untimed: compilation, the allocator and kernel choice settle here
    timed_steps: int = option(20, gt=0)  # steps timed after the warm-up
    peak_tflops: float = option(0.0, ge=0)  # the accelerator's dense peak TFLOP/s at this dtype; 0 looks the GPU up
    model: GPTConfig = part(GPTConfig)
    data: DataConfig = part(DataConfig, gradient_accumulation_steps=1)
    optim: OptimConfig = part(OptimConfig)
    system: SystemConfig = part(SystemConfig)
    parallel: ParallelConfig = part(ParallelConfig)


# train.py's config files set keys bench has no use for: ignored there, refused as flags
TRAIN_ONLY = dict.fromkeys(config_keys(TrainConfig()), "") | {
    "init_from": "bench.py times a freshly initialized model (weights do not change the speed); drop --init_from and set --n_layer, --n_head, --n_embd instead"
}


def peak_memory(rt: Runtime) -> tuple[int, str]:
    if rt.device_type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device), "CUDA max allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024, "peak RSS of the process"  # Linux counts KiB


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchConfig(), argv, tolerate=TRAIN_ONLY)
    rt = setup_runtime(cfg.system.device, cfg.system.dtype, cfg.system.seed, cfg.system.backend)
    try:
        bench(cfg, rt)
    except BaseException:
        teardown_runtime(rt)
        raise
    teardown_runtime(rt, finished=True)  # the ranks wait for each other before the group ends


def state_bytes(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes this rank holds of the parameters, their gradients and the optimizer state (under
    FSDP each is its shard: DTensor.to_local)."""

    def size(tensors) -> int:
        local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in local)

    opts = optimizer.optimizers.values() if hasattr(optimizer, "optimizers") else [optimizer]
    return {
        "parameters": size(model.parameters()),
        "gradients": size(p.grad for p in model.parameters()),
        "optimizer": size(v for opt in opts for state in opt.state.values() for v in state.values()),
    }


def bench(cfg: BenchConfig, rt: Runtime) -> dict:
    check_parallel(cfg.parallel, rt)
    if rt.master:
        print_config(cfg)
    shape, accum_steps = cfg.model, cfg.data.accum_steps(rt.world_size)
    if cfg.real_data:
        data = open_training_data(cfg.data, shape.block_size)
        tokenizer_meta = data.tokenizer
        batches = Batches(data, cfg.data, shape.block_size, cfg.system.seed, rt).train(0)
    else:
        tokenizer_meta = {"kind": "random", "vocab_size": shape.vocab_size}
        tokens = (torch.randint(0, shape.vocab_size, (cfg.data.batch_size, shape.block_size + 1), device=rt.device) for _ in itertools.count())
        batches = ((t[:, :-1], t[:, 1:].contiguous()) for t in tokens)

    threads = CpuThreads(cfg.system.threads, adaptive=rt.device_type == "cpu").fit_now()  # as train.py: the cores others leave free, then kept while timing
    model = new_model(shape, tokenizer_meta).to(rt.device)
    placed = parallelize(model, rt, cfg.parallel)  # fsdp: model sharded in place
    optimizer = placed.build_optimizer(cfg.optim, rt.device_type)
    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    stepper = Stepper(placed.model, Objective(), optimizer, scaler, accum_steps, cfg.optim.grad_clip, rt)  # next-token loss on the batches below
    micro = MicroBatches(batches)
    tokens_per_step = cfg.data.gradient_accumulation_steps * cfg.data.batch_size * shape.block_size
    parallel = f", {rt.world_size} processes ({cfg.parallel.parallel})" if rt.distributed else ""
    say(
        rt,
        f"{model.get_num_params() / 1e6:.2f}M parameters, {rt.world_size} x {accum_steps} x {cfg.data.batch_size} x {shape.block_size} tokens per step{parallel}, "
        f"{'real data' if cfg.real_data else 'random tokens'}, device {rt.device}, {rt.dtype}, compile {'on' if rt.compiles(cfg.parallel.compile) else 'off'}"
        + (f", {threads} CPU threads" if rt.device_type == "cpu" else ""),
    )

    def run(steps: int) -> float:
        loss = None
        for _ in range(steps):
            loss = stepper.step(micro).loss
        rt.synchronize()
        return loss if loss is not None else float("nan")

    say(rt, f"warming up for {cfg.warmup_steps} steps, then timing {cfg.timed_steps}")
    run(cfg.warmup_steps)
    x, y = micro.take()  # one more micro-step, to count what this rank holds between micro-steps (the gradients the step frees)
    micro.fetch()
    with accumulating(placed.model, last=accum_steps == 1), rt.autocast():
        placed.model(x, y)[1].backward()
    held = state_bytes(model, optimizer)
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = run(cfg.timed_steps)
    dt = (time.perf_counter() - t0) / cfg.timed_steps

    memory, memory_kind = peak_memory(rt)
    peak = cfg.peak_tflops * 1e12 or rt.peak_flops()
    mfu = model_flops_per_token(model, shape.block_size) * tokens_per_step / dt / peak if peak else None
    mfu = mfu / rt.world_size if mfu is not None else None  # per GPU
    result = {
        "threads": threads,
        "ms_per_iter": dt * 1000,
        "tokens_per_s": tokens_per_step / dt,
        "peak_memory_bytes": memory,
        "mfu": mfu,
        "loss": loss,
        "state_bytes": held,
    }
    where = torch.cuda.get_device_name(rt.device) if rt.device_type == "cuda" else rt.device_type
    say(rt, f"loss {loss:.4f}")
    say(
        rt,
        f"{dt * 1000:.1f} ms/iter, {tokens_per_step / dt:,.0f} tokens/s, peak memory {memory / 2**30:.2f} GiB ({memory_kind}{' of rank 0' if rt.distributed else ''})",
    )
    mib = {k: v / 2**20 for k, v in held.items()}
    say(
        rt,
        f"held per rank: parameters {mib['parameters']:.1f} MiB, gradients {mib['gradients']:.1f} MiB, optimizer state {mib['optimizer']:.1f} MiB, total {sum(mib.values()):.1f} MiB",
    )
    if mfu is None:
        say(rt, f"MFU n/a: no peak FLOP/s known for {where} at {rt.dtype}; pass --peak_tflops=N to compute one")
    else:
        say(rt, f"MFU {mfu * 100:.1f}% of {peak / 1e12:g} TFLOP/s ({where}, {rt.dtype})")
    return result


def say(rt: Runtime, line: str) -> None:
    if rt.master:
        print(line, flush=True)


if __name__ == "__main__":
    cli(main)
