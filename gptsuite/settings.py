"""A training run's settings: TrainConfig, made of the parts that use them, and the one parse
that reads them (defaults, then what a resumed checkpoint recorded, then config files, then flags).

Each part is declared, with its bounds and help, in the module that uses it, and library
functions take only their part: the model's shape (model.GPTConfig), the optimizer and the
schedule (optim), data and batches (batches), the device (runtime), parallelism and compile
(parallel), evaluation and checkpoints (policy), HellaSwag, LoRA, logging (metrics). The user sees
them flat, as nanoGPT's: `--learning_rate=1e-3`, `n_layer = 6` in a config file, `--help` by
section, and checkpoints record the flat keys.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from configurator import ConfigError, apply_values, coerce, config_keys, flatten, part, read_args
from gptsuite.atomic import check_folder
from gptsuite.batches import DataConfig
from gptsuite.checkpoint import load_checkpoint, newest_checkpoint
from gptsuite.dpo import DpoConfig
from gptsuite.errors import UserError
from gptsuite.hellaswag import HellaswagConfig
from gptsuite.loading import check_init_from, checkpoint_file
from gptsuite.lora import LoraConfig
from gptsuite.metrics import LogConfig, require_wandb
from gptsuite.objectives import objective_class
from gptsuite.optim import OptimConfig, ScheduleConfig
from gptsuite.parallel import ParallelConfig
from gptsuite.policy import CheckpointConfig, EvalConfig
from gptsuite.runtime import SystemConfig
from model import GPTConfig

NOT_RECORDED = ("allow_data_change", "overwrite")  # permissions for one run, not settings to resume with
WHERE_IT_IS = ("init_from", "out_dir")  # a resumed run's are 'resume' and the folder the checkpoint is in now, whatever it recorded


@dataclass
class TrainConfig:
    # run
    out_dir: str = "out"  # checkpoints, metrics.jsonl and wandb files go here
    init_from: str = "scratch"  # 'scratch', 'resume' (newest checkpoint in out_dir), a GPT-2 name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2), a Hugging Face folder, or a run folder / .pt checkpoint of ours (its weights, a new run)
    objective: str = ""  # what a training step computes from a batch (gptsuite/objectives.py): next_token or dpo; empty: what the dataset holds (dpo for preference pairs, else next_token)
    overwrite: bool = False  # a new run in an out_dir that holds another deletes that run's checkpoints and metrics first; else it is refused
    allow_data_change: bool = False  # resume on data other than the checkpoint was trained on (its sha256 differs); this run only, not recorded
    model: GPTConfig = part(GPTConfig, hide=("vocab_size",))  # the vocabulary comes from the dataset
    data: DataConfig = part(DataConfig)
    optim: OptimConfig = part(OptimConfig)
    schedule: ScheduleConfig = part(ScheduleConfig)
    lora: LoraConfig = part(LoraConfig)
    dpo: DpoConfig = part(DpoConfig)
    evals: EvalConfig = part(EvalConfig)
    hellaswag: HellaswagConfig = part(HellaswagConfig)
    checkpoint: CheckpointConfig = part(CheckpointConfig)
    log: LogConfig = part(LogConfig)
    system: SystemConfig = part(SystemConfig)
    parallel: ParallelConfig = part(ParallelConfig)

    def record(self) -> dict:
        """The flat settings a checkpoint records (and metrics.jsonl's wandb config)."""
        return {k: v for k, v in flatten(self).items() if k not in NOT_RECORDED}


def check_train_config(cfg: TrainConfig) -> None:
    """What the bounds of the keys cannot say: the output folder, init_from, combinations of parts, wandb."""
    check_folder(cfg.out_dir, "--out_dir")
    check_init_from(cfg.init_from, ("scratch", "resume"), checkpoints=True)
    needs_reference = bool(cfg.objective) and objective_class(cfg.objective).needs_reference  # unset: the data's, checked when it is open
    if cfg.model.arch != "gpt2" and cfg.init_from not in ("scratch", "resume") and not checkpoint_file(cfg.init_from):
        raise UserError(
            f"arch={cfg.model.arch} is for training from scratch; GPT-2's weights ({cfg.init_from}) are arch=gpt2: drop --arch={cfg.model.arch} to fine-tune them"
        )
    if cfg.lora.rank and cfg.init_from == "scratch":
        raise UserError(
            "lora_rank>0 adapts trained weights, but init_from=scratch starts from random ones; pass --init_from=gpt2 (or another GPT-2, a Hugging Face folder or a run folder of ours)"
        )
    if cfg.lora.rank and cfg.optim.optimizer != "adamw":
        raise UserError(
            f"LoRA trains its low-rank factors with AdamW; optimizer={cfg.optim.optimizer} orthogonalizes whole weight matrices: drop --optimizer={cfg.optim.optimizer}"
        )
    s = cfg.schedule
    if s.decay_lr and s.min_lr == 0 and s.max_iters > s.lr_decay_iters and not cfg.evals.eval_only:
        raise UserError(
            f"max_iters={s.max_iters} goes past lr_decay_iters={s.lr_decay_iters}, where the learning rate reaches min_lr=0, so those iterations would change nothing; "
            f"pass --lr_decay_iters={s.max_iters} too (or a --min_lr above 0)"
        )
    if cfg.parallel.parallel == "fsdp":
        refusals = [
            (
                cfg.optim.optimizer != "adamw",
                f"optimizer={cfg.optim.optimizer}: torch.optim.Muon orthogonalizes whole matrices and does not take FSDP's shards; use --optimizer=adamw or --parallel=ddp",
            ),
            (cfg.lora.rank > 0, "LoRA adapters are small enough for DDP: use --parallel=ddp with --lora_rank"),
            (
                cfg.hellaswag.interval > 0,
                "HellaSwag scoring during an FSDP run is not supported; set --hellaswag_interval=0 and score checkpoints with eval.py --task=hellaswag",
            ),
            (
                needs_reference,
                f"objective={cfg.objective} keeps a reference model, which is not sharded here; use --parallel=ddp (with --lora_rank for large models)",
            ),
        ]
        for refused, why in refusals:
            if refused:
                raise UserError(f"parallel=fsdp: {why}")
    if cfg.log.wandb_log:
        require_wandb()  # fail now, not after loading the data and the model


@dataclass
class Resumed:
    """The checkpoint a resumed run continues, read once, and what this run set on top of it."""

    path: Path
    ckpt: dict
    set_now: dict  # {key: value} that config files and flags set now


def recorded_settings(ckpt: dict) -> dict:
    """The settings a checkpoint recorded, as flat keys of TrainConfig: its config, and the shape
    its model has (model_args is what the weights are). A key we do not know, or of another
    type (a nanoGPT checkpoint's), where the run executed and where it is now are left out."""
    keys = config_keys(TrainConfig())
    shape = {k: v for k, v in ckpt["model_args"].items() if k in GPTConfig.__dataclass_fields__ and k in keys and k not in ("block_size", "dropout")}
    recorded = {}
    for key, value in ((ckpt.get("config") or {}) | shape).items():
        if key in keys and key not in (*SystemConfig.MACHINE, *NOT_RECORDED, *WHERE_IT_IS):
            try:
                recorded[key] = coerce(key, value, keys[key].default, keys[key].hint)
            except ConfigError:
                pass
    return recorded


def from_weights(set_now: dict) -> dict:
    """A new run from a checkpoint of ours takes its architecture and context (block_size) from it
    unless set now; an architecture set now that is not the checkpoint's is refused (the weights
    are what they are). (GPT-2's weights are arch=gpt2 with a context of 1024: the defaults.)"""
    path = checkpoint_file(set_now.get("init_from", ""))
    if path is None:
        return {}
    args = load_checkpoint(path, mmap=True)["model_args"]  # its metadata: a .pt mapped, a sharded folder's checkpoint.json
    if set_now.get("arch", args["arch"]) != args["arch"]:
        raise UserError(
            f"init_from={set_now['init_from']} is an arch={args['arch']} model, and its weights cannot become arch={set_now['arch']}; drop --arch (a new arch trains from scratch)"
        )
    return {"arch": args["arch"], "block_size": args["block_size"]}


def read_settings(argv: list[str]) -> tuple[TrainConfig, Resumed | None]:
    """The run's settings from the command line: defaults, then (init_from='resume') what the
    newest checkpoint in out_dir recorded, then config files, then flags. Each config file runs
    once (it sees the defaults and the arguments before it, not the checkpoint's values) and the
    checkpoint is read once; Resumed carries it to the start of the run."""
    defaults = TrainConfig()
    set_now = read_args(defaults, argv)
    if set_now.get("init_from") != "resume":
        return apply_values(defaults, from_weights(set_now) | set_now), None
    out_dir = set_now.get("out_dir", defaults.out_dir)
    path = newest_checkpoint(out_dir)
    if path is None:
        raise UserError(f"no checkpoint in {out_dir} to resume; pass the --out_dir of a run that saved one, or --init_from=scratch to start a new run there")
    ckpt = load_checkpoint(path, mmap=path.suffix == ".pt")  # tensors mapped, read when the model is built
    recorded = recorded_settings(ckpt)
    cfg = apply_values(defaults, recorded | set_now)
    changed = [f"{k}={v!r} (was {recorded[k]!r})" for k, v in set_now.items() if k in recorded and recorded[k] != v]
    if changed and os.environ.get("RANK", "0") == "0":
        print(f"resuming {path} with its settings, except: {', '.join(changed)}")
    return cfg, Resumed(path, ckpt, set_now)
