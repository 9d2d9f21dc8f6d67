"""What a training step computes from a batch: the objective, chosen by the run (--objective).

An objective draws its batches (plain windows, windows with per-token loss weights, pairs of
answers: whatever its data holds) and turns one batch into a loss and metrics of its own. The
loop in train.py and one optimizer step (`Stepper`) are the same for every objective: a new one is
a class registered in OBJECTIVES, with no change to either.

    next_token   the mean next-token cross-entropy over every target (targets of -1 not counted)
    dpo          preference pairs against a frozen reference (gptsuite/dpo.py)

The run's objective is --objective, or what its dataset holds (meta.json's "objective": "dpo" for
preference pairs; next_token for text).

What the next ones need is here: `token_losses` and `weighted_mean` for per-token loss weights,
and `Reference`, a frozen model's outputs computed without gradients (under LoRA the trained model
with its adapters switched off, so no second copy of the weights is held).
"""

import contextlib
import math
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch.nn import functional as F

from gptsuite.batches import Batches
from gptsuite.errors import UserError
from gptsuite.lora import adapters_off
from gptsuite.parallel import accumulating, full_norm
from gptsuite.runtime import Runtime
from model import GPT


def token_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each target's cross-entropy, (B, T); 0 where the target is -1."""
    logits, _ = model(x, all_logits=True)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="none").view_as(y)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * loss) / sum(w): per-token weights (0: not counted); 0 if nothing is counted."""
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


class Reference:
    """A frozen reference model: its logits, computed without gradients and without dropout.
    Under LoRA it is the trained model itself with its adapters switched off (the base, with no
    second copy of the weights); otherwise a frozen copy of the weights the run started from."""

    def __init__(self, model: GPT, lora: bool, copy: bool = True):
        """copy=False: `model` is already the reference's own (weights loaded again on resume)."""
        self.lora = lora
        self.model = model if lora else (deepcopy(model) if copy else model).requires_grad_(False).eval()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        training = self.model.training
        self.model.eval()
        try:
            with adapters_off(self.model) if self.lora else contextlib.nullcontext():
                return self.model(x, all_logits=True)[0]
        finally:
            self.model.train(training)


class Objective:
    """Next-token prediction on every target: the default, and the base of the others.

    A subclass may override `train_batches` / `eval_batch` (other data), `loss` (another loss, and
    metrics of its own, named in `metrics`), and set needs_reference to get `self.reference`."""

    name: ClassVar[str] = "next_token"
    metrics: ClassVar[tuple[str, ...]] = ()  # the names of the metrics `loss` returns, logged to metrics.jsonl and wandb
    needs_reference: ClassVar[bool] = False
    holds: ClassVar[str | None] = None  # the data it trains on, as meta.json's "objective" says (None: text, any other objective's not)
    config_part: ClassVar[str | None] = None  # the TrainConfig part its constructor takes after (batches, reference), if any
    rows_per_example: ClassVar[int] = 1  # rows of a batch per one of its batch_size examples

    def __init__(self, batches: Batches | None = None, reference: Reference | None = None):
        self.batches, self.reference = batches, reference  # no batches: a caller that brings its own (bench.py)

    def train_batches(self, iter_num: int) -> Iterator:
        return self.batches.train(iter_num)

    def eval_batch(self, split: str, k: int):
        return self.batches.eval(split, k)

    def summary(self) -> str | None:
        """What the run trains on, in a line (printed at the start), if there is more to say than the data's name."""
        data = self.batches.data
        return data.rows_line(self.batches.block_size, self.batches.cfg.loss_on) if data.masked else None

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's loss (a scalar tensor to backpropagate) and metrics (scalar tensors)."""
        x, y = batch
        return model(x, y)[1], {}


OBJECTIVES: dict[str, type[Objective]] = {Objective.name: Objective}
DATA_OF = {"dpo": ("preference pairs", "python prepare.py preferences --input=...")}  # what a dataset of an objective's data holds, and what makes one


