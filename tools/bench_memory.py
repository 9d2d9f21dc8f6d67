"""
The memory estimate (gptsuite/memory.py) against the peak memory of real training steps on the CPU,
float32: DDP and FSDP in 2 gloo processes under torchrun, LoRA in one process. Each run trains
`steps` steps of `accum` micro-batches (the gradients and the optimizer state exist while a
micro-batch's activations do), with train.py's own parts (parallelize, build_optimizer, Stepper).
Measured: each process's peak RSS (VmHWM) minus that of a baseline process that does the same on a
tiny model (torch, gloo, peft and the code a training step runs), taken in the same run.

    python -m tools.bench_memory                               # ~30M parameters, 4 x 256 tokens, vocab 8192
    python -m tools.bench_memory --runs=lora --batch_size=2
    python -m tools.bench_memory --activation_checkpointing=True

glibc keeps freed blocks below its mmap threshold in the heap, where later tensors may not fit;
--mmap_threshold=N (bytes, 0 keeps glibc's) has every allocation of N bytes or more mapped and
returned on free, so the peak is that of the live tensors, what the estimate counts (on a GPU,
the caching allocator's slack is the same kind of extra). Time is not measured, so load on the
machine does not matter.
"""

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from configurator import flatten, option, parse_config, part
from gptsuite.errors import UserError, cli
from gptsuite.memory import estimate
from model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("ddp", "fsdp", "lora")
TINY = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.0)


@dataclass
class BenchMemoryConfig:
    runs: str = "ddp,fsdp,lora"  # which of ddp, fsdp (2 processes each), lora (1 process)
    nproc: int = option(2, gt=0)  # processes of the DDP and FSDP runs
    batch_size: int = option(4, gt=0)  # micro-batch per process
    accum: int = option(2, gt=0)  # micro-batches per step and process
    steps: int = option(2, gt=0)  # optimizer steps (the first allocates AdamW's moments)
    lora_rank: int = option(8, gt=0)
    activation_checkpointing: bool = False
    mmap_threshold: int = option(1 << 20, ge=0)  # glibc's M_MMAP_THRESHOLD in the measured processes (see above); 0: glibc's own
    model: GPTConfig = part(GPTConfig, hide=("bias", "arch"), n_layer=6, n_head=8, n_embd=512, block_size=256, vocab_size=8192, dropout=0.0)
    worker: str = ""  # set by the bench for the processes it starts: ddp, fsdp or lora
    baseline: bool = False  # set by the bench: the worker trains TINY instead


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def work(cfg: BenchMemoryConfig) -> None:
    """One process of a run: train, then print this rank's peak RSS."""
    from gptsuite.lora import LoraConfig, adapt
    from gptsuite.objectives import MicroBatches, Objective, Stepper
    from gptsuite.optim import OptimConfig
    from gptsuite.parallel import ParallelConfig, parallelize
    from gptsuite.runtime import setup_runtime, teardown_runtime
    from model import GPT

    rt = setup_runtime("cpu", "float32")
    torch.set_num_threads(1)
    shape = TINY if cfg.baseline else cfg.model
    model = GPT(shape)
    if cfg.worker == "lora":
        adapt(model, LoraConfig(rank=cfg.lora_rank))
    parallel = ParallelConfig(parallel="fsdp" if cfg.worker == "fsdp" else "ddp", compile=False, activation_checkpointing=cfg.activation_checkpointing)
    placed = parallelize(model, rt, parallel)
    optimizer = placed.build_optimizer(OptimConfig(), "cpu")
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stepper = Stepper(placed.model, Objective(), optimizer, scaler, cfg.accum, 1.0, rt)

    def batches():
        while True:
            t = torch.randint(0, shape.vocab_size, (cfg.batch_size, shape.block_size + 1))
            yield t[:, :-1].contiguous(), t[:, 1:].contiguous()

    micro = MicroBatches(batches())
    for _ in range(cfg.steps):
        stepper.step(micro)
    print(f"peak rss rank {rt.rank}: {peak_rss()}", flush=True)
    teardown_runtime(rt, finished=True)


def measure(cfg: BenchMemoryConfig, run: str, baseline: bool) -> int:
    """The largest peak RSS of a run's processes, in bytes."""
    values = flatten(dataclasses.replace(cfg, worker=run, baseline=baseline))
    args = [f"--{k}={v}" for k, v in values.items() if k not in ("runs", "nproc", "mmap_threshold")]  # --nproc: a prefix of torchrun's own --nproc-per-node
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}", "-m"] if run != "lora" else ["-m"]
    env = os.environ | {"OMP_NUM_THREADS": "1"} | ({"MALLOC_MMAP_THRESHOLD_": str(cfg.mmap_threshold)} if cfg.mmap_threshold else {})
    proc = subprocess.run([sys.executable, *launch, "tools.bench_memory", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    peaks = [int(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("peak rss rank")]
    if proc.returncode or not peaks:
        raise UserError(f"the {run} run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return max(peaks)


def estimated(cfg: BenchMemoryConfig, run: str) -> int:
    from gptsuite.memory import lora_params

    world = 1 if run == "lora" else cfg.nproc
    trainable = lora_params(cfg.model, cfg.lora_rank) if run == "lora" else None
    kw = {"activation_checkpointing": cfg.activation_checkpointing, "trainable": trainable}
    return estimate(cfg.model, world, "fsdp" if run == "fsdp" else "ddp", "float32", cfg.batch_size, cfg.model.block_size, **kw).total


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchMemoryConfig(), argv)
    if cfg.worker:
        return work(cfg)
    runs = [r.strip() for r in cfg.runs.split(",")]
    if unknown := [r for r in runs if r not in RUNS]:
        raise UserError(f"unknown run(s) {', '.join(unknown)}; pick from {','.join(RUNS)}")
    m = cfg.model
    print(
        f"{m.n_layer} layers, {m.n_embd} wide, vocab {m.vocab_size}, micro-batch {cfg.batch_size} x {m.block_size}, {cfg.accum} micro-batches x {cfg.steps} steps, "
        f"float32, activation checkpointing {'on' if cfg.activation_checkpointing else 'off'}, load {os.getloadavg()[0]:.1f}"
    )
    print("| run | processes | estimate MiB | measured MiB | baseline MiB | difference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    for run in runs:
        base, peak, est = measure(cfg, run, True), measure(cfg, run, False), estimated(cfg, run)
        got = peak - base
        print(f"| {run} | {1 if run == 'lora' else cfg.nproc} | {mib(est)} | {mib(got)} | {mib(base)} | {100 * (est - got) / got:+.1f}% |", flush=True)


if __name__ == "__main__":
    cli(main)
