"""Where a training run starts: a new model, GPT-2's weights or a checkpoint of ours (with LoRA
adapters on them if asked), or the checkpoint it resumes, checked to fit this run.

A resumed run continues exactly as if it had not stopped: the weights, optimizer and loss-scaler
state, iteration, best val loss, every rank's RNG state and the sampler that decides the batches
come back from the checkpoint (checkpointer.Checkpointer writes them).
"""

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from gptsuite.batches import Batches, TrainingData
from gptsuite.checkpoint import checkpoint_files, load_sharded_optimizer, model_from_checkpoint, set_rng_state
from gptsuite.errors import UserError
from gptsuite.loading import checkpoint_file, load_weights, lora_model, new_model
from gptsuite.lora import LoraConfig, adapt, file_sha256, freeze_base_dtype
from gptsuite.metrics import METRICS_FILE, PLOT_FILE
from gptsuite.parallel import fsdp_module
from gptsuite.policy import NO_LOSS
from gptsuite.runtime import Runtime, seed_everything
from gptsuite.settings import Resumed, TrainConfig, recorded_settings
from model import GPT, GPTConfig

# what a resumed run may change of the model: a shorter context, dropout; the vocabulary is the data's (check_resumable's tokenizer check)
RESUME_MAY_CHANGE = ("block_size", "dropout", "vocab_size")


