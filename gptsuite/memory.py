"""Per-GPU memory of a training run, before renting GPUs: parameters, gradients, optimizer state
and activations under DDP or FSDP (parallel.py), for full fine-tuning or LoRA.

The rules, per GPU, with N parameters of which T train (N for full fine-tuning), W processes and
the compute dtype's c bytes (2 under bf16/fp16 autocast, 4 in fp32):
- DDP: fp32 parameters (4N; a LoRA run keeps the blocks' frozen Linears in the compute dtype, the
  embeddings and norms fp32), fp32 gradients (4T: they are views into DDP's reduction buckets,
  gradient_as_bucket_view, so there is no second copy), AdamW's two fp32 moments (8T; Muon keeps
  one, 4 bytes, for the block matrices).
- FSDP: the same divided by W, plus the working set of unsharded tensors: two blocks' parameters
  gathered in the compute dtype (the one running and the one prefetched) and their fp32 gradients
  before the reduce-scatter, and the root's embeddings (the token embedding is also the head),
  which stay gathered through the step.
- Activations, per micro-batch of b sequences of s tokens: about 34 * s * b * h bytes per layer at
  2 bytes per value (Korthikanti et al. 2022, "Reducing Activation Recomputation", without the
  5 * a * s^2 * b attention-matrix term that flash attention / SDPA do not store), scaled by c / 2;
  with activation_checkpointing each layer keeps only its input, the residual stream: fp32 under
  DDP (autocast leaves the embeddings' sum in fp32, 4 * s * b * h), c bytes under FSDP (its policy
  casts the block inputs), and one layer's full set exists during its recompute. LoRA's dropout on
  the adapters' inputs (lora_dropout > 0, the default) keeps a copy of each adapted Linear's input,
  7 * s * b * h values a layer (c_attn, attn.c_proj and c_fc take h each, mlp.c_proj 4h).
- The loss, eager cross-entropy over the s * b * V logits: 12 bytes a logit at the start of its
  backward, whatever c (the fp32 log-softmax saved for backward, the gradient that arrives at it
  and the one it passes back to the logits), plus the soft-cap's saved tanh (c bytes) in the
  modern arch. For GPT-2 at b=12, s=1024, V=50304: 6.9 GiB.
- Under DDP's autocast (c = 2) the matmuls save the c-byte copies autocast makes of the fp32 weights:
  the head's always, the blocks' Linears' too unless they are recomputed (or are LoRA's frozen
  base, already in c). FSDP gathers the parameters in c, so there is nothing to copy.
The allocator's fragmentation and the CUDA context (~1 GB) come on top. Measured against this on
CPU (DDP, FSDP, LoRA): tools/bench_memory.py, docs/benchmarks.md.
"""

from dataclasses import dataclass

import torch

from model import GPT, GPTConfig


@dataclass
class Estimate:
    parameters: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations


def parameter_counts(config: GPTConfig) -> tuple[int, int, int]:
    """(all parameters, one block's, the root's: embeddings, final norm), tied weights once; the
    model is built on the meta device, so no memory is used."""
    with torch.device("meta"):
        model = GPT(config)
    n = sum(p.numel() for p in model.parameters())
    block = sum(p.numel() for p in model.transformer.h[0].parameters())
    return n, block, n - config.n_layer * block


def estimate(
    config: GPTConfig,
    world_size: int,
    parallel: str,
    dtype: str,
    batch_size: int,
    block_size: int,
    optimizer: str = "adamw",
    activation_checkpointing: bool = False,
    trainable: int | None = None,
    lora_dropout: float = 0.05,
) -> Estimate:
    """Bytes per GPU for a run of this model and settings (see the module's rules)."""
    n, block, root = parameter_counts(config)
    t = n if trainable is None else trainable
    c = 2 if dtype in ("bfloat16", "float16") else 4
    L, h, V = config.n_layer, config.n_embd, config.vocab_size
    matrices = L * 12 * h**2 if optimizer == "muon" else 0  # Muon's share: one moment instead of two
    linears = L * (12 * h**2 + (9 * h if config.bias else 0))  # the blocks' Linears: LoRA's frozen base, in c bytes (lora.freeze_base_dtype)
    params = 4 * n if trainable is None else 4 * t + c * linears + 4 * (n - linears)  # LoRA's adapters come on top of the base
    grads, optim = 4 * t, 8 * t - 4 * matrices
    if parallel == "fsdp":
        params = params // world_size + c * (2 * block + root)
        grads = grads // world_size + 4 * 2 * block
        optim //= world_size
    tokens = batch_size * block_size
    per_layer = 34 * tokens * h * c // 2
    residual = 4 if parallel == "ddp" else c
    if trainable is not None and lora_dropout > 0:  # LoRA: the adapters' dropout saves a copy of each adapted Linear's input
        per_layer += 7 * tokens * h * c
    layers = L * residual * tokens * h + per_layer if activation_checkpointing else L * per_layer
    loss = tokens * V * (12 + (c if config.arch != "gpt2" else 0))
    copies = 0
    if parallel == "ddp" and c == 2:
        copies = c * (V * h + (linears if not activation_checkpointing and trainable is None else 0))
    return Estimate(params, grads, optim, layers + loss + copies)


def memory_table(config: GPTConfig, world_size: int, dtype: str, batch_size: int, block_size: int, **kw) -> str:
    """DDP and FSDP side by side, in GiB per GPU."""
    rows = {p: estimate(config, world_size, p, dtype, batch_size, block_size, **kw) for p in ("ddp", "fsdp")}
    gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
    lines = [
        f"memory per GPU, {world_size} GPU(s), micro-batch {batch_size} x {block_size}, {dtype} (estimate, GiB):",
        "| | DDP | FSDP |",
        "| --- | ---: | ---: |",
    ]
    for field in ("parameters", "gradients", "optimizer", "activations", "total"):
        lines.append(f"| {field} | {gib(getattr(rows['ddp'], field))} | {gib(getattr(rows['fsdp'], field))} |")
    return "\n".join(lines)


def memory_line(config: GPTConfig, world_size: int, dtype: str, batch_size: int, block_size: int, device_type: str = "cuda", **kw) -> str:
    """The estimate in one line, for train.py's start: per GPU, or per process of a CPU run."""
    ddp, fsdp = (estimate(config, world_size, p, dtype, batch_size, block_size, **kw).total / 2**30 for p in ("ddp", "fsdp"))
    each, all_ = ("GPU", f"{world_size} GPU(s)") if device_type == "cuda" else ("process", f"{world_size} {device_type} processes")
    return (
        f"memory per {each} (estimate for {all_}: parameters, gradients, optimizer state, activations): DDP {ddp:.2f} GiB, FSDP {fsdp:.2f} GiB; "
        "python -m tools.memory for the breakdown"
    )


def lora_params(config: GPTConfig, rank: int) -> int | None:
    """Adapter parameters at this rank on the four Linears of each block: rank * (in + out) each."""
    d = config.n_embd
    return config.n_layer * rank * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d)) if rank else None
