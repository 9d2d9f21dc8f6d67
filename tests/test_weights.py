"""--weights (gptsuite/weights.py): a model decodes on the CPU from bf16 or int8 weights, the page
and sample.py alike (the same seed, the same text), at a small perplexity cost."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_playground import char_model, run, sample_py

from gptsuite.errors import UserError
from gptsuite.evaluation import evaluate, token_byte_lengths
from gptsuite.playground import Playground
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import GPT2Tokenizer
from gptsuite.weights import use_weights
from model import GPT, GPTConfig


def test_bf16_weights_give_the_same_sample_on_the_page_and_in_sample_py(tmp_path: Path, char_dataset: Path, capsys):
    a = char_model(tmp_path / "a", char_dataset, 1, n_embd=32)
    pg = Playground(setup_runtime("cpu", "float32", 0), 100, weights="bf16")
    pg.load(str(a))
    assert pg.models[str(a)].loaded.model.lm_head.weight.dtype == torch.bfloat16
    col = run(pg, [str(a)], "First Citizen:", max_new_tokens=40, temperature=0.9, top_k=20, seed=7)[0]
    flags = ("--max_new_tokens=40", "--temperature=0.9", "--top_k=20", "--seed=7")
    assert col.prompt + col.text == sample_py(capsys, a, "First Citizen:", *flags, "--weights=bf16")
    assert col.prompt + col.text != sample_py(capsys, a, "First Citizen:", *flags)  # the weights changed the draw: the flag took effect


def test_bf16_int8_and_int4_cost_little_perplexity():
    """torchao's int8 and int4 (requirements-dev.txt) eager, as eval.py --weights runs them."""
    tok = GPT2Tokenizer()
    data = np.array(tok.encode("First Citizen: Before we proceed any further, hear me speak. " * 20), dtype=np.uint16)
    rt = setup_runtime("cpu", "float32", 0)
    ppl = {}
    kinds = {}
    for weights in ("fp32", "bf16", "int8", "int4"):
        torch.manual_seed(0)
        model = use_weights(GPT(GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=64, bias=True)).eval(), weights)
        ppl[weights] = evaluate(model, data, 64, 32, 4, rt, token_byte_lengths(tok), 50257).perplexity
        kinds[weights] = type(model.lm_head.weight).__name__, type(model.transformer.h[0].mlp.c_fc.weight).__name__, model.transformer.wte.weight.dtype
    assert kinds["int8"] == ("Int8Tensor", "Int8Tensor", torch.bfloat16) and kinds["int4"] == ("Int4OpaqueTensor", "Int4OpaqueTensor", torch.bfloat16), kinds
    for weights in ("bf16", "int8", "int4"):
        assert 0 < abs(ppl[weights] / ppl["fp32"] - 1) < 0.01, ppl
    assert len(set(ppl.values())) == 4, ppl


def test_weights_are_for_the_cpu():
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(UserError, match="--weights=bf16 is for CPU decoding; on cuda use --dtype"):
        use_weights(model, "bf16", "cuda")
    assert use_weights(model, "fp32", "cuda") is model and model.lm_head.weight.dtype == torch.float32
    with pytest.raises(UserError, match="groups of 32 input features; this model has layers of 16, not a multiple of 32: use --weights=int8"):
        use_weights(model, "int4")
    assert model.lm_head.weight.dtype == torch.float32  # refused before anything changed


def test_int4_keeps_a_small_vocabularys_output_layer_in_bf16():
    # the CPU int4 kernel packs rows in 16s: a character-level run's 65 outputs stay bf16, its blocks go int4
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32)).eval()
    x = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        reference = model(x)[0].float()
        use_weights(model, "int4")
        logits = model(x)[0].float()
    assert model.lm_head.weight.dtype == torch.bfloat16 and type(model.transformer.h[0].mlp.c_fc.weight).__name__ == "Int4OpaqueTensor"
    assert 0 < (logits - reference).abs().max() < 0.1 * reference.abs().max()
