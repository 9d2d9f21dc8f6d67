"""Past one GPU's memory: FSDP2 and sharded checkpoints.

parallel='fsdp' (under torchrun) shards each transformer block and then the root (embeddings,
final norm, head) with torch.distributed.fsdp.fully_shard: every rank keeps 1/world_size of the
parameters, gradients and AdamW state, and gathers a block's full parameters only while it runs.
Mixed precision is FSDP2's policy: parameters gathered in bf16 (or fp16) for compute, gradients
reduced in fp32 into the fp32 master shards. parallel='ddp' (the default) keeps a whole copy per
rank. Either may recompute each block's activations in backward (activation_checkpointing).

A sharded checkpoint is a folder written with torch.distributed.checkpoint (DCP): each rank
writes its own shards, rank 0 the metadata (checkpoint.json) and every rank's RNG state
(rng.pt). DCP records each tensor's global shape, so a checkpoint reloads onto any number of
processes (2 -> 1, 1 -> 2, 2 -> 4), sharded or not; sample.py, eval.py and export.py read it whole.
"""

import contextlib
import functools

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

from gptsuite.errors import UserError
from gptsuite.runtime import PTDTYPE, Runtime
from model import GPT

PARALLEL = ("ddp", "fsdp")


def check_parallel(cfg, rt: Runtime) -> None:
    """What parallel='fsdp' cannot do here, refused before any work, each with the way out."""
    if cfg.parallel != "fsdp":
        return
    if not rt.ddp:
        raise UserError(
            "parallel=fsdp shards the model across torchrun's processes; run under torchrun (torchrun --standalone --nproc_per_node=N train.py ...; N=1 works), or pass --parallel=ddp to train unsharded in this process"
        )
    refusals = [
        (
            rt.dtype == "float16",
            "float16 needs a loss scaler that FSDP's shards do not get here; use --dtype=bfloat16 (GPUs of compute capability 8.0+) or --dtype=float32, or --parallel=ddp",
        ),
        (
            cfg.optimizer != "adamw",
            f"optimizer={cfg.optimizer}: torch.optim.Muon orthogonalizes whole matrices and does not take FSDP's shards; use --optimizer=adamw or --parallel=ddp",
        ),
        (cfg.lora_rank > 0, "LoRA adapters are small enough for DDP: use --parallel=ddp with --lora_rank"),
        (
            cfg.hellaswag_interval > 0,
            "HellaSwag scoring during an FSDP run is not supported; set --hellaswag_interval=0 and score checkpoints with eval.py --task=hellaswag",
        ),
    ]
    for refused, why in refusals:
        if refused:
            raise UserError(f"parallel=fsdp: {why}")


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
    fully_shard(model, mp_policy=policy)


def parallelize(model: GPT, rt: Runtime, parallel: str, compile_flag: bool | None, activation_checkpointing: bool) -> torch.nn.Module:
    """The model the training step runs: under FSDP the model itself, sharded in place (call
    before the optimizer is built: it must see the shards); otherwise compiled whole if asked and
    wrapped in DDP under torchrun."""
    if parallel == "fsdp":
        shard(model, rt, rt.compiles(compile_flag), activation_checkpointing)
        return model
    if activation_checkpointing:
        for block in model.transformer.h:
            recompute_in_backward(block)
    wrapped = rt.maybe_compile(model, compile_flag)
    if rt.ddp:
        wrapped = DDP(wrapped, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None)
    return wrapped


def accumulating(model, last: bool):
    """The context of one micro-step's backward: gradients are reduced across ranks on the last
    micro-step only. FSDP also keeps the gathered parameters until then (no reshard between
    micro-steps) and accumulates unsharded gradients, as DDP's no_sync does."""
    if isinstance(model, DDP):
        return contextlib.nullcontext() if last else model.no_sync()
    if fsdp_module(model):
        model.set_requires_gradient_sync(last)
        model.set_reshard_after_backward(last)
    return contextlib.nullcontext()


def full_norm(grad_norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ over DTensor shards returns a DTensor; the NaN guard needs a plain tensor."""
    return grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
