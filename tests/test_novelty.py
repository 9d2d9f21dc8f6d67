import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXT
from gptsuite.datafiles import load_meta
from gptsuite.errors import UserError
from gptsuite.novelty import NgramIndex, hash_ngrams, open_index
from gptsuite.tokenizer import from_meta


def brute_longest(sample: list[int], train: list[int]) -> int:
    """The longest span of sample that occurs in train, by trying every span."""
    t = ",".join(map(str, train)) + ","
    best = 0
    for i in range(len(sample)):
        for j in range(i + best + 1, len(sample) + 1):
            if "," + ",".join(map(str, sample[i:j])) + "," not in "," + t:
                break
            best = j - i
    return best


def test_finds_a_copied_training_span_and_little_in_novel_text(char_dataset: Path):
    tok = from_meta(load_meta(char_dataset)["tokenizer"])
    index = open_index(char_dataset, load_meta(char_dataset)["tokenizer"])
    copied = "Before we proceed any further, hear me speak."  # a line of the training text
    novel = "Spd, rotl. Yip hlat cuzzz BARC?"  # made of the same characters, in no order of the text
    report = index.report(tok.encode(novel + copied + novel))
    assert report.longest == brute_longest(tok.encode(novel + copied + novel), tok.encode(TEXT[: int(len(TEXT) * 0.9)]))
    assert report.longest >= len(copied) and copied in tok.decode(report.span)
    assert report.longest_start <= len(novel)
    low = index.report(tok.encode(novel * 3))
    assert low.fraction < 0.1 and low.longest == 0
    high = index.report(tok.encode(TEXT[100:400]))
    assert high.fraction == 1.0 and high.longest == 300
    assert index.report(tok.encode("ace")).ngrams == 0  # shorter than one 8-gram


def test_chunked_build_equals_a_sort_in_memory_and_is_cached(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 50, size=5000).astype(np.uint16)
    train[3000:3100] = train[100:200]  # a repeated stretch: equal keys at several positions
    train.tofile(data / "train.bin")
    (data / "meta.json").write_text(json.dumps({"tokenizer": {"kind": "char", "vocab_size": 50, "vocab": [chr(65 + i) for i in range(50)]}, "dtype": "uint16"}))
    index = NgramIndex(data, n=8, chunk=700, bucket=600).open(verbose=False)  # 7 chunks, 16 buckets
    h = hash_ngrams(train, 8)
    order = np.argsort(h, kind="stable")
    assert np.array_equal(np.asarray(index.keys), h[order]) and np.array_equal(np.asarray(index.pos), order)
    stamp = index.keys_path.stat().st_mtime_ns
    assert not list(data.glob("*.tmp")) and not list(data.glob(".*tmp"))
    NgramIndex(data, n=8).open(verbose=False)
    assert index.keys_path.stat().st_mtime_ns == stamp  # the cached index is reused
    sample = np.concatenate([rng.integers(50, 60, size=20), train[2000:2037], rng.integers(50, 60, size=20)])
    assert index.report(sample.tolist()).longest == 37
    train[:10] = 7  # a changed train.bin is indexed again
    train.tofile(data / "train.bin")
    again = NgramIndex(data, n=8, chunk=700, bucket=600).open(verbose=False)
    assert np.array_equal(np.asarray(again.keys), np.sort(hash_ngrams(train, 8)))


def test_tokenizer_mismatch_is_a_clear_error(char_dataset: Path):
    with pytest.raises(UserError, match="tokenizer"):
        open_index(char_dataset, {"kind": "gpt2", "vocab_size": 50257})
