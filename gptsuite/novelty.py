"""Was a sample copied from the training data? An n-gram index of train.bin that scales to
hundreds of millions of tokens.

    python -m tools.novelty --data_dir=data/shakespeare_char --text="ROMEO: But soft, what light"
    python sample.py --out_dir=out-x --check_novelty    # the same report for every sample

For a text it reports the longest span of tokens that also occurs somewhere in train.bin, and
the fraction of the text's 8-grams (`--ngram`) found in train.bin. Spans shorter than the n-gram
length are not looked for (reported as "< 8").

The index is every n-gram of train.bin as a 64-bit hash, sorted, with the position where it
starts: `ngram8.keys.bin` (uint64) and `ngram8.pos.bin` (uint32, or uint64 past 4G tokens), 12
bytes a token, memory-mapped, built once and cached beside the data with `ngram8.json` (the
size, mtime and sha256 of train.bin it was built from; a changed train.bin is re-indexed). The
build is an external sort in bounded memory: hashes are computed chunk by chunk and spread into
buckets by their top bits, then each bucket is sorted on its own. A lookup is a binary search;
the longest span grows one token at a time, and each candidate is checked against train.bin
itself from the positions of its rarest n-gram, so a hash collision never counts as a match.
"""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptsuite.atomic import file_sha256, publish, temp_path
from gptsuite.datafiles import load_meta, open_split, token_dtype
from gptsuite.errors import UserError

VERSION = 1
MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the polynomial hash
CHUNK = 1 << 22  # n-grams hashed per step while building
BUCKET = 1 << 23  # n-grams sorted at once while building (~200 MB of working memory)


def hash_ngrams(tokens: np.ndarray, n: int) -> np.ndarray:
    """64-bit hash of every n-gram of tokens: (len(tokens) - n + 1,) uint64."""
    t = np.asarray(tokens).astype(np.uint64) + np.uint64(1)
    m = len(t) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # polynomial hash, wrapping mod 2**64
            h = h * MULT + t[k : k + m]
        # splitmix64's finaliser spreads the bits, so the top bits split the keys into even buckets
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


@dataclass
class NoveltyReport:
    tokens: int  # tokens in the text
    longest: int  # longest span also in train.bin; 0 if none of n tokens or more
    longest_start: int  # where that span starts in the text (-1 if none)
    ngrams: int  # n-grams in the text
    ngrams_found: int  # of those, how many occur in train.bin
    n: int
    span: list[int]  # the longest span's token ids

    @property
    def fraction(self) -> float | None:
        return self.ngrams_found / self.ngrams if self.ngrams else None


