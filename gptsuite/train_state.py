"""What a training checkpoint holds, and how a run starts from one.

A run starts from a new model, from GPT-2's weights, or (init_from='resume') from the newest
checkpoint in out_dir: its weights, optimizer and loss-scaler state, iteration, best val loss,
every rank's RNG state and the sampler that decides the batches, so that it continues exactly
as if it had not stopped. `Checkpointer.save` writes all of that; `start_run` reads it back.
"""

import contextlib
import dataclasses
import os
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from configurator import ConfigError, coerce, parse_config
from gptsuite.checkpoint import (
    CKPT_NAME,
    load_checkpoint,
    load_sharded_optimizer,
    model_from_checkpoint,
    newest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_checkpoint,
    write_sharded_checkpoint,
)
from gptsuite.errors import UserError
from gptsuite.loading import checkpoint_file, load_base, lora_model, new_model
from gptsuite.lora import LoraSettings, adapt, adapter_state, file_sha256, freeze_base_dtype
from gptsuite.optim import build_optimizer
from gptsuite.runtime import Runtime, seed_everything
from gptsuite.sharding import fsdp_module
from gptsuite.training import TrainConfig, TrainingData, sampler_state
from model import GPT

MODEL_KEYS = ("n_layer", "n_head", "n_embd", "bias", "arch")  # the shape a resumed checkpoint must agree with
MACHINE_KEYS = ("device", "backend", "threads")  # where a run executes, not what it is: never taken from a checkpoint


def resume_config(cfg: TrainConfig, argv: list[str]) -> TrainConfig:
    """With init_from='resume' the run's settings are the ones its newest checkpoint recorded, with
    what argv (config files and flags) sets now on top; what differs is printed once. Any other
    init_from, or no checkpoint yet (start_run reports that), keeps cfg."""
    path = newest_checkpoint(cfg.out_dir) if cfg.init_from == "resume" else None
    if path is None:
        return cfg
    recorded = load_checkpoint(path, mmap=True).get("config") or {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)
    base = {}
    for key, value in recorded.items():
        if key in fields and key not in MACHINE_KEYS:
            with contextlib.suppress(ConfigError):  # a key of another type (a nanoGPT checkpoint's) keeps our default
                base[key] = coerce(key, value, getattr(TrainConfig, key, None), hints.get(key))
    base |= {"init_from": "resume", "out_dir": cfg.out_dir}  # where the checkpoint is now, whatever it recorded
    new = parse_config(dataclasses.replace(TrainConfig(), **base), argv)
    changed = [f"{k}={getattr(new, k)!r} (was {v!r})" for k, v in base.items() if getattr(new, k) != v and k not in ("init_from", "out_dir")]
    if changed and os.environ.get("RANK", "0") == "0":
        print(f"resuming {path} with its settings, except: {', '.join(changed)}")
    return new


