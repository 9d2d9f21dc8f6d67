"""The on-disk dataset format, written once and read safely.

A prepared dataset is a folder with `train.bin` and `val.bin` (raw little-endian uint16 token
ids, the nanoGPT layout, so data prepared by either tool trains in the other) and `meta.json`
(the tokenizer, dtype, token counts, where the text came from). Character-level data also gets
nanoGPT's `meta.pkl` (write_nanogpt_meta), for nanoGPT's train.py and sample.py only: this suite
reads meta.json, and a meta.pkl only in a nanoGPT folder that has no meta.json, with an unpickler
that refuses anything but plain dicts, strings and numbers.
"""

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from configurator import option
from gptsuite.atomic import atomic_path, publish, temp_path, write_text
from gptsuite.errors import UserError
from gptsuite.tokenizer import GPT2_META, TOKENIZER_FILE, sha256_text

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}  # of the token ids
MASK_DTYPE, STARTS_DTYPE = "uint8", "int64"  # of a loss mask (1: the token counts), of where each document starts (token offsets)
FILE_DTYPES = DTYPES | {MASK_DTYPE: np.uint8, STARTS_DTYPE: np.int64}  # what a TokenWriter writes


def token_dtype(meta: dict) -> str:
    """The token ids' dtype a dataset's meta.json names: uint16 where it names none (nanoGPT's)."""
    return meta.get("dtype", "uint16")


SPLITS = ("train", "val")  # train.bin and val.bin
DATA_ROOT = Path("data")  # prepared datasets: data/<name>, relative to where the commands run


def resolve_data_dir(data_dir: str = "", dataset: str = "", trained_on: dict | None = None) -> Path:
    """The prepared dataset folder: data_dir if given, else data/<dataset>, else the data a
    checkpoint's training config (`trained_on`) names."""
    if data_dir:
        return Path(data_dir)
    if dataset:
        return DATA_ROOT / dataset
    if trained_on and (trained_on.get("data_dir") or trained_on.get("dataset")):
        return resolve_data_dir(str(trained_on.get("data_dir") or ""), str(trained_on.get("dataset") or ""))
    raise UserError("pass --dataset=NAME or --data_dir=DIR: the model does not say which data it was trained on")


def read_text(path: Path, what: str, fix: str, encoding: str = "utf-8") -> str:
    """The text of a file the user named ("what", e.g. "prompt file"), or one clear error line
    that ends with `fix`, what to do about it."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found; {fix}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path} ({e.strerror}); {fix}") from None


@dataclass
class PrepareConfig:
    """Options every dataset takes; a dataset's own Config subclasses this."""

    data_dir: str = ""  # the folder to write: default data/<dataset> (train.py's --data_dir reads it)
    dtype: str = option("uint16", choices=("uint16", "uint32"))  # of the token ids: uint16 holds vocabularies up to 65,536 ids
    num_threads: int = option(0, ge=0)  # threads that tokenize documents; 0: one per CPU core
    overwrite: bool = False  # replace data in the output folder that was prepared from another source or with other settings
    # the tokenizer: gpt2 (GPT-2 BPE), char (one token per character), bpe (train a byte-level BPE of
    # vocab_size ids on the train split), or a tokenizer.json or prepared dataset (folder or name) whose BPE to reuse; '': the dataset's own
    tokenizer: str = ""
    vocab_size: int = option(8192, gt=0)  # with --tokenizer=bpe: the ids of the BPE to train, special tokens included


@dataclass
class TextCorpus:
    """One text, split by position: the first (1 - val_fraction) trains, the rest validates."""

    text: str
    source: str  # where the text came from, in words
    tokenizer: str = "char"  # 'char' or 'gpt2'
    val_fraction: float = 0.1


@dataclass
class TextFileCorpus:
    """A TextCorpus read from a file in blocks, never whole, so it may be larger than memory."""

    path: Path
    source: str
    tokenizer: str = "gpt2"
    val_fraction: float = 0.1


