"""Loss masks: which tokens of a prepared dataset the model learns to say, and where its documents start.

A dataset of conversations (prepare.py chat) or of prompt-and-response documents (a prompt
template, e.g. pubmed's abstract -> article) holds, beside train.bin and val.bin (which stay
nanoGPT's layout, readable by nanoGPT as they are):

    train.mask.bin, val.mask.bin      uint8, one per token: 1 if the token counts as a target in
                                      the loss (an assistant message and its end marker, a
                                      response and its <|endoftext|>), 0 if it is context
    train.starts.bin, val.starts.bin  int64, the token offset where each document starts

and meta.json's "loss_mask" says how many tokens count per split, the longest prompt (the tokens
of a document before its first counted one) and the files' sha256.

Rows of such data start at a document's start and run on through the documents after it for a
block (packed): every counted token has its own prompt before it in the row, and no row is padded
but the one that reaches the end of the split. (One document to a row would pad each row to the
block: the dataset report says what that would waste.) With --loss_on=response (the default) a
target that does not count is -1, which the loss leaves out; --loss_on=all counts every target of
the same rows.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptsuite.datafiles import MASK_DTYPE, SPLITS, STARTS_DTYPE, TokenWriter
from gptsuite.errors import UserError

MASK, STARTS = "{split}.mask.bin", "{split}.starts.bin"


def files(split: str) -> tuple[str, str]:
    return MASK.format(split=split), STARTS.format(split=split)


def remove(out_dir: Path) -> None:
    """Delete a dataset's loss masks and document starts (before new data is published there)."""
    for split in SPLITS:
        for name in files(split):
            (out_dir / name).unlink(missing_ok=True)


class MaskWriters:
    """Each split's loss mask, written as its tokens are, then where its documents start."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.masks = {s: TokenWriter(out_dir / files(s)[0], MASK_DTYPE) for s in SPLITS}
        self.starts: dict[str, TokenWriter] = {}
        self.counted = dict.fromkeys(SPLITS, 0)

    def write(self, split: str, ids_and_mask: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Write the mask of a run of tokens; returns the tokens, for train.bin / val.bin."""
        ids, mask = ids_and_mask
        assert len(ids) == len(mask)
        self.masks[split].write(mask)
        self.counted[split] += int(mask.sum())
        return ids

    def finish(self, stats, end_length: int) -> dict:
        """Write where each document starts (from the documents' token counts, in the order written)
        and return meta.json's "loss_mask"."""
        split_of, tokens = stats.column("split"), stats.column("tokens").astype(np.int64) + end_length
        longest_prompt, sha = 0, {}
        for i, s in enumerate(SPLITS):
            lengths = tokens[split_of == i]
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            self.starts[s] = TokenWriter(self.out_dir / files(s)[1], STARTS_DTYPE)
            self.starts[s].write(starts)
            self.starts[s].finish()
            n = self.masks[s].finish()
            counted = np.flatnonzero(np.fromfile(self.masks[s].tmp, dtype=np.uint8))
            if len(starts) and n:
                at = np.searchsorted(counted, starts)  # each document's first counted token, if it has one
                first = np.where(at < len(counted), counted[np.minimum(at, len(counted) - 1)] if len(counted) else 0, starts + lengths)
                first = np.minimum(first, starts + lengths)  # a document with nothing counted: all prompt
                longest_prompt = max(longest_prompt, int((first - starts).max()))
            sha |= {files(s)[0]: self.masks[s].sha256.hexdigest(), files(s)[1]: self.starts[s].sha256.hexdigest()}
        return {"counted_tokens": self.counted, "longest_prompt": longest_prompt, "sha256": sha}

    def publish(self) -> None:
        for w in [*self.masks.values(), *self.starts.values()]:
            w.publish()

    def abort(self) -> None:
        for w in [*self.masks.values(), *self.starts.values()]:
            w.abort()


@contextmanager
def mask_writers(out_dir: Path, masked: bool):
    """MaskWriters for a masked corpus (None otherwise); their temp files are removed on failure."""
    writers = MaskWriters(out_dir) if masked else None
    try:
        yield writers
    except BaseException:
        if writers:
            writers.abort()
        raise


@dataclass
class LossMask:
    """A split's loss mask and document starts, opened for reading."""

    mask: np.ndarray
    starts: np.ndarray


def open_loss_mask(data_dir: Path, split: str, meta: dict, tokens: int) -> LossMask | None:
    """The split's loss mask, if its dataset has one (meta.json's "loss_mask"), checked against its tokens."""
    if not meta.get("loss_mask"):
        return None
    mask_file, starts_file = (data_dir / name for name in files(split))
    for path in (mask_file, starts_file):
        if not path.is_file():
            raise UserError(f"{path} is missing, though {data_dir / 'meta.json'} says the data has a loss mask; prepare the dataset again")
    mask = np.memmap(mask_file, dtype=np.uint8, mode="r")
    starts = np.fromfile(starts_file, dtype=np.int64)
    if len(mask) != tokens or not len(starts) or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= tokens:
        raise UserError(f"{mask_file} or {starts_file} does not match {split}.bin ({tokens:,} tokens): the files are corrupt; prepare the dataset again")
    return LossMask(mask, starts)
