"""The prepare pipeline: text -> token ids in train.bin / val.bin (uint16 memmaps) + meta.json.

A dataset (data/<name>/prepare.py) returns a TextCorpus (one text, split by position), a
TextFileCorpus (the same, read from a file in blocks) or a DocumentCorpus (documents streamed
from the source, each with its split); `prepare_text` and `prepare_documents` do the rest:
tokenizing in parallel threads, writing the memmaps in chunks through temp files (memory stays
flat however large the corpus), meta.json last. Running a prepare again with the same inputs
writes the same bytes.

A prepared dataset is never replaced by data from another source: meta.json records what it was
prepared from (`prepared_from`: the text's sha256, or the documents' source, and the settings that
shape the tokens), and a prepare into a folder that holds other data stops before writing
anything, unless it is told to replace it (overwrite=True, `--overwrite=True` on the command line).
"""

import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gptsuite import bpe, chat, masks
from gptsuite.atomic import write_text
from gptsuite.chat import BadRecord, Marked
from gptsuite.datafiles import (
    NANOGPT_META,
    SPLITS,
    DocumentCorpus,
    RecordRules,
    TextCorpus,
    TextFileCorpus,
    TokenWriter,
    check_replace,
    reorder_split,
    write_json,
    write_nanogpt_meta,
)
from gptsuite.errors import UserError
from gptsuite.report import DocStats, describe_bad
from gptsuite.textscan import CHUNK_CHARS, bpe_pieces, count_words, progress, scan_text, split_by_position, text_blocks, text_size
from gptsuite.tokenizer import TOKENIZER_FILE, CharTokenizer, GPT2Tokenizer, stored_meta

CHAR_DOCUMENT_END = "\n\n"  # a blank line ends each document at character level, which has no end-of-text token


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], threads: int) -> Iterator[Any]:
    """fn over items in a pool of threads, results in order. At most 2 items per thread are in
    flight, so a stream of any length goes through in bounded memory."""
    pending: deque = deque()
    with ThreadPoolExecutor(threads) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


@contextmanager
def split_writers(out_dir: Path, dtype: str) -> Iterator[dict[str, TokenWriter]]:
    """train.bin and val.bin under temp names; removed if anything goes wrong before publish_splits."""
    writers = {s: TokenWriter(out_dir / f"{s}.bin", dtype) for s in SPLITS}
    try:
        yield writers
    except BaseException:
        for w in writers.values():
            w.abort()
        raise


def finish_splits(writers: dict[str, TokenWriter], what: str) -> dict[str, int]:
    counts = {s: w.finish() for s, w in writers.items()}
    for s, n in counts.items():
        if not n:
            raise UserError(
                f"the {s} split has no {what}; give the dataset more {what}" + (" (or a larger --val_fraction where the dataset has one)" if s == "val" else "")
            )
    return counts


def publish_splits(writers: dict[str, TokenWriter], out_dir: Path, meta: dict, publish_more: Callable[[], None] | None = None) -> None:
    """Give the finished .bin files their names (and the loss masks theirs, with publish_more),
    write nanoGPT's meta.pkl for a character vocabulary, then meta.json, which marks the data complete."""
    (out_dir / "meta.json").unlink(missing_ok=True)  # old data must not look complete with new bins beside it
    (out_dir / NANOGPT_META).unlink(missing_ok=True)  # nor may an old vocabulary describe new tokens to nanoGPT
    masks.remove(out_dir)  # nor old masks new tokens
    for w in writers.values():
        w.publish()
    if publish_more:
        publish_more()
    if meta["tokenizer"]["kind"] == "char":
        write_nanogpt_meta(out_dir, meta["tokenizer"]["vocab"])
    if meta["tokenizer"]["kind"] == "bpe":
        write_text(out_dir / TOKENIZER_FILE, meta["tokenizer"]["json"])
    write_json(out_dir / "meta.json", meta | {"tokenizer": stored_meta(meta["tokenizer"])})


def show_progress(bar: tqdm, writers: dict, t0: float, n: int) -> None:
    """Advance a tokenizing bar by n (characters or documents), with the tokens so far and their rate."""
    tokens = sum(w.count for w in writers.values())
    bar.set_postfix_str(f"{tokens / max(time.time() - t0, 1e-9):,.0f} tok/s, {tokens:,} tokens", refresh=False)
    bar.update(n)


def split_meta(tok, dtype: str, counts: dict, writers: dict, source: str) -> dict:
    """What meta.json says of every prepared dataset: tokenizer, dtype, tokens per split, the source
    and the sha256 of train.bin and val.bin."""
    return {
        "tokenizer": tok.meta(),
        "vocab_size": tok.vocab_size,
        "dtype": dtype,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "source": source,
        "sha256": {s: w.sha256.hexdigest() for s, w in writers.items()},
    }


