"""
Train a GPT on a prepared dataset: from scratch, or resumed from out_dir/ckpt.pt.

One device (cuda, mps or cpu, whichever is there; or --device=...):
    python train.py config/train_shakespeare_char.py
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --max_iters=2000

Several GPUs on one node, with DDP through torchrun:
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

Two nodes of 8 GPUs (run on each node; node 0 at 10.0.0.1):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py
(If your cluster has no Infiniband, prepend NCCL_IB_DISABLE=1.)

Resume a run (the newest complete checkpoint in out_dir; same settings as the run that wrote it):
    python train.py config/train_shakespeare_char.py --init_from=resume

SIGTERM or Ctrl-C (preemption) finishes the current step, saves a checkpoint and exits 0; a second
Ctrl-C stops at once. Steps whose loss or gradient norm is not finite are skipped; more than
max_bad_steps in a row stop the run, saving the last good state.

Settings: the TrainConfig fields below; override them with config files and --key=value.
"""

import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from atomic import remove_stale_temps
from checkpoint import load_checkpoint, model_from_checkpoint, newest_checkpoint, rng_state, set_rng_state, write_checkpoint
from configurator import parse_config, print_config
from datafiles import DTYPES, load_meta, open_split
from errors import UserError, cli
from logger import Logger
from model import GPT, GPTConfig
from runtime import Runtime, seed_everything, setup_runtime, teardown_runtime

# Test hook: a comma-separated list of iterations whose loss is made NaN, to exercise the guard
# against non-finite steps. Never set it otherwise.
NAN_AT_ENV = "GPT_SUITE_TEST_NAN_AT"


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    eval_iters: int = 200
    eval_only: bool = False  # evaluate once and exit
    always_save_checkpoint: bool = True  # at every eval; else only when val loss improves
    checkpoint_interval: int = 0  # also save every this many iterations (0: off)
    checkpoint_minutes: float = 0.0  # also save when this many minutes passed since the last save (0: off)
    keep_last: int = 0  # also keep the newest K saves as ckpt-<iter>.pt (ckpt.pt is the newest, best.pt the best)
    init_from: str = "scratch"  # 'scratch' or 'resume' (the newest complete checkpoint in out_dir)
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
    bias: bool = False
    # AdamW
    learning_rate: float = 6e-4
    max_iters: int = 600000
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    max_bad_steps: int = 10  # steps with a non-finite loss or grad norm are skipped; more in a row stop the run
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
    for name in ("max_iters", "warmup_iters", "lr_decay_iters", "checkpoint_interval", "checkpoint_minutes", "keep_last", "max_bad_steps"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must not be negative, got {getattr(cfg, name)}")
    for name in ("grad_clip", "weight_decay"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must not be negative, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0:
        raise UserError("learning_rate must be positive and min_lr not negative")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise UserError(f"out_dir {cfg.out_dir} is a file, not a folder; pass another --out_dir")
    if cfg.init_from not in ("scratch", "resume"):
        raise UserError(f"unknown init_from '{cfg.init_from}'; use 'scratch' or 'resume'")


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


def check_resumable(ckpt: dict, cfg: TrainConfig, tokenizer_meta: dict, path: Path, data_dir: Path) -> None:
    """Refuse to continue a checkpoint on another tokenizer or with other model settings, naming both sides."""
    theirs = ckpt.get("tokenizer", tokenizer_meta)
    if theirs != tokenizer_meta:
        mine = f"{tokenizer_meta['kind']} with {tokenizer_meta['vocab_size']}"
        if (theirs.get("kind"), theirs.get("vocab_size")) == (tokenizer_meta["kind"], tokenizer_meta["vocab_size"]):
            mine += " ids but another vocabulary"
        raise UserError(
            f"{path} was trained with a {theirs.get('kind')} tokenizer of {theirs.get('vocab_size')} ids, but {data_dir} uses {mine}; resume on the same dataset"
        )
    args = ckpt["model_args"]
    differ = [name for name in ("n_layer", "n_head", "n_embd", "bias") if name in args and args[name] != getattr(cfg, name)]
    if differ:
        raise UserError(
            f"{path} has {', '.join(f'{k}={args[k]}' for k in differ)}, but this run asks for {', '.join(f'{k}={getattr(cfg, k)}' for k in differ)}; "
            f"resume with the settings of the run that wrote it (its config file, or {' '.join(f'--{k}={args[k]}' for k in differ)})"
        )


def gather_rng_states(state: dict, rt: Runtime) -> list[dict] | None:
    """Every rank's RNG state, gathered on rank 0 (None elsewhere): a collective under DDP."""
    if not rt.ddp:
        return [state]
    states = [None] * rt.world_size if rt.master else None
    torch.distributed.gather_object(state, states, dst=0)
    return states


def restore_rng_states(states: list[dict] | None, cfg: TrainConfig, iter_num: int, rt: Runtime) -> None:
    """Each rank takes back its own RNG state (dropout draws from it), so a resumed run continues
    exactly; a checkpoint from another number of ranks can only be reseeded."""
    if states and len(states) == rt.world_size:
        set_rng_state(states[rt.rank], rt.device)
        return
    if rt.master:
        print(
            f"note: the checkpoint holds RNG states for {len(states or [])} process(es), this run has {rt.world_size}: dropout is reseeded, so the run continues but not bit for bit"
        )
    seed_everything(cfg.seed + rt.rank + 1_000_003 * iter_num)


class StopSignal:
    """SIGTERM / SIGINT (preemption, Ctrl-C) ask the run to stop: the training loop finishes its step,
    saves a checkpoint and returns. A Ctrl-C more than two seconds after the first stops at once
    (quicker repeats count as one: torchrun forwards the terminal's Ctrl-C to its workers)."""

    def __init__(self):
        self.signum: int | None = None
        self._when = 0.0
        self._previous: dict = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT and time.monotonic() - self._when > 2:
                raise KeyboardInterrupt
            return
        self.signum, self._when = signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name} received: stopping after this step with a checkpoint", flush=True)


def main(argv: list[str]) -> None:
    cfg = parse_config(TrainConfig(), argv)
    validate(cfg)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, cfg.backend)
    try:
        with StopSignal() as stop:
            train(cfg, rt, stop)
    finally:
        teardown_runtime(rt)


