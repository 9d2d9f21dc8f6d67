"""
DDP against FSDP in one run: torchrun bench.py with --parallel=ddp, then --parallel=fsdp, on the
same model shape, each `repeats` times, alternating; prints what each rank holds (parameters,
gradients, optimizer state) and tokens/s, and FSDP's ratio to DDP.

    python -m tools.bench_fsdp                                   # GPT-2 124M's shape, 2 processes on the CPU (gloo)
    python -m tools.bench_fsdp --nproc=4 --block_size=128
    python -m tools.bench_fsdp --device=cuda --nproc=8 --n_layer=48 --n_head=25 --n_embd=1600 --block_size=1024 --batch_size=4 --dtype=bfloat16

On a CPU the processes share its cores: tokens/s there says how much the sharding's extra
communication costs, not what GPUs would do. The held bytes do not depend on the machine.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from configurator import flatten, option, parse_config, part
from gptsuite.errors import UserError, cli
from model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchFsdpConfig:
    nproc: int = option(2, gt=0)  # processes (GPUs) per variant
    device: str = "cpu"  # cpu (gloo) or cuda (nccl)
    dtype: str = "float32"  # float32, or bfloat16 (FSDP computes in it, reduces and keeps master weights in fp32)
    batch_size: int = option(1, gt=0)  # micro-batch per process
    warmup_steps: int = option(1, ge=0)
    timed_steps: int = option(3, gt=0)
    repeats: int = option(2, gt=0)  # runs of each variant, alternating
    threads: int = option(0, ge=0)  # torch threads per process; 0: cores / nproc
    model: GPTConfig = part(GPTConfig, hide=("vocab_size", "dropout", "bias", "arch"), block_size=256)  # GPT-2 124M's shape by default


HELD = re.compile(r"held per rank: parameters ([\d.]+) MiB, gradients ([\d.]+) MiB, optimizer state ([\d.]+) MiB, total ([\d.]+) MiB")
SPEED = re.compile(r"([\d.]+) ms/iter, ([\d,]+) tokens/s")


def run_variant(cfg: BenchFsdpConfig, parallel: str) -> dict:
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.nproc)
    values = flatten(cfg)
    args = [f"--{k}={values[k]}" for k in ("device", "dtype", "n_layer", "n_head", "n_embd", "block_size", "batch_size", "warmup_steps", "timed_steps")]
    args.append(f"--gradient_accumulation_steps={cfg.nproc}")  # one micro-batch per process
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cfg.nproc}",
        "bench.py",
        f"--parallel={parallel}",
        "--compile=False",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    held, speed = HELD.search(proc.stdout), SPEED.search(proc.stdout)
    if proc.returncode or not held or not speed:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise UserError(f"bench.py --parallel={parallel} failed (exit {proc.returncode}): {' | '.join(tail)}")
    mib = [float(v) for v in held.groups()]
    return {"parameters": mib[0], "gradients": mib[1], "optimizer": mib[2], "total": mib[3], "tokens_per_s": float(speed.group(2).replace(",", ""))}


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchFsdpConfig(), argv)
    load = os.getloadavg()[0]
    runs = {"ddp": [], "fsdp": []}
    for _ in range(cfg.repeats):
        for parallel in runs:
            runs[parallel].append(run_variant(cfg, parallel))
            print(f"{parallel}: {runs[parallel][-1]}", flush=True)
    best = {p: max(rs, key=lambda r: r["tokens_per_s"]) for p, rs in runs.items()}
    print(
        f"\n{cfg.nproc} processes, n_layer={cfg.model.n_layer} n_head={cfg.model.n_head} n_embd={cfg.model.n_embd}, {cfg.nproc} x {cfg.batch_size} x {cfg.model.block_size} tokens per step, "
        f"{cfg.device} {cfg.dtype}; load {load:.2f} before, {os.getloadavg()[0]:.2f} after; tokens/s: the best of {cfg.repeats}\n"
    )
    print("| per rank | parameters MiB | gradients MiB | optimizer MiB | total MiB | tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for p, r in best.items():
        print(f"| {p} | {r['parameters']:.1f} | {r['gradients']:.1f} | {r['optimizer']:.1f} | {r['total']:.1f} | {r['tokens_per_s']:,.0f} |")
    d, f = best["ddp"], best["fsdp"]
    print(
        f"| fsdp / ddp | {f['parameters'] / d['parameters']:.3f} | {f['gradients'] / d['gradients']:.3f} | {f['optimizer'] / d['optimizer']:.3f} | {f['total'] / d['total']:.3f} | {f['tokens_per_s'] / d['tokens_per_s']:.2f} |"
    )


if __name__ == "__main__":
    cli(main)
