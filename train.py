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

Two nodes of 8 GPUs (run on each node; node 0 at 10.0.0.1):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py config/train_gpt2.py
(If your cluster has no Infiniband, prepend NCCL_IB_DISABLE=1.)
gradient_accumulation_steps is the global count: each of the N processes does 1/N of it.

From scratch with the modern preset (RoPE, RMSNorm, QK-norm, ReLU², Muon; docs/training.md):
    python train.py config/train_shakespeare_char_modern_cpu.py

Fine-tune GPT-2 (weights from the Hugging Face hub, or --init_from=DIR with config.json and
model.safetensors) on a dataset tokenized with GPT-2 BPE:
    python prepare.py shakespeare && python train.py config/finetune_shakespeare.py

Resume a run from the newest complete checkpoint in out_dir: it takes the settings the checkpoint
recorded (dataset, model, batch, schedule, dtype, ...; not device or backend), flags given now
override them (the changes are printed), and it continues exactly as if it had not stopped:
    python train.py --init_from=resume --out_dir=out-shakespeare-char
    python train.py --init_from=resume --out_dir=out-shakespeare-char --max_iters=10000

Preemption: SIGTERM or Ctrl-C finishes the current step, saves a checkpoint and exits 0 (under
torchrun every rank stops at the same step; torchrun gives its workers 30 s, --shutdown_timeout,
before SIGKILL). A second Ctrl-C stops at once. Checkpoints are written atomically, so a kill -9
at any moment leaves the previous one whole. A step whose loss or gradient norm is not finite is
skipped; more than max_bad_steps in a row stop the run with the last good state saved.

Precision: --dtype=auto is bfloat16 on GPUs that compute it natively (compute capability 8.0+),
else float16 with a gradient scaler (T4, V100); float32 on cpu and mps (--dtype=bfloat16 works on
cpu too). --compile is on by default on CUDA.
On a CPU the thread count follows the cores other processes leave free; --threads=N fixes it.

