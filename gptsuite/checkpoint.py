"""Saving and loading checkpoints: atomic writes, rotation, weights_only loads, clear errors.

A checkpoint is a dict with nanoGPT's keys (`model`, `optimizer`, `model_args`, `iter_num`,
`best_val_loss`, `config`), so a nanoGPT ckpt.pt samples here too, plus `tokenizer` (the
dataset's tokenizer metadata) and whatever else the run needs to resume exactly (`scaler`, `rng`,
`sampler`, `last_eval_iter`). It only ever holds tensors and plain Python data, and is loaded with
torch.load(weights_only=True).

A training run's out_dir holds:
    ckpt.pt            the newest complete checkpoint (what train's resume, sample, eval and export read)
    ckpt-000500.pt     the last `keep_last` checkpoints by iteration (hard links: no extra space)
    best.pt            the checkpoint with the lowest validation loss so far
ckpt.pt is written first (temp file + fsync + rename), the other names are links to it, so a
run killed at any moment leaves ckpt.pt complete and at least as new as anything else there.

Under FSDP (parallel.py) a checkpoint is a folder, ckpt-<iter>.dcp, written with
torch.distributed.checkpoint (DCP): each rank writes its own shards, rank 0 the metadata
(checkpoint.json) and every rank's RNG state (rng.pt). DCP records each tensor's global shape, so
a checkpoint reloads onto any number of processes (2 -> 1, 1 -> 2, 2 -> 4), sharded or not;
sample.py, eval.py and export.py read it whole.
"""

import errno
import io
import json
import os
import pickle
import random
import re
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from configurator import ConfigError
from gptsuite.atomic import atomic_path, link_atomic, replace_folder, temp_path
from gptsuite.datafiles import load_meta, resolve_data_dir
from gptsuite.errors import UserError
from gptsuite.tokenizer import GPT2_META
from model import GPT, GPTConfig

CKPT_NAME, BEST_NAME = "ckpt.pt", "best.pt"
NUMBERED = re.compile(r"ckpt-(\d+)\.pt")
# a sharded (FSDP) run's checkpoints: DCP folders ckpt-<iter>.dcp, with ckpt.dcp and best.dcp links to them
SHARDED_NAME, BEST_SHARDED_NAME = "ckpt.dcp", "best.dcp"
NUMBERED_SHARDED = re.compile(r"ckpt-(\d+)\.dcp")
SHARDED_META, SHARDED_RNG = "checkpoint.json", "rng.pt"  # in a sharded folder: everything but the tensors (JSON), every rank's RNG state
# Test hook: seconds that each checkpoint write takes (written in slow chunks, then a pause before
# the rename), so fault tests can kill a run in the middle of a write. Never set it otherwise.
SLOW_SAVE_ENV = "GPT_SUITE_TEST_SLOW_SAVE"


