"""The weights a loaded model decodes from: fp32 as trained, bf16, or int8 (torchao's weight-only
int8, activations in bf16). Decoding one token reads every weight once, so on a CPU its speed is
memory-bound and smaller weights are the lever (tools.bench_deploy measures each, with the
perplexity it costs). This is not --dtype, which is autocast (the weights stay fp32; each matmul
casts them); these weights are stored smaller.

sample.py, eval.py and the page take --weights; the same weights give the same samples for a seed
in all of them. int8 runs fast only compiled (sample.py --compile, the page compiles it once at
load): eager, torchao dequantizes each weight on every call, which is slower than fp32.
"""

import logging

import torch

from gptsuite.errors import UserError
from model import GPT

WEIGHTS = ("fp32", "bf16", "int8")  # what --weights takes


def use_weights(model: GPT, weights: str, device: str = "cpu") -> GPT:
    """The model (in place) with its weights stored as `weights`; fp32 leaves it as it is."""
    if weights == "fp32":
        return model
    if weights not in WEIGHTS:
        raise UserError(f"unknown --weights={weights}; use one of {', '.join(WEIGHTS)}")
    if not str(device).startswith("cpu"):
        raise UserError(f"--weights={weights} is for CPU decoding; on {device} use --dtype (autocast) and keep --weights=fp32")
    model.to(torch.bfloat16)
    if weights == "int8":
        for name in ("torchao", "torch.utils._pytree"):  # its import warns about CUDA kernels a CPU has no use for
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise UserError("--weights=int8 needs torchao: pip install torchao==0.18.0, or use --weights=bf16") from None
        quantize_(model, Int8WeightOnlyConfig())  # every nn.Linear: int8 weights, a scale per output row
    return model
