"""Device, precision and distributed setup, shared by train.py, sample.py, bench.py and eval.py.

    rt = setup_runtime(device="auto", dtype="auto", seed=1337)
    with rt.autocast():
        logits, loss = model(x, y)

Under torchrun (RANK/LOCAL_RANK/WORLD_SIZE set) it joins the process group: nccl on CUDA, each
rank on its own GPU; gloo on CPU.
"""

import contextlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from configurator import option
from gptsuite.errors import UserError
from gptsuite.flops import peak_tflops

PTDTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *PTDTYPE)  # what --dtype takes


@dataclass
class SystemConfig:
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)  # auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16; fp32 on cpu/mps
    backend: str = option("auto", choices=("auto", "nccl", "gloo"))  # DDP backend: auto is nccl on CUDA, gloo on CPU
    seed: int = option(1337, ge=0)  # seeds the batches, the init and dropout
    threads: int = option(0, ge=0)  # CPU threads for torch on a CPU run; 0: the cores other processes leave free, re-checked every 2 s

    MACHINE: ClassVar[tuple[str, ...]] = ("device", "backend", "threads")  # where a run executes, not what it is: a resume never inherits them


@dataclass
class Runtime:
    device: str  # 'cuda:0', 'cpu', 'mps'
    device_type: str  # 'cuda', 'cpu', 'mps'
    dtype: str  # 'float32', 'bfloat16', 'float16'
    distributed: bool = False  # one of torchrun's processes (DDP or FSDP)
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=PTDTYPE[self.dtype])

    def compiles(self, flag: bool | None) -> bool:
        """Whether --compile=flag compiles: if flag, or by default (None) on CUDA only: elsewhere
        compiling costs more time than it saves."""
        return flag if flag is not None else self.device_type == "cuda"

    def maybe_compile(self, model: torch.nn.Module, flag: bool | None) -> torch.nn.Module:
        """torch.compile(model) if self.compiles(flag)."""
        if not self.compiles(flag):
            return model
        if self.master:
            print("compiling the model... (takes a minute)")
        return torch.compile(model)

    def synchronize(self) -> None:
        """Wait for queued device work, so wall-clock timings are real."""
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device_type == "mps":
            torch.mps.synchronize()

    def peak_flops(self) -> float | None:
        """The accelerator's dense peak FLOP/s at this precision, or None where it is not known."""
        if self.device_type != "cuda":
            return None
        peak = peak_tflops(torch.cuda.get_device_name(self.device), self.dtype != "float32")
        return peak * 1e12 if peak else None


def resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind, _, index = device.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' was asked for but CUDA is not available here; use --device=cpu (or auto)")
    if kind == "cuda" and index and not index.isdigit():
        raise UserError(f"unknown device '{device}'; use cuda:N with N a GPU's number, e.g. cuda:0")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise UserError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{device}' was asked for but Apple MPS is not available here; use --device=cpu (or auto)")
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    return device


def native_bf16(device: str) -> bool:
    """Whether a CUDA device computes bfloat16 in hardware: compute capability 8.0 (Ampere) or
    newer. torch.cuda.is_bf16_supported() also says yes for older GPUs (T4, V100, RTX 20xx),
    which emulate it without tensor cores or flash attention, several times slower than float16."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_dtype(dtype: str, device: str) -> str:
    """The precision for `dtype` on `device` (the one in use, e.g. 'cuda:1'): auto is bfloat16 on
    GPUs that have it natively, else float16 (with a GradScaler); float32 on cpu and mps."""
    device_type = device.split(":")[0]
    if dtype == "auto":
        if device_type == "cuda":
            return "bfloat16" if native_bf16(device) else "float16"
        return "float32"
    if dtype not in PTDTYPE:
        raise UserError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    if dtype == "bfloat16" and device_type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(
            f"{torch.cuda.get_device_name(device)} ({device}, compute capability {major}.{minor}) has no native bfloat16 (8.0 and newer do) and would emulate it "
            f"several times slower; use --dtype=float16 (with loss scaling) or --dtype=auto"
        )
    if dtype != "float32" and device_type == "mps" and not mps_autocasts(dtype):
        raise UserError(
            f"--dtype={dtype} autocast on MPS needs torch 2.5 or newer{' and macOS 14 or newer' if dtype == 'bfloat16' else ''} (this is torch {torch.__version__}); use --dtype=float32"
        )
    return dtype


def mps_autocasts(dtype: str) -> bool:
    """Whether torch.autocast runs in `dtype` on MPS: float16 since torch 2.5, bfloat16 there too
    where the Mac has it (macOS 14+)."""
    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (2, 5):
        return False
    return dtype == "float16" or (dtype == "bfloat16" and torch.backends.mps.is_macos_or_newer(14, 0))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_device(local_rank: int, visible: int) -> str:
    """The GPU of a torchrun worker: its LOCAL_RANK among the GPUs it sees. Where a launcher gives
    each process one GPU (CUDA_VISIBLE_DEVICES per process), every worker's is cuda:0."""
    return f"cuda:{local_rank % visible}"


