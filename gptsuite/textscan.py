"""Reading a text for the prepare pipeline: in blocks (memory stays flat however large the text),
cut where GPT-2's pre-tokenizer would cut anyway (so that pieces encode apart, in parallel, to the
tokens of the whole), split by position into train and val, and scanned once for its size, words,
sha256 and characters. pipeline.py tokenizes and writes what these read.
"""

import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gptsuite.datafiles import TextCorpus, TextFileCorpus
from gptsuite.errors import UserError
from gptsuite.tokenizer import BPE_CUT

progress = partial(tqdm, file=sys.stdout)  # progress bars are output: stderr holds only errors, one line
# Text goes to the tokenizing threads in chunks of about this many characters. Larger ones only
# fragment the heap (2M-character pieces of one text peaked at 150-200 MB of RSS, these at 85 MB).
CHUNK_CHARS = 1 << 19


ASCII_SPACE = np.zeros(256, dtype=bool)
ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # what str.split() splits on, in ASCII


def bpe_pieces(blocks: Iterable[str], size: int) -> Iterator[str]:
    """Re-cut a stream of text blocks into pieces of at least `size` characters (the last may be
    shorter), each ending at a BPE_CUT, so that they can be encoded apart, in parallel."""
    buf, seen = "", 0  # buf[:seen] has no cut point past the last piece
    for block in blocks:
        buf += block
        start = 0
        while len(buf) - start > size:
            m = BPE_CUT.search(buf, max(start + size, seen))
            if not m:
                seen = len(buf) - 1  # whether the last character is a cut point depends on the next
                break
            yield buf[start : m.start()]
            start = m.start()
        buf, seen = buf[start:], max(seen - start, 0)
    if buf:
        yield buf


def read_blocks(path: Path, size: int = CHUNK_CHARS) -> Iterator[str]:
    """A text file in blocks of `size` characters, decoded as read_text() decodes it whole."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a leading byte-order mark is not text; \r\n line ends become \n
            while block := f.read(size):
                yield block
    except FileNotFoundError:
        raise UserError(f"{path} not found; pass an existing file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason}); convert it to UTF-8 or remove it") from None


def text_blocks(corpus: TextCorpus | TextFileCorpus, size: int) -> Iterator[str]:
    if isinstance(corpus, TextFileCorpus):
        yield from read_blocks(corpus.path, size)
    else:
        yield from (corpus.text[i : i + size] for i in range(0, len(corpus.text), size))


def split_by_position(blocks: Iterable[str], cut: int) -> Iterator[tuple[str, str]]:
    """(split, block) pairs: the first `cut` characters are train, the rest val."""
    pos = 0
    for block in blocks:
        if pos < cut < pos + len(block):
            yield "train", block[: cut - pos]
            yield "val", block[cut - pos :]
        else:
            yield ("train" if pos < cut else "val"), block
        pos += len(block)


def text_size(corpus: TextCorpus | TextFileCorpus) -> int:
    """About how many bytes of text a corpus holds (a file's size), for the reading bar."""
    if isinstance(corpus, TextFileCorpus):
        try:
            return os.path.getsize(corpus.path)
        except OSError:
            return 0  # read_blocks reports it
    return len(corpus.text)


def scan_text(blocks: Iterable[str], char_level: bool, size: int = 0, chunk_chars: int = CHUNK_CHARS) -> tuple[int, int, str, list[str] | None]:
    """One pass over a text of about `size` bytes: its characters, words, sha256 and (at character
    level) vocabulary. Its bar shows only for a text of several chunks, as the tokenizing bar does."""
    chars, words, sha, vocab, prev_space = 0, 0, hashlib.sha256(), set(), True
    bar = progress(total=size, desc="reading", unit="B", unit_scale=True, disable=size < 4 * chunk_chars)
    try:
        for block in blocks:
            data = block.encode("utf-8")
            chars += len(block)
            words += count_words(block) - (not prev_space and not is_ascii_space(block[0]))  # a word across two blocks
            prev_space = is_ascii_space(block[-1])
            sha.update(data)
            if char_level:
                vocab.update(block)
            bar.update(min(len(data), size - bar.n))  # a byte-order mark or \r\n line ends make the text shorter than the file
        bar.update(size - bar.n)
    finally:
        bar.close()  # ends its line: what is printed next starts on a new one
    return chars, words, sha.hexdigest(), sorted(vocab) if char_level else None


def count_words(text: str) -> int:
    """Runs of characters other than ASCII whitespace (str.split() for ASCII text, 3x faster)."""
    if not text:
        return 0
    space = ASCII_SPACE[np.frombuffer(text.encode("utf-8"), dtype=np.uint8)]
    return int(np.count_nonzero(space[:-1] & ~space[1:])) + (not space[0])


def is_ascii_space(c: str) -> bool:
    return ord(c) < 128 and bool(ASCII_SPACE[ord(c)])