def train(cfg: TrainConfig, rt: Runtime, stop: StopSignal | None = None) -> dict:
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
    iter_num, best_val_loss, last_eval_iter, ckpt = 0, 1e9, -1, None
    if cfg.init_from == "scratch":
        vocab_size = meta.get("vocab_size", tokenizer_meta["vocab_size"])
        if tokenizer_meta["kind"] == "gpt2":
            vocab_size = (vocab_size + 63) // 64 * 64  # 50257 -> 50304: tensor-core friendly
        try:
            gcfg = GPTConfig(cfg.block_size, vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout, cfg.bias)
        except ValueError as e:
            raise UserError(f"bad model config: {e}") from None
        model = GPT(gcfg)
    else:  # resume
        path = newest_checkpoint(out_dir) or out_dir / "ckpt.pt"
        ckpt = load_checkpoint(path, map_location=rt.device)
        check_resumable(ckpt, cfg, tokenizer_meta, path, data_dir)
        model = model_from_checkpoint(ckpt, dropout=cfg.dropout)
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
        last_eval_iter = ckpt.get("last_eval_iter", iter_num)  # nanoGPT saves only right after an eval
        sampler = ckpt.get("sampler", {})
        if rt.master and sampler and (sampler["seed"], sampler["gradient_accumulation_steps"]) != (cfg.seed, cfg.gradient_accumulation_steps):
            print(
                f"note: {path} drew batches with seed={sampler['seed']}, gradient_accumulation_steps={sampler['gradient_accumulation_steps']}; "
                "this run uses other values, so its batches differ from an uninterrupted run's"
            )
        if rt.master:
            print(f"resuming from {path} at iter {iter_num}")
    if cfg.block_size > model.config.block_size:
        raise UserError(f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}")
    for split, data in splits.items():
        check_tokens(data, tokenizer_meta["vocab_size"], data_dir / f"{split}.bin")
    model.to(rt.device)
    raw_model = model  # checkpoints are saved from this one: no compile or DDP wrappers in its keys

    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), rt.device_type)
    rng_states = None
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        rng_states = ckpt.get("rng")
    start_iter, ckpt = iter_num, None  # free the memory

    if cfg.compile if cfg.compile is not None else rt.device_type == "cuda":
        if rt.master:
            print("compiling the model... (takes a minute)")
        model = torch.compile(model)
    if rt.ddp:
        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None)

    # batch j of iteration i is the same whatever the number of ranks: rank r does micro-steps r*accum_steps...
    def train_batch(iter_num: int, micro_step: int):
        index = iter_num * cfg.gradient_accumulation_steps + rt.rank * accum_steps + micro_step
        return get_batch(data_dir / "train.bin", dtype, cfg.batch_size, cfg.block_size, (cfg.seed, 0, index), rt)

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

    def save(iter_num: int, best: bool = False, rng: dict | None = None, scaler_state: dict | None = None) -> None:
        """Checkpoint everything the rest of the run depends on. Every rank calls it (their RNG states
        are gathered); rank 0 writes. `rng`/`scaler_state` override the current ones (the NaN guard
        saves the state from before the first bad step)."""
        nonlocal last_save
        last_save = time.time()
        rng_states = gather_rng_states(rng or rng_state(rt.device), rt)
        if not rt.master:
            return
        state = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler_state if scaler_state is not None else scaler.state_dict(),
            "model_args": raw_model.model_args(),
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "last_eval_iter": last_eval_iter,
            "config": asdict(cfg),
            "tokenizer": tokenizer_meta,
            "rng": rng_states,  # one per rank
            "sampler": {"seed": cfg.seed, "gradient_accumulation_steps": cfg.gradient_accumulation_steps, "iter_num": iter_num},
        }
        path = write_checkpoint(state, out_dir, cfg.keep_last, best)
        print(f"saved checkpoint at iter {iter_num} to {path}" + (" and best.pt" if best else ""), flush=True)

    if rt.master:
        for p in remove_stale_temps(out_dir):
            print(f"removed {p}, a partial file of a run that was killed while writing it")
        if cfg.init_from == "resume" and iter_num >= cfg.max_iters and not cfg.eval_only:
            print(f"the checkpoint is at iter {iter_num}, max_iters={cfg.max_iters}: nothing to train; raise --max_iters to go on")
    if cfg.init_from == "resume":
        restore_rng_states(rng_states, cfg, iter_num, rt)
    stop = stop or StopSignal()  # not installed: nothing will ask to stop
    nan_at = {int(i) for i in os.environ.get(NAN_AT_ENV, "").split(",") if i.strip()}
    x, y = train_batch(iter_num, 0)
    t0 = last_save = time.time()
    iters_timed, good_steps, bad_steps, skipped, losses = 0, 0, 0, 0, {}
    loss_sum = torch.zeros((), device=rt.device)
    stopping = time_due = False
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # evaluate (not when stopping: preemption leaves little time), then save if anything asks for it
        evaluated = improved = False
        eval_due = iter_num % cfg.eval_interval == 0 or iter_num == cfg.max_iters
        if not stopping and (cfg.eval_only or (eval_due and iter_num != last_eval_iter)):
            losses = estimate_loss(model, eval_batches, cfg.eval_iters, rt)
            if rt.master:
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                logger.log({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr})
            evaluated, improved = True, losses["val"] < best_val_loss
            best_val_loss, last_eval_iter = min(best_val_loss, losses["val"]), iter_num
        periodic = iter_num != start_iter and bad_steps == 0 and (time_due or (cfg.checkpoint_interval > 0 and iter_num % cfg.checkpoint_interval == 0))
        if iter_num > 0 and not cfg.eval_only and (stopping or periodic or (evaluated and (improved or cfg.always_save_checkpoint))):
            save(iter_num, best=improved)
        if stopping:
            if rt.master:
                print(f"stopped at iter {iter_num}; continue with --init_from=resume")
            break
        if cfg.eval_only or iter_num >= cfg.max_iters:
            break

        if bad_steps == 0:  # where the NaN guard goes back to if this step starts a run of bad ones
            good = {"iter_num": iter_num, "rng": rng_state(rt.device), "scaler_state": scaler.state_dict()}
        # forward, backward and update, with gradient accumulation; DDP all-reduces only on the last micro-step
        step_loss = torch.zeros((), device=rt.device)
        for micro_step in range(accum_steps):
            sync = nullcontext() if not rt.ddp or micro_step == accum_steps - 1 else model.no_sync()
            with sync:
                with rt.autocast():
                    _, loss = model(x, y)
                    loss = loss / accum_steps
                    if iter_num in nan_at:
                        loss = loss * float("nan")
                # fetch the next batch while the GPU works
                x, y = train_batch(iter_num, micro_step + 1) if micro_step + 1 < accum_steps else train_batch(iter_num + 1, 0)
                scaler.scale(loss).backward()
            step_loss += loss.detach()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        # a non-finite loss or grad norm skips the update; with fp16 the GradScaler owns inf/NaN grads (overflow)
        finite = torch.isfinite(step_loss) if scaler.is_enabled() else torch.isfinite(step_loss) & torch.isfinite(grad_norm)
        # one small all-reduce per step: all ranks agree to skip a step, to stop, to save on the clock
        asks = [stop.signum is not None, cfg.checkpoint_minutes > 0 and time.time() - last_save >= 60 * cfg.checkpoint_minutes]
        flags = torch.cat([(~finite).float().view(1), torch.tensor(asks, dtype=torch.float32, device=rt.device)])
        if rt.ddp:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        bad, stopping, time_due = (v > 0 for v in flags.tolist())
        if bad:
            bad_steps, skipped = bad_steps + 1, skipped + 1
            if rt.master:
                print(f"iter {iter_num}: loss {step_loss.item():.4f}, grad norm {grad_norm.item():.4f}: not finite, update skipped ({bad_steps} in a row)")
            if bad_steps > cfg.max_bad_steps:
                save(**good)
                raise UserError(
                    f"the loss or gradient norm was not finite for {bad_steps} steps in a row (iters {good['iter_num']}-{iter_num}, max_bad_steps={cfg.max_bad_steps}); "
                    f"the last good state (iter {good['iter_num']}) is saved in {out_dir}: lower --learning_rate or set --grad_clip, then --init_from=resume"
                )
        else:
            scaler.step(optimizer)
            bad_steps, good_steps = 0, good_steps + 1
            loss_sum += step_loss
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        iters_timed += 1

        if iter_num % cfg.log_interval == 0 and rt.ddp:
            torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)  # log the global batch's loss
        if iter_num % cfg.log_interval == 0 and rt.master:
            loss_val = loss_sum.item() / good_steps if good_steps else math.nan  # the .item() syncs, so the timing below is real
            dt = (time.time() - t0) / iters_timed
            record = {"iter": iter_num, "loss": loss_val, "lr": lr, "ms_per_iter": dt * 1000, "tokens_per_s": tokens_per_iter / dt}
            line = f"iter {iter_num}: loss {loss_val:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, {tokens_per_iter / dt:,.0f} tok/s"
            if peak:
                record["mfu"] = flops_per_iter / dt / peak
                line += f", mfu {record['mfu'] * 100:.1f}%"
            if skipped:
                record["skipped_steps"] = skipped
                line += f", {skipped} skipped steps"
            print(line)
            logger.log(record)
        if iter_num % cfg.log_interval == 0:
            t0, iters_timed, good_steps = time.time(), 0, 0
            loss_sum.zero_()
    logger.close()
    return {"iter_num": iter_num, "best_val_loss": best_val_loss, **{f"{k}_loss": v for k, v in losses.items()}}


if __name__ == "__main__":
    cli(main)
