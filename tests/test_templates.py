"""Prompt templates: from meta.json into the checkpoint, and sample.py --start formatted with them."""

from pathlib import Path

import pytest
import torch
from test_datasets import PAPERS, prepare, write_papers
from test_train import TINY_ARGS

import sample
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.templates import format_document, format_prompt
from gptsuite.tokenizer import GPT2_EOT, GPT2Tokenizer
from model import GPT, GPTConfig
from train import main as train_main

PUBMED = {"format": "ABSTRACT:\n{abstract}\n\nARTICLE:\n{article}", "prompt_field": "abstract", "stop": "<|endoftext|>"}


def test_prompt_is_the_document_up_to_the_response():
    doc = format_document(PUBMED, {"abstract": "  We found X.\n", "article": "\nIntro.\n\nMore."})
    prompt = format_prompt(PUBMED, "We found X.")
    assert doc == "ABSTRACT:\nWe found X.\n\nARTICLE:\nIntro.\n\nMore." and doc.startswith(prompt)
    assert prompt == "ABSTRACT:\nWe found X.\n\nARTICLE:\n" == format_prompt(PUBMED, "\nWe found X.\n\n")
    assert format_prompt({"format": "Q: {q}\nA: {a}", "prompt_field": "q"}, "why?") == "Q: why?\nA: "
    with pytest.raises(UserError, match="first field"):
        format_prompt({"format": "{article} {abstract}", "prompt_field": "abstract"}, "x")
    with pytest.raises(UserError, match="no article"):
        format_document(PUBMED, {"abstract": "x"})


def test_pubmed_template_travels_through_training_into_sample(tmp_path: Path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    train = write_papers(tmp_path / "train.parquet", PAPERS[:9])
    val = write_papers(tmp_path / "val.parquet", PAPERS[9:])
    prepare("pubmed", data, data_files=str(train), val_files=str(val))
    with pytest.raises(
        UserError,
        match=r"block_size=16 is shorter than the longest prompt .* \(22 tokens before its first counted one\).* pass --block_size=22 or more, or --loss_on=all",
    ):
        train_main([f"--data_dir={data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2", *TINY_ARGS])  # the longest abstract and its template
    train_main([f"--data_dir={data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2", *TINY_ARGS, "--loss_on=all"])
    assert load_checkpoint(out)["template"] == PUBMED
    (tmp_path / "abstract.txt").write_text("Protein 7.\n", encoding="utf-8")  # the formatted prompt fits the 16-token context
    capsys.readouterr()
    sample.main([f"--out_dir={out}", f"--start=FILE:{tmp_path / 'abstract.txt'}", "--num_samples=1", "--max_new_tokens=20", "--device=cpu"])
    stdout = capsys.readouterr().out
    assert stdout.startswith("ABSTRACT:\nProtein 7.\n\nARTICLE:\n")
    assert "<|endoftext|>" not in stdout


def eot_model() -> GPT:
    """A GPT-2-vocabulary model whose every next token is <|endoftext|> (greedy): the final
    LayerNorm outputs its bias, which points along the EOT embedding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=1, n_head=2, n_embd=32, bias=True))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[GPT2_EOT] * 10)
    return model


@pytest.mark.parametrize("template", [PUBMED, None])
@pytest.mark.parametrize("stop_at_eot", [True, False])
def test_template_formats_the_prompt_and_sampling_stops_at_endoftext(tmp_path: Path, capsys, template, stop_at_eot):
    model = eot_model()
    state = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": GPT2Tokenizer().meta(), "template": template}
    save_checkpoint(state, tmp_path / "ckpt.pt")
    args = [f"--out_dir={tmp_path}", "--start=An abstract.", "--num_samples=1", "--max_new_tokens=20", "--temperature=0", "--device=cpu"]
    sample.main([*args, f"--stop_at_eot={stop_at_eot}"])
    text = capsys.readouterr().out.split("---------------")[0]
    prompt = "ABSTRACT:\nAn abstract.\n\nARTICLE:\n" if template else "An abstract."
    if stop_at_eot:  # the prompt, then nothing: it stopped at <|endoftext|>
        assert text == prompt + "\n"
    else:  # all 20 tokens
        assert text == prompt + "<|endoftext|>" * 20 + "\n"
