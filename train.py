"""
Train a GPT on a prepared dataset: from scratch, resumed from out_dir/ckpt.pt, or fine-tuned
from OpenAI's GPT-2 weights.

One device (cuda, mps or cpu, whichever is there; or --device=...):
    python train.py config/train_shakespeare_char.py
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --max_iters=2000

Several GPUs on one node, with DDP through torchrun:
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

Two nodes of 8 GPUs (run on each node; node 0 at 10.0.0.1):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py
(If your cluster has no Infiniband, prepend NCCL_IB_DISABLE=1.)
gradient_accumulation_steps is the global count: each of the N processes does 1/N of it.

Fine-tune GPT-2 (weights from the Hugging Face hub, or --init_from=DIR with config.json and
model.safetensors) on a dataset tokenized with GPT-2 BPE:
    python prepare.py shakespeare && python train.py config/finetune_shakespeare.py

Precision: --dtype=auto is bfloat16 on GPUs that have it, else float16 with a gradient scaler;
float32 on cpu and mps (--dtype=bfloat16 works on cpu too). --compile is on by default on CUDA.

Settings: the TrainConfig fields below; override them with config files and --key=value.
"""

import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from configurator import parse_config, print_config
from datafiles import DTYPES, load_meta, open_split
from errors import UserError, cli
from logger import Logger, require_wandb
from model import GPT, GPTConfig
from pretrained import HUB_MODELS, from_pretrained, is_pretrained
from runtime import Runtime, setup_runtime, teardown_runtime


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    eval_iters: int = 200
    eval_only: bool = False  # evaluate once and exit
    always_save_checkpoint: bool = True  # else only when val loss improves
    init_from: str = "scratch"  # 'scratch', 'resume' (out_dir/ckpt.pt), 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'distilgpt2' or a directory
    # logging: metrics always go to out_dir/metrics.jsonl; wandb is optional
    wandb_log: bool = False
    wandb_project: str = "owt"
    wandb_run_name: str = "gpt2"
    # data
    dataset: str = "openwebtext"
    data_dir: str = ""  # default: data/<dataset>
    gradient_accumulation_steps: int = 5 * 8  # global: divided across DDP ranks
    batch_size: int = 12  # micro-batch size per rank
    block_size: int = 1024
    # model
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # 0 for pretraining, 0.1+ for fine-tuning
    bias: bool = False  # (GPT-2 weights bring their own shape: the model keys above are ignored with them)
    # AdamW
    learning_rate: float = 6e-4
    max_iters: int = 600000
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    # learning rate schedule: linear warmup, then cosine decay to min_lr
    decay_lr: bool = True
    warmup_iters: int = 2000
    lr_decay_iters: int = 600000  # ~= max_iters per Chinchilla
    min_lr: float = 6e-5  # ~= learning_rate / 10 per Chinchilla
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto (bf16 on CUDA if supported, else fp16; fp32 on cpu/mps), float32, bfloat16, float16
    compile: bool | None = None  # torch.compile; None: on for CUDA, off elsewhere
    backend: str = "auto"  # DDP backend: auto (nccl on CUDA, gloo on CPU), nccl, gloo
    seed: int = 1337