def _write(state: dict, tmp: Path) -> None:
    delay = float(os.environ.get(SLOW_SAVE_ENV) or 0)
    with open(tmp, "wb") as f:  # through a Python file object, so a full disk raises OSError(ENOSPC)
        if not delay:
            torch.save(state, f)
            return
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        step = max(1, len(data) // 8)
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(delay / 10)
    time.sleep(delay / 10)  # written but not yet renamed


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write state to path atomically: an interrupted or failed save leaves the previous file intact."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            _write(state, tmp)
    except OSError as e:
        what = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        kept = f"{path} still holds the previous checkpoint" if path.exists() else f"no earlier checkpoint is at {path}"
        raise UserError(
            f"could not write checkpoint {path}: {what}; {kept}: free some space or fix the folder, then resume: python train.py --init_from=resume --out_dir={path.parent}"
        ) from None


def write_checkpoint(state: dict, out_dir: str | Path, keep_last: int = 0, best: bool = False) -> Path:
    """Save a training checkpoint as out_dir/ckpt.pt, then link it as ckpt-<iter>.pt (keeping the
    newest `keep_last` of those) and, if `best`, as best.pt. Returns the path of ckpt.pt."""
    out_dir = Path(out_dir)
    path = out_dir / CKPT_NAME
    save_checkpoint(state, path)
    try:
        if best:
            link_atomic(path, out_dir / BEST_NAME)
        if keep_last > 0:
            link_atomic(path, out_dir / f"ckpt-{state['iter_num']:06d}.pt")
            # files numbered past this run (left by an earlier, longer run in the same out_dir) are not ours to rotate
            ours = [p for p in numbered_checkpoints(out_dir) if int(NUMBERED.fullmatch(p.name).group(1)) <= state["iter_num"]]
            for old in ours[:-keep_last]:
                old.unlink(missing_ok=True)
    except OSError as e:
        raise UserError(
            f"saved {path}, but could not update the other checkpoints in {out_dir} ({e.strerror or e}); free some space or fix the folder"
        ) from None
    return path


def numbered_checkpoints(out_dir: str | Path) -> list[Path]:
    """out_dir/ckpt-<iter>.pt files, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("ckpt-*.pt") if (m := NUMBERED.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def newest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in out_dir: ckpt.pt, or if it is gone the highest ckpt-<iter>.pt;
    or a sharded run's newest folder (ckpt.dcp), whichever was written last. Temp files and
    folders of interrupted writes have other names and are never picked."""
    out_dir = Path(out_dir)
    numbered = numbered_checkpoints(out_dir)
    single = out_dir / CKPT_NAME if (out_dir / CKPT_NAME).is_file() else (numbered[-1] if numbered else None)
    sharded = newest_sharded(out_dir)
    if single and sharded:
        return max(single, sharded, key=lambda p: (p / SHARDED_META if p.is_dir() else p).stat().st_mtime)
    return single or sharded


def numbered_sharded(out_dir: Path) -> list[Path]:
    """out_dir/ckpt-<iter>.dcp folders, oldest first."""
    found = [(int(m.group(1)), p) for p in out_dir.glob("ckpt-*.dcp") if (m := NUMBERED_SHARDED.fullmatch(p.name)) and (p / SHARDED_META).is_file()]
    return [p for _, p in sorted(found)]


def newest_sharded(out_dir: Path) -> Path | None:
    link = out_dir / SHARDED_NAME
    if (link / SHARDED_META).is_file():
        return out_dir / os.readlink(link) if link.is_symlink() else link
    numbered = numbered_sharded(out_dir)
    return numbered[-1] if numbered else None


def checkpoint_files(out_dir: str | Path) -> list[Path]:
    """Every checkpoint a run wrote in out_dir: ckpt.pt, best.pt and ckpt-<iter>.pt; the sharded
    ckpt-<iter>.dcp folders and their ckpt.dcp and best.dcp links."""
    out_dir = Path(out_dir)
    named = [out_dir / n for n in (CKPT_NAME, BEST_NAME, SHARDED_NAME, BEST_SHARDED_NAME) if (out_dir / n).exists() or (out_dir / n).is_symlink()]
    return named + numbered_checkpoints(out_dir) + numbered_sharded(out_dir)


def is_sharded(path: Path) -> bool:
    return path.is_dir() and (path / SHARDED_META).is_file()


def write_sharded_checkpoint(model, optimizer, meta: dict, rng_states: list | None, out_dir: str | Path, keep_last: int, best: bool, master: bool) -> Path:
    """Every rank calls this (it is collective): each writes its shards of the model and optimizer
    with DCP into one temp folder, then rank 0 adds checkpoint.json and rng.pt, renames the folder
    to ckpt-<iter>.dcp and points ckpt.dcp (and best.dcp) at it: a run killed at any moment leaves
    the previous checkpoint whole. Keeps the newest max(keep_last, 1) folders and best.dcp's."""
    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemWriter, save
    from torch.distributed.checkpoint.state_dict import get_state_dict

    out_dir = Path(out_dir)
    final = out_dir / f"ckpt-{meta['iter_num']:06d}.dcp"
    writer = [os.getpid()]
    if dist.is_initialized():
        dist.broadcast_object_list(writer, src=0)  # one temp folder for all ranks, named after rank 0
    tmp = temp_path(final).with_name(f".{final.name}.{writer[0]}.tmp")
    model_state, optim_state = get_state_dict(model, optimizer)
    try:
        save({"model": model_state, "optimizer": optim_state}, storage_writer=FileSystemWriter(tmp))
        if not master:
            return final
        with atomic_path(tmp / SHARDED_META) as f:
            f.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        with atomic_path(tmp / SHARDED_RNG) as f:
            _write({"rng": rng_states}, f)  # slow under the fault tests' hook, like single-file saves
        replace_folder(tmp, final)
    except OSError as e:
        raise UserError(
            f"could not write the sharded checkpoint {final} ({e.strerror or e}); the previous one is still there: free some space or fix the folder, then resume"
        ) from None
    link_atomic(final.name, out_dir / SHARDED_NAME, symlink=True)
    if best:
        link_atomic(final.name, out_dir / BEST_SHARDED_NAME, symlink=True)
    keep = {final.name, *(os.readlink(out_dir / BEST_SHARDED_NAME) for _ in [0] if (out_dir / BEST_SHARDED_NAME).is_symlink())}
    ours = [p for p in numbered_sharded(out_dir) if int(NUMBERED_SHARDED.fullmatch(p.name).group(1)) <= meta["iter_num"]]
    for old in ours[: -max(keep_last, 1)]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def dcp_load(state: dict, **where) -> None:
    """torch.distributed.checkpoint.load: collective in a process group; in a single process (no
    group) it reads alone, which is meant here, so DCP's warning that it assumes so is dropped."""
    from torch.distributed.checkpoint import load

    alone = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        load(state, no_dist=alone, **where)


def load_sharded(path: Path, meta_only: bool = False) -> dict:
    """A sharded checkpoint folder read whole, as a single-file checkpoint's dict: the model's
    full tensors (DCP assembles them from every rank's shards; no process group needed), the
    metadata and RNG states. `sharded` marks it: the optimizer state is loaded onto a model
    later (load_sharded_optimizer). meta_only: the metadata alone."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        ckpt = json.loads((path / SHARDED_META).read_text(encoding="utf-8"))
        ckpt |= {"model": {}, "optimizer": {}, "sharded": str(path)}
        if meta_only:
            return ckpt
        reader = FileSystemReader(path)
        shapes = {k.removeprefix("model."): v for k, v in reader.read_metadata().state_dict_metadata.items() if k.startswith("model.")}
        state = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in shapes.items()}
        dcp_load({"model": state}, storage_reader=reader)
        ckpt["model"] = state
        ckpt["rng"] = torch.load(path / SHARDED_RNG, map_location="cpu", weights_only=True)["rng"]
    except (OSError, ValueError, RuntimeError, KeyError, AttributeError, pickle.UnpicklingError) as e:
        raise UserError(
            f"the sharded checkpoint {path} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); resume from another checkpoint or retrain"
        ) from None
    return ckpt


def load_sharded_optimizer(path: Path, model, optimizer) -> None:
    """The optimizer state of a sharded checkpoint, resharded by DCP onto `model` as it is now:
    FSDP shards of any world size, or whole parameters."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_optimizer_state_dict

    _, optim_state = get_state_dict(model, optimizer)
    dcp_load({"optimizer": optim_state}, checkpoint_id=path)
    set_optimizer_state_dict(model, optimizer, optim_state)


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint file, or the newest complete one of a folder, refusing anything that is not
    plain tensors and data. mmap=True maps the tensors instead of reading them (for a look at the
    metadata of a large checkpoint)."""
    path = Path(path)
    if path.is_dir() and not is_sharded(path):
        path = newest_checkpoint(path) or path / CKPT_NAME
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train one first (python train.py ...) or pass the out_dir of a run with --out_dir")
    if is_sharded(path):
        ckpt = load_sharded(path, meta_only=mmap)
        return ckpt | {"model_args": complete_model_args(ckpt["model_args"])}
    try:
        with warnings.catch_warnings():  # a newer pickle protocol warns before it is refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                ckpt = torch.load(path, map_location=map_location, weights_only=True)  # a legacy (non-zip) file cannot be mapped
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))  # a class or function: the safe unpickler refuses it
        if found:
            raise UserError(
                f"refusing to load {path}: it holds a reference to {found.group(1)}, which could run code; only load checkpoints you trust and re-save them as plain state dicts"
            ) from None
        with open(path, "rb") as f:
            pickled = f.read(2) in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # a torch zip file or a pickle
        if pickled:
            raise UserError(
                f"refusing to load {path}: its pickle uses instructions that safe (weights_only) loading does not allow; it is damaged or was saved with a newer pickle protocol: re-save it with torch.save's default, or use another checkpoint"
            ) from None
        raise UserError(f"checkpoint {path} is corrupt: it is not a torch checkpoint file; use another checkpoint or retrain") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        raise UserError(f"checkpoint {path} is corrupt or truncated; use another checkpoint or retrain") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("model_args"), dict):
        raise UserError(f"{path} is not a GPT checkpoint (no 'model' / 'model_args'); pass a ckpt.pt written by train.py")
    # checkpoints of a torch.compile'd model (nanoGPT) carry an _orig_mod. prefix
    ckpt["model"] = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    ckpt["model_args"] = complete_model_args(ckpt["model_args"])
    return ckpt


def complete_model_args(args: dict) -> dict:
    """A checkpoint's model_args with what older ones leave out: nanoGPT's record no arch (theirs is
    GPT-2's) and train with exact GELU; ours from before `activation` was recorded, GELU's tanh form."""
    return {"arch": "gpt2", "activation": "gelu_tanh" if "arch" in args else "gelu"} | args


def model_from_checkpoint(ckpt: dict, **overrides) -> GPT:
    """Build the GPT described by ckpt['model_args'] and load its weights."""
    args = {k: v for k, v in ckpt["model_args"].items() if k in GPTConfig.__dataclass_fields__}
    args.update(overrides)
    try:
        model = GPT(GPTConfig(**args))
    except (ValueError, TypeError, ConfigError) as e:
        raise UserError(f"checkpoint model_args are invalid ({e})") from None
    state = {k: v for k, v in ckpt["model"].items() if not k.endswith(".attn.bias")}  # nanoGPT's causal-mask buffer
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not match its model_args ({str(e).splitlines()[0]}); the file is corrupt or from another model") from None
    return model


def tokenizer_fits(tok: dict, vocab_size: int) -> bool:
    """Whether a model with vocab_size token ids was trained with this tokenizer: a character
    vocabulary exactly (nanoGPT and train.py size the model to it), GPT-2 BPE with at least its
    50257 ids (usually padded to 50304)."""
    if tok["kind"] == "char":
        return tok["vocab_size"] == vocab_size
    return vocab_size >= tok["vocab_size"]


def checkpoint_tokenizer_meta(ckpt: dict, data_dir: str | None = None, name: str = "the checkpoint") -> dict:
    """The tokenizer the checkpoint was trained with. Ours record it; nanoGPT's do not: theirs is
    the tokenizer of the prepared dataset folder they were trained on (meta.json, or nanoGPT's
    meta.pkl), looked for in `data_dir` if the caller was given one, then in data/<dataset> of the
    checkpoint's config, and taken if its vocabulary fits the model; else GPT-2 BPE if the model
    has room for its 50257 ids (nanoGPT's rule: no meta.pkl means GPT-2 BPE). A model that fits
    neither is one clear error. data_dir=None: the caller has no --data_dir option to suggest."""
    if "tokenizer" in ckpt:
        return ckpt["tokenizer"]
    vocab_size = ckpt["model_args"].get("vocab_size", GPTConfig.vocab_size)
    config = ckpt.get("config")
    try:
        own = resolve_data_dir(trained_on=config if isinstance(config, dict) else {})  # data/<dataset>: nanoGPT's config names its dataset
    except UserError:
        own = None
    tried, misfits = [], []  # why each folder was no use; the tokenizers found there that do not fit
    for folder in dict.fromkeys(p for p in (Path(data_dir) if data_dir else None, own) if p is not None):
        if not folder.is_dir():
            tried.append(f"there is no folder {folder}")
        elif not (folder / "meta.json").is_file() and not (folder / "meta.pkl").is_file():
            tried.append(f"{folder} has no meta.json or meta.pkl")
        else:
            tok = load_meta(folder)["tokenizer"]
            if tokenizer_fits(tok, vocab_size):
                print(f"{name} records no tokenizer (a nanoGPT checkpoint): using the {tok['kind']} tokenizer of {tok['vocab_size']} ids of {folder}")
                return tok
            misfits.append(f"the {tok['kind']} tokenizer of {folder} has {tok['vocab_size']} ids")
            tried.append(misfits[-1])
    if tokenizer_fits(GPT2_META, vocab_size):
        why = f" (its model has {vocab_size} token ids; {'; '.join(misfits)})" if misfits else ""
        print(f"{name} records no tokenizer (a nanoGPT checkpoint): using GPT-2 BPE{why}")
        return dict(GPT2_META)
    data = "with its meta.json or nanoGPT's meta.pkl"
    if own is not None:
        fix = f"put the dataset folder it was trained on, {data}, at {own}" + (" or pass --data_dir=that folder" if data_dir is not None else "")
    else:
        tried.append("its config names no dataset")
        fix = (
            f"pass --data_dir=the dataset folder it was trained on, {data}"
            if data_dir is not None
            else f"set config['dataset'] in the checkpoint to NAME and put the dataset folder it was trained on, {data}, at data/NAME"
        )
    raise UserError(
        f"{name} records no tokenizer (a nanoGPT checkpoint) and its {vocab_size} token ids are too few for GPT-2 BPE's {GPT2_META['vocab_size']}: it needs the vocabulary of the data it was trained on, but {'; '.join(tried)}; {fix}"
    )


def rng_state(device: str = "cpu") -> dict:
    """Every random number generator this process draws from (python, numpy, torch CPU and the
    current CUDA device or MPS), as plain data and tensors that a weights_only load accepts."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    if device.startswith("mps") and mps_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def set_rng_state(state: dict, device: str = "cpu") -> None:
    """Restore what rng_state() captured (a CUDA or MPS state only where this process is on it)."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        np_state = dict(state["numpy"])
        np_state["state"] = {**np_state["state"], "key": np_state["state"]["key"].cpu().numpy().astype(np.uint32)}
        np.random.set_state(np_state)
        torch.set_rng_state(state["torch"].cpu())
        if device.startswith("cuda") and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"].cpu(), device)
        if device.startswith("mps") and "mps" in state and mps_available():
            torch.mps.set_rng_state(state["mps"].cpu())
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as e:
        raise UserError(
            f"the checkpoint's random number generator state is damaged ({type(e).__name__}: {e}); resume from another checkpoint or start a new run"
        ) from None
