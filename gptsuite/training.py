"""The pieces of a training run that train.py puts together: its settings (TrainConfig), the
learning-rate schedule, the batches, one optimizer step, the loss estimate and agreement between
ranks. bench.py times the same step.
"""

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from configurator import option
from gptsuite.atomic import check_folder
from gptsuite.datafiles import DTYPES, check_token_ids, load_meta, open_split, resolve_data_dir
from gptsuite.errors import UserError
from gptsuite.flops import model_flops_per_token
from gptsuite.loading import check_init_from, checkpoint_file
from gptsuite.lora import LORA_BIAS
from gptsuite.metrics import Logger, require_wandb
from gptsuite.optim import OPTIMIZERS
from gptsuite.runtime import DTYPE_CHOICES, Runtime
from gptsuite.sharding import PARALLEL, accumulating, full_norm
from model import ARCHS, GPT, GPTConfig

LR_SCHEDULES = ("cosine", "wsd")


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"  # checkpoints, metrics.jsonl and wandb files go here
    eval_interval: int = option(2000, gt=0)  # evaluate (and save) every this many iterations
    log_interval: int = option(1, gt=0)  # print and log the training loss every this many iterations
    eval_iters: int = option(200, gt=0)  # batches per split in each evaluation
    eval_only: bool = False  # evaluate once and exit
    hellaswag_interval: int = option(0, ge=0)  # every this many iterations also score HellaSwag (acc, acc_norm; GPT-2 BPE data only); 0: off
    hellaswag_items: int = option(0, ge=0)  # score only the first this many of its 10,042 validation items; 0: all
    hellaswag_file: str = ""  # a local copy of hellaswag_val.jsonl; default: downloaded once and cached
    always_save_checkpoint: bool = True  # save at every eval; else only when val loss improves
    checkpoint_interval: int = option(0, ge=0)  # also save every this many iterations (0: off)
    checkpoint_minutes: float = option(0.0, ge=0)  # also save when this many minutes passed since the last save (0: off)
    keep_last: int = option(0, ge=0)  # also keep the newest K saves as ckpt-<iter>.pt (ckpt.pt is always the newest, best.pt the best)
    init_from: str = "scratch"  # 'scratch', 'resume' (newest checkpoint in out_dir), a GPT-2 name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2), a Hugging Face folder, or a run folder / .pt checkpoint of ours (its weights, a new run)
    # logging (metrics always go to out_dir/metrics.jsonl; wandb is optional)
    wandb_log: bool = False  # also log to Weights & Biases (pip install wandb)
    wandb_project: str = "owt"  # the wandb project to log to
    wandb_run_name: str = "gpt2"  # the run's name in it
    # data
    dataset: str = "openwebtext"  # a prepared dataset in data/<dataset>
    data_dir: str = ""  # the prepared dataset folder itself; default: data/<dataset>
    allow_data_change: bool = False  # resume on data other than the checkpoint was trained on (its sha256 differs); this run only, not recorded
    gradient_accumulation_steps: int = option(5 * 8, gt=0)  # global: divided across DDP ranks
    batch_size: int = option(12, gt=0)  # micro-batch size per rank
    block_size: int = option(GPTConfig.block_size, gt=0)  # context length in tokens
    # model (GPT-2 weights bring their own shape: these keys are ignored with them)
    n_layer: int = option(GPTConfig.n_layer, gt=0)  # transformer blocks
    n_head: int = option(GPTConfig.n_head, gt=0)  # attention heads; n_embd must be a multiple
    n_embd: int = option(GPTConfig.n_embd, gt=0)  # width of the residual stream
    dropout: float = option(GPTConfig.dropout, ge=0, lt=1)  # 0 for pretraining, 0.1+ for fine-tuning
    bias: bool = GPTConfig.bias  # biases in Linears and LayerNorms (GPT-2 has them; without is a bit better and faster)
    arch: str = option(
        GPTConfig.arch, choices=ARCHS
    )  # gpt2: GPT-2's architecture; modern: RoPE, RMSNorm, QK-norm, ReLU², untied head, soft-capped logits (for training from scratch; see model.py)
    # LoRA (gptsuite/lora.py): train low-rank adapters on a frozen init_from instead of every weight
    lora_rank: int = option(0, ge=0)  # the adapters' rank R; 0: off (full fine-tuning)
    lora_alpha: float = option(16.0, gt=0)  # the adapters' output is scaled by lora_alpha / lora_rank
    lora_dropout: float = option(0.05, ge=0, lt=1)  # dropout on the adapters' input
    lora_targets: str = "c_attn,c_proj,c_fc"  # comma-separated Linear names to adapt: attention (c_attn, c_proj) and MLP (c_fc, c_proj)
    lora_bias: str = option("none", choices=LORA_BIAS)  # which biases train too: none, lora_only (of the adapted layers), all
    # optimizer
    optimizer: str = option("adamw", choices=OPTIMIZERS)  # adamw, or muon: Muon on the hidden matrices, AdamW on the rest (see gptsuite/optim.py)
    learning_rate: float = option(6e-4, gt=0)  # AdamW's peak learning rate, after warmup
    max_iters: int = option(600000, ge=0)  # total optimizer steps
    weight_decay: float = option(1e-1, ge=0)  # on matrices only, not on biases and gains
    beta1: float = option(0.9, ge=0, lt=1)  # AdamW's decay of the gradient mean
    beta2: float = option(0.95, ge=0, lt=1)  # and of its square
    muon_lr: float = option(0.02, gt=0)  # Muon's peak learning rate (optimizer=muon), scheduled in proportion to learning_rate
    muon_momentum: float = option(0.95, ge=0, lt=1)  # Muon's (Nesterov) momentum
    grad_clip: float = option(1.0, ge=0)  # clip the global gradient norm at this value; 0 disables clipping
    max_bad_steps: int = option(10, ge=0)  # steps with a non-finite loss or grad norm are skipped; more than this in a row stop the run
    # learning rate schedule: linear warmup, then cosine decay to min_lr, or constant then a linear cooldown (wsd)
    decay_lr: bool = True  # False: a constant learning_rate
    lr_schedule: str = option("cosine", choices=LR_SCHEDULES)  # cosine, or wsd: warmup-stable-decay, constant until the last cooldown_frac of lr_decay_iters
    warmup_iters: int = option(2000, ge=0)  # iterations of linear warmup from 0
    lr_decay_iters: int = option(600000, ge=0)  # where the decay reaches min_lr: ~= max_iters per Chinchilla
    cooldown_frac: float = option(0.4, gt=0, le=1)  # wsd: the fraction of lr_decay_iters spent decaying linearly to min_lr
    min_lr: float = option(6e-5, ge=0)  # ~= learning_rate / 10 per Chinchilla
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)  # auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16; fp32 on cpu/mps
    compile: bool | None = None  # torch.compile; None: on for CUDA, off elsewhere
    backend: str = option("auto", choices=("auto", "nccl", "gloo"))  # DDP backend: auto is nccl on CUDA, gloo on CPU
    parallel: str = option(
        "ddp", choices=PARALLEL
    )  # under torchrun: ddp (a whole copy per GPU) or fsdp (parameters, gradients and optimizer state sharded; gptsuite/sharding.py)
    activation_checkpointing: bool = False  # recompute each block's activations in backward: far less activation memory for ~1/3 more compute
    seed: int = option(1337, ge=0)  # seeds the batches, the init and dropout
    threads: int = option(0, ge=0)  # CPU threads for torch on a CPU run; 0: the cores other processes leave free, re-checked every 2 s


