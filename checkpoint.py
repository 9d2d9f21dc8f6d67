"""Saving and loading checkpoints: atomic writes, weights_only loads, clear errors.

A checkpoint is a dict with nanoGPT's keys (`model`, `optimizer`, `model_args`, `iter_num`,
`best_val_loss`, `config`), so a nanoGPT ckpt.pt samples here too, plus `tokenizer` (the
dataset's tokenizer metadata) and whatever else the run needs to resume. It only ever holds
tensors and plain Python data, and is loaded with torch.load(weights_only=True).
"""

import pickle
import zipfile
from pathlib import Path

import torch

from atomic import atomic_path
from errors import UserError
from model import GPT, GPTConfig


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write state to path atomically: an interrupted save leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train one first (python train.py ...) or pass the right --out_dir")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # a class or function reference: the weights-only unpickler refuses it
            raise UserError(
                f"refusing to load {path}: it holds Python objects other than tensors and plain data, which could run code; only load checkpoints you trust and re-save them as plain state dicts"
            ) from None
        raise UserError(f"checkpoint {path} is corrupt: it is not a torch checkpoint file; use another checkpoint or retrain") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        raise UserError(f"checkpoint {path} is corrupt or truncated; use another checkpoint or retrain") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise UserError(f"{path} is not a GPT checkpoint (no 'model' / 'model_args'); pass a ckpt.pt written by train.py")
    # checkpoints of a torch.compile'd model (nanoGPT) carry an _orig_mod. prefix
    ckpt["model"] = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    return ckpt


def model_from_checkpoint(ckpt: dict, **overrides) -> GPT:
    """Build the GPT described by ckpt['model_args'] and load its weights."""
    args = {k: v for k, v in ckpt["model_args"].items() if k in GPTConfig.__dataclass_fields__}
    args.update(overrides)
    try:
        model = GPT(GPTConfig(**args))
    except (ValueError, TypeError) as e:
        raise UserError(f"checkpoint model_args are invalid ({e})") from None
    state = {k: v for k, v in ckpt["model"].items() if not k.endswith(".attn.bias")}  # nanoGPT's causal-mask buffer
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not match its model_args ({str(e).splitlines()[0]}); the file is corrupt or from another model") from None
    return model


def checkpoint_tokenizer_meta(ckpt: dict) -> dict:
    """The tokenizer the checkpoint was trained with. nanoGPT checkpoints do not record one:
    they were trained on GPT-2 BPE unless their dataset folder has a char-level meta.pkl."""
    if "tokenizer" in ckpt:
        return ckpt["tokenizer"]
    from datafiles import load_meta

    dataset = ckpt.get("config", {}).get("dataset")
    data_dir = Path("data") / str(dataset)
    if dataset and (data_dir / "meta.pkl").exists():
        return load_meta(data_dir)["tokenizer"]
    print("checkpoint records no tokenizer (a nanoGPT checkpoint): using GPT-2 BPE")
    return {"kind": "gpt2", "vocab_size": 50257}