def prepare_text(
    corpus: TextCorpus | TextFileCorpus,
    out_dir: Path,
    dtype: str = "uint16",
    num_threads: int = 0,
    chunk_chars: int = CHUNK_CHARS,
    overwrite: bool = False,
    vocab_size: int = bpe.DEFAULT_VOCAB,
):
    """Tokenize one text, split by position, into train.bin and val.bin, then write meta.json.

    A file is read in blocks, twice (counting its characters, then tokenizing), never whole; GPT-2
    BPE encodes pieces cut at BPE_CUT points in a pool of threads, which gives the same tokens as
    encoding each split whole. A BPE trained here (corpus.tokenizer 'bpe', of vocab_size ids)
    reads the train split once more, before, to learn from it. Data already in out_dir is replaced only if it was prepared from the
    same text with the same settings, or with overwrite=True (check_replace). Returns meta.json's
    contents and the statistics (one document)."""
    recorded, dtype, reused = bpe.tokenizer_settings(corpus.tokenizer, dtype, vocab_size)
    n_chars, words, sha, vocab = scan_text(text_blocks(corpus, chunk_chars), corpus.tokenizer == "char", text_size(corpus), chunk_chars)
    if not n_chars:
        raise UserError("the text is empty; pass a file with some text in it (--input=FILE)")
    # the same text (whatever its file's name or path), tokenizer, split and dtype write the same bytes
    prepared_from = {"text_sha256": sha, **recorded, "val_fraction": corpus.val_fraction, "dtype": dtype}
    check_replace(out_dir, prepared_from, corpus.source, overwrite)
    threads = num_threads if num_threads > 0 else os.cpu_count() or 1
    cut = int(n_chars * (1 - corpus.val_fraction))
    if corpus.tokenizer in ("gpt2", "char"):
        tok = CharTokenizer(vocab) if vocab is not None else GPT2Tokenizer()
    else:
        train = lambda: bpe_pieces((b for s, b in split_by_position(text_blocks(corpus, chunk_chars), cut) if s == "train"), chunk_chars)  # noqa: E731
        tok = bpe.bpe_tokenizer(reused, vocab_size, train)
    pieces = (
        (split, piece)
        for split, group in groupby(split_by_position(text_blocks(corpus, chunk_chars), cut), key=itemgetter(0))
        for piece in (bpe_pieces((b for _, b in group), chunk_chars) if tok.kind != "char" else (b for _, b in group))
    )
    bar = progress(total=n_chars, desc="tokenizing", unit="char", unit_scale=True, disable=n_chars < 4 * chunk_chars)
    t0 = time.time()
    try:
        with split_writers(out_dir, dtype) as writers:
            for split, n, ids in ordered_map(lambda p: (p[0], len(p[1]), tok.encode_array(p[1])), pieces, threads):
                writers[split].write(ids)
                show_progress(bar, writers, t0, n)
            counts = finish_splits(writers, "text")
    finally:
        bar.close()
    meta = split_meta(tok, dtype, counts, writers, corpus.source) | {
        "characters": n_chars,
        "val_fraction": corpus.val_fraction,
        "source_sha256": sha,  # of the text, UTF-8 encoded
        "prepared_from": prepared_from,
    }
    publish_splits(writers, out_dir, meta)
    stats = DocStats()
    stats.add(*(np.array([v]) for v in (0, n_chars, words, counts["train"] + counts["val"])))
    return meta, stats


def document_end(tok) -> np.ndarray:
    ids = [tok.eot_token] if tok.eot_token is not None else tok.encode(CHAR_DOCUMENT_END)
    return np.array(ids, dtype=np.uint32)


def record_size(record: Any) -> int:
    """About how many characters a record holds, to cut the stream into chunks."""
    if record is None:  # a missing text
        return 0
    if isinstance(record, str):
        return len(record)
    if isinstance(record, (tuple, list)):
        return sum(len(v) for v in record if isinstance(v, str))
    if isinstance(record, os.PathLike):  # a file the worker reads
        try:
            return os.path.getsize(record)
        except OSError:
            return 0  # the worker reports it
    return 4096


def chunked(items: Iterable[tuple[str, Any]], chunk_chars: int) -> Iterator[list[tuple[str, Any]]]:
    chunk, size = [], 0
    for item in items:
        chunk.append(item)
        size += record_size(item[1])
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def encode_text(text, tok, end: np.ndarray, keep_empty: bool, rules: RecordRules):
    """One document's (text, ids, mask); None for a missing or empty text; BadRecord for one too long."""
    marked = text if isinstance(text, Marked) else None
    text = marked.text if marked else text
    if text is None or (not keep_empty and (not text or text.isspace())):
        return None
    arr, mask = chat.encode(tok, marked) if marked else (tok.encode_array(text), None)
    if rules.max_tokens and len(arr) + len(end) > rules.max_tokens:
        raise BadRecord(
            marked.where if marked else "a document",
            f"is {len(arr) + len(end):,} tokens, longer than --block_size={rules.max_tokens}",
            "longer than block_size",
        )
    return text, arr, mask


