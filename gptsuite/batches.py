"""A prepared dataset opened for training, and the batches drawn from it.

A batch is a set of random windows of the token memmap: inputs x and next-token targets y (of
data with a loss mask: rows from documents' starts, targets that do not count -1; masks.py). Its
offsets depend only on (seed, split, batch index), so a batch is the same however many processes
share the work, and a resumed run draws what the original would have (`Batches.sampler_state`).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from configurator import option
from gptsuite.datafiles import DTYPES, check_token_ids, load_meta, open_split, resolve_data_dir, token_dtype
from gptsuite.errors import UserError
from gptsuite.masks import LossMask, open_loss_mask
from gptsuite.runtime import Runtime
from model import GPT

SPLITS = ("train", "val")


@dataclass
class DataConfig:
    # data and batches
    dataset: str = "openwebtext"  # a prepared dataset in data/<dataset>
    data_dir: str = ""  # the prepared dataset folder itself; default: data/<dataset>
    gradient_accumulation_steps: int = option(5 * 8, gt=0)  # micro-batches per optimizer step, in all: divided across torchrun's processes
    batch_size: int = option(12, gt=0)  # micro-batch size per process
    loss_on: str = option(
        "response", choices=("response", "all")
    )  # data with a loss mask (chat, prompt templates): count only what the model should say, or every token

    def accum_steps(self, world_size: int) -> int:
        """Micro-batches per step on each of world_size processes."""
        if self.gradient_accumulation_steps % world_size:
            raise UserError(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} is not divisible by the {world_size} processes; make it a multiple of {world_size}"
            )
        return self.gradient_accumulation_steps // world_size


@dataclass
class TrainingData:
    """A prepared dataset opened for training: its folder, meta.json and token count."""

    dir: Path
    meta: dict
    train_tokens: int
    loss_masks: dict[str, LossMask] | None = None  # data with a loss mask: each split's (masks.py)

    @property
    def dtype(self) -> str:
        return token_dtype(self.meta)

    @property
    def tokenizer(self) -> dict:
        return self.meta["tokenizer"]

    @property
    def masked(self) -> bool:
        """Rows start at documents and carry a loss mask (masks.py)."""
        return self.loss_masks is not None

    def rows_line(self, block_size: int, loss_on: str) -> str:
        """What rows of masked data train on, in one line: the share of train tokens that count,
        and the share that lie more than a row past their document's start, never reached."""
        starts = self.loss_masks["train"].starts
        lengths = np.diff(np.append(starts, self.train_tokens))
        unreached = int(np.maximum(lengths - (block_size + 1), 0).sum())
        counted = self.meta["loss_mask"]["counted_tokens"]["train"] / max(self.train_tokens, 1) if loss_on == "response" else 1.0
        line = f"rows start at documents; the loss counts {'the responses' if loss_on == 'response' else 'every token'}: {counted:.0%} of train.bin's tokens"
        if unreached:
            line += f"; {unreached / self.train_tokens:.0%} lie more than block_size={block_size} past their document's start and are never trained"
        return line

    def split(self, split: str) -> Path:
        return self.dir / f"{split}.bin"

    def record(self) -> dict:
        """What a checkpoint records of the data it was trained on: its folder, source and the sha256
        of train.bin and val.bin from meta.json (None for data prepared by nanoGPT, which has none)."""
        return {"dir": str(self.dir), "source": self.meta.get("source"), "sha256": self.meta.get("sha256")}


def open_training_data(cfg: DataConfig, block_size: int) -> TrainingData:
    """The dataset cfg names, each split checked to hold at least one window of block_size + 1."""
    data_dir = resolve_data_dir(cfg.data_dir, cfg.dataset)
    meta = load_meta(data_dir)
    splits = {s: open_split(data_dir, s, token_dtype(meta), min_tokens=1 if meta.get("loss_mask") else block_size + 1) for s in SPLITS}
    masks = {s: open_loss_mask(data_dir, s, meta, len(splits[s])) for s in SPLITS} if meta.get("loss_mask") else None  # checked before any work
    longest_prompt = (meta.get("loss_mask") or {}).get("longest_prompt", 0)
    if cfg.loss_on == "response" and block_size < longest_prompt:
        raise UserError(
            f"block_size={block_size} is shorter than the longest prompt in {data_dir} ({longest_prompt} tokens before its first counted one): some rows would have nothing to learn; "
            f"pass --block_size={longest_prompt} or more, or --loss_on=all"
        )
    return TrainingData(data_dir, meta, len(splits["train"]), masks)