class NgramIndex:
    """The sorted n-gram hashes of a dataset's train.bin, with positions; see the module docstring."""

    def __init__(self, data_dir: str | Path, n: int = 8, index_dir: str | Path | None = None, chunk: int = CHUNK, bucket: int = BUCKET):
        self.data_dir, self.n = Path(data_dir), n
        self.index_dir = Path(index_dir) if index_dir else self.data_dir
        self.meta_path = self.index_dir / f"ngram{n}.json"
        self.keys_path = self.index_dir / f"ngram{n}.keys.bin"
        self.pos_path = self.index_dir / f"ngram{n}.pos.bin"
        self.chunk, self.bucket = chunk, bucket
        dtype = token_dtype(load_meta(self.data_dir))
        self.train = open_split(self.data_dir, "train", dtype, min_tokens=1)

    def fingerprint(self, with_sha: bool) -> dict:
        path = self.data_dir / "train.bin"
        st = path.stat()
        fp = {"version": VERSION, "n": self.n, "train_bytes": st.st_size, "train_mtime_ns": st.st_mtime_ns}
        if with_sha:
            fp["train_sha256"] = file_sha256(path)
        return fp

    def is_current(self) -> bool:
        """Whether the cached index was built from this train.bin (size and mtime, else sha256)."""
        if not (self.meta_path.exists() and self.keys_path.exists() and self.pos_path.exists()):
            return False
        try:
            stored = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        now = self.fingerprint(with_sha=False)
        if any(stored.get(k) != v for k, v in now.items()):
            if stored.get("version") != VERSION or stored.get("train_bytes") != now["train_bytes"]:
                return False
            if stored.get("train_sha256") != file_sha256(self.data_dir / "train.bin"):
                return False
            stored["train_mtime_ns"] = now["train_mtime_ns"]  # same content, touched: keep the index
            self._write_meta(stored)
        return self.keys_path.stat().st_size == 8 * stored["ngrams"]

    def _write_meta(self, meta: dict) -> None:
        tmp = temp_path(self.meta_path)
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        publish(tmp, self.meta_path)

    def build(self, verbose: bool = True) -> None:
        """Hash every n-gram of train.bin and sort the hashes with their positions, in memory
        bounded by `chunk` and `bucket` whatever the size of train.bin."""
        n, train = self.n, self.train
        total = max(0, len(train) - n + 1)
        pos_dtype = np.uint32 if len(train) < 2**32 else np.uint64
        bits = max(0, math.ceil(math.log2(max(1, total / self.bucket))))
        shift = np.uint64(64 - bits) if bits else None
        if verbose:
            print(f"indexing the {total:,} {n}-grams of {self.data_dir / 'train.bin'} ({2**bits} bucket(s))", file=sys.stderr)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        parts = [(temp_path(self.index_dir / f"ngram{n}.bucket{b}.keys"), temp_path(self.index_dir / f"ngram{n}.bucket{b}.pos")) for b in range(2**bits)]
        files = [(open(k, "wb"), open(p, "wb")) for k, p in parts]
        keys_tmp, pos_tmp = temp_path(self.keys_path), temp_path(self.pos_path)
        try:
            for start in range(0, total, self.chunk):  # pass 1: hash a chunk, scatter it into buckets
                stop = min(start + self.chunk, total)
                h = hash_ngrams(train[start : stop + n - 1], n)
                pos = np.arange(start, stop, dtype=pos_dtype)
                if bits:
                    b = (h >> shift).astype(np.int64)
                    order = np.argsort(b, kind="stable")
                    h, pos = h[order], pos[order]
                    bounds = np.searchsorted(b[order], np.arange(2**bits + 1))
                else:
                    bounds = np.array([0, len(h)])
                for i, (fk, fp) in enumerate(files):
                    h[bounds[i] : bounds[i + 1]].tofile(fk)
                    pos[bounds[i] : bounds[i + 1]].tofile(fp)
            for fk, fp in files:
                fk.close()
                fp.close()
            with open(keys_tmp, "wb") as out_keys, open(pos_tmp, "wb") as out_pos:
                for k_path, p_path in parts:  # pass 2: sort each bucket; buckets are already in key order
                    keys, pos = np.fromfile(k_path, dtype=np.uint64), np.fromfile(p_path, dtype=pos_dtype)
                    order = np.argsort(keys, kind="stable")  # stable: equal keys stay in position order
                    keys[order].tofile(out_keys)
                    pos[order].tofile(out_pos)
                    k_path.unlink()
                    p_path.unlink()
            publish(keys_tmp, self.keys_path)
            publish(pos_tmp, self.pos_path)
        finally:
            for fk, fp in files:
                fk.close()
                fp.close()
            for path in [keys_tmp, pos_tmp, *(p for pair in parts for p in pair)]:
                path.unlink(missing_ok=True)
        meta = {**self.fingerprint(with_sha=True), "ngrams": total, "pos_dtype": np.dtype(pos_dtype).name}
        self._write_meta(meta)

    def open(self, verbose: bool = True) -> "NgramIndex":
        """Build the index unless a current one is cached, then map it."""
        if not self.is_current():
            try:
                self.build(verbose)
            except PermissionError:
                raise UserError(f"cannot write the n-gram index into {self.index_dir}; make it writable or pass --index_dir=DIR") from None
        meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        if meta["ngrams"]:
            self.keys = np.memmap(self.keys_path, dtype=np.uint64, mode="r")
            self.pos = np.memmap(self.pos_path, dtype=meta["pos_dtype"], mode="r")
        else:  # train.bin shorter than one n-gram
            self.keys, self.pos = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32)
        return self

    def _occurs(self, s: np.ndarray, i: int, length: int, lo: np.ndarray, cnt: np.ndarray) -> bool:
        """Whether s[i:i+length] (length >= n) occurs in train.bin."""
        grams = cnt[i : i + length - self.n + 1]
        if not grams.all():
            return False
        k = i + int(grams.argmin())  # anchor on the rarest n-gram of the span: fewest candidates
        starts = self.pos[lo[k] : lo[k] + cnt[k]].astype(np.int64) - (k - i)
        starts = starts[(starts >= 0) & (starts + length <= len(self.train))]
        want, offsets = s[i : i + length], np.arange(length)
        for c in range(0, len(starts), 4096):
            window = self.train[starts[c : c + 4096, None] + offsets]
            if (window == want).all(axis=1).any():
                return True
        return False

    def found(self, ids) -> np.ndarray:
        """For each n-gram of ids, whether it occurs in train.bin (by its hash, as the report's share)."""
        h = hash_ngrams(np.asarray(ids, dtype=np.int64), self.n)
        return np.searchsorted(self.keys, h, side="right") > np.searchsorted(self.keys, h, side="left")

    def report(self, ids) -> NoveltyReport:
        """Longest span of ids found in train.bin and the share of its n-grams found there."""
        s = np.asarray(ids, dtype=np.int64)
        h = hash_ngrams(s, self.n)
        lo = np.searchsorted(self.keys, h, side="left")
        cnt = np.searchsorted(self.keys, h, side="right") - lo
        best, best_start, length = 0, -1, self.n
        for i in range(len(h)):  # the span to beat only grows, so this is linear in len(ids)
            while i + length <= len(s) and self._occurs(s, i, length, lo, cnt):
                best, best_start, length = length, i, length + 1
        span = s[best_start : best_start + best].tolist() if best else []
        return NoveltyReport(len(s), best, best_start, len(h), int((cnt > 0).sum()), self.n, span)


def format_report(r: NoveltyReport, tok) -> str:
    if not r.ngrams:
        return f"novelty: the text has {r.tokens} tokens, fewer than one {r.n}-gram"
    span = f"< {r.n} tokens" if not r.longest else f"{r.longest} tokens"
    line = f"novelty: longest span also in train.bin: {span}; {r.n}-grams found in train.bin: {r.ngrams_found}/{r.ngrams} ({100 * r.fraction:.1f}%)"
    if r.longest:
        line += f"\n  longest span: {tok.decode(r.span)!r}"
    return line


def open_index(data_dir: str | Path, tok_meta: dict | None = None, n: int = 8, index_dir: str | None = None) -> NgramIndex:
    """The n-gram index of data_dir's train.bin (built if needed), checking its tokenizer is tok_meta."""
    meta = load_meta(data_dir)
    if tok_meta is not None and meta["tokenizer"] != tok_meta:
        raise UserError(
            f"{data_dir} uses a {meta['tokenizer']['kind']} tokenizer of {meta['tokenizer']['vocab_size']} ids, but the model uses {tok_meta['kind']} with {tok_meta['vocab_size']}; pass the model's training data with --data_dir"
        )
    return NgramIndex(data_dir, n, index_dir).open()