def setup_runtime(
    device: str = SystemConfig.device, dtype: str = SystemConfig.dtype, seed: int = SystemConfig.seed, backend: str = SystemConfig.backend
) -> Runtime:
    """Pick the device and precision, join the torchrun process group if there is one, seed RNGs
    (seed + rank, so each rank draws different batches) and enable TF32 matmuls on CUDA."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        device = resolve_device(device)
        if device.startswith("cuda"):
            device = rank_device(local_rank, torch.cuda.device_count())
            torch.cuda.set_device(device)
        if backend == "auto":
            backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl" and not device.startswith("cuda"):
            raise UserError(f"--backend=nccl connects CUDA GPUs, but this run is on {device}; pass --backend=gloo (or auto) for a run on {device}")
        # the threads the process group starts must never take a stop signal (a gloo thread woken by
        # one can abort the process): they inherit this thread's mask, so block them meanwhile
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            torch.distributed.init_process_group(backend=backend, device_id=torch.device(device) if backend == "nccl" else None)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        rt = Runtime(device, device.split(":")[0], "float32", True, rank, local_rank, world)
    else:
        device = resolve_device(device)
        if device.startswith("cuda"):  # the current device: what capability checks, timers and bare .cuda() calls see
            index = torch.device(device).index
            device = f"cuda:{torch.cuda.current_device() if index is None else index}"
            torch.cuda.set_device(device)
        rt = Runtime(device, device.split(":")[0], "float32")
    rt.dtype = resolve_dtype(dtype, rt.device)
    seed_everything(seed + rt.rank)
    if rt.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return rt


class CpuThreads:
    """torch's intra-op threads on a CPU run, fitted to the cores other processes leave free.

    PyTorch's OpenMP threads spin while they wait for work; on a core another process needs, a
    spinning thread and the thread it waits for take turns, and a step gets several times slower
    (on 2 cores with one busy process: 46 -> 150-215 ms/iter for the CPU recipe with 2 threads,
    75-82 ms with 1). So every `interval` seconds this measures how many cores the rest of the
    machine used (Linux: /proc/stat minus this process's own CPU time) and sets
    threads = cores - that, at least 1. `fixed` > 0 (--threads=N) or OMP_NUM_THREADS in the
    environment keep the count as given; so do machines without /proc/stat. A changed count can
    change float rounding, so a bit-exact resume needs a fixed count."""

    def __init__(self, fixed: int = 0, adaptive: bool = True, interval: float = 2.0, stat: str = "/proc/stat", cores: int = 0):
        self.cores = cores or torch.get_num_threads()  # torch's default: the physical cores it may use
        self.stat, self.interval = stat, interval
        if fixed > 0:
            torch.set_num_threads(fixed)
        self.adaptive = adaptive and fixed == 0 and "OMP_NUM_THREADS" not in os.environ and self.cores > 1 and os.path.exists(stat)
        self.threads = torch.get_num_threads()
        self._last = self._sample() if self.adaptive else None

    def _sample(self) -> tuple[float, float, float]:
        """(wall seconds, CPU seconds all processes were busy, CPU seconds of this process)."""
        with open(self.stat) as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        ticks = os.sysconf("SC_CLK_TCK")
        return time.monotonic(), (sum(fields[:8]) - idle) / ticks, time.process_time()

    def fit_now(self, seconds: float = 1.0) -> int:
        """Measure the rest of the machine for `seconds` and fit the count to it now (a benchmark
        does this once, then keeps the count while it times); returns the count."""
        if self.adaptive:
            self._last = self._sample()
            time.sleep(seconds)
        return self.adjust(now=True)

    def adjust(self, now: bool = False) -> int:
        """Re-fit the thread count if `interval` seconds have passed (or `now`); returns the count."""
        if not self.adaptive or (not now and time.monotonic() - self._last[0] < self.interval):
            return self.threads
        now = self._sample()
        wall, busy, ours = (b - a for a, b in zip(self._last, now, strict=True))
        self._last = now
        others = max(0.0, (busy - ours) / wall)  # cores the rest of the machine kept busy
        threads = max(1, min(self.cores, self.cores - round(others)))
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads


def teardown_runtime(rt: Runtime, finished: bool = False) -> None:
    """End the process group. After a run that finished (on every rank), the ranks first wait for
    each other: a gloo rank that tears down while rank 0 still writes the last checkpoint could
    abort ('terminate called without an active exception'; 1 of 12 two-process runs under load).
    After an error there is no waiting: the other ranks may never get here."""
    if rt.distributed and torch.distributed.is_initialized():
        if finished:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class StopSignal:
    """SIGTERM / SIGINT (preemption, Ctrl-C) ask the run to stop: the training loop finishes its step,
    saves a checkpoint and returns. A Ctrl-C more than two seconds after the first stops at once
    (quicker repeats count as one: torchrun forwards the terminal's Ctrl-C to its workers).

    The handler only takes note: printing from it could land inside another print (not reentrant),
    and system calls it interrupts are restarted, so a signal that arrives in the middle of a
    collective or a file write does not break it."""

    def __init__(self):
        self.signum: int | None = None
        self._when = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop signal on another rank"

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
                signal.siginterrupt(sig, False)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT and time.monotonic() - self._when > 2:
                raise KeyboardInterrupt
            return
        self.signum, self._when = signum, time.monotonic()
