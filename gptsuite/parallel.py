"""How the model runs across torchrun's processes: a whole copy per rank (DDP), or sharded (FSDP2).

parallel='fsdp' (under torchrun) shards each transformer block and then the root (embeddings,
final norm, head) with torch.distributed.fsdp.fully_shard: every rank keeps 1/world_size of the
parameters, gradients and AdamW state, and gathers a block's full parameters only while it runs.
Mixed precision is FSDP2's policy: parameters gathered in bf16 (or fp16) for compute, gradients
reduced in fp32 into the fp32 master shards. parallel='ddp' (the default) keeps a whole copy per
rank. Either may recompute each block's activations in backward (activation_checkpointing), and
compile the model (whole under DDP, per block under FSDP). Sharded checkpoints: checkpoint.py.
"""

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

from configurator import option
from gptsuite.errors import UserError
from gptsuite.optim import OptimConfig, build_optimizer
from gptsuite.runtime import PTDTYPE, Runtime
from model import GPT

PARALLEL = ("ddp", "fsdp")


@dataclass
class ParallelConfig:
    # parallelism and compile
    parallel: str = option(
        "ddp", choices=PARALLEL
    )  # under torchrun: ddp (a whole copy per GPU) or fsdp (parameters, gradients and optimizer state sharded; gptsuite/parallel.py)
    compile: bool | None = None  # torch.compile; None: on for CUDA, off elsewhere
    activation_checkpointing: bool = False  # recompute each block's activations in backward: far less activation memory for ~1/3 more compute


def check_parallel(cfg: ParallelConfig, rt: Runtime) -> None:
    """What parallel='fsdp' cannot do in this runtime, refused before any work, with the way out.
    (What it cannot do with other settings, train.py's check_train_config refuses.)"""
    if cfg.parallel != "fsdp":
        return
    if not rt.distributed:
        raise UserError(
            "parallel=fsdp shards the model across torchrun's processes; run under torchrun (torchrun --standalone --nproc_per_node=N train.py ...; N=1 works), or pass --parallel=ddp to train unsharded in this process"
        )
    if rt.dtype == "float16":
        raise UserError(
            "parallel=fsdp: float16 needs a loss scaler that FSDP's shards do not get here; use --dtype=bfloat16 (GPUs of compute capability 8.0+) or --dtype=float32, or --parallel=ddp"
        )


def fsdp_module(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def recompute_in_backward(block: torch.nn.Module) -> None:
    """Activation checkpointing of one block: its forward keeps only its inputs, and runs again
    in backward to rebuild the rest. The module (and its state_dict keys) stays as it is."""
    forward = block.forward
    block.forward = functools.partial(checkpoint, forward, use_reentrant=False)


def shard(model: GPT, rt: Runtime, compile_blocks: bool, activation_checkpointing: bool) -> None:
    """parallel='fsdp': activation checkpointing and torch.compile per block (if asked), then
    fully_shard each block and the root, in place; the parameters become DTensor shards."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    with torch.no_grad():  # every rank initialized its own copy (seeded per rank): take rank 0's, as DDP does
        for t in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(t, src=0)
    compute = PTDTYPE[rt.dtype]
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32) if compute != torch.float32 else MixedPrecisionPolicy()
    for block in model.transformer.h:
        if activation_checkpointing:
            recompute_in_backward(block)
        if compile_blocks:
            block.compile()
        fully_shard(block, mp_policy=policy)
    if compile_blocks:
        # The root's forward is not compiled whole: torch hides FSDP's hooks from dynamo, so the frame
        # breaks at every sharded block it calls and little of it is captured. What follows the
        # blocks (final norm, head, soft-cap, cross-entropy: the largest activations of a step) is
        # a function of its own, compiled here; it runs inside the root's forward, after FSDP has
        # gathered the root's parameters.
        model.logits_and_loss = torch.compile(model.logits_and_loss)
    fully_shard(model, mp_policy=policy)


@dataclass(frozen=True)
class Placed:
    """A GPT placed for training: `model` is what the training step runs (compiled, DDP-wrapped,
    or under FSDP the GPT itself, sharded in place), `raw` the GPT under it, which checkpoints save
    (no wrapper in its keys). The run's optimizer is built from it, so that under FSDP it holds the
    shards: there is no other way to get one built before the model is sharded."""

    model: torch.nn.Module
    raw: GPT

    def build_optimizer(self, cfg: OptimConfig, device_type: str):
        return build_optimizer(self.raw, cfg, device_type)


def parallelize(model: GPT, rt: Runtime, cfg: ParallelConfig) -> Placed:
    """Under FSDP shard the model in place; otherwise compile it whole if asked and wrap it in DDP
    under torchrun."""
    if cfg.parallel == "fsdp":
        shard(model, rt, rt.compiles(cfg.compile), cfg.activation_checkpointing)
        return Placed(model, model)
    if cfg.activation_checkpointing:
        for block in model.transformer.h:
            recompute_in_backward(block)
    wrapped = rt.maybe_compile(model, cfg.compile)
    if rt.distributed:
        wrapped = DDP(
            wrapped, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None, gradient_as_bucket_view=True
        )  # the gradients live in the all-reduce buckets: no second copy
    return Placed(wrapped, model)


def accumulating(model, last: bool):
    """The context of one micro-step's backward. DDP reduces the gradients across ranks on the
    last micro-step only (no_sync before it). FSDP reduce-scatters every micro-step's gradients
    into the ranks' fp32 shards and reshards the parameters after each backward: holding full-size
    gradients and the gathered parameters between micro-steps would cost ~6 bytes per parameter
    of the whole model on every rank, the memory FSDP is there to save, for one reduce-scatter
    per micro-step instead of per step."""
    if isinstance(model, DDP) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def full_norm(grad_norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ over DTensor shards returns a DTensor; the NaN guard needs a plain tensor."""
    return grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