def check_train_config(cfg: TrainConfig) -> None:
    """What the bounds of the fields cannot say: the output folder, init_from, the schedule, wandb."""
    check_folder(cfg.out_dir, "--out_dir")
    check_init_from(cfg.init_from, ("scratch", "resume"), checkpoints=True)
    if cfg.arch != "gpt2" and cfg.init_from not in ("scratch", "resume") and not checkpoint_file(cfg.init_from):
        raise UserError(
            f"arch={cfg.arch} is for training from scratch; GPT-2's weights ({cfg.init_from}) are arch=gpt2: drop --arch={cfg.arch} to fine-tune them"
        )
    if cfg.lora_rank and cfg.init_from == "scratch":
        raise UserError(
            "lora_rank>0 adapts trained weights, but init_from=scratch starts from random ones; pass --init_from=gpt2 (or another GPT-2, a Hugging Face folder or a run folder of ours)"
        )
    if cfg.lora_rank and cfg.optimizer != "adamw":
        raise UserError(
            f"LoRA trains its low-rank factors with AdamW; optimizer={cfg.optimizer} orthogonalizes whole weight matrices: drop --optimizer={cfg.optimizer}"
        )
    if cfg.decay_lr and cfg.min_lr == 0 and cfg.max_iters > cfg.lr_decay_iters and not cfg.eval_only:
        raise UserError(
            f"max_iters={cfg.max_iters} goes past lr_decay_iters={cfg.lr_decay_iters}, where the learning rate reaches min_lr=0, so those iterations would change nothing; "
            f"pass --lr_decay_iters={cfg.max_iters} too (or a --min_lr above 0)"
        )
    if cfg.wandb_log:
        require_wandb()  # fail now, not after loading the data and the model