def encode_chunk(
    chunk: list[tuple[str, Any]], tok, fmt: Callable[[Any], str] | None, end: np.ndarray, keep_empty: bool = False, rules: RecordRules | None = None
):
    """Runs in a worker thread: format and tokenize a chunk of records, each document followed by
    `end`. A record is one document, or several written one after another (format returns a tuple:
    a preference pair's chosen and rejected conversations), all or none of them. Returns the token
    ids of each split (and with rules.masked, each split's loss mask), the statistics of the
    documents written, which of the chunk's records were written (`kept`; the others were skipped:
    a missing text (None), one that is empty or only whitespace, unless keep_empty, or a bad record
    under rules.skip_bad), the split of each, and the reasons for the bad records skipped."""
    rules = rules or RecordRules()
    ids: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    mask_parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    split, chars, words, tokens, kept, splits, bad = [], [], [], [], [], [], Counter()
    for name, record in chunk:
        splits.append(SPLITS.index(name))  # ValueError: a dataset yielded a split other than train / val
        kept.append(False)
        try:
            texts = fmt(record) if fmt else record
            docs = [encode_text(t, tok, end, keep_empty, rules) for t in (texts if isinstance(texts, tuple) else (texts,))]
        except BadRecord as e:
            if not rules.skip_bad:
                raise UserError(f"{e}; fix the record, or pass --skip_bad=True to skip such records (they are counted in the report)") from None
            bad[e.reason] += 1
            continue
        if any(d is None for d in docs):
            continue
        kept[-1] = True
        for text, arr, mask in docs:
            ids[name] += [arr, end]
            if rules.masked:
                mask_parts[name] += [np.ones(len(arr), dtype=np.uint8) if mask is None else mask, np.ones(len(end), dtype=np.uint8)]
            split.append(splits[-1])
            chars.append(len(text))
            words.append(count_words(text))
            tokens.append(len(arr))
    out = {s: np.concatenate(parts) for s, parts in ids.items() if parts}
    if rules.masked:
        out = {s: (a, np.concatenate(mask_parts[s])) for s, a in out.items()}
    doc_stats = (np.array(split, dtype=np.int64), np.array(chars), np.array(words), np.array(tokens, dtype=np.int64))
    return out, doc_stats, np.array(kept, dtype=bool), np.array(splits), bad


def within_budget(ids: dict, doc_stats: tuple, kept: np.ndarray, splits: np.ndarray, end_length: int, room: int):
    """An encoded chunk cut before its first document that would take train.bin past `room` more
    tokens (documents are whole or not written), and whether the budget is now spent: the
    documents after it are not written, nor counted as read."""
    split, tokens = doc_stats[0], doc_stats[3]
    train = np.where(split == SPLITS.index("train"), tokens + end_length, 0).cumsum()
    if not len(train) or train[-1] < room:
        return ids, doc_stats, kept, splits, False
    n = int(np.searchsorted(train, room, side="right"))  # documents [0, n) fit
    cut = len(kept) if n == len(split) else int(np.flatnonzero(kept)[n])  # position in the chunk of the first one that does not
    ids = {s: a[: int((tokens[:n][split[:n] == SPLITS.index(s)] + end_length).sum())] for s, a in ids.items()}
    return {s: a for s, a in ids.items() if len(a)}, tuple(a[:n] for a in doc_stats), kept[:cut], splits[:cut], True


def char_tokenizer(corpus: DocumentCorpus) -> CharTokenizer:
    """A first pass over the documents to collect their characters (a bad record's are left out:
    the second pass skips or refuses it)."""
    chars = set(CHAR_DOCUMENT_END)
    for _, record in progress(corpus.documents(), desc="collecting characters", unit="doc", total=corpus.num_documents):
        try:
            text = corpus.format(record) if corpus.format else record
        except BadRecord:
            continue
        for t in text if isinstance(text, tuple) else (text,):
            chars.update((t.text if isinstance(t, Marked) else t) or "")
    return CharTokenizer(sorted(chars))


