"""What a training run saves, and when bad steps stop it.

`Checkpointer.save` writes everything the rest of a run depends on (the file format and its
atomic writes are checkpoint.py's); start.py reads it back. `NanGuard` skips steps whose loss or
gradient norm is not finite and, after more than max_bad_steps in a row, saves the state from
before them and stops the run. `consolidate` turns a sharded checkpoint into one ckpt.pt.
"""

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import torch

from configurator import apply_values
from gptsuite.batches import TrainingData
from gptsuite.checkpoint import (
    load_checkpoint,
    load_sharded_optimizer,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    write_checkpoint,
    write_sharded_checkpoint,
)
from gptsuite.errors import UserError
from gptsuite.lora import adapter_state
from gptsuite.objectives import StepResult
from gptsuite.optim import build_optimizer
from gptsuite.parallel import fsdp_module
from gptsuite.runtime import Runtime
from gptsuite.settings import TrainConfig, recorded_settings
from model import GPT


def check_shared_out_dir(out_dir: str, resumed: Path | None, rt: Runtime) -> None:
    """Under torchrun every rank must see the same out_dir (on several nodes, a shared filesystem):
    each rank writes its shards and reads the checkpoint it resumes there. Rank 0 writes a token
    file, every rank reads it back; and the checkpoint a resumed run continues is rank 0's choice
    on every rank. Otherwise the run is refused, on every rank, before any work."""
    if not rt.distributed:
        return
    out = Path(out_dir)
    token = [f"{os.getpid()}-{time.time_ns()}-{secrets.token_hex(8)}" if rt.master else None, str(resumed) if rt.master else None]
    torch.distributed.broadcast_object_list(token, src=0)
    path = out / f".shared-{token[0][:40]}"
    if rt.master:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(token[0])
    torch.distributed.barrier()
    try:
        seen = path.read_text() == token[0]
    except OSError:
        seen = False
    same = seen and str(resumed) == token[1]
    flags = torch.tensor([0.0 if same else 1.0], device=rt.device)
    torch.distributed.all_reduce(flags)
    torch.distributed.barrier()
    if rt.master:
        path.unlink(missing_ok=True)
    if flags.item() > 0:
        raise UserError(
            f"out_dir={out_dir} is not the same folder for all {rt.world_size} processes (some cannot see what rank 0 wrote there, or resume another checkpoint): "
            "on several nodes put it on a filesystem they share (NFS, a cluster file system) and pass that path on every node"
        )


def gather_rng_states(state: dict, rt: Runtime) -> list[dict] | None:
    """Every rank's RNG state, gathered on rank 0 (None elsewhere): a collective under DDP."""
    if not rt.distributed:
        return [state]
    states = [None] * rt.world_size if rt.master else None
    torch.distributed.gather_object(state, states, dst=0)
    return states


