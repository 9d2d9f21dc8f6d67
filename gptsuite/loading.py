"""A model to work with, from whatever names it: a new one of a configured shape, a checkpoint
folder of ours (or nanoGPT's), or OpenAI's GPT-2 weights (a hub name or a Hugging Face folder).
sample.py, eval.py, export.py and the benchmarks all load through `load_model`.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from gptsuite.checkpoint import checkpoint_tokenizer_meta, load_checkpoint, model_from_checkpoint
from gptsuite.errors import UserError
from gptsuite.pretrained import HUB_MODELS, from_pretrained, is_pretrained
from gptsuite.tokenizer import GPT2_META
from model import GPT, GPTConfig


@dataclass
class Loaded:
    model: GPT  # on the CPU, in eval mode
    tokenizer: dict  # tokenizer metadata (tokenizer.from_meta rebuilds the tokenizer)
    train_config: dict  # the config of the run that trained it; {} for GPT-2's weights
    template: dict | None  # the prompt template of its training data (templates.py), if any
    name: str  # what it was loaded from, for messages and tables


def padded_vocab_size(tokenizer_meta: dict) -> int:
    """Embedding rows for a tokenizer: GPT-2's 50257 ids padded to 50304, a multiple of 64 that
    tensor cores like; a character vocabulary as it is."""
    n = tokenizer_meta["vocab_size"]
    return (n + 63) // 64 * 64 if tokenizer_meta["kind"] == "gpt2" else n


def model_config(cfg, **overrides) -> GPTConfig:
    """A GPTConfig from the fields of any config (TrainConfig, BenchConfig, ...) that share its
    names, by keyword; `overrides` win."""
    args = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(GPTConfig) if hasattr(cfg, f.name)} | overrides
    try:
        return GPTConfig(**args)
    except ValueError as e:
        raise UserError(f"bad model config: {e}") from None


def new_model(cfg, tokenizer_meta: dict) -> GPT:
    """A freshly initialized GPT of the configured shape, for this tokenizer's vocabulary."""
    return GPT(model_config(cfg, vocab_size=padded_vocab_size(tokenizer_meta)))


def check_init_from(init_from: str, also: tuple[str, ...] = ("resume",)) -> None:
    """Refuse an init_from that names neither a mode in `also` nor GPT-2 weights."""
    if init_from not in also and not is_pretrained(init_from):
        modes = ", ".join(f"'{m}'" for m in also)
        raise UserError(
            f"unknown init_from '{init_from}'; use {modes}, one of {', '.join(HUB_MODELS)}, or a directory holding config.json and model.safetensors"
        )


def load_model(init_from: str = "resume", out_dir: str = "out", data_dir: str | None = None) -> Loaded:
    """init_from='resume': the newest checkpoint in out_dir (checkpoint.newest_checkpoint), with the
    tokenizer and template it was trained with. Else GPT-2's weights with GPT-2 BPE.

    data_dir: the --data_dir the caller was given for the data the model was trained on, if it
    has such an option ('' when it was not given, None when it has none): a nanoGPT checkpoint
    records no tokenizer, and its dataset folder is looked for there first (checkpoint_tokenizer_meta)."""
    if init_from != "resume":
        return Loaded(from_pretrained(init_from).eval(), dict(GPT2_META), {}, None, init_from)
    ckpt = load_checkpoint(out_dir, map_location="cpu")
    model = model_from_checkpoint(ckpt, dropout=0.0)
    tokenizer = checkpoint_tokenizer_meta(ckpt, data_dir, name=f"the checkpoint in {out_dir}" if Path(out_dir).is_dir() else f"the checkpoint {out_dir}")
    return Loaded(model.eval(), tokenizer, ckpt.get("config", {}), ckpt.get("template"), out_dir)