def validate(cfg: TrainConfig) -> None:
    for name in ("eval_interval", "log_interval", "eval_iters", "gradient_accumulation_steps", "batch_size", "block_size"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must not be negative, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0:
        raise UserError("learning_rate must be positive and min_lr not negative")
    if cfg.init_from not in ("scratch", "resume") and not is_pretrained(cfg.init_from):
        raise UserError(
            f"unknown init_from '{cfg.init_from}'; use 'scratch', 'resume', one of {', '.join(HUB_MODELS)}, or a directory holding config.json and model.safetensors"
        )
    if cfg.wandb_log:
        require_wandb()  # fail now, not after loading the data and the model


def get_lr(it: int, cfg: TrainConfig) -> float:
    """Linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def get_batch(path: Path, dtype: str, batch_size: int, block_size: int, seed: tuple[int, ...], rt: Runtime):
    """Batch of random windows from a token memmap: inputs x and next-token targets y, (B, T).

    The offsets depend only on `seed` (e.g. (run seed, split, batch index)), so a batch is the same
    however many processes share the work, and a resumed run draws what the original would have."""
    data = np.memmap(path, dtype=DTYPES[dtype], mode="r")  # re-opened per batch so its pages do not pile up in RSS
    ix = np.random.default_rng(seed).integers(0, len(data) - block_size, size=batch_size)
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
    if rt.device_type == "cuda":
        return x.pin_memory().to(rt.device, non_blocking=True), y.pin_memory().to(rt.device, non_blocking=True)
    return x.to(rt.device), y.to(rt.device)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, batch_fns: dict, eval_iters: int, rt: Runtime) -> dict[str, float]:
    """Mean loss over eval batches 0..eval_iters-1 of each split. DDP ranks split the batches
    between them and all-reduce the sum, so every rank gets the same number, the one a single
    process would get."""
    model.eval()
    out = {}
    for split, batch in batch_fns.items():
        total = torch.zeros((), device=rt.device)
        for k in range(rt.rank, eval_iters, rt.world_size):
            x, y = batch(k)
            with rt.autocast():
                _, loss = model(x, y)
            total += loss.float()
        if rt.ddp:
            torch.distributed.all_reduce(total)
        out[split] = total.item() / eval_iters
    model.train()
    return out


def check_tokens(data: np.ndarray, vocab_size: int, path: Path) -> None:
    """Refuse a dataset whose token ids do not fit the model, before any training."""
    top = 0
    for start in range(0, len(data), 1 << 26):
        top = max(top, int(data[start : start + (1 << 26)].max()))
    if top >= vocab_size:
        raise UserError(
            f"{path} holds token id {top}, but the vocabulary has {vocab_size} ids; the file is corrupt or from another tokenizer: prepare the dataset again"
        )


def new_model(cfg: TrainConfig, tokenizer_meta: dict) -> GPT:
    """A freshly initialized GPT of the configured shape, for this tokenizer's vocabulary."""
    vocab_size = tokenizer_meta["vocab_size"]
    if tokenizer_meta["kind"] == "gpt2":
        vocab_size = (vocab_size + 63) // 64 * 64  # 50257 -> 50304: tensor-core friendly
    try:
        gcfg = GPTConfig(cfg.block_size, vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout, cfg.bias)
    except ValueError as e:
        raise UserError(f"bad model config: {e}") from None
    return GPT(gcfg)


def init_model(cfg: TrainConfig, tokenizer_meta: dict, data_dir: Path, device: str) -> tuple[GPT, dict | None]:
    """The model init_from asks for, and the checkpoint it resumes (None unless 'resume')."""
    if cfg.init_from == "scratch":
        return new_model(cfg, tokenizer_meta), None
    if cfg.init_from == "resume":
        ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt", map_location=device)
        if ckpt.get("tokenizer", tokenizer_meta) != tokenizer_meta:
            raise UserError(
                f"{cfg.out_dir}/ckpt.pt was trained with a {ckpt['tokenizer']['kind']} tokenizer of {ckpt['tokenizer']['vocab_size']} ids, but {data_dir} uses {tokenizer_meta['kind']} with {tokenizer_meta['vocab_size']}; resume on the same dataset"
            )
        return model_from_checkpoint(ckpt, dropout=cfg.dropout), ckpt
    if tokenizer_meta["kind"] != "gpt2":
        raise UserError(
            f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2 BPE, but {data_dir} uses the {tokenizer_meta['kind']} tokenizer; prepare one with GPT-2 BPE (e.g. python prepare.py shakespeare)"
        )
    return from_pretrained(cfg.init_from, dropout=cfg.dropout, block_size=cfg.block_size), None


def train_step(model, optimizer, scaler, batch: tuple, batches: Iterator[tuple], accum_steps: int, grad_clip: float, rt: Runtime) -> tuple[torch.Tensor, tuple]:
    """One optimizer step over accum_steps micro-batches: `batch`, then more from `batches`.
    Each next batch is fetched while the device works; the one left over starts the next step
    and is returned with the step's mean loss (a device tensor: reading it waits for the device)."""
    total = torch.zeros((), device=rt.device)
    for micro_step in range(accum_steps):
        x, y = batch
        # DDP all-reduces gradients in backward(): only on the last micro-step
        sync = nullcontext() if not rt.ddp or micro_step == accum_steps - 1 else model.no_sync()
        with sync:
            with rt.autocast():
                _, loss = model(x, y)
                loss = loss / accum_steps  # the gradients add up over micro-steps: average them
            batch = next(batches)
            scaler.scale(loss).backward()  # scaling is a no-op unless float16
        total += loss.detach()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total, batch


def main(argv: list[str]) -> None:
    cfg = parse_config(TrainConfig(), argv)
    validate(cfg)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, cfg.backend)
    try:
        train(cfg, rt)
    finally:
        teardown_runtime(rt)