@dataclass
class DocumentCorpus:
    """Documents streamed from the source, each already assigned to a split.

    `documents()` yields (split, record) pairs, split 'train' or 'val', and is called once per pass
    over the data (twice at character level: the first pass collects the characters). A record is
    the document's text, or anything `format` turns into it (a row, a path); `format` runs in the
    tokenizing threads. Every document is followed by GPT-2's <|endoftext|> (at character level,
    by a blank line); documents that are missing (None), empty or only whitespace are skipped and counted."""

    documents: Callable[[], Iterable[tuple[str, Any]]]
    source: str  # where the documents came from, in words
    tokenizer: str | dict = "gpt2"  # 'gpt2' or 'char', or the metadata of a model's tokenizer to reuse (tokenizer.from_meta)
    format: Callable[[Any], str] | None = None  # record -> text; None: the records are the texts
    template: dict | None = None  # the prompt template (templates.py), kept in meta.json
    num_documents: int | None = None  # if known up front: the progress bar shows an ETA
    meta: dict = field(default_factory=dict)  # more entries for meta.json
    # per split, the order to write its documents in: order[s][j] is the position, among split s's
    # documents as streamed, of the j-th one written (e.g. a shuffle). No document with a text is
    # skipped then: an empty one is its end token alone, as nanoGPT writes them; a missing one (None) is skipped.
    order: dict[str, np.ndarray] | None = None
    # train.bin holds at most this many tokens (0: no limit): documents are written whole, and reading
    # stops at the first train document that would not fit
    max_train_tokens: int = 0
    rules: "RecordRules" = field(default_factory=lambda: RecordRules())
    document_end: bool = True  # each document is followed by the end token (False: the text ends itself, as a chat does)


@dataclass
class RecordRules:
    """What a dataset of records (conversations, prompt and response) asks of the pipeline."""

    masked: bool = False  # `format` gives chat.Marked texts: a loss mask is written beside each split, and where each document starts
    skip_bad: bool = False  # a record that does not fit (chat.BadRecord) is skipped and counted, instead of refused
    max_tokens: int = 0  # a document longer than this (with its end token) is a bad record; 0: no limit


def check_fits(ids: np.ndarray, dtype: str) -> None:
    """Refuse token ids that the dtype cannot hold, instead of letting them wrap."""
    limit = np.iinfo(FILE_DTYPES[dtype]).max
    if ids.size and (ids.min() < 0 or ids.max() > limit):
        bad = int(ids.max()) if ids.max() > limit else int(ids.min())
        raise UserError(f"token id {bad} does not fit {dtype} (0..{limit}); use a tokenizer with a smaller vocabulary or --dtype=uint32")


class TokenWriter:
    """Append token chunks to `path` through a temp file; the real name appears only on publish().

    An interrupted prepare leaves at most a hidden temp file, never a train.bin that looks complete."""

    def __init__(self, path: str | Path, dtype: str = "uint16"):
        self.path, self.dtype, self.count = Path(path), dtype, 0
        self.sha256 = hashlib.sha256()  # of the file's bytes
        self.tmp = temp_path(self.path)
        self._f = open(self.tmp, "wb")

    def write(self, ids) -> None:
        arr = np.asarray(ids)
        check_fits(arr, self.dtype)
        data = np.ascontiguousarray(arr, dtype=FILE_DTYPES[self.dtype])
        data.tofile(self._f)
        self.sha256.update(data)
        self.count += arr.size

    def finish(self) -> int:
        """Close the temp file, complete but not yet under its real name."""
        self._f.close()
        return self.count

    def publish(self) -> None:
        publish(self.tmp, self.path)

    def close(self) -> int:
        self.finish()
        self.publish()
        return self.count

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)


def reorder_split(writer: TokenWriter, lengths: np.ndarray, order: np.ndarray) -> TokenWriter:
    """A writer of the same split with its documents (token runs of `lengths`, as written) in
    `order`. The written file is read back with pread, not mapped, so memory stays flat."""
    if len(order) != len(lengths) or (len(order) and (order.min() < 0 or order.max() >= len(lengths))):
        raise UserError(f"the source has {len(lengths):,} documents for {writer.path.name}, not the {len(order):,} counted before; prepare again")
    unordered = writer.tmp.with_name(writer.tmp.name.replace(".bin.", ".bin.unordered.", 1))
    os.replace(writer.tmp, unordered)
    out = TokenWriter(writer.path, writer.dtype)
    itemsize = np.dtype(DTYPES[writer.dtype]).itemsize
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]]) * itemsize
    try:
        with open(unordered, "rb") as f:
            fd, parts, size = f.fileno(), [], 0
            for i in order.tolist():
                parts.append(os.pread(fd, int(lengths[i]) * itemsize, int(starts[i])))
                size += len(parts[-1])
                if size >= 1 << 22:  # write in pieces of about 4 MB
                    out.write(np.frombuffer(b"".join(parts), dtype=DTYPES[writer.dtype]))
                    parts, size = [], 0
            out.write(np.frombuffer(b"".join(parts), dtype=DTYPES[writer.dtype]))
        out.finish()
    except BaseException:
        out.abort()
        raise
    finally:
        unordered.unlink(missing_ok=True)
    return out


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


NANOGPT_META = "meta.pkl"  # nanoGPT's vocabulary file for character-level data


