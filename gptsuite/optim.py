"""The optimizers a run can train with, built for a model.py GPT.

optimizer='adamw': AdamW (nanoGPT's), with weight decay on matrices only.
optimizer='muon': torch.optim.Muon on the hidden matrices of the transformer blocks (the 2-D
weights of attention and MLP, whose updates it orthogonalizes) and AdamW on everything else
(embeddings, the output head, norm gains, biases), each with its own learning rate: Muon's is
muon_lr, scheduled in proportion to learning_rate. The two are stepped as one (`Optimizers`), so
the training loop, the gradient scaler and checkpoints see a single optimizer. Under DDP the
gradients are all-reduced in backward(), so every rank orthogonalizes the same global gradient.
"""

import math
from dataclasses import dataclass

import torch

from configurator import option
from model import GPT

OPTIMIZERS = ("adamw", "muon")
LR_SCHEDULES = ("cosine", "wsd")
FUSED_ADAMW_DEVICES = ("cuda", "cpu", "mps")  # device types with a fused AdamW kernel (torch >= 2.4)


@dataclass
class OptimConfig:
    # optimizer
    optimizer: str = option("adamw", choices=OPTIMIZERS)  # adamw, or muon: Muon on the hidden matrices, AdamW on the rest (see gptsuite/optim.py)
    learning_rate: float = option(6e-4, gt=0)  # AdamW's peak learning rate, after warmup
    weight_decay: float = option(1e-1, ge=0)  # on matrices only, not on biases and gains
    beta1: float = option(0.9, ge=0, lt=1)  # AdamW's decay of the gradient mean
    beta2: float = option(0.95, ge=0, lt=1)  # and of its square
    muon_lr: float = option(0.02, gt=0)  # Muon's peak learning rate (optimizer=muon), scheduled in proportion to learning_rate
    muon_momentum: float = option(0.95, ge=0, lt=1)  # Muon's (Nesterov) momentum
    grad_clip: float = option(1.0, ge=0)  # clip the global gradient norm at this value; 0 disables clipping


@dataclass
class ScheduleConfig:
    # learning rate schedule: linear warmup, then cosine decay to min_lr, or constant then a linear cooldown (wsd)
    max_iters: int = option(600000, ge=0)  # total optimizer steps
    decay_lr: bool = True  # False: a constant learning_rate
    lr_schedule: str = option("cosine", choices=LR_SCHEDULES)  # cosine, or wsd: warmup-stable-decay, constant until the last cooldown_frac of lr_decay_iters
    warmup_iters: int = option(2000, ge=0)  # iterations of linear warmup from 0
    lr_decay_iters: int = option(600000, ge=0)  # where the decay reaches min_lr: ~= max_iters per Chinchilla
    cooldown_frac: float = option(0.4, gt=0, le=1)  # wsd: the fraction of lr_decay_iters spent decaying linearly to min_lr
    min_lr: float = option(6e-5, ge=0)  # ~= learning_rate / 10 per Chinchilla


def get_lr(it: int, schedule: ScheduleConfig, learning_rate: float) -> float:
    """Linear warmup to learning_rate for warmup_iters, then down to min_lr at lr_decay_iters
    (cosine; or for wsd, constant until the cooldown, then linear), then min_lr."""
    s = schedule
    if not s.decay_lr:
        return learning_rate
    if it < s.warmup_iters:
        return learning_rate * (it + 1) / (s.warmup_iters + 1)
    if it >= s.lr_decay_iters:
        return s.min_lr
    if s.lr_schedule == "wsd":
        cooldown_start = max(s.warmup_iters, s.lr_decay_iters - round(s.cooldown_frac * s.lr_decay_iters))
        if it < cooldown_start:
            return learning_rate
        coeff = (s.lr_decay_iters - it) / (s.lr_decay_iters - cooldown_start)  # 1 -> 0
        return s.min_lr + coeff * (learning_rate - s.min_lr)
    ratio = (it - s.warmup_iters) / (s.lr_decay_iters - s.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return s.min_lr + coeff * (learning_rate - s.min_lr)


class Optimizers:
    """Several optimizers used as one: their param_groups in one list, one step() and zero_grad(),
    a state_dict keyed by name. Enough of torch.optim.Optimizer for GradScaler and the loop.
    lr_scales: each one's learning rate relative to the schedule's (set_lr)."""

    def __init__(self, lr_scales: dict[str, float], **optimizers: torch.optim.Optimizer):
        self.optimizers, self.lr_scales = optimizers, lr_scales

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"the state is of optimizers {', '.join(state)}, not {', '.join(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A 2-D weight inside the transformer blocks (not an embedding or the head): Muon's to update."""
    return p.dim() == 2 and name.startswith("transformer.h.")


def adamw(named: list, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (>= 2-D: Linear weights, embeddings) only, not on biases
    and norm gains. The fused kernel where torch has one: one launch for all parameters on a
    GPU; on a CPU 5-6x faster than the per-parameter loop (6 vs 33-40 ms for 11M parameters).
    Under a float16 GradScaler it skips an overflowed update on the device, with no sync."""
    groups = [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in FUSED_ADAMW_DEVICES)


def build_optimizer(model: GPT, cfg: OptimConfig, device_type: str):
    """The optimizer cfg asks for over the trainable parameters of model (under FSDP: build it
    on the sharded model, so that it holds the shards)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw":
        return adamw(named, cfg.weight_decay, cfg.learning_rate, betas, device_type)
    hidden = [p for n, p in named if is_hidden_matrix(n, p)]
    muon = torch.optim.Muon(hidden, lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum)
    rest = [(n, p) for n, p in named if not is_hidden_matrix(n, p)]
    scales = {"muon": cfg.muon_lr / cfg.learning_rate, "adamw": 1.0}
    return Optimizers(scales, muon=muon, adamw=adamw(rest, cfg.weight_decay, cfg.learning_rate, betas, device_type))


def set_lr(optimizer, lr: float) -> None:
    """Set the learning rate of every param group to the schedule's lr (times its optimizer's lr_scale)."""
    if isinstance(optimizer, Optimizers):
        for name, opt in optimizer.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = lr * optimizer.lr_scales[name]
        return
    for group in optimizer.param_groups:
        group["lr"] = lr
