from pathlib import Path

import pytest
import torch

from export import main as export_main
from export import split_destination
from gptsuite.checkpoint import save_checkpoint
from gptsuite.errors import UserError
from gptsuite.tokenizer import GPT2Tokenizer
from model import GPT, GPTConfig


def gpt2_checkpoint(out: Path, bias: bool) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=2, n_embd=32, bias=bias)).eval()
    with torch.no_grad():  # non-zero biases and gains, so a wrong mapping shows in the logits
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1).add_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") else 0.0)
    state = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": {"kind": "gpt2", "vocab_size": 50257}}
    save_checkpoint(state, out / "ckpt.pt")
    return model


@pytest.mark.parametrize("bias", [True, False])
def test_export_loads_in_transformers_with_equal_logits(tmp_path: Path, monkeypatch, bias: bool):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline

    model = gpt2_checkpoint(tmp_path / "out", bias)
    export_main([f"--out_dir={tmp_path / 'out'}", "--to=hf", str(tmp_path / "hf")])
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert hf.config.vocab_size == 50257
    x = torch.randint(0, 50257, (2, 32))
    with torch.no_grad():
        ours, _ = model(x, x)
        theirs = hf(x).logits
    torch.testing.assert_close(theirs, ours[..., :50257], atol=1e-5, rtol=1e-5)

    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    text = "Hello world, exported"
    assert tok(text)["input_ids"] == GPT2Tokenizer().encode(text) and tok.eos_token_id == 50256
    if bias:  # the pipeline once is enough
        pipe = pipeline("text-generation", model=str(tmp_path / "hf"), tokenizer=str(tmp_path / "hf"), device="cpu")
        out = pipe("Hello", max_new_tokens=5, do_sample=False)[0]["generated_text"]
        expected = model.generate(torch.tensor([tok("Hello")["input_ids"]]), 5, temperature=0, vocab_limit=50257)
        assert out == tok.decode(expected[0])


def test_char_models_and_bad_destinations_are_refused(tmp_path: Path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=3, n_layer=1, n_head=2, n_embd=8))
    char = {"kind": "char", "vocab_size": 3, "vocab": ["a", "b", "c"]}
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": char}, tmp_path / "char" / "ckpt.pt")
    with pytest.raises(UserError, match="char"):
        export_main([f"--out_dir={tmp_path / 'char'}", "--to=hf", str(tmp_path / "hf")])
    assert not (tmp_path / "hf").exists()
    with pytest.raises(UserError, match="to must be one of hf"):
        export_main([f"--out_dir={tmp_path / 'char'}", "--to=onnx", str(tmp_path / "hf")])
    with pytest.raises(UserError, match="folder to write"):
        export_main([f"--out_dir={tmp_path / 'char'}"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    gpt2_checkpoint(tmp_path / "bpe", bias=True)
    with pytest.raises(UserError, match="not an empty folder"):
        export_main([f"--out_dir={tmp_path / 'bpe'}", f"--hf_dir={tmp_path / 'full'}"])
    assert split_destination(["config/a.py", "--to=hf", "dest"]) == ("dest", ["config/a.py", "--to=hf"])
