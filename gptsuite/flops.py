"""Training compute: FLOPs per token of a GPT, and the peak FLOP/s of the GPUs people train on.

Torch-free, so that prepare's dataset report can use it without importing torch. Used by
train.py (MFU in the log), bench.py and the dataset report (hours per epoch).
"""

import re

GPT2_CONTEXT = 1024  # tokens
GPT2_SIZES = {"124M": (12, 12, 768), "355M": (24, 16, 1024), "774M": (36, 20, 1280), "1.5B": (48, 25, 1600)}  # n_layer, n_head, n_embd

# Dense (no sparsity) tensor-core peak TFLOP/s by GPU, for bf16/fp16 and for tf32. A row matches a
# torch.cuda.get_device_name() whose words include all of the row's words (case aside; words split
# at spaces and dashes, so "A10" is not "A100-SXM4-80GB"); the row with the most words wins, so
# "NVIDIA H100 PCIe" takes "H100 PCIe" and "NVIDIA H100 80GB HBM3" (SXM) takes "H100".
GPU_PEAK_TFLOPS = [
    ("H200 NVL", 835.0, 418.0),
    ("H200", 989.0, 494.0),
    ("H100 NVL", 835.0, 418.0),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),  # SXM
    ("H800 PCIe", 756.0, 378.0),
    ("H800", 989.0, 494.0),
    ("GH200", 989.0, 494.0),
    ("GB200", 2500.0, 1250.0),  # per GPU
    ("B200", 2250.0, 1100.0),
    ("A100", 312.0, 156.0),
    ("A800", 312.0, 156.0),
    ("A10G", 70.0, 35.0),
    ("A10", 125.0, 62.5),
    ("L40S", 362.0, 183.0),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 60.0),
    ("A6000", 155.0, 77.4),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 0.0),  # no bf16 or tf32; fp16 tensor cores
    ("T4", 65.0, 0.0),
]


def peak_tflops(device_name: str, half_precision: bool) -> float | None:
    """The dense peak TFLOP/s of a GPU by its name, at bf16/fp16 or else tf32; None if unknown."""
    words = set(re.split(r"[\s\-]+", device_name.upper()))
    rows = [row for row in GPU_PEAK_TFLOPS if set(row[0].upper().split()) <= words]
    if not rows:
        return None
    _, half, tf32 = max(rows, key=lambda row: len(row[0].split()))
    return (half if half_precision else tf32) or None


def flops_per_token(n_params: int, n_layer: int, n_head: int, n_embd: int, seq_len: int, trained: int | None = None) -> float:
    """Training FLOPs per token (forward + backward): 6N + 12 * L * H * Q * T, PaLM appendix B.
    n_params leaves out the position embeddings (a lookup, no multiply). With `trained` parameters
    of them (LoRA: the adapters), frozen weights get no weight gradient: 4N + 2 * trained."""
    trained = n_params if trained is None else min(trained, n_params)
    return 4 * n_params + 2 * trained + 12 * n_layer * n_head * (n_embd // n_head) * seq_len


def gpt2_params(n_layer: int, n_embd: int, vocab_size: int) -> int:
    """Parameters of a GPT-2 (with biases) other than the position embeddings, as GPT.get_num_params()
    counts them: attention 4d^2 + 4d, MLP 8d^2 + 5d, two LayerNorms 4d per layer; the tied token
    embedding and the final LayerNorm."""
    return n_layer * (12 * n_embd**2 + 13 * n_embd) + vocab_size * n_embd + 2 * n_embd


def model_flops_per_token(model, seq_len: int) -> float:
    """flops_per_token for a model.py GPT at a context of seq_len tokens, counting the weight
    gradients of its trainable parameters only (tied weights once)."""
    c = model.config
    trained = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad)
    return flops_per_token(model.get_num_params(), c.n_layer, c.n_head, c.n_embd, seq_len, trained)