def get_lr(it: int, cfg: TrainConfig) -> float:
    """Linear warmup for warmup_iters, then down to min_lr at lr_decay_iters (cosine; or for wsd,
    constant until the cooldown, then linear), then min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    if cfg.lr_schedule == "wsd":
        cooldown_start = max(cfg.warmup_iters, cfg.lr_decay_iters - round(cfg.cooldown_frac * cfg.lr_decay_iters))
        if it < cooldown_start:
            return cfg.learning_rate
        coeff = (cfg.lr_decay_iters - it) / (cfg.lr_decay_iters - cooldown_start)  # 1 -> 0
        return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)
    ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


@dataclass
class TrainingData:
    """A prepared dataset opened for training: its folder, meta.json and token dtype."""

    dir: Path
    meta: dict
    train_tokens: int

    @property
    def dtype(self) -> str:
        return self.meta.get("dtype", "uint16")

    @property
    def tokenizer(self) -> dict:
        return self.meta["tokenizer"]


def open_training_data(cfg: TrainConfig) -> TrainingData:
    """The dataset cfg names, each split checked to hold at least one batch."""
    data_dir = resolve_data_dir(cfg.data_dir, cfg.dataset)
    meta = load_meta(data_dir)
    splits = {s: open_split(data_dir, s, meta.get("dtype", "uint16"), min_tokens=cfg.block_size + 1) for s in ("train", "val")}
    return TrainingData(data_dir, meta, len(splits["train"]))


def check_model_fits_data(model: GPT, cfg: TrainConfig, data: TrainingData) -> None:
    """Refuse a block_size the model cannot take, or token ids it has no embedding for."""
    if cfg.block_size > model.config.block_size:
        raise UserError(
            f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}; pass --block_size={model.config.block_size} or less"
        )
    vocab_size = data.tokenizer["vocab_size"]
    if model.config.vocab_size < vocab_size:
        raise UserError(f"the model has {model.config.vocab_size} token ids, fewer than the dataset's {vocab_size}; use a dataset of its tokenizer")
    for split in ("train", "val"):
        check_token_ids(open_split(data.dir, split, data.dtype), vocab_size, data.dir / f"{split}.bin")


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


def train_batches(data: TrainingData, cfg: TrainConfig, rt: Runtime, iter_num: int) -> Iterator[tuple]:
    """Micro-batches from iteration iter_num on. Batch j of an iteration is the same whatever
    the number of ranks: rank r does micro-steps r*accum_steps ... (r+1)*accum_steps-1."""
    accum_steps = cfg.gradient_accumulation_steps // rt.world_size
    while True:
        for micro_step in range(accum_steps):
            index = iter_num * cfg.gradient_accumulation_steps + rt.rank * accum_steps + micro_step
            yield get_batch(data.dir / "train.bin", data.dtype, cfg.batch_size, cfg.block_size, (cfg.seed, 0, index), rt)
        iter_num += 1


def eval_batches(data: TrainingData, cfg: TrainConfig, rt: Runtime) -> dict:
    """{split: batch k of that split}: the same eval batches every time, so evals compare like with like."""
    return {
        s: (lambda k, s=s, i=i: get_batch(data.dir / f"{s}.bin", data.dtype, cfg.batch_size, cfg.block_size, (cfg.seed, 1 + i, k), rt))
        for i, s in enumerate(("train", "val"))
    }


def sampler_state(cfg: TrainConfig, train_tokens: int) -> dict:
    """What decides the training batches: batch i of iteration n is drawn from (seed, 0, index),
    so a resumed run with the same values draws the same batches as an uninterrupted one."""
    return {k: getattr(cfg, k) for k in ("seed", "gradient_accumulation_steps", "batch_size", "block_size")} | {"train_tokens": train_tokens}


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


def agree(loss: torch.Tensor, grad_norm: torch.Tensor | None, host_flags: list[bool], rt: Runtime) -> tuple[float, bool, list[bool]]:
    """The step's one read of the device, and under DDP its one all-reduce, carrying everything
    the ranks must agree on: the mean loss over all ranks, whether the loss (or grad_norm, if
    given) is non-finite on any rank, and each host flag (a stop signal, a clock), True if it is
    True on any rank. The values go into a device tensor with kernels (no tensor built on the
    host, no copy to the device), and are read back with one .tolist()."""
    t = torch.zeros(3 + len(host_flags), device=rt.device)
    t[0] = loss
    t[1] = ~torch.isfinite(loss)
    if grad_norm is not None:
        t[2] = ~torch.isfinite(grad_norm)
    for i, flag in enumerate(host_flags, start=3):
        if flag:
            t[i] = 1.0
    if rt.ddp:
        torch.distributed.all_reduce(t)  # a sum: of the losses, and of the flags (> 0: on some rank)
    values = t.tolist()
    return values[0] / rt.world_size, values[1] + values[2] > 0, [v > 0 for v in values[3:]]


def train_step(
    model,
    optimizer,
    scaler,
    batch: tuple,
    batches: Iterator[tuple],
    accum_steps: int,
    grad_clip: float,
    rt: Runtime,
    host_flags: Callable[[], list[bool]] = list,
) -> tuple[float, bool, list[bool], tuple]:
    """One optimizer step over accum_steps micro-batches: `batch`, then more from `batches`.
    Each next batch is fetched while the device works; the one left over starts the next step.
    Returns the step's mean loss (over all ranks), whether the update was made, host_flags() as
    agreed by all ranks (see agree: the step reads the device once; they are asked for after the
    backward passes, so a signal during the step counts in it) and that batch.

    A step whose loss or gradient norm is not finite (on any rank) is skipped: no update, and
    the loss scale stays as it was. Under float16 an inf/NaN gradient is an overflow of the loss
    scale, which the GradScaler handles (it skips the update itself and lowers the scale), so
    there only the loss counts."""
    total = torch.zeros((), device=rt.device)
    for micro_step in range(accum_steps):
        x, y = batch
        with accumulating(model, last=micro_step == accum_steps - 1):  # gradients are reduced across ranks on the last micro-step only
            with rt.autocast():
                _, loss = model(x, y)
                loss = loss / accum_steps  # the gradients add up over micro-steps: average them
            batch = next(batches)
            scaler.scale(loss).backward()  # scaling is a no-op unless float16
        total += loss.detach()
    scaler.unscale_(optimizer)
    grad_norm = full_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf))  # over all shards under FSDP
    loss, bad, flags = agree(total, None if scaler.is_enabled() else grad_norm, host_flags(), rt)
    if bad:
        scaler.update(scaler.get_scale())  # a bad step is the NaN guard's, not an overflow: the scale stays
    else:
        scaler.step(optimizer)  # under float16 the scaler skips an overflowed update
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss, not bad, flags, batch


class TrainLog:
    """The loop's timing and logging: the mean loss of the good steps since the last log line,
    ms/iter and tokens/s of the training steps (evals left out), MFU where the GPU's peak is known, and the count of skipped steps, printed
    and appended to metrics.jsonl (and wandb) every log_interval iterations by rank 0."""

    def __init__(self, logger: Logger, cfg: TrainConfig, rt: Runtime, model: GPT):
        self.logger, self.log_interval, self.rt = logger, cfg.log_interval, rt
        self.tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
        self.flops_per_iter = model_flops_per_token(model, cfg.block_size) * self.tokens_per_iter / rt.world_size  # per rank
        self.peak = rt.peak_flops()
        self.loss_sum = 0.0
        self.t0, self.iters, self.good_steps, self.skipped = time.time(), 0, 0, 0

    @contextmanager
    def paused(self):
        """Time spent inside (an eval) does not count in ms/iter and tokens/s."""
        start = time.time()
        try:
            yield
        finally:
            self.t0 += time.time() - start

    def eval(self, iter_num: int, losses: dict, lr: float) -> None:
        if self.rt.master:
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            self.logger.log({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr})

    def hellaswag(self, iter_num: int, result) -> None:
        if self.rt.master:
            print(f"step {iter_num}: hellaswag acc_norm {result.acc_norm:.4f}, acc {result.acc:.4f} ({result.items:,} items)")
            self.logger.log({"iter": iter_num, "hellaswag_acc": result.acc, "hellaswag_acc_norm": result.acc_norm, "hellaswag_items": result.items})

    def step(self, iter_num: int, loss: float, stepped: bool, bad_steps: int) -> None:
        """Count one training step (iteration iter_num) and its mean loss."""
        self.iters += 1
        if stepped:
            self.loss_sum += loss
            self.good_steps += 1
            return
        self.skipped += 1
        if self.rt.master:
            print(f"iter {iter_num}: loss {loss:.4f}, the loss or gradient norm is not finite: update skipped ({bad_steps} in a row)")

    def maybe_log(self, iter_num: int, lr: float) -> None:
        """At every log_interval: log the iterations since the last line, then start over."""
        if iter_num % self.log_interval:
            return
        if self.rt.master:
            loss = self.loss_sum / self.good_steps if self.good_steps else math.nan  # each step read the device, so the timing is real
            dt = (time.time() - self.t0) / self.iters
            record = {"iter": iter_num, "loss": loss, "lr": lr, "ms_per_iter": dt * 1000, "tokens_per_s": self.tokens_per_iter / dt}
            line = f"iter {iter_num}: loss {loss:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, {self.tokens_per_iter / dt:,.0f} tok/s"
            if self.peak:
                record["mfu"] = self.flops_per_iter / dt / self.peak
                line += f", mfu {record['mfu'] * 100:.1f}%"
            if self.skipped:
                record["skipped_steps"] = self.skipped
                line += f", {self.skipped} skipped steps"
            print(line)
            self.logger.log(record)
        self.t0, self.iters, self.good_steps, self.loss_sum = time.time(), 0, 0, 0.0
