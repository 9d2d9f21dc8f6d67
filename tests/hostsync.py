"""Counting, on a CPU, what would make the host wait for a GPU or copy host data to it.

    with HostSyncs() as syncs:
        train_step(...)
    syncs.reads    # Tensor.item/tolist/bool/int/float/numpy calls: the host waits for the device
    syncs.uploads  # tensors built from Python data, and indexes given as Python lists or arrays

On CUDA each read blocks until the queued kernels finish, and each upload is a host-to-device
copy; on a CPU both are cheap, but the calls are the same ones, so counting them here pins how
many a step or a token makes on a GPU. Calls from torch.optim do not count: its optimizers read
their step counters, which stay on the CPU (not a device sync)."""

import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "nonzero"}
OPTIM_DIR = str(Path(torch.optim.__file__).parent)


def _host_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, list | np.ndarray) or (isinstance(p, torch.Tensor) and p.dtype == torch.bool) for p in parts)


class HostSyncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.reads: list[str] = []
        self.uploads: list[str] = []

    def _where(self) -> str | None:
        """file:line of the caller, or None if it is torch.optim."""
        for frame in reversed(traceback.extract_stack(sys._getframe(2), limit=12)):
            if frame.filename == __file__:
                continue
            return None if frame.filename.startswith(OPTIM_DIR) else f"{Path(frame.filename).name}:{frame.lineno}"
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kind = None
        if name in READS:
            kind = self.reads
        elif name in ("tensor", "as_tensor") or (name in ("__getitem__", "__setitem__") and len(args) > 1 and _host_index(args[1])):
            kind = self.uploads
        if kind is not None:
            where = self._where()
            if where is not None:
                kind.append(f"{name} at {where}")
        return func(*args, **(kwargs or {}))