def register(cls: type[Objective]) -> type[Objective]:
    OBJECTIVES[cls.name] = cls
    return cls


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective '{name}'; use one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def objective_for(name: str, data_holds: str | None, data_dir: Path) -> type[Objective]:
    """The run's objective: `name` (--objective), or, if it is empty, what the data holds; refused
    if the data is not what it trains on."""
    cls = objective_class(name or data_holds or Objective.name)
    if cls.holds != data_holds:
        if data_holds:
            raise UserError(
                f"{data_dir} holds {DATA_OF[data_holds][0]}, which objective={cls.name} does not train on: drop --objective (it is then {data_holds})"
            )
        raise UserError(
            f"objective={cls.name} trains on {DATA_OF[cls.holds][0]} ({DATA_OF[cls.holds][1]}); {data_dir} holds text: pass a dataset of them, or drop --objective"
        )
    return cls


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, objective: Objective, eval_iters: int, rt: Runtime) -> dict[str, float]:
    """Mean loss over eval batches 0..eval_iters-1 of each split ("train", "val"), and the mean of
    each of the objective's metrics ("val_<metric>", ...). The ranks of a distributed run split the
    batches between them and all-reduce the sums, so every rank gets the same numbers, the ones a
    single process would get. Every rank runs the same number of forwards (under FSDP each forward
    gathers every block's shards from all ranks): where eval_iters is not a multiple of the ranks,
    the ranks past the end run one more batch and leave it out."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        total = torch.zeros(1 + len(objective.metrics), device=rt.device)
        for k in range(rt.rank, -(-eval_iters // rt.world_size) * rt.world_size, rt.world_size):
            with rt.autocast():
                loss, metrics = objective.loss(model, objective.eval_batch(split, min(k, eval_iters - 1)))
            if k < eval_iters:
                total += torch.stack([loss.float(), *(metrics[m].float() for m in objective.metrics)])
        if rt.distributed:
            torch.distributed.all_reduce(total)
        means = (total / eval_iters).tolist()
        out[split] = means[0]
        out |= {f"{split}_{m}": v for m, v in zip(objective.metrics, means[1:], strict=True)}
    model.train()
    return out


def agree(values: list[torch.Tensor], bad: list[torch.Tensor], host_flags: list[bool], rt: Runtime) -> tuple[list[float], bool, list[bool]]:
    """The step's one read of the device, and under DDP its one all-reduce, carrying everything
    the ranks must agree on: the mean of each value over all ranks, whether any tensor in `bad` is
    non-finite on any rank, and each host flag (a stop signal, a clock), True if it is True on
    any rank. The values go into a device tensor with kernels (no tensor built on the host, no
    copy to the device), and are read back with one .tolist()."""
    t = torch.zeros(1 + len(values) + len(host_flags), device=rt.device)
    for b in bad:
        t[0] += ~torch.isfinite(b)
    for i, v in enumerate(values, start=1):
        t[i] = v
    for i, flag in enumerate(host_flags, start=1 + len(values)):
        if flag:
            t[i] = 1.0
    if rt.distributed:
        torch.distributed.all_reduce(t)  # a sum: of the values, and of the flags (> 0: on some rank)
    read = t.tolist()
    return [v / rt.world_size for v in read[1 : 1 + len(values)]], read[0] > 0, [v > 0 for v in read[1 + len(values) :]]


class MicroBatches:
    """The training micro-batches, one ahead: the next is read while the device works on this one."""

    def __init__(self, batches: Iterator):
        self.batches, self.ahead = batches, next(batches)

    def take(self):
        batch, self.ahead = self.ahead, None
        return batch

    def fetch(self) -> None:
        self.ahead = next(self.batches)


@dataclass
class StepResult:
    loss: float  # the step's mean loss over all ranks
    stepped: bool  # the update was made (False: a non-finite loss or gradient norm, skipped)
    flags: list[bool]  # the host flags, as all ranks agreed
    metrics: dict[str, float] = field(default_factory=dict)  # the objective's, mean over micro-steps and ranks


@dataclass
class Stepper:
    """One optimizer step: accum_steps micro-batches through the objective, the gradients reduced
    across ranks on the last one, clipped, and the update made unless the step is bad."""

    model: torch.nn.Module  # what the step runs: compiled, DDP-wrapped or sharded
    objective: Objective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    accum_steps: int
    grad_clip: float
    rt: Runtime

    def step(self, micro: MicroBatches, host_flags: Callable[[], list[bool]] = list) -> StepResult:
        """host_flags() are asked for after the backward passes, so a signal during the step counts
        in it, and come back as all ranks agreed (see agree: the step reads the device once).

        A step whose loss or gradient norm is not finite (on any rank) is skipped: no update, and
        the loss scale stays as it was. Under float16 an inf/NaN gradient is an overflow of the loss
        scale, which the GradScaler handles (it skips the update itself and lowers the scale), so
        there only the loss counts."""
        total = torch.zeros((), device=self.rt.device)
        sums = dict.fromkeys(self.objective.metrics, 0.0)
        for micro_step in range(self.accum_steps):
            with accumulating(self.model, last=micro_step == self.accum_steps - 1):  # DDP reduces on the last micro-step, FSDP on each
                with self.rt.autocast():
                    loss, metrics = self.objective.loss(self.model, micro.take())
                    loss = loss / self.accum_steps  # the gradients add up over micro-steps: average them
                micro.fetch()
                self.scaler.scale(loss).backward()  # scaling is a no-op unless float16
            total += loss.detach()
            for k in sums:
                sums[k] = sums[k] + metrics[k].detach().float() / self.accum_steps
        self.scaler.unscale_(self.optimizer)
        grad_norm = full_norm(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip if self.grad_clip > 0 else math.inf)
        )  # over all shards under FSDP
        checked = [total] if self.scaler.is_enabled() else [total, grad_norm]
        values, bad, flags = agree([total, *sums.values()], checked, host_flags(), self.rt)
        if bad:
            self.scaler.update(self.scaler.get_scale())  # a bad step is the NaN guard's, not an overflow: the scale stays
        else:
            self.scaler.step(self.optimizer)  # under float16 the scaler skips an overflowed update
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(values[0], not bad, flags, dict(zip(sums, values[1:], strict=True)))