class Checkpointer:
    """Writes everything the rest of a run depends on. Every rank calls save() (their RNG states
    are gathered); rank 0 writes, or under FSDP every rank its shards."""

    def __init__(
        self,
        raw_model: GPT,
        optimizer,
        scaler,
        cfg: TrainConfig,
        data: TrainingData,
        sampler: dict,
        rt: Runtime,
        lora: dict | None = None,
        reference: dict | None = None,
    ):
        self.model, self.optimizer, self.scaler, self.rt = raw_model, optimizer, scaler, rt
        self.out_dir, self.keep_last = cfg.out_dir, cfg.checkpoint.keep_last
        self.lora = lora  # a LoRA run saves its adapters and this record (settings, base reference), not the model
        self.meta = (
            {
                "config": cfg.record(),
                "data": data.record(),  # what it was trained on: resuming on other data is refused (start.check_resumable)
                "tokenizer": data.tokenizer,
                "template": data.meta.get("template"),  # the dataset's prompt template (templates.py), for sample.py
                "chat_template": data.meta.get("chat_template"),  # a chat dataset's (chat.py): for sample.py --chat, eval.py, the page and the exports
            }
            | ({"lora": lora} if lora else {})
            | ({"reference": reference} if reference else {})
        )  # reference: the weights a DPO run compares with
        self.sampler = sampler

    def snapshot(self, iter_num: int) -> dict:
        """What a save from before a run of bad steps needs besides the current state: bad steps
        change neither the weights, the optimizer nor the loss scale, but they draw random numbers."""
        return {"iter_num": iter_num, "rng": rng_state(self.rt.device)}

    def save(self, iter_num: int, progress: dict, best: bool = False, rng: dict | None = None) -> None:
        """Save at iter_num, with `progress` (best_val_loss, last_eval_iter: policy.progress());
        `rng` replaces the current RNG state when the NaN guard saves its snapshot."""
        rng_states = gather_rng_states(rng or rng_state(self.rt.device), self.rt)
        meta = {"model_args": self.model.model_args(), "iter_num": iter_num, **progress, **self.meta, "sampler": self.sampler | {"iter_num": iter_num}}
        if fsdp_module(self.model):
            path = write_sharded_checkpoint(self.model, self.optimizer, meta, rng_states, self.out_dir, self.keep_last, best, self.rt.master)
            if self.rt.master:
                print(f"saved sharded checkpoint at iter {iter_num} to {path}" + (" and best.dcp" if best else ""), flush=True)
            return
        if not self.rt.master:
            return
        state = meta | {
            "model": adapter_state(self.model) if self.lora else self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),  # read here only: it costs two reads of the device
            "rng": rng_states,  # one per rank
        }
        path = write_checkpoint(state, self.out_dir, self.keep_last, best)
        print(f"saved checkpoint at iter {iter_num} to {path}" + (" and best.pt" if best else ""), flush=True)


class NanGuard:
    """The NaN guard, in one place: a step whose loss or gradient norm is not finite was skipped
    (Stepper); more than max_bad_steps in a row stop the run, with the state from before them
    saved, so that a resume continues from the last good step."""

    def __init__(self, max_bad_steps: int, saver: Checkpointer, progress: Callable[[], dict]):
        self.max_bad_steps, self.saver, self.progress = max_bad_steps, saver, progress
        self.bad_steps = 0  # non-finite steps in a row, just now
        self.good: dict | None = None  # the state from before them

    def step(self, iter_num: int, run_step: Callable[[], StepResult]) -> StepResult:
        if self.bad_steps == 0:
            self.good = self.saver.snapshot(iter_num)
        result = run_step()
        self.bad_steps = 0 if result.stepped else self.bad_steps + 1
        if self.bad_steps > self.max_bad_steps:
            good = self.good
            self.saver.save(good["iter_num"], self.progress(), rng=good["rng"])
            raise UserError(
                f"the loss or gradient norm was not finite for {self.bad_steps} steps in a row (iters {good['iter_num']}-{iter_num}, more than max_bad_steps={self.max_bad_steps}); "
                f"{self.saver.out_dir} holds the state from before (iter {good['iter_num']}): lower --learning_rate or set --grad_clip, then --init_from=resume"
            )
        return result


def consolidate(path: Path, dest: Path) -> dict:
    """A sharded checkpoint folder as one ckpt.pt that a single process resumes: the whole model,
    and the optimizer state in torch.optim's own layout (DCP loads it onto an unsharded model and
    its optimizer, built from the run's recorded settings). Returns what was written."""
    ckpt = load_checkpoint(path)
    if not ckpt.get("sharded"):
        raise UserError(f"{path} is a single-file checkpoint already; sample.py, eval.py and export.py read it as it is")
    if dest.exists():
        raise UserError(f"{dest} exists; pass another --to=FILE, or move it away first")
    cfg = apply_values(TrainConfig(), recorded_settings(ckpt))
    model = model_from_checkpoint(ckpt, dropout=cfg.model.dropout)
    optimizer = build_optimizer(model, cfg.optim, "cpu")
    load_sharded_optimizer(Path(ckpt["sharded"]), model, optimizer)
    state = {k: v for k, v in ckpt.items() if k != "sharded"} | {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {}}
    save_checkpoint(state, dest)
    return state
