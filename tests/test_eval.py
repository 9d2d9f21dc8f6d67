import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from eval import main as eval_main
from eval import split_compare
from gptsuite.checkpoint import save_checkpoint
from gptsuite.datafiles import load_meta, open_split
from gptsuite.errors import UserError
from gptsuite.evaluation import ContextDocs, EvalResult, evaluate, token_byte_lengths, windows
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import GPT2_EOT, CharTokenizer, GPT2Tokenizer
from model import GPT, GPTConfig


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


def reference_nats(model: GPT, val: np.ndarray, block: int) -> float:
    """Summed loss of val's tokens after the first, each scored once, worked out window by window as
    eval windows the text: targets val[s:e], inputs the block tokens before each target (fewer
    only at the start of the split)."""
    total = 0.0
    with torch.no_grad():
        for s in range(1, len(val), block):
            e = min(s + block, len(val))
            a = max(0, e - 1 - block)
            x, y = torch.from_numpy(val[a : e - 1]), torch.from_numpy(val[a + 1 : e])
            logits, _ = model(x[None], y[None])
            total += F.cross_entropy(logits[0].double(), y, reduction="none")[-(e - s) :].sum().item()
    return total


def test_full_val_loss_equals_a_direct_computation(tmp_path: Path, char_dataset: Path, capsys):
    model = make_checkpoint(tmp_path / "out", char_dataset)
    val = open_split(char_dataset, "val").astype(np.int64)
    expected = reference_nats(model, val, 16) / (len(val) - 1)
    tok = CharTokenizer(load_meta(char_dataset)["tokenizer"]["vocab"])
    rt = setup_runtime("cpu", "float32")
    result = evaluate(model, val, 16, 16, 5, rt, token_byte_lengths(tok), tok.vocab_size)
    assert result.tokens == len(val) - 1
    assert result.loss == pytest.approx(expected, rel=1e-6)  # unrounded: a window with less context would differ by ~1e-5

    eval_main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--batch_size=5"])
    loss, ppl, bpb = printed_result(capsys.readouterr().out)
    assert loss == round(expected, 4)
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
    assert EvalResult(nats=1000 * math.log(2), tokens=1000, bytes=4000).bits_per_byte == pytest.approx(0.25)  # 1000 bits over 4000 bytes


def test_bits_per_byte_of_a_uniform_model_on_multibyte_text():
    """A model with all-zero logits spreads its bet evenly over 4 characters: 2 bits each. "a€€é\n€"
    scores the 5 characters after the first: € € é \n €, UTF-8 bytes 3 + 3 + 2 + 1 + 3 = 12, so 10 bits
    over 12 bytes."""
    tok = CharTokenizer(["\n", "a", "é", "€"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=4, n_layer=1, n_head=2, n_embd=8)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied to lm_head: every logit 0
    data = np.array(tok.encode("a€€é\n€"), dtype=np.uint16)
    result = evaluate(model, data, 16, 16, 1, setup_runtime("cpu", "float32"), token_byte_lengths(tok), tok.vocab_size)
    assert (result.tokens, result.bytes) == (5, 12)
    assert result.loss == pytest.approx(math.log(4)) and result.perplexity == pytest.approx(4.0)
    assert result.bits_per_byte == pytest.approx(10 / 12)


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
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    text = tmp_path / "other.txt"
    text.write_text("xyz " * 300)
    module = load_dataset_module("shakespeare_char")
    prepare_text(module.corpus(module.Config(input=str(text)), other), other)
    with pytest.raises(UserError, match="tokenizer"):
        eval_main(["--compare", str(tmp_path / "a"), f"--data_dir={other}", "--device=cpu"])
    with pytest.raises(UserError):  # no such checkpoint or pretrained model
        eval_main([f"--data_dir={char_dataset}", "--device=cpu", "--init_from=no-such-model"])
