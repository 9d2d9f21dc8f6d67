import io
import sys
from pathlib import Path

import pytest
import torch

from configurator import ConfigError, parse_config
from gptsuite.errors import UserError
from gptsuite.generate import cut_at_stop, generate_texts, printable
from gptsuite.tokenizer import CharTokenizer
from model import ARCHS, GPT, GPTConfig, KVCache, sample_logits
from sample import SampleConfig
from sample import main as sample_main

TINY = dict(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=32)


def lively(**kw) -> GPT:
    """A tiny random model with large weights, so greedy decoding does not collapse to one token."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, **kw})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("arch", ARCHS)  # modern: the cached keys are rotated at their own positions
def test_cached_logits_equal_full_forward_at_every_position(arch):
    model = lively(arch=arch)
    x = torch.randint(0, 65, (3, 16))
    full, _ = model(x, x)  # (B, T, V), every position
    cache = KVCache(2, 16)
    prefill, _ = model(x[:, :5], cache=cache)
    torch.testing.assert_close(prefill[:, -1], full[:, 4], atol=1e-5, rtol=1e-5)
    chunk, _ = model(x[:, 5:9], cache=cache)  # several positions after cached ones: the offset causal mask
    torch.testing.assert_close(chunk[:, -1], full[:, 8], atol=1e-5, rtol=1e-5)
    for t in range(9, 16):  # one position at a time
        step, _ = model(x[:, t : t + 1], cache=cache)
        torch.testing.assert_close(step[:, -1], full[:, t], atol=1e-5, rtol=1e-5)
    assert cache.pos == 16
    with pytest.raises(ValueError):
        model(x[:, :1], cache=cache)  # full: no position 16


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("new_tokens", [8, 40])  # 5 + 40 goes well past block_size 16
def test_greedy_is_identical_with_and_without_cache(new_tokens, arch):
    model = lively(arch=arch)
    x = torch.randint(0, 65, (3, 5))
    cached = model.generate(x, new_tokens, temperature=0)
    plain = model.generate(x, new_tokens, temperature=0, use_cache=False)
    assert cached.shape == (3, 5 + new_tokens)
    assert torch.equal(cached, plain)
    assert len(set(cached[0].tolist())) > 5  # a real sequence, not one token repeated
    assert torch.equal(model.generate(x, new_tokens, top_k=1), cached)  # top_k=1 is greedy too


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_with_cache_matches_without_for_the_same_seed_and_batches(arch):
    model = lively(arch=arch)
    x = torch.randint(0, 65, (1, 4)).repeat(6, 1)  # num_samples in one batch
    torch.manual_seed(3)
    a = model.generate(x, 30, temperature=1.0, top_k=20, top_p=0.9)
    torch.manual_seed(3)
    b = model.generate(x, 30, temperature=1.0, top_k=20, top_p=0.9, use_cache=False)
    assert a.shape == (6, 34) and torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 1  # the rows are different samples


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_longer_than_block_size(arch):
    model = lively(arch=arch)
    x = torch.randint(0, 65, (2, 20))
    assert torch.equal(model.generate(x, 6, temperature=0), model.generate(x, 6, temperature=0, use_cache=False))


def test_sample_logits_greedy_top_k_top_p():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 0.0]])
    assert sample_logits(logits, temperature=0).tolist() == [[1], [2]]
    assert sample_logits(logits, temperature=1.0, top_k=1).tolist() == [[1], [2]]
    torch.manual_seed(0)
    draws = torch.cat([sample_logits(logits, 1.0, top_k=2) for _ in range(300)], dim=1)
    assert set(draws[0].tolist()) == {1, 2}  # only the two most likely
    # probabilities of row 0: .644 .237 .087 .032: top_p=0.7 keeps the first two, 0.5 only the first
    draws = torch.cat([sample_logits(logits, 1.0, top_p=0.7) for _ in range(300)], dim=1)
    assert set(draws[0].tolist()) == {1, 2}
    draws = torch.cat([sample_logits(logits, 1.0, top_p=0.5) for _ in range(50)], dim=1)
    assert set(draws[0].tolist()) == {1}
    draws = torch.cat([sample_logits(logits, 1.0, top_p=1.0) for _ in range(600)], dim=1)
    assert set(draws[0].tolist()) == {0, 1, 2, 3}
    # a low temperature sharpens: nearly always the argmax
    draws = torch.cat([sample_logits(logits, 0.05) for _ in range(100)], dim=1)
    assert (draws[0] == 1).all()


def test_generate_texts_stop_text_and_streaming():
    model = lively()
    tok = CharTokenizer([chr(c) for c in range(40, 105)])  # 65 characters
    prompt = tok.encode("ABC")
    cfg = SampleConfig(max_new_tokens=30, temperature=0, top_k=None, stop="")
    free = tok.decode(generate_texts(model, tok, prompt, 2, cfg, "cpu")[0])
    stop = free[6:8]
    cfg = SampleConfig(max_new_tokens=30, temperature=0, top_k=None, stop=stop)
    stream = io.StringIO()
    rows = generate_texts(model, tok, prompt, 1, cfg, "cpu", stream)
    text = cut_at_stop(tok.decode(rows[0]), stop)[0]
    assert text == free[: free.index(stop)] and stream.getvalue() == text
    assert printable("abc\ufffd", "") == "abc" and printable("ab\n", "\n\n") == "ab" and printable("ab\n", "xy") == "ab\n"


def test_sample_cli_batch_stream_stop_interactive(tiny_checkpoint: Path, capsys, monkeypatch):
    out = tiny_checkpoint

    def sample(*args: str) -> str:
        sample_main([f"--out_dir={out}", "--device=cpu", "--max_new_tokens=40", "--temperature=0", *args])
        return capsys.readouterr().out

    batch = sample("--start=All:", "--num_samples=3").split("---------------\n")
    assert len(batch) == 4 and batch[0] == batch[1] == batch[2]  # greedy: all the same
    assert batch[0].startswith("All:") and len(batch[0]) == len("All:") + 40 + 1
    stop = batch[0][10:12]
    streamed = sample("--start=All:", "--num_samples=1", "--stream", f"--stop={stop}")
    assert streamed == batch[0][: batch[0].index(stop, 4)] + "\n---------------\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO("All:\nFirst\n"))
    samples = sample("--interactive", "--num_samples=1", "--check_novelty").split("---------------\n")
    assert len(samples) == 3 and samples[0].startswith("All:") and samples[1].startswith("First")
    assert "novelty: longest span also in train.bin" in samples[0]


def test_a_prompt_the_model_cannot_see_whole_is_refused_as_on_the_page(tiny_checkpoint: Path, capsys):
    """sample.py and the page share one rule (generate.encode_prompt): a prompt of block_size
    tokens or more is refused, with the length that fits, never cut to its last tokens."""
    args = [f"--out_dir={tiny_checkpoint}", "--device=cpu", "--max_new_tokens=3", "--num_samples=1"]
    with pytest.raises(UserError, match=r"the prompt is 16 tokens, but .*out reads at most 16 \(its context\) .* shorten it to 15 tokens or fewer"):
        sample_main([*args, "--start=All:All:All:All:"])
    sample_main([*args, "--start=All:All:All:All"])  # 15: room for one token, then the window slides
    assert capsys.readouterr().out.startswith("All:All:All:All")


@pytest.mark.slow
def test_sample_compile_runs_the_decoding_compiled(tiny_checkpoint: Path, capsys):
    """--compile must compile what generation calls (the prompt and the one-token decode step),
    and give the same greedy text."""
    import torch._dynamo

    args = [f"--out_dir={tiny_checkpoint}", "--device=cpu", "--max_new_tokens=12", "--temperature=0", "--start=All:", "--num_samples=2"]
    sample_main(args)
    eager = capsys.readouterr().out
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    sample_main([*args, "--compile=True"])
    assert capsys.readouterr().out == eager
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # prefill and decode
    torch._dynamo.reset()


@pytest.mark.parametrize("bad", [dict(top_p=1.5), dict(top_p=0.0), dict(temperature=-1.0), dict(top_k=0), dict(max_new_tokens=0)])
def test_bad_sampling_options_are_user_errors(bad):
    ((key, value),) = bad.items()
    with pytest.raises(ConfigError, match=key):
        parse_config(SampleConfig(), [f"--{key}={value}"])