def check_model_fits_data(model: GPT, block_size: int, data: TrainingData) -> None:
    """Refuse a block_size the model cannot take, or token ids it has no embedding for."""
    if block_size > model.config.block_size:
        raise UserError(f"block_size={block_size} is larger than the model's {model.config.block_size}; pass --block_size={model.config.block_size} or less")
    vocab_size = data.tokenizer["vocab_size"]
    if model.config.vocab_size < vocab_size:
        raise UserError(f"the model has {model.config.vocab_size} token ids, fewer than the dataset's {vocab_size}; use a dataset of its tokenizer")
    # one pass over the token files, by rank 0, whose verdict every rank then raises: a pass on each
    # rank would read a large train.bin world_size times over on a node, all at the start
    group = torch.distributed.is_available() and torch.distributed.is_initialized()
    found = [None]
    if not group or torch.distributed.get_rank() == 0:
        try:
            for split in SPLITS:
                check_token_ids(open_split(data.dir, split, data.dtype), vocab_size, data.split(split))
        except UserError as e:
            found = [str(e)]
    if group:
        torch.distributed.broadcast_object_list(found, src=0)
    if found[0]:
        raise UserError(found[0])


def to_device(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    return t.pin_memory().to(rt.device, non_blocking=True) if rt.device_type == "cuda" else t.to(rt.device)


def get_batch(path: Path, dtype: str, batch_size: int, block_size: int, seed: tuple[int, ...], rt: Runtime):
    """Batch of random windows from a token memmap: inputs x and next-token targets y, (B, T).

    The offsets depend only on `seed` (e.g. (run seed, split, batch index))."""
    data = np.memmap(path, dtype=DTYPES[dtype], mode="r")  # re-opened per batch so its pages do not pile up in RSS
    ix = np.random.default_rng(seed).integers(0, len(data) - block_size, size=batch_size)
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
    return to_device(x, rt), to_device(y, rt)


def document_rows(data: np.ndarray, loss_mask: LossMask, batch_size: int, block_size: int, seed: tuple[int, ...], counted_only: bool):
    """A batch of rows (x, y), each from the start of a random document on for block_size tokens,
    (B, T) int64 tensors. counted_only: targets that do not count are -1. A row that reaches the
    end of the split is padded (inputs 0, targets -1)."""
    starts = loss_mask.starts[np.random.default_rng(seed).integers(0, len(loss_mask.starts), size=batch_size)]
    x = np.zeros((batch_size, block_size), dtype=np.int64)
    y = np.full((batch_size, block_size), -1, dtype=np.int64)
    for r, i in enumerate(starts.tolist()):
        row = data[i : i + block_size + 1].astype(np.int64)
        n = len(row) - 1
        x[r, :n], y[r, :n] = row[:-1], row[1:]
        if counted_only:
            y[r, :n][loss_mask.mask[i + 1 : i + 1 + n] == 0] = -1
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class Batches:
    """The windows a run trains and evaluates on: training micro-batch j of iteration n is drawn
    from (seed, 0, n * gradient_accumulation_steps + j), eval batch k of a split from (seed, 1 + split, k)."""

    data: TrainingData
    cfg: DataConfig
    block_size: int
    seed: int
    rt: Runtime

    def batch(self, split: str, seed: tuple[int, ...]):
        if not self.data.masked:
            return get_batch(self.data.split(split), self.data.dtype, self.cfg.batch_size, self.block_size, seed, self.rt)
        data = np.memmap(self.data.split(split), dtype=DTYPES[self.data.dtype], mode="r")
        x, y = document_rows(data, self.data.loss_masks[split], self.cfg.batch_size, self.block_size, seed, self.cfg.loss_on == "response")
        return to_device(x, self.rt), to_device(y, self.rt)

    def train(self, iter_num: int) -> Iterator[tuple]:
        """Micro-batches from iteration iter_num on. Batch j of an iteration is the same whatever
        the number of ranks: rank r does micro-steps r*accum_steps ... (r+1)*accum_steps-1."""
        accum_steps = self.cfg.accum_steps(self.rt.world_size)
        while True:
            for micro_step in range(accum_steps):
                index = iter_num * self.cfg.gradient_accumulation_steps + self.rt.rank * accum_steps + micro_step
                yield self.batch("train", (self.seed, 0, index))
            iter_num += 1

    def eval(self, split: str, k: int):
        """Batch k of a split: the same eval batches every time, so evals compare like with like."""
        return self.batch(split, (self.seed, 1 + SPLITS.index(split), k))

    def sampler_state(self) -> dict:
        """What decides the training batches, so a resumed run with the same values draws the same
        batches as an uninterrupted one."""
        keys = {"seed": self.seed, "gradient_accumulation_steps": self.cfg.gradient_accumulation_steps, "batch_size": self.cfg.batch_size}
        return keys | {"block_size": self.block_size, "train_tokens": self.data.train_tokens}
