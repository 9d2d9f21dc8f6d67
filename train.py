"""
Train a GPT on a prepared dataset: from scratch, resumed from out_dir, or fine-tuned from
OpenAI's GPT-2 weights.

One device (cuda, mps or cpu, whichever is there; or --device=...):
    python train.py config/train_shakespeare_char.py
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --max_iters=2000

Several GPUs on one node, with DDP through torchrun:
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py --dataset=fineweb_edu --hellaswag_interval=250

Reproducing GPT-2 (docs/scaling.md): prepare openwebtext or fineweb_edu first; with
--hellaswag_interval=N the run also scores HellaSwag every N steps into metrics.jsonl (and wandb).

Two nodes of 8 GPUs (run on each node; node 0 at 10.0.0.1; 48 micro-batches a step, a multiple of the 16 processes):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py --gradient_accumulation_steps=48
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py --gradient_accumulation_steps=48
(If your cluster has no Infiniband, prepend NCCL_IB_DISABLE=1.)
gradient_accumulation_steps is the global count: each of the N processes does 1/N of it.

On preference pairs (prepare.py preferences) a run trains with DPO against the weights it starts
from, frozen (the data says so; docs/training.md#preference-tuning-dpo):
    python train.py config/finetune_dpo.py --init_from=out-chat --dpo_beta=0.1 --dpo_sft_weight=1.0

From scratch with the modern preset (RoPE, RMSNorm, QK-norm, ReLU², Muon; docs/training.md):
    python train.py config/train_shakespeare_char_modern_cpu.py

Fine-tune GPT-2 (weights from the Hugging Face hub, or --init_from=DIR with config.json and
model.safetensors) on a dataset tokenized with GPT-2 BPE:
    python prepare.py shakespeare && python train.py config/finetune_shakespeare.py

Tune GPT-2 on conversations (prepare.py chat) or on a templated dataset (pubmed): the loss counts
only the answers (--loss_on=response, the default for data with a loss mask; --loss_on=all counts
every token), each row starting at a conversation (gptsuite/masks.py):
    python prepare.py chat --input=conversations.jsonl && python train.py config/finetune_chat.py

Resume a run from the newest complete checkpoint in out_dir: it takes the settings the checkpoint
recorded (dataset, model, batch, schedule, dtype, ...; not device or backend), flags given now
override them (the changes are printed), and it continues exactly as if it had not stopped:
    python train.py --init_from=resume --out_dir=out-shakespeare-char
    python train.py --init_from=resume --out_dir=out-shakespeare-char --max_iters=10000
A new run (not a resume) into an out_dir that holds another run is refused; --overwrite=True
deletes that run's checkpoints and metrics first.

Preemption: SIGTERM or Ctrl-C finishes the current step, saves a checkpoint and exits 0 (under
torchrun every rank stops at the same step; torchrun gives its workers 30 s, --shutdown_timeout,
before SIGKILL). A second Ctrl-C stops at once. Checkpoints are written atomically, so a kill -9
at any moment leaves the previous one whole. A step whose loss or gradient norm is not finite is
skipped; more than max_bad_steps in a row stop the run with the last good state saved.

Precision: --dtype=auto is bfloat16 on GPUs that compute it natively (compute capability 8.0+),
else float16 with a gradient scaler (T4, V100); float32 on cpu and mps (--dtype=bfloat16 works on
cpu too). --compile is on by default on CUDA.
On a CPU the thread count follows the cores other processes leave free; --threads=N fixes it.

Settings: TrainConfig (gptsuite/settings.py), made of the parts that use them; `python train.py
--help` lists every key by section with what it does. Override them with config files and
--key=value. What a step computes from a batch is the objective (--objective, gptsuite/objectives.py).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from configurator import print_config
from gptsuite import hellaswag
from gptsuite.atomic import remove_stale_temps
from gptsuite.batches import Batches, check_model_fits_data, open_training_data
from gptsuite.checkpointer import Checkpointer, NanGuard, check_shared_out_dir
from gptsuite.errors import UserError, cli
from gptsuite.flops import model_flops_per_token
from gptsuite.lora import trainable_counts
from gptsuite.memory import memory_line
from gptsuite.metrics import Logger, TrainLog
from gptsuite.objectives import MicroBatches, Objective, Reference, Stepper, estimate_loss, objective_for
from gptsuite.optim import get_lr, set_lr
from gptsuite.parallel import check_parallel, parallelize
from gptsuite.policy import CheckpointPolicy
from gptsuite.runtime import CpuThreads, Runtime, StopSignal, setup_runtime, teardown_runtime
from gptsuite.settings import Resumed, TrainConfig, check_train_config, read_settings
from gptsuite.start import claim_out_dir, reference_weights, start_run
from model import GPT


def main(argv: list[str]) -> None:
    cfg, resumed = read_settings(argv)  # a resumed run takes its checkpoint's settings, with argv's on top
    check_train_config(cfg)
    rt = setup_runtime(cfg.system.device, cfg.system.dtype, cfg.system.seed, cfg.system.backend)
    try:
        with StopSignal() as stop:
            train(cfg, rt, stop, resumed)
    except BaseException:
        teardown_runtime(rt)
        raise
    teardown_runtime(rt, finished=True)


@dataclass(frozen=True)
class Run:
    """What the loop works with, built by setup() in the one order that works."""

    model: torch.nn.Module  # what the step runs (compiled, DDP, FSDP)
    raw_model: GPT  # the GPT under it: what is saved and scored on HellaSwag
    optimizer: torch.optim.Optimizer
    objective: Objective
    stepper: Stepper
    policy: CheckpointPolicy
    saver: Checkpointer
    guard: NanGuard
    log: TrainLog
    hellaswag: list | None  # HellaSwag's items, if the run scores them
    threads: CpuThreads
    start_iter: int


def setup(cfg: TrainConfig, rt: Runtime, resumed: Resumed | None) -> Run:
    """Data, model (new, trained weights, or the checkpoint resumed), objective, optimizer and
    the rest, in order: the reference model from the starting weights, the model placed on the
    ranks (sharded under FSDP) before the optimizer is built from it, the RNG state restored last."""
    check_parallel(cfg.parallel, rt)
    accum_steps = cfg.data.accum_steps(rt.world_size)
    check_shared_out_dir(cfg.out_dir, resumed.path if resumed else None, rt)  # every rank writes and resumes there
    claim_out_dir(cfg.out_dir, resumed is not None, cfg.overwrite, rt.master)
    data = open_training_data(cfg.data, cfg.model.block_size)
    items = hellaswag.load_for_training(cfg.hellaswag, data.tokenizer, data.dir)  # None unless hellaswag_interval
    objective_cls = objective_for(cfg.objective, data.meta.get("objective"), data.dir)  # --objective, or what the data holds
    if objective_cls.needs_reference and cfg.parallel.parallel == "fsdp":
        raise UserError(
            f"parallel=fsdp: objective={objective_cls.name} keeps a reference model, which is not sharded here; use --parallel=ddp (with --lora_rank for large models)"
        )
    start = start_run(cfg, resumed, data, rt, keeps_reference=objective_cls.needs_reference)
    check_model_fits_data(start.model, cfg.model.block_size, data)
    raw_model = start.model.to(rt.device)
    reference = None
    if objective_cls.needs_reference:  # the starting weights, frozen: LoRA's base (adapters off), a copy, or a resumed run's start loaded again
        frozen = reference_weights(start, cfg).to(rt.device) if resumed is not None and start.lora is None else raw_model
        reference = Reference(frozen, lora=start.lora is not None, copy=frozen is raw_model)
    placed = parallelize(raw_model, rt, cfg.parallel)
    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    optimizer = placed.build_optimizer(cfg.optim, rt.device_type)
    start.restore_optimizer(raw_model, optimizer, scaler)

    batches = Batches(data, cfg.data, cfg.model.block_size, cfg.system.seed, rt)
    objective = objective_cls(batches, reference, *([getattr(cfg, objective_cls.config_part)] if objective_cls.config_part else []))
    stepper = Stepper(placed.model, objective, optimizer, scaler, accum_steps, cfg.optim.grad_clip, rt)
    policy = CheckpointPolicy(
        cfg.checkpoint, cfg.evals, cfg.schedule.max_iters, cfg.hellaswag.interval, start.iter_num, start.best_val_loss, start.last_eval_iter
    )
    saver = Checkpointer(raw_model, optimizer, scaler, cfg, data, batches.sampler_state(), rt, start.lora, start.reference)
    rows = objective_cls.rows_per_example  # a batch of batch_size examples is this many rows each (DPO: two answers)
    tokens = cfg.data.gradient_accumulation_steps * cfg.data.batch_size * rows * cfg.model.block_size
    flops = model_flops_per_token(raw_model, cfg.model.block_size) * tokens / rt.world_size  # per rank
    logger = Logger(cfg.out_dir, cfg.record(), cfg.log.wandb_log, cfg.log.wandb_project, cfg.log.wandb_run_name, enabled=rt.master)
    log = TrainLog(logger, cfg.log.log_interval, tokens, flops, rt.peak_flops(), rt.master)
    if rt.master:
        describe_run(
            cfg,
            rt,
            raw_model,
            start.lora is not None,
            f"{tokens:,} tokens per iteration ({rt.world_size} x {accum_steps} x {cfg.data.batch_size}{f' x {rows}' if rows > 1 else ''} x {cfg.model.block_size})",
        )
        if summary := objective.summary():
            print(summary)
        for p in remove_stale_temps(Path(cfg.out_dir)):
            print(f"removed {p}, a partial checkpoint of a run that was killed while writing it")
        if start.iter_num >= cfg.schedule.max_iters and not cfg.evals.eval_only:
            print(f"the run is at iter {start.iter_num} and max_iters={cfg.schedule.max_iters}: nothing to train; raise --max_iters to go on")
    threads = CpuThreads(cfg.system.threads, adaptive=rt.device_type == "cpu")  # fewer threads while other processes need the cores
    start.restore_rng(cfg.system.seed, rt)  # last: nothing above may draw from the generators after it
    guard = NanGuard(cfg.checkpoint.max_bad_steps, saver, policy.progress)
    return Run(placed.model, raw_model, optimizer, objective, stepper, policy, saver, guard, log, items, threads, start.iter_num)


def train(cfg: TrainConfig, rt: Runtime, stop: StopSignal | None = None, resumed: Resumed | None = None) -> dict:
    if rt.master:
        print_config(cfg)
    stop = stop or StopSignal()  # not installed: nothing asks to stop
    run = setup(cfg, rt, resumed)
    policy, log, evals = run.policy, run.log, cfg.evals

    iter_num, losses = run.start_iter, {}
    micro = MicroBatches(run.objective.train_batches(iter_num))
    stopping = clock_due = False
    while True:
        lr = get_lr(iter_num, cfg.schedule, cfg.optim.learning_rate)
        set_lr(run.optimizer, lr)

        # evaluate (not when stopping: a preempted machine has seconds left), then save if the policy says so
        evaluated = improved = False
        if evals.eval_only or (policy.eval_due(iter_num) and not stopping):
            with log.paused():  # ms/iter counts training steps only
                losses = estimate_loss(run.model, run.objective, evals.eval_iters, rt)
            log.eval(iter_num, losses, lr)
            evaluated, improved = True, policy.record_eval(iter_num, losses["val"])
        if run.hellaswag is not None and (evals.eval_only or policy.hellaswag_due(iter_num)) and not stopping:
            with log.paused():  # the ranks share the items; the plain model: no DDP collectives per forward
                log.hellaswag(iter_num, hellaswag.evaluate_hellaswag(run.raw_model, run.hellaswag, rt, cfg.hellaswag.items))
        if policy.save_due(iter_num, evaluated, improved, stopping, clock_due, bad_run=run.guard.bad_steps > 0):
            with log.paused():  # nor does a save
                run.saver.save(iter_num, policy.progress(), best=improved)
            policy.saved()
        if stopping:
            if rt.master:
                again = f"train.py --init_from=resume --out_dir={cfg.out_dir}"
                again = f"your torchrun command with {again}" if rt.distributed else f"python {again}"
                print(f"{stop.name} received: stopped at iter {iter_num}; continue with: {again}", flush=True)
            break
        if evals.eval_only or iter_num >= cfg.schedule.max_iters:
            break

        # one optimizer step; every rank takes the same branches: the step's one read of the device also agrees on a stop signal and the clock
        step = run.guard.step(iter_num, lambda: run.stepper.step(micro, lambda: [stop.requested, policy.clock_due()]))
        stopping, clock_due = step.flags
        log.step(iter_num, step.loss, step.stepped, step.metrics, run.guard.bad_steps)
        iter_num += 1
        run.threads.adjust()
        log.maybe_log(iter_num, lr)
    log.logger.close()
    return {
        "iter_num": iter_num,
        "best_val_loss": policy.best_val_loss,
        "skipped_steps": log.skipped,
        **{f"{k}_loss" if k in ("train", "val") else k: v for k, v in losses.items()},
    }


def describe_run(cfg: TrainConfig, rt: Runtime, model: GPT, lora: bool, tokens: str) -> None:
    """The run's size in one line; on GPUs (and under torchrun) the memory estimate per GPU (per
    process on CPUs: gptsuite/memory.py); where wandb logs the run, if it does."""
    trained, total = trainable_counts(model)
    adapters = f" (LoRA rank {cfg.lora.rank}: {trained:,} of {total:,} train, {100 * trained / total:.2f}%)" if lora else ""
    print(f"{model.get_num_params() / 1e6:.2f}M parameters{adapters}, {tokens}, device {rt.device}, {rt.dtype}")
    if rt.device_type == "cuda" or rt.distributed:  # what renting GPUs is about
        estimate = {"optimizer": cfg.optim.optimizer, "activation_checkpointing": cfg.parallel.activation_checkpointing, "trainable": trained if lora else None}
        estimate |= {"lora_dropout": cfg.lora.dropout} if lora else {}
        print(memory_line(model.config, rt.world_size, rt.dtype, cfg.data.batch_size, cfg.model.block_size, rt.device_type, **estimate))
    if cfg.log.wandb_log:  # a config file's project and name stay when its dataset is overridden: say where the run goes
        print(
            f"wandb: project {cfg.log.wandb_project!r}, run {cfg.log.wandb_run_name!r}, on {cfg.data.data_dir or cfg.data.dataset}; --wandb_project and --wandb_run_name change them"
        )


if __name__ == "__main__":
    cli(main)