def train(cfg: TrainConfig, rt: Runtime) -> dict:
    if rt.master:
        print_config(cfg)
    if cfg.gradient_accumulation_steps % rt.world_size:
        raise UserError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} is not divisible by the {rt.world_size} DDP processes; make it a multiple of {rt.world_size}"
        )
    accum_steps = cfg.gradient_accumulation_steps // rt.world_size
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    out_dir = Path(cfg.out_dir)

    # data
    data_dir = Path(cfg.data_dir or Path("data") / cfg.dataset)
    meta = load_meta(data_dir)
    dtype = meta.get("dtype", "uint16")
    splits = {s: open_split(data_dir, s, dtype, min_tokens=cfg.block_size + 1) for s in ("train", "val")}
    tokenizer_meta = meta["tokenizer"]

    # model
    model, ckpt = init_model(cfg, tokenizer_meta, data_dir, rt.device)
    iter_num, best_val_loss = (ckpt["iter_num"], ckpt["best_val_loss"]) if ckpt else (0, 1e9)
    if cfg.block_size > model.config.block_size:
        raise UserError(f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}")
    if model.config.vocab_size < tokenizer_meta["vocab_size"]:
        raise UserError(
            f"the model has {model.config.vocab_size} token ids, fewer than the dataset's {tokenizer_meta['vocab_size']}; use a dataset of its tokenizer"
        )
    for split, data in splits.items():
        check_tokens(data, tokenizer_meta["vocab_size"], data_dir / f"{split}.bin")
    model.to(rt.device)
    raw_model = model  # checkpoints are saved from this one: no compile or DDP wrappers in its keys

    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), rt.device_type)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
    ckpt = None  # free the memory

    model = rt.maybe_compile(model, cfg.compile)
    if rt.ddp:
        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None)

    def train_batches(iter_num: int) -> Iterator[tuple]:
        """Micro-batches from iteration iter_num on. Batch j of an iteration is the same whatever
        the number of ranks: rank r does micro-steps r*accum_steps ... (r+1)*accum_steps-1."""
        while True:
            for micro_step in range(accum_steps):
                index = iter_num * cfg.gradient_accumulation_steps + rt.rank * accum_steps + micro_step
                yield get_batch(data_dir / "train.bin", dtype, cfg.batch_size, cfg.block_size, (cfg.seed, 0, index), rt)
            iter_num += 1

    eval_batches = {  # the same eval batches every time, so evals compare like with like
        s: (lambda k, s=s, i=i: get_batch(data_dir / f"{s}.bin", dtype, cfg.batch_size, cfg.block_size, (cfg.seed, 1 + i, k), rt)) for i, s in enumerate(splits)
    }

    logger = Logger(out_dir, asdict(cfg), cfg.wandb_log, cfg.wandb_project, cfg.wandb_run_name, enabled=rt.master)
    n_params = raw_model.get_num_params()
    peak = rt.peak_flops()
    flops_per_iter = raw_model.flops_per_token(cfg.block_size) * tokens_per_iter / rt.world_size  # per rank
    if rt.master:
        print(
            f"{n_params / 1e6:.2f}M parameters, {tokens_per_iter:,} tokens per iteration "
            f"({rt.world_size} x {accum_steps} x {cfg.batch_size} x {cfg.block_size}), device {rt.device}, {rt.dtype}"
        )

    def save(iter_num: int, best_val_loss: float) -> None:
        state = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "model_args": raw_model.model_args(),
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "config": asdict(cfg),
            "tokenizer": tokenizer_meta,
            "template": meta.get("template"),  # the dataset's prompt template (templates.py), for sample.py
        }
        print(f"saving checkpoint to {out_dir}/ckpt.pt")
        save_checkpoint(state, out_dir / "ckpt.pt")

    batches = train_batches(iter_num)
    batch = next(batches)
    t0 = time.time()
    iters_timed, losses = 0, {}
    loss_sum = torch.zeros((), device=rt.device)
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if iter_num % cfg.eval_interval == 0 or iter_num == cfg.max_iters:
            losses = estimate_loss(model, eval_batches, cfg.eval_iters, rt)
            if rt.master:
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                logger.log({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr})
            if losses["val"] < best_val_loss or cfg.always_save_checkpoint:
                best_val_loss = min(best_val_loss, losses["val"])
                if iter_num > 0 and rt.master and not cfg.eval_only:
                    save(iter_num, best_val_loss)
        if cfg.eval_only or iter_num >= cfg.max_iters:
            break

        loss, batch = train_step(model, optimizer, scaler, batch, batches, accum_steps, cfg.grad_clip, rt)
        loss_sum += loss
        iter_num += 1
        iters_timed += 1

        if iter_num % cfg.log_interval == 0 and rt.ddp:
            torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)  # log the global batch's loss
        if iter_num % cfg.log_interval == 0 and rt.master:
            loss_val = loss_sum.item() / iters_timed  # the .item() syncs, so the timing below is real
            dt = (time.time() - t0) / iters_timed
            record = {"iter": iter_num, "loss": loss_val, "lr": lr, "ms_per_iter": dt * 1000, "tokens_per_s": tokens_per_iter / dt}
            line = f"iter {iter_num}: loss {loss_val:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, {tokens_per_iter / dt:,.0f} tok/s"
            if peak:
                record["mfu"] = flops_per_iter / dt / peak
                line += f", mfu {record['mfu'] * 100:.1f}%"
            print(line)
            logger.log(record)
        if iter_num % cfg.log_interval == 0:
            t0, iters_timed = time.time(), 0
            loss_sum.zero_()
    logger.close()
    return {"iter_num": iter_num, "best_val_loss": best_val_loss, **{f"{k}_loss": v for k, v in losses.items()}}


if __name__ == "__main__":
    cli(main)
