"""A model to work with, from whatever names it: a new one of a configured shape, a checkpoint
folder of ours (or nanoGPT's), or OpenAI's GPT-2 weights (a hub name or a Hugging Face folder).
Whatever loads one gets a `Loaded`: sample.py, eval.py, export.py, the page and the benchmarks
through `load_model` (in eval mode), a training run that starts from trained weights (init_from)
through `load_weights`. A LoRA checkpoint (lora.py) is its base rebuilt from the reference it
holds, with the adapters on top.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from gptsuite.checkpoint import checkpoint_tokenizer_meta, load_checkpoint, model_from_checkpoint, newest_checkpoint
from gptsuite.errors import UserError
from gptsuite.lora import LoraConfig, adapt, check_base, load_adapter, merge
from gptsuite.pretrained import HUB_MODELS, fetch, from_pretrained, is_pretrained
from gptsuite.tokenizer import GPT2_META
from model import GPT, GPTConfig


@dataclass
class Loaded:
    """A model and where it came from."""

    model: GPT  # on the CPU
    tokenizer: dict  # tokenizer metadata (tokenizer.from_meta rebuilds the tokenizer)
    name: str  # what it was loaded from, for messages and tables
    weights: Path  # the file (or sharded folder) its weights were read from; GPT-2's: its model.safetensors
    train_config: dict = field(default_factory=dict)  # the config of the run that trained it; {} for GPT-2's weights
    template: dict | None = None  # the prompt template of its training data (templates.py), if any
    chat_template: dict | None = None  # the chat template of its training data (chat.py), if it was tuned on conversations


def padded_vocab_size(tokenizer_meta: dict) -> int:
    """Embedding rows for a tokenizer: a BPE's ids padded to a multiple of 64 that tensor cores like
    (GPT-2's 50257 to 50304); a character vocabulary as it is."""
    n = tokenizer_meta["vocab_size"]
    return (n + 63) // 64 * 64 if tokenizer_meta["kind"] in ("gpt2", "bpe") else n


def new_model(shape: GPTConfig, tokenizer_meta: dict) -> GPT:
    """A freshly initialized GPT of this shape, for this tokenizer's vocabulary."""
    return GPT(dataclasses.replace(shape, vocab_size=padded_vocab_size(tokenizer_meta)))


def checkpoint_file(init_from: str) -> Path | None:
    """The checkpoint of ours that init_from names, if it names one: a .pt file, or the newest
    checkpoint of a run folder (a folder with config.json is a Hugging Face one instead)."""
    path = Path(init_from)
    if path.is_file() and path.suffix == ".pt":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        return newest_checkpoint(path)
    return None


def check_init_from(init_from: str, also: tuple[str, ...] = ("resume",), checkpoints: bool = False) -> None:
    """Refuse an init_from that names neither a mode in `also` nor GPT-2 weights (nor, with
    checkpoints=True, a checkpoint of ours)."""
    if init_from in also or is_pretrained(init_from) or (checkpoints and checkpoint_file(init_from)):
        return
    modes = "".join(f"'{m}', " for m in also)
    ours = ", a training run's folder or .pt checkpoint" if checkpoints else ""
    raise UserError(
        f"unknown init_from '{init_from}'; use {modes}one of {', '.join(HUB_MODELS)}{ours}, or a directory holding config.json and model.safetensors"
    )


def load_weights(init_from: str, dropout: float = 0.0, block_size: int | None = None) -> Loaded:
    """The weights init_from names: GPT-2's (a hub name or a Hugging Face folder), or a checkpoint
    of ours (a .pt file or a run folder; a LoRA one merged), with the given dropout and, for a
    block_size shorter than the model's, cropped position embeddings."""
    path = checkpoint_file(init_from)
    if path is None:
        return Loaded(from_pretrained(init_from, dropout=dropout, block_size=block_size), dict(GPT2_META), init_from, fetch(init_from)[1])
    ckpt = load_checkpoint(path)
    model = lora_model(ckpt, str(path), dropout=dropout) if "lora" in ckpt else model_from_checkpoint(ckpt, dropout=dropout)
    if block_size is not None and block_size > model.config.block_size:
        raise UserError(
            f"block_size={block_size} is longer than {path}'s context of {model.config.block_size} tokens; use --block_size={model.config.block_size} or less"
        )
    if block_size is not None and block_size < model.config.block_size:
        model.crop_block_size(block_size)
    return Loaded(
        model, checkpoint_tokenizer_meta(ckpt, name=str(path)), init_from, path, ckpt.get("config") or {}, ckpt.get("template"), ckpt.get("chat_template")
    )


def lora_model(ckpt: dict, source: str, dropout: float = 0.0, merged: bool = True) -> GPT:
    """The model of a LoRA checkpoint: its base (checked against the sha256 it recorded) with the
    adapters loaded, merged into the base weights unless merged=False (to train on)."""
    record = ckpt["lora"]
    check_lora_base(record["base"], source)
    base = load_weights(record["base"]["init_from"], dropout=dropout, block_size=ckpt["model_args"]["block_size"])
    check_base(record["base"], base.weights, source)
    model = adapt(base.model, LoraConfig.from_record(record))
    load_adapter(model, ckpt["model"], source)
    return merge(model) if merged else model


def check_lora_base(recorded: dict, source: str) -> None:
    """Refuse, in one line, a LoRA checkpoint whose base (a Hugging Face folder, a run folder or a
    .pt file of ours) is no longer where the run recorded it: the adapters mean nothing without it."""
    init_from = recorded.get("init_from", "")
    if init_from in HUB_MODELS or Path(init_from).exists():
        return
    weights = f" (its weights {recorded['weights']}, sha256 {str(recorded.get('sha256'))[:12]})" if recorded.get("weights") else ""
    raise UserError(
        f"{source} is a LoRA adapter for the base {init_from}{weights}, which is gone; put the base weights back at {init_from}, "
        "or train a new adapter on a base that is there"
    )


def load_model(init_from: str = "resume", out_dir: str = "out", data_dir: str | None = None) -> Loaded:
    """init_from='resume': the newest checkpoint in out_dir (checkpoint.newest_checkpoint), with the
    tokenizer and template it was trained with. Else GPT-2's weights with GPT-2 BPE.

    data_dir: the --data_dir the caller was given for the data the model was trained on, if it
    has such an option ('' when it was not given, None when it has none): a nanoGPT checkpoint
    records no tokenizer, and its dataset folder is looked for there first (checkpoint_tokenizer_meta)."""
    if init_from != "resume":
        loaded = load_weights(init_from)
        loaded.model.eval()
        return loaded
    ckpt = load_checkpoint(out_dir, map_location="cpu")
    model = lora_model(ckpt, out_dir) if "lora" in ckpt else model_from_checkpoint(ckpt, dropout=0.0)
    tokenizer = checkpoint_tokenizer_meta(ckpt, data_dir, name=f"the checkpoint in {out_dir}" if Path(out_dir).is_dir() else f"the checkpoint {out_dir}")
    weights = Path(ckpt["sharded"]) if ckpt.get("sharded") else newest_checkpoint(out_dir) if Path(out_dir).is_dir() else Path(out_dir)
    return Loaded(model.eval(), tokenizer, out_dir, weights, ckpt.get("config") or {}, ckpt.get("template"), ckpt.get("chat_template"))
