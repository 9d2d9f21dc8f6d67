"""
Memory per GPU before renting GPUs: parameters, gradients, optimizer state and activations of a
training run under DDP and under FSDP (the rules: gptsuite/memory.py). Nothing is downloaded.
A run train.py refuses (LoRA with Muon) is refused here in its words (its own checks,
settings.check_train_config), and an FSDP column for a run it refuses under FSDP is said to be one.

    python -m tools.memory --init_from=gpt2-xl --nproc=8 --batch_size=4 --block_size=1024 --dtype=bfloat16
    python -m tools.memory --init_from=gpt2-large --nproc=1 --lora_rank=8
    python -m tools.memory --n_layer=12 --n_head=12 --n_embd=768 --activation_checkpointing=True
    python -m tools.memory --table=True --batch_size=8     # gpt2 .. gpt2-xl on 1, 2 and 8 GPUs: docs/scaling.md's table
"""

import dataclasses
from dataclasses import dataclass

from configurator import apply_values, option, parse_config, part
from gptsuite.errors import UserError, cli
from gptsuite.memory import estimate, lora_params, memory_table
from gptsuite.settings import TrainConfig, check_train_config
from model import GPTConfig

SHAPES = {  # GPT-2's published shapes (n_layer, n_head, n_embd), so no weights need downloading
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}


@dataclass
class MemoryConfig:
    init_from: str = ""  # gpt2, gpt2-medium, gpt2-large, gpt2-xl; else the shape below
    nproc: int = option(1, gt=0)  # GPUs (torchrun processes)
    batch_size: int = option(4, gt=0)  # micro-batch per GPU
    dtype: str = option("bfloat16", choices=("float32", "bfloat16", "float16"))
    optimizer: str = option("adamw", choices=("adamw", "muon"))
    activation_checkpointing: bool = False
    lora_rank: int = option(0, ge=0)  # > 0: adapters of this rank on c_attn, c_proj, c_fc; the base frozen
    model: GPTConfig = part(GPTConfig, hide=("dropout", "bias", "arch"))  # the shape, when init_from names none
    table: bool = False  # print the table for GPT-2's sizes on 1, 2 and 8 GPUs instead (with this batch_size, block_size, dtype)


def config_of(cfg: MemoryConfig, name: str = "") -> GPTConfig:
    if name and name not in SHAPES:
        raise UserError(f"unknown init_from '{name}': use one of {', '.join(SHAPES)}, or set --n_layer, --n_head and --n_embd")
    if not name:
        return cfg.model
    n_layer, n_head, n_embd = SHAPES[name]
    return dataclasses.replace(cfg.model, n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=50257)


def fits(total: int, gib: int) -> str:
    return "yes" if total / 2**30 + 1 <= 0.9 * gib else "no"  # ~1 GB CUDA context, ~10% allocator headroom


def table(cfg: MemoryConfig) -> str:
    cards = (24, 40, 80)
    lines = [
        f"| model | GPUs | DDP GiB/GPU | fits {' / '.join(map(str, cards))} GB | FSDP GiB/GPU | fits {' / '.join(map(str, cards))} GB |",
        "| --- | ---: | ---: | :---: | ---: | :---: |",
    ]
    for name in SHAPES:
        config = config_of(cfg, name)
        for n in (1, 2, 8):
            totals = [
                estimate(config, n, p, cfg.dtype, cfg.batch_size, cfg.model.block_size, activation_checkpointing=cfg.activation_checkpointing).total
                for p in ("ddp", "fsdp")
            ]
            cells = [f"{t / 2**30:.1f} | {' / '.join(fits(t, gb) for gb in cards)}" for t in totals]
            lines.append(f"| {name} | {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def refusal(cfg: MemoryConfig, parallel: str) -> UserError | None:
    """What train.py says of this run under `parallel` (settings.check_train_config, its own
    checks), or None if it runs. A shape given by flags stands for trained weights when LoRA
    adapts them (a run of ours); train.py's output folder plays no part here."""
    init_from = cfg.init_from or ("gpt2" if cfg.lora_rank else "scratch")
    flat = {"out_dir": ".", "init_from": init_from, "optimizer": cfg.optimizer, "lora_rank": cfg.lora_rank, "parallel": parallel}
    try:
        check_train_config(apply_values(TrainConfig(), flat))
    except UserError as e:
        return e
    return None


def main(argv: list[str]) -> None:
    cfg = parse_config(MemoryConfig(), argv)
    if cfg.table:
        print(table(cfg))
        return
    config = config_of(cfg, cfg.init_from)
    if refused := refusal(cfg, "ddp"):
        raise UserError(f"train.py refuses this run, so there is nothing to estimate: {refused}")
    kw = {"optimizer": cfg.optimizer, "activation_checkpointing": cfg.activation_checkpointing, "trainable": lora_params(config, cfg.lora_rank)}
    print(memory_table(config, cfg.nproc, cfg.dtype, cfg.batch_size, cfg.model.block_size, **kw))
    if refused := refusal(cfg, "fsdp"):
        print(f"note: train.py refuses this run under FSDP ({refused}); the DDP column is the run it takes")


if __name__ == "__main__":
    cli(main)