def prepare_documents(
    corpus: DocumentCorpus,
    out_dir: Path,
    dtype: str = "uint16",
    num_threads: int = 0,
    chunk_chars: int = CHUNK_CHARS,
    overwrite: bool = False,
    vocab_size: int = bpe.DEFAULT_VOCAB,
):
    """Tokenize a stream of documents into train.bin and val.bin, then write meta.json.

    Chunks of documents are tokenized by a pool of threads (tiktoken releases the GIL) and written
    in order as they finish; at most 2 chunks per thread are in flight, so memory does not grow
    with the corpus. Data already in out_dir is replaced only if it was prepared from the same
    source with the same settings, or with overwrite=True (check_replace). A corpus of marked
    records (corpus.rules.masked) also gets each split's loss mask and document starts (masks.py).
    Returns meta.json's contents and the per-document statistics."""
    recorded, dtype, reused = bpe.tokenizer_settings(corpus.tokenizer, dtype, vocab_size)
    rules = corpus.rules
    assert not (rules.masked and (corpus.order is not None or corpus.max_train_tokens)), "a masked corpus is written in its order, whole"
    # the documents are not read twice to hash them: the same source (as the dataset describes it:
    # its path, files or rows) with the same settings counts as the same data
    prepared_from = {"source": corpus.source, **recorded, "dtype": dtype, "template": corpus.template, **corpus.meta}
    prepared_from = json.loads(json.dumps(prepared_from))  # as meta.json will hold it (tuples become lists), to compare alike
    check_replace(out_dir, prepared_from, corpus.source, overwrite)
    if corpus.tokenizer in ("gpt2", "char"):
        tok = char_tokenizer(corpus) if corpus.tokenizer == "char" else GPT2Tokenizer()
    else:
        tok = bpe.bpe_tokenizer(reused, vocab_size, lambda: bpe.train_texts(corpus), corpus.num_documents)
    threads = num_threads if num_threads > 0 else os.cpu_count() or 1
    end = document_end(tok) if corpus.document_end else np.zeros(0, dtype=np.uint32)
    work = partial(encode_chunk, tok=tok, fmt=corpus.format, end=end, keep_empty=corpus.order is not None, rules=rules)
    stats = DocStats()
    bar = progress(total=corpus.num_documents, desc="tokenizing", unit="doc")
    t0 = time.time()
    try:
        with split_writers(out_dir, dtype) as writers, masks.mask_writers(out_dir, rules.masked) as mask_out:
            present: list[np.ndarray] = []  # with `order`: each document's split and whether it was written, as streamed
            for ids, doc_stats, kept, splits, bad in ordered_map(work, chunked(corpus.documents(), chunk_chars), threads):
                spent = False
                if corpus.max_train_tokens:  # checked per document: train.bin never holds more than the budget
                    ids, doc_stats, kept, splits, spent = within_budget(
                        ids, doc_stats, kept, splits, len(end), corpus.max_train_tokens - writers["train"].count
                    )
                for split, arr in ids.items():
                    writers[split].write(mask_out.write(split, arr) if rules.masked else arr)
                stats.add(*doc_stats)
                stats.skipped += int((~kept).sum()) - sum(bad.values())
                stats.bad.update(bad)
                if corpus.order is not None:
                    present.append(np.stack([splits, kept]).astype(np.uint8))
                show_progress(bar, writers, t0, len(kept))
                if spent:
                    break  # the documents in flight are dropped; so is the rest of the stream
            if not len(stats):
                raise UserError(f"no documents with any text in {corpus.source}" + (f" ({describe_bad(stats.bad)})" if stats.bad else "") + "; check the input")
            if spent and not writers["train"].count:
                raise UserError(
                    f"the first train document is longer than --max_tokens={corpus.max_train_tokens:,} tokens (documents go in whole, each with its end token); raise --max_tokens"
                )
            counts = finish_splits(writers, "documents")
            if corpus.order is not None:
                split, streamed = stats.column("split"), np.concatenate(present, axis=1)
                for i, s in enumerate(SPLITS):
                    written = streamed[1][streamed[0] == i].astype(bool)
                    lengths = np.zeros(len(written), dtype=np.int64)  # a skipped document (a missing text) is not written: 0 tokens
                    lengths[written] = stats.column("tokens")[split == i].astype(np.int64) + len(end)
                    writers[s] = reorder_split(writers[s], lengths, corpus.order[s])
            mask_meta = mask_out.finish(stats, len(end)) if rules.masked else None
    finally:
        bar.close()
    meta = split_meta(tok, dtype, counts, writers, corpus.source) | {
        "documents": {s: int((stats.column("split") == i).sum()) for i, s in enumerate(SPLITS)},
        "characters": int(stats.column("chars").sum(dtype=np.int64)),
        "document_end": ("<|endoftext|>" if tok.eot_token is not None else CHAR_DOCUMENT_END) if corpus.document_end else None,
        **({"template": corpus.template} if corpus.template else {}),
        **({"loss_mask": mask_meta} if mask_meta else {}),
        **({"skipped_records": dict(stats.bad)} if stats.bad else {}),
        **corpus.meta,
        "prepared_from": prepared_from,
    }
    publish_splits(writers, out_dir, meta, mask_out.publish if rules.masked else None)
    return meta, stats
