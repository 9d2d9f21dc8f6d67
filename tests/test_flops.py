"""FLOPs per token and parameter counts, against the model and against numbers worked out by hand."""

import pytest

from gptsuite.flops import GPT2_CONTEXT, GPT2_SIZES, flops_per_token, gpt2_params, model_flops_per_token, peak_tflops
from model import GPT, GPTConfig


@pytest.mark.parametrize("n_layer, n_head, n_embd", [(2, 4, 32), (3, 2, 48)])
def test_gpt2_params_counts_what_the_model_has(n_layer, n_head, n_embd):
    model = GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=n_layer, n_head=n_head, n_embd=n_embd, bias=True))
    assert gpt2_params(n_layer, n_embd, 50257) == model.get_num_params()


def test_gpt2_124m_by_hand():
    # 124,439,808 parameters with the 1024 x 768 position embeddings, as GPT-2 small is usually quoted
    assert gpt2_params(*GPT2_SIZES["124M"][::2], 50257) + GPT2_CONTEXT * 768 == 124_439_808
    # 6 * 123,653,376 + 12 * 12 layers * 12 heads * 64 per head * 1024 tokens, worked out by hand
    assert flops_per_token(123_653_376, 12, 12, 768, 1024) == 741_920_256 + 113_246_208


def test_model_flops_per_token_uses_the_params_without_position_embeddings():
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=8, bias=False))
    # weights: wte 64*8 (tied head), c_attn 8*24, c_proj 8*8, c_fc 8*32, mlp c_proj 32*8, three LayerNorm gains of 8
    n = 64 * 8 + 8 * 24 + 8 * 8 + 8 * 32 + 32 * 8 + 3 * 8
    assert model.get_num_params() == n
    assert model_flops_per_token(model, 16) == 6 * n + 12 * 1 * 2 * 4 * 16


def test_a_lora_run_counts_weight_gradients_of_its_adapters_only():
    """Forward 2N, the gradients of the activations 2N, of the weights 2 x the trained ones: a
    frozen base computes no weight gradients."""
    from gptsuite.lora import LoraConfig, adapt

    model = adapt(GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=8, bias=False)), LoraConfig(rank=2, targets="c_attn"))
    n = 64 * 8 + 8 * 24 + 8 * 8 + 8 * 32 + 32 * 8 + 3 * 8  # the base, as above (LoRA's A and B are not counted in N)
    adapters = 2 * 8 + 24 * 2  # c_attn's A (2 x 8) and B (24 x 2)
    assert model.get_num_params() == n + adapters
    assert model_flops_per_token(model, 16) == 4 * (n + adapters) + 2 * adapters + 12 * 1 * 2 * 4 * 16


# names as torch.cuda.get_device_name() reports them, and the vendors' dense bf16/fp16 peaks
DRIVER_NAMES = [
    ("NVIDIA H100 80GB HBM3", 989.0),  # SXM
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA H200 NVL", 835.0),
    ("NVIDIA H800", 989.0),
    ("NVIDIA H800 PCIe", 756.0),
    ("NVIDIA GH200 480GB", 989.0),
    ("NVIDIA B200", 2250.0),
    ("NVIDIA GB200", 2500.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA A10G", 70.0),
    ("NVIDIA A10", 125.0),
    ("NVIDIA L40S", 362.0),
    ("NVIDIA L40", 181.0),
    ("NVIDIA L4", 121.0),
    ("NVIDIA RTX A6000", 155.0),
    ("NVIDIA GeForce RTX 4090", 165.0),
    ("Tesla V100-SXM2-16GB", 125.0),
    ("Tesla T4", 65.0),
]


@pytest.mark.parametrize("name, peak", DRIVER_NAMES)
def test_peak_lookup_by_the_name_the_driver_reports(name: str, peak: float):
    assert peak_tflops(name, half_precision=True) == peak


def test_peak_lookup_without_a_match_or_a_tf32_peak():
    assert peak_tflops("Tesla T4", half_precision=False) is None  # no tf32 on a T4
    assert peak_tflops("Some GPU", half_precision=True) is None
    assert peak_tflops("NVIDIA H100 PCIe", half_precision=False) == 378.0