@dataclass
class Start:
    """Where a run starts: the model, and the checkpoint it resumes (None for a new run)."""

    model: GPT
    ckpt: dict | None = None
    path: Path | None = None
    lora: dict | None = None  # a LoRA run's settings and base reference (what its checkpoints record)

    @property
    def iter_num(self) -> int:
        return self.ckpt["iter_num"] if self.ckpt else 0

    @property
    def best_val_loss(self) -> float:
        return float(self.ckpt["best_val_loss"]) if self.ckpt else 1e9

    @property
    def last_eval_iter(self) -> int:
        return self.ckpt.get("last_eval_iter", self.iter_num) if self.ckpt else -1  # nanoGPT saves right after an eval

    def restore_optimizer(self, model: GPT, optimizer, scaler) -> None:
        """The optimizer (and loss-scaler) state; from a sharded checkpoint through DCP, onto the
        model as it is now (sharded or not, on any number of ranks)."""
        if self.ckpt is None:
            return
        try:
            if self.ckpt.get("sharded"):
                load_sharded_optimizer(self.path, model, optimizer)
            else:
                optimizer.load_state_dict(self.ckpt["optimizer"])
            if self.ckpt.get("scaler"):
                scaler.load_state_dict(self.ckpt["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(
                f"{self.path} has an optimizer or loss-scaler state that does not fit its model ({e}); the file is damaged: resume from another checkpoint or start a new run"
            ) from None
        self.ckpt = {k: v for k, v in self.ckpt.items() if k not in ("model", "optimizer")}  # free the memory

    def restore_rng(self, cfg: TrainConfig, rt: Runtime) -> None:
        """Each rank takes back its own RNG state (dropout draws from it), so a resumed run continues
        exactly; a checkpoint from another number of ranks can only be reseeded. Call it last:
        nothing after it may draw from the generators before training does."""
        if self.ckpt is None:
            return
        states = self.ckpt.get("rng")
        if states and len(states) == rt.world_size:
            set_rng_state(states[rt.rank], rt.device)
            return
        if rt.master:
            print(
                f"note: the checkpoint holds RNG states for {len(states or [])} process(es), this run has {rt.world_size}: dropout is reseeded, so the run continues but not bit for bit"
            )
        seed_everything(cfg.seed + rt.rank + 1_000_003 * self.iter_num)


def start_run(cfg: TrainConfig, data: TrainingData, rt: Runtime) -> Start:
    """The model init_from asks for (with LoRA adapters if lora_rank > 0), and the checkpoint it resumes."""
    if cfg.init_from == "scratch":
        return Start(new_model(cfg, data.tokenizer))
    if cfg.init_from == "resume":
        start = resume_run(cfg, data, rt)
    else:
        start = fine_tune_run(cfg, data)
    if start.lora and rt.dtype in ("bfloat16", "float16"):
        freeze_base_dtype(start.model, getattr(torch, rt.dtype))  # autocast computes in it anyway; half the memory
    return start


def resume_run(cfg: TrainConfig, data: TrainingData, rt: Runtime) -> Start:
    path = newest_checkpoint(cfg.out_dir) or Path(cfg.out_dir) / CKPT_NAME
    ckpt = load_checkpoint(path, map_location=rt.device)
    check_resumable(ckpt, cfg, data, path)
    if rt.master:
        if changed_data(ckpt, data):  # only with allow_data_change: check_resumable refuses it otherwise
            now, then = data_record(data), ckpt["data"]
            print(f"note: allow_data_change=True: {path} was trained on {describe_data(then, now)}; it goes on with {describe_data(now, then)}")
        print(f"resuming from {path} at iter {ckpt['iter_num']}")
        changed = [f"{k}={v} (was {ckpt['sampler'][k]})" for k, v in sampler_state(cfg, data.train_tokens).items() if ckpt.get("sampler", {}).get(k, v) != v]
        if changed:
            print(f"note: {', '.join(changed)}: the batches from here on differ from those of an uninterrupted run")
    if "lora" in ckpt:
        ckpt["lora"] = ckpt["lora"] | {"dropout": cfg.lora_dropout}  # the one adapter setting a resumed run may change
        return Start(lora_model(ckpt, str(path), dropout=cfg.dropout, merged=False), ckpt, path, lora=ckpt["lora"])
    return Start(model_from_checkpoint(ckpt, dropout=cfg.dropout), ckpt, path)


def fine_tune_run(cfg: TrainConfig, data: TrainingData) -> Start:
    """A new run from trained weights: GPT-2's, or a checkpoint of ours; LoRA adapters on them if asked."""
    if data.tokenizer["kind"] != "gpt2" and not checkpoint_file(cfg.init_from):
        raise UserError(
            f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2 BPE, but {data.dir} uses the {data.tokenizer['kind']} tokenizer; prepare one with GPT-2 BPE (e.g. python prepare.py shakespeare)"
        )
    base = load_base(cfg.init_from, dropout=cfg.dropout, block_size=cfg.block_size)
    if base.tokenizer != data.tokenizer:
        theirs = "GPT-2 BPE" if base.tokenizer["kind"] == "gpt2" else f"a {base.tokenizer['kind']} tokenizer of {base.tokenizer['vocab_size']} ids"
        raise UserError(
            f"init_from={cfg.init_from} was trained with {theirs}, but {data.dir} uses the {data.tokenizer['kind']} tokenizer of {data.tokenizer['vocab_size']} ids; "
            f"prepare a dataset with its tokenizer{' (e.g. python prepare.py shakespeare)' if base.tokenizer['kind'] == 'gpt2' else ''}"
        )
    if not cfg.lora_rank:
        return Start(base.model)
    lora = LoraSettings.from_config(cfg)
    model = adapt(base.model, lora)
    reference = {"init_from": cfg.init_from, "weights": str(base.weights.resolve()), "sha256": file_sha256(base.weights)}
    return Start(model, lora=lora.record() | {"base": reference})


def check_resumable(ckpt: dict, cfg: TrainConfig, data: TrainingData, path: Path) -> None:
    """Refuse to continue a checkpoint on another tokenizer, or with a model shape that this run
    sets (in a config file or on the command line) to something else, naming both sides."""
    bad = [k for k, kinds in (("optimizer", dict), ("iter_num", int), ("best_val_loss", (float, int, torch.Tensor))) if not isinstance(ckpt.get(k), kinds)]
    if bad or ckpt["iter_num"] < 0:
        raise UserError(
            f"{path} cannot be resumed: its {', '.join(bad) or 'iter_num'} is missing or invalid; the file is damaged or holds weights only: resume from another checkpoint or start a new run"
        )
    ours = data.tokenizer
    theirs = ckpt.get("tokenizer", ours)  # nanoGPT checkpoints record none
    if theirs != ours:
        mine = f"{ours['kind']} tokenizer of {ours['vocab_size']} ids"
        if (theirs.get("kind"), theirs.get("vocab_size")) == (ours["kind"], ours["vocab_size"]):
            mine += " but another vocabulary"
        raise UserError(
            f"{path} was trained with a {theirs.get('kind')} tokenizer of {theirs.get('vocab_size')} ids, but {data.dir} uses a {mine}; resume on the dataset it was trained on"
        )
    if changed_data(ckpt, data) and not cfg.allow_data_change:
        raise UserError(
            f"{path} was trained on {describe_data(ckpt['data'], data_record(data))}, but this run's data is {describe_data(data_record(data), ckpt['data'])}; "
            "resume on the data it was trained on, or pass --allow_data_change=True to go on with this data"
        )
    # a shape key set now: one that differs from what the run recorded (from our defaults, if it recorded none)
    args, recorded, defaults = {"arch": "gpt2"} | ckpt["model_args"], ckpt.get("config") or {}, TrainConfig()
    check_lora_resumable(ckpt, cfg, path)
    if recorded.get("optimizer", "adamw") != cfg.optimizer:
        raise UserError(
            f"{path} was trained with optimizer={recorded.get('optimizer', 'adamw')}, and its optimizer state cannot go on as optimizer={cfg.optimizer}; "
            f"resume with --optimizer={recorded.get('optimizer', 'adamw')}"
        )
    set_now = [k for k in MODEL_KEYS if getattr(cfg, k) != recorded.get(k, getattr(defaults, k))]
    differ = [k for k in set_now if k in args and args[k] != getattr(cfg, k)]
    if differ:
        raise UserError(
            f"{path} has {', '.join(f'{k}={args[k]}' for k in differ)}, but this run asks for {', '.join(f'{k}={getattr(cfg, k)}' for k in differ)}; "
            f"resume with the settings of the run that wrote it ({' '.join(f'--{k}={args[k]}' for k in differ)})"
        )


def check_lora_resumable(ckpt: dict, cfg: TrainConfig, path: Path) -> None:
    """A LoRA checkpoint resumes with the adapters it has (their dropout may change), a full one without."""
    if "lora" not in ckpt:
        if cfg.lora_rank:
            raise UserError(
                f"{path} is a full fine-tuning checkpoint, with no adapters to resume; to train LoRA on its weights, start a new run from it: --init_from={path} --out_dir=NEW_DIR"
            )
        return
    then, now = LoraSettings.from_record(ckpt["lora"]), LoraSettings.from_config(cfg)
    differ = [k for k in ("rank", "targets", "bias") if getattr(then, k) != getattr(now, k)]
    if differ:
        show = {"rank": lambda s: s.rank, "targets": lambda s: ",".join(s.targets), "bias": lambda s: s.bias}
        raise UserError(
            f"{path} holds LoRA adapters with {', '.join(f'lora_{k}={show[k](then)}' for k in differ)}, but this run asks for {', '.join(f'lora_{k}={show[k](now)}' for k in differ)}; "
            f"resume with {' '.join(f'--lora_{k}={show[k](then)}' for k in differ)}"
        )


def data_record(data: TrainingData) -> dict:
    """What a checkpoint records of the data it was trained on: its folder, source and the sha256 of
    train.bin and val.bin from meta.json (None for data prepared by nanoGPT, which has none)."""
    return {"dir": str(data.dir), "source": data.meta.get("source"), "sha256": data.meta.get("sha256")}


def changed_data(ckpt: dict, data: TrainingData) -> bool:
    """Whether the data is not what the checkpoint was trained on, as far as both know: a checkpoint
    (nanoGPT's, or from before data was recorded) or data without sha256 is taken as it is."""
    then, now = (ckpt.get("data") or {}).get("sha256"), data.meta.get("sha256")
    return bool(then and now) and then != now


def describe_data(record: dict, other: dict) -> str:
    """A data record in words: its folder, source and the sha256 digests that differ from `other`'s."""
    sha, theirs = record.get("sha256") or {}, other.get("sha256") or {}
    details = [f"from {record['source']}"] if record.get("source") else []
    details += [f"{s}.bin sha256 {v[:12]}" for s, v in sha.items() if isinstance(v, str) and v != theirs.get(s)]
    return f"{record.get('dir', 'a dataset')}" + (f" ({', '.join(details)})" if details else "")


def gather_rng_states(state: dict, rt: Runtime) -> list[dict] | None:
    """Every rank's RNG state, gathered on rank 0 (None elsewhere): a collective under DDP."""
    if not rt.ddp:
        return [state]
    states = [None] * rt.world_size if rt.master else None
    torch.distributed.gather_object(state, states, dst=0)
    return states


class Checkpointer:
    """Writes everything the rest of a run depends on. Every rank calls save() (their RNG states
    are gathered); rank 0 writes."""

    def __init__(self, raw_model: GPT, optimizer, scaler, cfg: TrainConfig, data: TrainingData, rt: Runtime, lora: dict | None = None):
        self.model, self.optimizer, self.scaler, self.cfg, self.data, self.rt = raw_model, optimizer, scaler, cfg, data, rt
        self.lora = lora  # a LoRA run saves its adapters and this record (settings, base reference), not the model
        self.sampler = sampler_state(cfg, data.train_tokens)

    def snapshot(self, iter_num: int) -> dict:
        """What a save from before a run of bad steps needs besides the current state (the NaN
        guard keeps it): bad steps change neither the weights, the optimizer nor the loss scale,
        but they draw random numbers."""
        return {"iter_num": iter_num, "rng": rng_state(self.rt.device)}

    def save(self, iter_num: int, policy, best: bool = False, rng: dict | None = None) -> None:
        """Save at iter_num; `rng` replaces the current RNG state when the NaN guard saves its snapshot.
        Under FSDP every rank writes its shards into a sharded checkpoint folder."""
        policy.saving()
        rng_states = gather_rng_states(rng or rng_state(self.rt.device), self.rt)
        meta = {
            "model_args": self.model.model_args(),
            "iter_num": iter_num,
            "best_val_loss": float(policy.best_val_loss),
            "last_eval_iter": policy.last_eval_iter,
            "config": {k: v for k, v in asdict(self.cfg).items() if k != "allow_data_change"},  # a permission for one run, not a setting to resume with
            "data": data_record(self.data),  # what it was trained on: resuming on other data is refused (check_resumable)
            "tokenizer": self.data.tokenizer,
            "template": self.data.meta.get("template"),  # the dataset's prompt template (templates.py), for sample.py
            "sampler": self.sampler | {"iter_num": iter_num},
        } | ({"lora": self.lora} if self.lora else {})
        if fsdp_module(self.model):
            path = write_sharded_checkpoint(self.model, self.optimizer, meta, rng_states, self.cfg.out_dir, self.cfg.keep_last, best, self.rt.master)
            if self.rt.master:
                print(f"saved sharded checkpoint at iter {iter_num} to {path}" + (" and best.dcp" if best else ""), flush=True)
            return
        if not self.rt.master:
            return
        state = meta | {
            "model": adapter_state(self.model) if self.lora else self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),  # read here only: it costs two reads of the device
            "rng": rng_states,  # one per rank
        }
        path = write_checkpoint(state, self.cfg.out_dir, self.cfg.keep_last, best)
        print(f"saved checkpoint at iter {iter_num} to {path}" + (" and best.pt" if best else ""), flush=True)


def consolidate(path: Path, dest: Path) -> dict:
    """A sharded checkpoint folder as one ckpt.pt that a single process resumes: the whole model,
    and the optimizer state in torch.optim's own layout (DCP loads it onto an unsharded model and
    its optimizer, built from the run's recorded settings). Returns what was written."""
    ckpt = load_checkpoint(path)
    if not ckpt.get("sharded"):
        raise UserError(f"{path} is a single-file checkpoint already; sample.py, eval.py and export.py read it as it is")
    if dest.exists():
        raise UserError(f"{dest} exists; pass another --to=FILE, or move it away first")
    cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in ckpt["config"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    model = model_from_checkpoint(ckpt, dropout=cfg.dropout)
    optimizer = build_optimizer(model, cfg, "cpu")
    load_sharded_optimizer(Path(ckpt["sharded"]), model, optimizer)
    state = {k: v for k, v in ckpt.items() if k != "sharded"} | {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {}}
    save_checkpoint(state, dest)
    return state
