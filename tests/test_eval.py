import math
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint import save_checkpoint
from datafiles import load_meta, open_split
from errors import UserError
from eval import ContextDocs, EvalResult, split_compare, token_byte_lengths, windows
from eval import main as eval_main
from model import GPT, GPTConfig
from tokenizer import GPT2_EOT, CharTokenizer, GPT2Tokenizer


def make_checkpoint(out: Path, data_dir: Path, seed: int = 0, **model) -> GPT:
    meta = load_meta(data_dir)
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(**{"block_size": 16, "vocab_size": meta["vocab_size"], "n_layer": 2, "n_head": 2, "n_embd": 32, **model})).eval()
    state = {"model": gpt.state_dict(), "model_args": gpt.model_args(), "tokenizer": meta["tokenizer"], "config": {"data_dir": str(data_dir)}}
    save_checkpoint(state, out / "ckpt.pt")
    return gpt


def printed_result(text: str) -> tuple[float, float, float]:
    line = next(x for x in text.splitlines() if " val loss " in x)
    loss = float(line.split("val loss ")[1].split(",")[0])
    ppl = float(line.split("perplexity ")[1].split(",")[0])
    bpb = float(line.split("bits per byte ")[1].split(" ")[0])
    return loss, ppl, bpb


def test_full_val_loss_equals_a_direct_computation(tmp_path: Path, char_dataset: Path, capsys):
    model = make_checkpoint(tmp_path / "out", char_dataset)
    val = open_split(char_dataset, "val").astype(np.int64)
    total = 0.0
    with torch.no_grad():  # non-overlapping windows by hand: targets val[s:s+16] from inputs val[s-1:s+15]
        for s in range(1, len(val), 16):
            e = min(s + 16, len(val))
            x = torch.from_numpy(val[s - 1 : e - 1])[None]
            y = torch.from_numpy(val[s:e])[None]
            _, loss = model(x, y)
            total += loss.item() * (e - s)
    expected = total / (len(val) - 1)

    eval_main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--batch_size=5"])
    loss, ppl, bpb = printed_result(capsys.readouterr().out)
    assert loss == pytest.approx(expected, abs=1e-4)
    assert ppl == pytest.approx(math.exp(loss), rel=1e-3)
    assert bpb == pytest.approx(expected / math.log(2), rel=1e-3)  # ASCII text: one byte a token

    eval_main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--batch_size=3"])  # deterministic, whatever the batching
    assert printed_result(capsys.readouterr().out)[0] == loss
    eval_main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--stride=4"])  # overlapping windows: the same tokens, scored once
    out = capsys.readouterr().out
    assert f"({len(val) - 1:,} tokens" in out and printed_result(out)[0] != loss


def test_result_formulas():
    r = EvalResult(nats=2.2371 * 1000, tokens=1000, bytes=4000)
    assert r.perplexity == pytest.approx(9.37, abs=0.005)
    assert r.bits_per_byte == pytest.approx(2.2371 * 1000 / math.log(2) / 4000)


def test_windows_score_every_token_once():
    for n, stride in [(10, 3), (17, 16), (2, 5), (100, 1)]:
        spans = windows(n, stride)
        scored = [t for s, e in spans for t in range(s, e)]
        assert scored == list(range(1, n)) and all(e - s <= stride for s, e in spans)


def test_token_byte_lengths():
    char = CharTokenizer(["a", "é", "€"])
    assert token_byte_lengths(char).tolist() == [1, 2, 3]
    gpt2 = GPT2Tokenizer()
    lengths = token_byte_lengths(gpt2)
    ids = gpt2.encode("Hello wörld, ünïcode 🙂 text")
    assert lengths[ids].sum() == len("Hello wörld, ünïcode 🙂 text".encode()) and lengths[GPT2_EOT] == len("<|endoftext|>")


def test_in_context_documents_are_training_documents():
    eot = GPT2_EOT
    train = np.array([1, 2, 3, eot, 4, 5, eot, 6, 7, 8, 9, 10, 11, eot, 12, eot], dtype=np.uint16)
    docs = ContextDocs(train, 2, budget=8, eot=eot, seed=0)
    assert docs.starts.tolist() == [0, 4, 7, 14] and docs.ends.tolist() == [4, 7, 14, 16]
    for w in range(20):
        ctx = docs(w)
        assert len(ctx) <= 8 and ctx[-1] == eot and (ctx == eot).sum() == 2
        for part in np.split(ctx, np.flatnonzero(ctx == eot)[:-1] + 1):  # each part: a document's start, then <|endoftext|>
            doc = next(d for d in ([1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11], [12]) if d[0] == part[0])
            assert part[:-1].tolist() == doc[: len(part) - 1]
    assert np.array_equal(docs(3), ContextDocs(train, 2, 8, eot, 0)(3))  # the same documents for every model
    chunks = ContextDocs(np.arange(100, dtype=np.uint16), 3, budget=10, eot=None, seed=0)(0)
    assert len(chunks) == 9 and all(np.diff(c).tolist() == [1, 1] for c in np.split(chunks, 3))
    with pytest.raises(UserError, match="fewer than"):
        ContextDocs(train, 5, 8, eot, 0)


def test_compare_table_and_tokenizer_mismatch(tmp_path: Path, char_dataset: Path, capsys):
    make_checkpoint(tmp_path / "a", char_dataset, seed=0)
    make_checkpoint(tmp_path / "b", char_dataset, seed=1, n_layer=1, block_size=8)
    argv = ["--compare", str(tmp_path / "a"), str(tmp_path / "b"), f"{tmp_path / 'a'}@2", f"--data_dir={char_dataset}", "--device=cpu", "--stride=4"]
    assert split_compare(argv)[0] == [str(tmp_path / "a"), str(tmp_path / "b"), f"{tmp_path / 'a'}@2"]
    eval_main(argv)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| model | in-context docs |") and len(table) == 2 + 3
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [r[1] for r in rows] == ["0", "0", "2"] and [r[2] for r in rows] == ["16", "8", "16"]
    assert len({r[4] for r in rows}) == 1  # the same tokens for every model
    assert rows[0][5] != rows[1][5] != rows[2][5]

    other = tmp_path / "other"  # a character dataset with another vocabulary
    from prepare import load_dataset_module, prepare_text

    text = tmp_path / "other.txt"
    text.write_text("xyz " * 300)
    module = load_dataset_module("shakespeare_char")
    prepare_text(module.corpus(module.Config(input=str(text)), other), other)
    with pytest.raises(UserError, match="tokenizer"):
        eval_main(["--compare", str(tmp_path / "a"), f"--data_dir={other}", "--device=cpu"])
    with pytest.raises(UserError):  # no such checkpoint or pretrained model
        eval_main([f"--data_dir={char_dataset}", "--device=cpu", "--init_from=no-such-model"])