def write_nanogpt_meta(out_dir: Path, chars: list[str]) -> None:
    """nanoGPT's meta.pkl for a character vocabulary, as its data/shakespeare_char/prepare.py writes
    it: a plain dict of vocab_size, itos and stoi. Without it nanoGPT's train.py takes the data for
    GPT-2 BPE (a 50304-id model) and its sample.py decodes with tiktoken. Written for nanoGPT
    only; nothing in this suite reads it where meta.json is beside it."""
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    with atomic_path(out_dir / NANOGPT_META) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(meta, f, protocol=4)  # readable by every Python 3 nanoGPT runs on


class _PlainUnpickler(pickle.Unpickler):
    """Reads nanoGPT's meta.pkl (dicts of str/int) and refuses anything that names a class or function."""

    def find_class(self, module, name):
        raise UserError(f"meta.pkl refers to {module}.{name}; only plain dicts, strings and numbers are accepted")


def check_meta(meta, path: Path) -> None:
    """Refuse a meta.json that does not describe a tokenizer and dtype this suite can use."""
    tok = meta.get("tokenizer") if isinstance(meta, dict) else None
    if not isinstance(tok, dict):
        raise UserError(f"{path} has no 'tokenizer' entry; prepare the dataset again")
    size = tok.get("vocab_size")
    problem = None
    if tok.get("kind") not in ("char", "gpt2", "bpe"):
        problem = f"tokenizer kind {tok.get('kind')!r} is not 'char', 'gpt2' or 'bpe'"
    elif not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        problem = f"tokenizer vocab_size {size!r} is not a positive integer"
    elif tok["kind"] == "char" and (not isinstance(tok.get("vocab"), list) or len(tok["vocab"]) != size or not all(isinstance(c, str) for c in tok["vocab"])):
        problem = f"the char vocabulary is not a list of {size} strings"
    elif tok["kind"] == "bpe" and not (isinstance(tok.get("sha256"), str) and tok.get("file") == TOKENIZER_FILE):
        problem = f"the bpe tokenizer has no sha256 or does not name {TOKENIZER_FILE}"
    elif token_dtype(meta) not in DTYPES:
        problem = f"dtype {meta['dtype']!r} is not one of {', '.join(DTYPES)}"
    if problem:
        raise UserError(f"{path} is corrupt: {problem}; prepare the dataset again")


_said: set[Path] = set()  # what load_meta printed a note about in this process


def _say_once(note: str, path: Path) -> None:
    """Print a note about a dataset folder once per process, however often the folder is read
    (eval.py reads it for the checkpoint's tokenizer, then for the data)."""
    if path.resolve() not in _said:
        _said.add(path.resolve())
        print(note)


def load_meta(data_dir: str | Path) -> dict:
    """meta.json of a prepared dataset; a nanoGPT folder (meta.pkl or nothing) is read too."""
    data_dir = Path(data_dir)
    if not (data_dir / "train.bin").exists() and not (data_dir / "meta.json").exists():
        if (data_dir / "prepare.py").exists():  # a built-in dataset's folder (data/<name>/prepare.py) that was not prepared yet
            raise UserError(
                f"no prepared dataset in {data_dir}; prepare it first: `python prepare.py {data_dir.name}` (options: python prepare.py {data_dir.name} --help)"
            )
        raise UserError(
            f"no prepared dataset in {data_dir}; prepare it first: `python prepare.py text --input=FILE_OR_FOLDER --data_dir={data_dir}` for your own text, "
            f"or `python prepare.py <dataset>` for a built-in one (python prepare.py --help lists them)"
        )
    path = data_dir / "meta.json"
    if path.exists():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not valid JSON ({e}); prepare the dataset again") from None
        check_meta(meta, path)
        return meta | ({"tokenizer": bpe_meta(data_dir, meta["tokenizer"])} if meta["tokenizer"]["kind"] == "bpe" else {})
    pkl = data_dir / "meta.pkl"
    if pkl.exists():  # nanoGPT char-level data
        try:
            with open(pkl, "rb") as f:
                old = _PlainUnpickler(f).load()
            chars = [old["itos"][i] for i in range(old["vocab_size"])]
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as e:
            raise UserError(f"{pkl} is not a nanoGPT meta.pkl ({e}); prepare the dataset again") from None
        _say_once(f"reading nanoGPT metadata {pkl}", pkl)
        return {"tokenizer": {"kind": "char", "vocab_size": len(chars), "vocab": chars}, "dtype": "uint16", "vocab_size": len(chars)}
    _say_once(f"no meta.json in {data_dir}: reading it as nanoGPT GPT-2 BPE data (uint16)", data_dir)
    return {"tokenizer": GPT2_META, "dtype": "uint16", "vocab_size": GPT2_META["vocab_size"]}