Settings: the TrainConfig fields (gptsuite/training.py); `python train.py --help` lists them with
what each does. Override them with config files and --key=value.
"""

from dataclasses import asdict
from pathlib import Path

import torch

from configurator import parse_config, print_config
from gptsuite import hellaswag as hs
from gptsuite.atomic import remove_stale_temps
from gptsuite.errors import UserError, cli
from gptsuite.lora import trainable_counts
from gptsuite.memory import memory_line
from gptsuite.metrics import Logger
from gptsuite.optim import build_optimizer, set_lr
from gptsuite.policy import CheckpointPolicy
from gptsuite.runtime import CpuThreads, Runtime, StopSignal, setup_runtime, teardown_runtime
from gptsuite.sharding import check_parallel, parallelize
from gptsuite.train_state import Checkpointer, resume_config, start_run
from gptsuite.training import (
    TrainConfig,
    TrainLog,
    check_model_fits_data,
    check_train_config,
    estimate_loss,
    eval_batches,
    get_lr,
    open_training_data,
    train_batches,
    train_step,
)


def main(argv: list[str]) -> None:
    cfg = resume_config(parse_config(TrainConfig(), argv), argv)  # a resumed run takes its recorded settings
    check_train_config(cfg)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, cfg.backend)
    try:
        with StopSignal() as stop:
            train(cfg, rt, stop)
    except BaseException:
        teardown_runtime(rt)
        raise
    teardown_runtime(rt, finished=True)


def train(cfg: TrainConfig, rt: Runtime, stop: StopSignal | None = None) -> dict:
    if rt.master:
        print_config(cfg)
    if cfg.gradient_accumulation_steps % rt.world_size:
        raise UserError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} is not divisible by the {rt.world_size} DDP processes; make it a multiple of {rt.world_size}"
        )
    check_parallel(cfg, rt)
    accum_steps = cfg.gradient_accumulation_steps // rt.world_size
    stop = stop or StopSignal()  # not installed: nothing asks to stop

    # data and model: new, GPT-2's weights, or the checkpoint to resume
    data = open_training_data(cfg)
    hellaswag = hs.load_for_training(cfg, data.tokenizer, data.dir)  # None unless hellaswag_interval
    start = start_run(cfg, data, rt)
    check_model_fits_data(start.model, cfg, data)
    raw_model = start.model.to(rt.device)  # checkpoints are saved from raw_model: no compile or DDP wrappers in its keys
    model = parallelize(raw_model, rt, cfg.parallel, cfg.compile, cfg.activation_checkpointing)  # fsdp: raw_model sharded in place
    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == "float16")
    optimizer = build_optimizer(raw_model, cfg, rt.device_type)  # over the shards under FSDP
    start.restore_optimizer(raw_model, optimizer, scaler)

    threads = CpuThreads(cfg.threads, adaptive=rt.device_type == "cpu")  # fewer threads while other processes need the cores
    policy = CheckpointPolicy(cfg, start.iter_num, start.best_val_loss, start.last_eval_iter)
    saver = Checkpointer(raw_model, optimizer, scaler, cfg, data, rt, start.lora)
    log = TrainLog(Logger(cfg.out_dir, asdict(cfg), cfg.wandb_log, cfg.wandb_project, cfg.wandb_run_name, enabled=rt.master), cfg, rt, raw_model)
    if rt.master:
        describe_run(
            cfg,
            rt,
            raw_model,
            start.lora is not None,
            f"{log.tokens_per_iter:,} tokens per iteration ({rt.world_size} x {accum_steps} x {cfg.batch_size} x {cfg.block_size})",
        )
        for p in remove_stale_temps(Path(cfg.out_dir)):
            print(f"removed {p}, a partial checkpoint of a run that was killed while writing it")
        if start.iter_num >= cfg.max_iters and not cfg.eval_only:
            print(f"the run is at iter {start.iter_num} and max_iters={cfg.max_iters}: nothing to train; raise --max_iters to go on")
    start.restore_rng(cfg, rt)  # last: nothing above may draw from the generators

    iter_num, losses = start.iter_num, {}
    batches, evals = train_batches(data, cfg, rt, iter_num), eval_batches(data, cfg, rt)
    batch = next(batches)
    stopping = clock_due = False
    while True:
        lr = get_lr(iter_num, cfg)
        set_lr(optimizer, lr)

        # evaluate (not when stopping: a preempted machine has seconds left), then save if the policy says so
        evaluated = improved = False
        if cfg.eval_only or (policy.eval_due(iter_num) and not stopping):
            with log.paused():  # ms/iter counts training steps only
                losses = estimate_loss(model, evals, cfg.eval_iters, rt)
            log.eval(iter_num, losses, lr)
            evaluated, improved = True, policy.record_eval(iter_num, losses["val"])
        if hellaswag is not None and (cfg.eval_only or policy.hellaswag_due(iter_num)) and not stopping:
            with log.paused():  # the ranks share the items; the plain model: no DDP collectives per forward
                log.hellaswag(iter_num, hs.evaluate_hellaswag(raw_model, hellaswag, rt, cfg.hellaswag_items))
        if policy.save_due(iter_num, evaluated, improved, stopping, clock_due):
            saver.save(iter_num, policy, best=improved)
        if stopping:
            if rt.master:
                again = f"train.py --init_from=resume --out_dir={cfg.out_dir}"
                again = f"your torchrun command with {again}" if rt.ddp else f"python {again}"
                print(f"{stop.name} received: stopped at iter {iter_num}; continue with: {again}", flush=True)
            break
        if cfg.eval_only or iter_num >= cfg.max_iters:
            break

        if policy.bad_steps == 0:  # what the NaN guard saves if this step starts a run of bad ones
            policy.good = saver.snapshot(iter_num)
        # every rank must take the same branches: the step's one read of the device also agrees on a stop signal and the clock
        loss, stepped, (stopping, clock_due), batch = train_step(
            model, optimizer, scaler, batch, batches, accum_steps, cfg.grad_clip, rt, lambda: [stop.requested, policy.clock_due()]
        )
        too_many_bad = policy.record_step(stepped)
        log.step(iter_num, loss, stepped, policy.bad_steps)
        if too_many_bad:
            good = policy.good
            saver.save(good["iter_num"], policy, rng=good["rng"])
            raise UserError(
                f"the loss or gradient norm was not finite for {policy.bad_steps} steps in a row (iters {good['iter_num']}-{iter_num}, more than max_bad_steps={cfg.max_bad_steps}); "
                f"{cfg.out_dir} holds the state from before (iter {good['iter_num']}): lower --learning_rate or set --grad_clip, then --init_from=resume"
            )
        iter_num += 1
        threads.adjust()
        log.maybe_log(iter_num, lr)
    log.logger.close()
    return {"iter_num": iter_num, "best_val_loss": policy.best_val_loss, "skipped_steps": log.skipped, **{f"{k}_loss": v for k, v in losses.items()}}


def describe_run(cfg: TrainConfig, rt: Runtime, model, lora: bool, tokens: str) -> None:
    """The run's size in one line, and on GPUs the memory estimate per GPU (gptsuite/memory.py)."""
    trained, total = trainable_counts(model)
    adapters = f" (LoRA rank {cfg.lora_rank}: {trained:,} of {total:,} train, {100 * trained / total:.2f}%)" if lora else ""
    print(f"{model.get_num_params() / 1e6:.2f}M parameters{adapters}, {tokens}, device {rt.device}, {rt.dtype}")
    if rt.device_type == "cuda" or rt.ddp:  # what renting GPUs is about
        estimate = {"optimizer": cfg.optimizer, "activation_checkpointing": cfg.activation_checkpointing, "trainable": trained if lora else None}
        print(memory_line(model.config, rt.world_size, rt.dtype, cfg.batch_size, cfg.block_size, **estimate))


if __name__ == "__main__":
    cli(main)
