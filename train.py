"""
Train a GPT on a prepared dataset: from scratch, resumed from out_dir, or fine-tuned from
OpenAI's GPT-2 weights.

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

Resume a run from the newest complete checkpoint in out_dir (with the settings that started it;
the run continues exactly as if it had not stopped):
    python train.py config/train_shakespeare_char.py --init_from=resume

Preemption: SIGTERM or Ctrl-C finishes the current step, saves a checkpoint and exits 0 (under
torchrun every rank stops at the same step; torchrun gives its workers 30 s, --shutdown_timeout,
before SIGKILL). A second Ctrl-C stops at once. Checkpoints are written atomically, so a kill -9
at any moment leaves the previous one whole. A step whose loss or gradient norm is not finite is
skipped; more than max_bad_steps in a row stop the run with the last good state saved.

Precision: --dtype=auto is bfloat16 on GPUs that have it, else float16 with a gradient scaler;
float32 on cpu and mps (--dtype=bfloat16 works on cpu too). --compile is on by default on CUDA.

Settings: the TrainConfig fields below; override them with config files and --key=value.
"""

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from atomic import check_folder, remove_stale_temps
from checkpoint import load_checkpoint, model_from_checkpoint, newest_checkpoint, rng_state, set_rng_state, write_checkpoint
from configurator import parse_config, print_config
from datafiles import DTYPES, check_token_ids, load_meta, open_split
from errors import UserError, cli
from logger import Logger, require_wandb
from model import GPT, GPTConfig
from pretrained import HUB_MODELS, from_pretrained, is_pretrained
from runtime import Runtime, seed_everything, setup_runtime, teardown_runtime


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    eval_iters: int = 200
    eval_only: bool = False  # evaluate once and exit
    always_save_checkpoint: bool = True  # save at every eval; else only when val loss improves
    checkpoint_interval: int = 0  # also save every this many iterations (0: off)
    checkpoint_minutes: float = 0.0  # also save when this many minutes passed since the last save (0: off)
    keep_last: int = 0  # also keep the newest K saves as ckpt-<iter>.pt (ckpt.pt is always the newest, best.pt the best)
    init_from: str = (
        "scratch"  # 'scratch', 'resume' (newest checkpoint in out_dir), 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'distilgpt2' or a directory
    )
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
    max_bad_steps: int = 10  # steps with a non-finite loss or grad norm are skipped; more than this in a row stop the run
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


MODEL_KEYS = ("n_layer", "n_head", "n_embd", "bias")  # the shape a resumed checkpoint must agree with


