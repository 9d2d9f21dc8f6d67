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
from dataclasses import dataclass

import numpy as np
import torch

from gptsuite.errors import UserError
from gptsuite.flops import peak_tflops

PTDTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *PTDTYPE)  # what --dtype takes



@dataclass
class Runtime:
    device: str  # 'cuda:0', 'cpu', 'mps'
    device_type: str  # 'cuda', 'cpu', 'mps'
    dtype: str  # 'float32', 'bfloat16', 'float16'
    ddp: bool = False
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

    def maybe_compile(self, model: torch.nn.Module, flag: bool | None) -> torch.nn.Module:
        """torch.compile(model) if flag, or by default (None) on CUDA only: elsewhere compiling
        costs more time than it saves."""
        if not (flag if flag is not None else self.device_type == "cuda"):
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
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' was asked for but CUDA is not available here; use --device=cpu (or auto)")
    if kind == "cuda" and ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise UserError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{device}' was asked for but Apple MPS is not available here; use --device=cpu (or auto)")
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(dtype: str, device_type: str) -> str:
    if dtype == "auto":
        if device_type == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    if dtype not in PTDTYPE:
        raise UserError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    if dtype == "bfloat16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bfloat16; use --dtype=float16 (with loss scaling) or float32")
    if dtype != "float32" and device_type == "mps":
        raise UserError(f"--dtype={dtype} autocast is not supported on MPS here; use --dtype=float32")
    return dtype


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_runtime(device: str = "auto", dtype: str = "auto", seed: int = 1337, backend: str = "auto") -> Runtime:
    """Pick the device and precision, join the torchrun process group if there is one, seed RNGs
    (seed + rank, so each rank draws different batches) and enable TF32 matmuls on CUDA."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        device = resolve_device(device)
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        if backend == "auto":
            backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend, device_id=torch.device(device) if backend == "nccl" else None)
        rt = Runtime(device, device.split(":")[0], "float32", True, rank, local_rank, world)
    else:
        device = resolve_device(device)
        rt = Runtime(device, device.split(":")[0], "float32")
    rt.dtype = resolve_dtype(dtype, rt.device_type)
    seed_everything(seed + rt.rank)
    if rt.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return rt


def teardown_runtime(rt: Runtime) -> None:
    if rt.ddp and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