@dataclass
class StartingPoint:
    """Where a run starts: the model, and the checkpoint it resumes (None for a new run)."""

    model: GPT
    ckpt: dict | None = None
    path: Path | None = None
    lora: dict | None = None  # a LoRA run's settings and base reference (what its checkpoints record)
    reference: dict | None = None  # a full fine-tune that keeps its start as a reference (DPO): the weights it started from (init_from, file, sha256)

    @property
    def iter_num(self) -> int:
        return self.ckpt["iter_num"] if self.ckpt else 0

    @property
    def best_val_loss(self) -> float:
        return float(self.ckpt["best_val_loss"]) if self.ckpt else NO_LOSS

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
            elif fsdp_module(model):  # a DDP or single-process run's whole state onto FSDP's shards
                load_full_optimizer(model, optimizer, self.ckpt["optimizer"])
            else:
                optimizer.load_state_dict(self.ckpt["optimizer"])
            if self.ckpt.get("scaler"):
                scaler.load_state_dict(self.ckpt["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(
                f"{self.path} has an optimizer or loss-scaler state that does not fit its model ({e}); the file is damaged: resume from another checkpoint or start a new run"
            ) from None
        self.ckpt = {k: v for k, v in self.ckpt.items() if k not in ("model", "optimizer")}  # free the memory

    def restore_rng(self, seed: int, rt: Runtime) -> None:
        """Each rank takes back its own RNG state (dropout draws from it), so a resumed run continues
        exactly; a checkpoint from another number of ranks can only be reseeded."""
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
        seed_everything(seed + rt.rank + 1_000_003 * self.iter_num)


def load_full_optimizer(model, optimizer, state: dict) -> None:
    """An unsharded optimizer state (torch.optim's layout: parameters by their index in the
    optimizer) onto a sharded model, by parameter name through DCP, which takes each rank's shard
    of every tensor (a DDP or single-process checkpoint resumed under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]  # the layout build_optimizer made, then and now
    by_name = {
        "state": {order[i]: s for i, s in state["state"].items()},
        "param_groups": [g | {"params": [order[i] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def claim_out_dir(out_dir: str, resumed: bool, overwrite: bool, master: bool) -> None:
    """A new run does not silently replace another: in an out_dir that holds a run's checkpoints or
    metrics it is refused, unless overwrite, which deletes them first (rank 0) and so starts the
    folder clean. A resumed run continues what is there."""
    out = Path(out_dir)
    checkpoints = checkpoint_files(out)
    found = checkpoints + [p for p in (out / METRICS_FILE, out / PLOT_FILE, out / "wandb") if p.exists()]
    if resumed or not found:
        return
    if not overwrite:
        held = f"a run's checkpoint {checkpoints[0].name}" if checkpoints else f"a run's {found[0].name}"
        raise UserError(
            f"{out_dir} holds {held}, which a new run would replace; continue it with --init_from=resume, train into another --out_dir, "
            f"or pass --overwrite=True to delete that run's checkpoints and metrics and start over there"
        )
    if master:
        for p in found:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        print(f"overwrite=True: deleted the earlier run's {', '.join(sorted(p.name for p in found))} in {out_dir}")


def start_run(cfg: TrainConfig, resumed: Resumed | None, data: TrainingData, rt: Runtime, keeps_reference: bool = False) -> StartingPoint:
    """The model init_from asks for (with LoRA adapters if lora_rank > 0), and the checkpoint it
    resumes. keeps_reference: the objective compares with the starting weights, which a full
    fine-tune records (StartingPoint.reference) so that a resumed run can load them again."""
    if resumed is not None:
        start = resume_run(cfg, resumed, data, rt)
    elif cfg.init_from == "scratch":
        return StartingPoint(new_model(cfg.model, data.tokenizer))
    else:
        start = fine_tune_run(cfg, data, keeps_reference)
    if start.lora and rt.dtype in ("bfloat16", "float16"):
        freeze_base_dtype(start.model, getattr(torch, rt.dtype))  # autocast computes in it anyway; half the memory
    return start


def resume_run(cfg: TrainConfig, resumed: Resumed, data: TrainingData, rt: Runtime) -> StartingPoint:
    ckpt, path = resumed.ckpt, resumed.path
    check_resumable(resumed, cfg, data)
    if rt.master:
        if changed_data(ckpt, data):  # only with allow_data_change: check_resumable refuses it otherwise
            now, then = data.record(), ckpt["data"]
            print(f"note: allow_data_change=True: {path} was trained on {describe_data(then, now)}; it goes on with {describe_data(now, then)}")
        print(f"resuming from {path} at iter {ckpt['iter_num']}")
        sampler = Batches(data, cfg.data, cfg.model.block_size, cfg.system.seed, rt).sampler_state()
        changed = [f"{k}={v} (was {ckpt['sampler'][k]})" for k, v in sampler.items() if ckpt.get("sampler", {}).get(k, v) != v]
        if changed:
            print(f"note: {', '.join(changed)}: the batches from here on differ from those of an uninterrupted run")
    if "lora" in ckpt:
        ckpt["lora"] = ckpt["lora"] | {"dropout": cfg.lora.dropout}  # the one adapter setting a resumed run may change
        return StartingPoint(lora_model(ckpt, str(path), dropout=cfg.model.dropout, merged=False), ckpt, path, lora=ckpt["lora"])
    return StartingPoint(model_from_checkpoint(ckpt, dropout=cfg.model.dropout), ckpt, path, reference=ckpt.get("reference"))


def fine_tune_run(cfg: TrainConfig, data: TrainingData, keeps_reference: bool = False) -> StartingPoint:
    """A new run from trained weights: GPT-2's, or a checkpoint of ours; LoRA adapters on them if asked."""
    if data.tokenizer["kind"] != "gpt2" and not checkpoint_file(cfg.init_from):
        raise UserError(
            f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2 BPE, but {data.dir} uses the {data.tokenizer['kind']} tokenizer; prepare one with GPT-2 BPE (e.g. python prepare.py shakespeare)"
        )
    base = load_weights(cfg.init_from, dropout=cfg.model.dropout, block_size=cfg.model.block_size)
    if base.tokenizer != data.tokenizer:
        theirs = "GPT-2 BPE" if base.tokenizer["kind"] == "gpt2" else f"a {base.tokenizer['kind']} tokenizer of {base.tokenizer['vocab_size']} ids"
        raise UserError(
            f"init_from={cfg.init_from} was trained with {theirs}, but {data.dir} uses the {data.tokenizer['kind']} tokenizer of {data.tokenizer['vocab_size']} ids; "
            f"prepare a dataset with its tokenizer{' (e.g. python prepare.py shakespeare)' if base.tokenizer['kind'] == 'gpt2' else ''}"
        )
    reference = (
        {"init_from": cfg.init_from, "weights": str(base.weights.resolve()), "sha256": file_sha256(base.weights)} if cfg.lora.rank or keeps_reference else None
    )
    if not cfg.lora.rank:
        return StartingPoint(base.model, reference=reference)
    return StartingPoint(adapt(base.model, cfg.lora), lora=cfg.lora.record() | {"base": reference})


def reference_weights(start: StartingPoint, cfg: TrainConfig) -> GPT:
    """The weights a resumed full fine-tune started from, loaded again from what its checkpoint
    records, refused if that file changed since (the starting run went on training, say)."""
    if start.reference is None:
        raise UserError(
            f"{start.path} records no starting weights to compare with (it was not trained with a reference, or by an older version); "
            "start a new run from its weights (--init_from=<its folder>), or train with LoRA (--lora_rank), whose reference is its base"
        )
    got = file_sha256(Path(start.reference["weights"])) if Path(start.reference["weights"]).exists() else "missing"
    if got != start.reference["sha256"]:
        raise UserError(
            f"{start.path} compares with the weights it started from, {start.reference['weights']} (sha256 {start.reference['sha256'][:12]}), which are now {got[:12]}: "
            "put that file back, or start a new run"
        )
    return load_weights(start.reference["init_from"], dropout=0.0, block_size=cfg.model.block_size).model


def check_resumable(resumed: Resumed, cfg: TrainConfig, data: TrainingData) -> None:
    """Refuse to continue a checkpoint on other data or another tokenizer, or with a model shape,
    optimizer or adapter layout other than the ones it recorded, naming both sides."""
    ckpt, path = resumed.ckpt, resumed.path
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
            f"{path} was trained on {describe_data(ckpt['data'], data.record())}, but this run's data is {describe_data(data.record(), ckpt['data'])}; "
            "resume on the data it was trained on, or pass --allow_data_change=True to go on with this data"
        )
    check_lora_resumable(ckpt, cfg.lora, path)
    then = recorded_settings(ckpt).get("optimizer", "adamw")
    if then != cfg.optim.optimizer:
        raise UserError(
            f"{path} was trained with optimizer={then}, and its optimizer state cannot go on as optimizer={cfg.optim.optimizer}; resume with --optimizer={then}"
        )
    # the shape set now against the model's; a value the run was started with is no change (a run
    # from trained weights recorded the shape keys it was given, which those weights overrode)
    shape, started = ckpt["model_args"], ckpt.get("config") or {}
    fixed = [f.name for f in dataclasses.fields(GPTConfig) if f.name not in RESUME_MAY_CHANGE and f.name in shape]
    differ = [k for k in fixed if k in resumed.set_now and resumed.set_now[k] != started.get(k) and resumed.set_now[k] != shape[k]]
    if differ:
        raise UserError(
            f"{path} has {', '.join(f'{k}={shape[k]}' for k in differ)}, but this run asks for {', '.join(f'{k}={getattr(cfg.model, k)}' for k in differ)}; "
            f"resume with the settings of the run that wrote it ({' '.join(f'--{k}={shape[k]}' for k in differ)})"
        )


def check_lora_resumable(ckpt: dict, lora: LoraConfig, path: Path) -> None:
    """A LoRA checkpoint resumes with the adapters it has (their dropout may change), a full one without."""
    if "lora" not in ckpt:
        if lora.rank:
            raise UserError(
                f"{path} is a full fine-tuning checkpoint, with no adapters to resume; to train LoRA on its weights, start a new run from it: --init_from={path} --out_dir=NEW_DIR"
            )
        return
    then = LoraConfig.from_record(ckpt["lora"])
    differ = [k for k in LoraConfig.LAYOUT if getattr(then, k) != getattr(lora, k)]
    if differ:
        raise UserError(
            f"{path} holds LoRA adapters with {', '.join(f'lora_{k}={getattr(then, k)}' for k in differ)}, but this run asks for {', '.join(f'lora_{k}={getattr(lora, k)}' for k in differ)}; "
            f"resume with {' '.join(f'--lora_{k}={getattr(then, k)}' for k in differ)}"
        )


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
