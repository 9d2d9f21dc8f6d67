import math

import pytest
import torch
from torch.nn import functional as F

from gptsuite.optim import OptimConfig, build_optimizer
from model import GPT, GPTConfig

TINY = dict(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=32)


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw}))


def test_shapes_and_initial_loss_near_uniform():
    model = tiny()
    x = torch.randint(0, 65, (8, 16))
    y = torch.randint(0, 65, (8, 16))
    logits, loss = model(x, y)
    assert logits.shape == (8, 16, 65)
    assert abs(loss.item() - math.log(65)) < 0.1
    logits, loss = model(x)
    assert logits.shape == (8, 1, 65) and loss is None


def test_weight_tying_and_param_count():
    # counted by hand for TINY (vocab 65, block 16, n_embd 32, 2 layers): wte 65*32 = 2080 (also
    # lm_head, tied), wpe 16*32 = 512; a block: ln_1 32, c_attn 32*96 = 3072, attn c_proj 32*32 = 1024,
    # ln_2 32, c_fc 32*128 = 4096, mlp c_proj 128*32 = 4096, together 12352; ln_f 32
    model = tiny()
    assert model.transformer.wte.weight is model.lm_head.weight
    assert model.get_num_params(non_embedding=False) == 2080 + 512 + 2 * 12352 + 32 == 27328
    assert model.get_num_params() == 27328 - 512  # without the position embeddings
    # with biases (GPT-2's layout): ln_1 32 + c_attn 96 + attn c_proj 32 + ln_2 32 + c_fc 128 + mlp c_proj 32 = 352 more a block, ln_f 32
    assert tiny(bias=True).get_num_params(non_embedding=False) == 27328 + 2 * 352 + 32 == 28064


def explicit_attention(attn, x):
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
    att = att.masked_fill(torch.tril(torch.ones(T, T, dtype=torch.bool)).logical_not(), float("-inf"))
    y = F.softmax(att, dim=-1) @ v
    return attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def test_sdpa_equals_explicit_masked_softmax():
    model = tiny().eval()
    attn = model.transformer.h[0].attn
    x = torch.randn(3, 16, 32)
    torch.testing.assert_close(attn(x), explicit_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_causal():
    model = tiny().eval()
    x = torch.randint(0, 65, (1, 16))
    x2 = x.clone()
    x2[0, -1] = (x[0, -1] + 1) % 65
    with torch.no_grad():
        a, _ = model(x, x)
        b, _ = model(x2, x2)
    torch.testing.assert_close(a[0, :-1], b[0, :-1])


def test_overfits_one_batch():
    model = tiny()
    x = torch.randint(0, 65, (4, 16))
    y = torch.roll(x, -1, dims=1)
    opt = build_optimizer(model, OptimConfig(weight_decay=0.0, learning_rate=3e-3), "cpu")
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_optimizer_groups_decay_only_matrices():
    model = tiny()
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1, learning_rate=1e-3), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_generate_crops_to_block_size_and_respects_vocab_limit():
    model = tiny(vocab_size=128).eval()
    x = torch.randint(0, 60, (2, 10))
    out = model.generate(x, 30, temperature=1.0, top_k=None, vocab_limit=60)
    assert out.shape == (2, 40) and torch.equal(out[:, :10], x)
    assert out.max() < 60
    greedy = model.generate(x, 5, temperature=0)
    assert torch.equal(greedy, model.generate(x, 5, temperature=0))


def test_crop_block_size():
    model = tiny()
    model.crop_block_size(8)
    assert model.transformer.wpe.weight.shape == (8, 32)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("bad", [dict(n_embd=30, n_head=4), dict(n_layer=0), dict(dropout=1.5)])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        GPTConfig(**{**TINY, **bad})