def validate(cfg: TrainConfig) -> None:
    for name in ("eval_interval", "log_interval", "eval_iters", "gradient_accumulation_steps", "batch_size", "block_size"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in (
        "max_iters",
        "warmup_iters",
        "lr_decay_iters",
        "checkpoint_interval",
        "checkpoint_minutes",
        "keep_last",
        "max_bad_steps",
        "grad_clip",
        "weight_decay",
    ):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must not be negative, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0:
        raise UserError("learning_rate must be positive and min_lr not negative")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.seed < 0:
        raise UserError(f"seed must not be negative, got {cfg.seed}")
    check_folder(cfg.out_dir, "--out_dir")
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


def init_model(cfg: TrainConfig, tokenizer_meta: dict, data_dir: Path, rt: Runtime) -> tuple[GPT, dict | None]:
    """The model init_from asks for, and the checkpoint it resumes (None unless 'resume')."""
    if cfg.init_from == "scratch":
        return new_model(cfg, tokenizer_meta), None
    if cfg.init_from == "resume":
        path = newest_checkpoint(cfg.out_dir) or Path(cfg.out_dir) / "ckpt.pt"
        ckpt = load_checkpoint(path, map_location=rt.device)
        check_resumable(ckpt, cfg, tokenizer_meta, path, data_dir)
        if rt.master:
            print(f"resuming from {path} at iter {ckpt['iter_num']}")
        return model_from_checkpoint(ckpt, dropout=cfg.dropout), ckpt
    if tokenizer_meta["kind"] != "gpt2":
        raise UserError(
            f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2 BPE, but {data_dir} uses the {tokenizer_meta['kind']} tokenizer; prepare one with GPT-2 BPE (e.g. python prepare.py shakespeare)"
        )
    return from_pretrained(cfg.init_from, dropout=cfg.dropout, block_size=cfg.block_size), None


def check_resumable(ckpt: dict, cfg: TrainConfig, tokenizer_meta: dict, path: Path, data_dir: Path) -> None:
    """Refuse to continue a checkpoint on another tokenizer, or with a model shape that this run
    sets (in a config file or on the command line) to something else, naming both sides."""
    bad = [k for k, kinds in (("optimizer", dict), ("iter_num", int), ("best_val_loss", (float, int, torch.Tensor))) if not isinstance(ckpt.get(k), kinds)]
    if bad or ckpt["iter_num"] < 0:
        raise UserError(
            f"{path} cannot be resumed: its {', '.join(bad) or 'iter_num'} is missing or invalid; the file is damaged or holds weights only: resume from another checkpoint or start a new run"
        )
    theirs = ckpt.get("tokenizer", tokenizer_meta)  # nanoGPT checkpoints record none
    if theirs != tokenizer_meta:
        mine = f"{tokenizer_meta['kind']} tokenizer of {tokenizer_meta['vocab_size']} ids"
        if (theirs.get("kind"), theirs.get("vocab_size")) == (tokenizer_meta["kind"], tokenizer_meta["vocab_size"]):
            mine += " but another vocabulary"
        raise UserError(
            f"{path} was trained with a {theirs.get('kind')} tokenizer of {theirs.get('vocab_size')} ids, but {data_dir} uses a {mine}; resume on the dataset it was trained on"
        )
    args, defaults = ckpt["model_args"], TrainConfig()
    differ = [k for k in MODEL_KEYS if k in args and getattr(cfg, k) != getattr(defaults, k) and args[k] != getattr(cfg, k)]
    if differ:
        raise UserError(
            f"{path} has {', '.join(f'{k}={args[k]}' for k in differ)}, but this run asks for {', '.join(f'{k}={getattr(cfg, k)}' for k in differ)}; "
            f"resume with the settings of the run that wrote it ({' '.join(f'--{k}={args[k]}' for k in differ)})"
        )


def sampler_state(cfg: TrainConfig, train_tokens: int) -> dict:
    """What decides the training batches: batch i of iteration n is drawn from (seed, 0, index),
    so a resumed run with the same values draws the same batches as an uninterrupted one."""
    return {k: getattr(cfg, k) for k in ("seed", "gradient_accumulation_steps", "batch_size", "block_size")} | {"train_tokens": train_tokens}


def any_rank(flags: list[bool], rt: Runtime) -> list[bool]:
    """Each flag, True if it is True on any rank (a tiny all-reduce under DDP), so that every rank
    takes the same branch: skip a step, stop, save."""
    if not rt.ddp:
        return flags
    t = torch.tensor(flags, dtype=torch.float32, device=rt.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def train_step(
    model, optimizer, scaler, batch: tuple, batches: Iterator[tuple], accum_steps: int, grad_clip: float, rt: Runtime
) -> tuple[torch.Tensor, bool, tuple]:
    """One optimizer step over accum_steps micro-batches: `batch`, then more from `batches`.
    Each next batch is fetched while the device works; the one left over starts the next step.
    Returns the step's mean loss (a device tensor), whether the update was made, and that batch.

    A step whose loss or gradient norm is not finite (on any rank) is skipped: no update. Under
    float16 an inf/NaN gradient is an overflow of the loss scale, which the GradScaler handles
    (it skips the update itself and lowers the scale), so there only the loss counts."""
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
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    finite = torch.isfinite(total) if scaler.is_enabled() else torch.isfinite(total) & torch.isfinite(grad_norm)
    (bad,) = any_rank([not finite.item()], rt)
    if not bad:
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total, not bad, batch


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
    (quicker repeats count as one: torchrun forwards the terminal's Ctrl-C to its workers).

    The handler only takes note: printing from it could land inside another print (not reentrant),
    and system calls it interrupts are restarted, so a signal that arrives in the middle of a
    collective or a file write does not break it."""

    def __init__(self):
        self.signum: int | None = None
        self._when = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop signal on another rank"

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
                signal.siginterrupt(sig, False)
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
    stop = stop or StopSignal()  # not installed: nothing asks to stop

    # data
    data_dir = Path(cfg.data_dir or Path("data") / cfg.dataset)
    meta = load_meta(data_dir)
    dtype = meta.get("dtype", "uint16")
    splits = {s: open_split(data_dir, s, dtype, min_tokens=cfg.block_size + 1) for s in ("train", "val")}
    tokenizer_meta = meta["tokenizer"]
    sampler = sampler_state(cfg, len(splits["train"]))

    # model
    model, ckpt = init_model(cfg, tokenizer_meta, data_dir, rt)
    iter_num, best_val_loss, last_eval_iter = 0, 1e9, -1
    if ckpt:
        iter_num, best_val_loss = ckpt["iter_num"], float(ckpt["best_val_loss"])
        last_eval_iter = ckpt.get("last_eval_iter", iter_num)  # nanoGPT saves right after an eval
        changed = [f"{k}={v} (was {ckpt['sampler'][k]})" for k, v in sampler.items() if k in ckpt.get("sampler", {}) and ckpt["sampler"][k] != v]
        if changed and rt.master:
            print(f"note: {', '.join(changed)}: the batches from here on differ from those of an uninterrupted run")
    if cfg.block_size > model.config.block_size:
        raise UserError(f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}")
    if model.config.vocab_size < tokenizer_meta["vocab_size"]:
        raise UserError(
            f"the model has {model.config.vocab_size} token ids, fewer than the dataset's {tokenizer_meta['vocab_size']}; use a dataset of its tokenizer"
        )
    for split, data in splits.items():
        check_token_ids(data, tokenizer_meta["vocab_size"], data_dir / f"{split}.bin")
    model.to(rt.device)
    raw_model = model  # checkpoints are saved from this one: no compile or DDP wrappers in its keys

    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), rt.device_type)
    rng_states = None
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(
                f"the checkpoint in {out_dir} has an optimizer or loss-scaler state that does not fit its model ({e}); the file is damaged: resume from another checkpoint or start a new run"
            ) from None
        rng_states = ckpt.get("rng")
    start_iter, ckpt = iter_num, None  # free the memory

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
        for p in remove_stale_temps(out_dir):
            print(f"removed {p}, a partial checkpoint of a run that was killed while writing it")
        if start_iter >= cfg.max_iters and not cfg.eval_only:
            print(f"the run is at iter {start_iter} and max_iters={cfg.max_iters}: nothing to train; raise --max_iters to go on")

    def save(iter_num: int, best: bool = False, rng: dict | None = None, scaler_state: dict | None = None) -> None:
        """Checkpoint everything the rest of the run depends on. Every rank calls it (their RNG states
        are gathered); rank 0 writes. `rng` and `scaler_state` replace the current ones when the
        NaN guard saves the state from before a run of bad steps."""
        nonlocal last_save
        last_save = time.time()
        rng_states = gather_rng_states(rng or rng_state(rt.device), rt)
        if not rt.master:
            return
        state = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler_state is None else scaler_state,
            "model_args": raw_model.model_args(),
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "last_eval_iter": last_eval_iter,
            "config": asdict(cfg),
            "tokenizer": tokenizer_meta,
            "template": meta.get("template"),  # the dataset's prompt template (templates.py), for sample.py
            "rng": rng_states,  # one per rank
            "sampler": sampler | {"iter_num": iter_num},
        }
        path = write_checkpoint(state, out_dir, cfg.keep_last, best)
        print(f"saved checkpoint at iter {iter_num} to {path}" + (" and best.pt" if best else ""), flush=True)

    if cfg.init_from == "resume":
        restore_rng_states(rng_states, cfg, start_iter, rt)  # last: nothing above may draw from them
    batches = train_batches(iter_num)
    batch = next(batches)
    t0 = last_save = time.time()
    iters_timed, good_steps, bad_steps, skipped, losses = 0, 0, 0, 0, {}
    loss_sum = torch.zeros((), device=rt.device)
    stopping = clock_due = False
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # evaluate (not when stopping: a preempted machine has seconds left), then save if anything asks for it
        evaluated = improved = False
        eval_due = (iter_num % cfg.eval_interval == 0 or iter_num == cfg.max_iters) and iter_num != last_eval_iter
        if cfg.eval_only or (eval_due and not stopping):
            losses = estimate_loss(model, eval_batches, cfg.eval_iters, rt)
            if rt.master:
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                logger.log({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr})
            evaluated, improved = True, losses["val"] < best_val_loss
            best_val_loss, last_eval_iter = min(best_val_loss, losses["val"]), iter_num
        periodic = iter_num != start_iter and bad_steps == 0 and (clock_due or (cfg.checkpoint_interval > 0 and iter_num % cfg.checkpoint_interval == 0))
        if iter_num > 0 and not cfg.eval_only and (stopping or periodic or (evaluated and (improved or cfg.always_save_checkpoint))):
            save(iter_num, best=improved)
        if stopping:
            if rt.master:
                print(f"{stop.name} received: stopped at iter {iter_num}; continue with --init_from=resume", flush=True)
            break
        if cfg.eval_only or iter_num >= cfg.max_iters:
            break

        if bad_steps == 0:  # what the NaN guard saves if this step starts a run of bad ones
            good = {"iter_num": iter_num, "rng": rng_state(rt.device), "scaler_state": scaler.state_dict()}
        loss, stepped, batch = train_step(model, optimizer, scaler, batch, batches, accum_steps, cfg.grad_clip, rt)
        if stepped:
            loss_sum += loss
            bad_steps, good_steps = 0, good_steps + 1
        else:
            bad_steps, skipped = bad_steps + 1, skipped + 1
            if rt.master:
                print(f"iter {iter_num}: loss {loss.item():.4f}, the loss or gradient norm is not finite: update skipped ({bad_steps} in a row)")
            if bad_steps > cfg.max_bad_steps:
                save(**good)
                raise UserError(
                    f"the loss or gradient norm was not finite for {bad_steps} steps in a row (iters {good['iter_num']}-{iter_num}, more than max_bad_steps={cfg.max_bad_steps}); "
                    f"{out_dir} holds the state from before (iter {good['iter_num']}): lower --learning_rate or set --grad_clip, then --init_from=resume"
                )
        iter_num += 1
        iters_timed += 1
        # every rank must take the same branch: stop and save on a signal or the clock
        stopping, clock_due = any_rank([stop.requested, cfg.checkpoint_minutes > 0 and time.time() - last_save >= 60 * cfg.checkpoint_minutes], rt)

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
    return {"iter_num": iter_num, "best_val_loss": best_val_loss, "skipped_steps": skipped, **{f"{k}_loss": v for k, v in losses.items()}}


if __name__ == "__main__":
    cli(main)