def bpe_meta(data_dir: Path, stored: dict) -> dict:
    """A trained BPE's dict as tokenizer.meta() gives it (the whole tokenizer.json), from the file
    beside the memmaps, refused if it is not the one they were tokenized with."""
    path = data_dir / TOKENIZER_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"{path} cannot be read ({getattr(e, 'strerror', None) or e}), and {data_dir}'s tokens are of that tokenizer; put it back, or prepare the dataset again"
        ) from None
    if sha256_text(text) != stored["sha256"]:
        raise UserError(
            f"{path} has changed since the data was prepared (sha256 {sha256_text(text)[:12]}, meta.json records {stored['sha256'][:12]}): "
            "its tokens no longer mean what they did; put the original back, or prepare the dataset again with --overwrite=True"
        )
    return {k: v for k, v in stored.items() if k != "file"} | {"json": text}


def check_replace(out_dir: Path, prepared_from: dict, source: str, overwrite: bool = False) -> None:
    """Refuse to replace the dataset in out_dir if it was prepared from another source or with other
    settings (its meta.json's `prepared_from` differs from this prepare's), naming both and the
    flag that replaces it; preparing again what is there (the same bytes) goes on."""
    path = out_dir / "meta.json"
    elsewhere = "prepare into another folder (--data_dir=DIR) or pass --overwrite=True to replace it"
    if overwrite:
        return
    if not path.exists():
        bins = [f"{s}.bin" for s in SPLITS if (out_dir / f"{s}.bin").exists()]
        if bins:
            raise UserError(
                f"{out_dir} holds {' and '.join(bins)} with no meta.json saying what they were prepared from, and this prepare of {source} would replace them; {elsewhere}"
            )
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        recorded = old.get("prepared_from") or legacy_prepared_from(old, prepared_from)
    except (OSError, ValueError, AttributeError, TypeError):
        raise UserError(f"{path} cannot be read, so what {out_dir} holds is unknown, and this prepare of {source} would replace it; {elsewhere}") from None
    if recorded == prepared_from:
        return
    keys = [k for k in dict.fromkeys([*recorded, *prepared_from]) if recorded.get(k) != prepared_from.get(k)]

    def describe(what: dict, source: str) -> str:
        details = [f"{k}={short(what.get(k))}" for k in keys if k != "source"]
        return source + (f" ({', '.join(details)})" if details else "")

    raise UserError(
        f"{out_dir} holds data prepared from {describe(recorded, str(old.get('source', 'an unknown source')))}, "
        f"and this prepare from {describe(prepared_from, source)} would replace it; {elsewhere}"
    )


def short(value: Any) -> str:
    """A value for a one-line message: sha256 digests cut to 12 hex digits."""
    return f"{value[:12]}…" if isinstance(value, str) and len(value) == 64 else repr(value)


def legacy_prepared_from(meta: dict, like: dict) -> dict:
    """What a meta.json written before `prepared_from` was recorded says of the same keys."""
    have = meta | {"tokenizer": (meta.get("tokenizer") or {}).get("kind"), "text_sha256": meta.get("source_sha256")}
    return {k: have.get(k) for k in like}


def open_split(data_dir: str | Path, split: str, dtype: str = "uint16", min_tokens: int = 2) -> np.memmap:
    """Memory-map train.bin / val.bin, refusing missing, truncated or too-short files."""
    path = Path(data_dir) / f"{split}.bin"
    if not path.exists():
        raise UserError(f"{path} not found; run `python prepare.py <dataset>` to create it")
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    size = path.stat().st_size
    if size % itemsize:
        raise UserError(f"{path} is {size} bytes, not a whole number of {dtype} tokens: the file is truncated or corrupt; prepare the dataset again")
    if size // itemsize < min_tokens:
        raise UserError(
            f"{path} holds {size // itemsize} tokens, fewer than the {min_tokens} one batch needs (block_size + 1); use a smaller --block_size or more data"
        )
    return np.memmap(path, dtype=DTYPES[dtype], mode="r")


def check_token_ids(data: np.ndarray, vocab_size: int, path: Path) -> None:
    """Refuse token ids that the model has no embedding for (a corrupt file, or another tokenizer's),
    before any work: a pass over the file, chunk by chunk (several GB/s)."""
    top = 0
    for start in range(0, len(data), 1 << 26):
        top = max(top, int(data[start : start + (1 << 26)].max()))
    if top >= vocab_size:
        raise UserError(
            f"{path} holds token id {top}, but the vocabulary has {vocab_size} ids; the file is corrupt or from another tokenizer: prepare the dataset again"
        )
