"""The weights a loaded model decodes from: fp32 as trained, bf16, int8 (torchao's weight-only
int8, activations in bf16) or int4 (torchao's CPU int4: groups of INT4_GROUP weights share a scale
and zero point, decoded by ATen's _weight_int4pack_mm_for_cpu). Decoding one token reads every weight once, so on a CPU its speed is
memory-bound and smaller weights are the lever (tools.bench_deploy measures each, with the
perplexity it costs). This is not --dtype, which is autocast (the weights stay fp32; each matmul
casts them); these weights are stored smaller.

sample.py, eval.py and the page take --weights; the same weights give the same samples for a seed
in all of them. int8 runs fast only compiled (sample.py --compile, the page compiles it once at
load): eager, torchao dequantizes each weight on every call, which is slower than fp32. int4 has a
kernel of its own and runs fast eager. The embedding stays bf16 (a lookup reads one row); the output
layer, which shares its weights in training, gets its own quantized copy (under int4 only when its
vocabulary is a multiple of 16, as a GPT-2 run's is; a character-level one's stays bf16).
"""

import logging

import torch

from gptsuite.errors import UserError
from model import GPT

WEIGHTS = ("fp32", "bf16", "int8", "int4")  # what --weights takes
COMPILED = ("int8",)  # weights that are slow uncompiled: the page compiles these at load
INT4_GROUP = 32  # input features per int4 scale, as llama.cpp's q4_0 (measured in tools.bench_deploy)


def use_weights(model: GPT, weights: str, device: str = "cpu") -> GPT:
    """The model (in place) with its weights stored as `weights`; fp32 leaves it as it is."""
    if weights == "fp32":
        return model
    if weights not in WEIGHTS:
        raise UserError(f"unknown --weights={weights}; use one of {', '.join(WEIGHTS)}")
    if not str(device).startswith("cpu"):
        raise UserError(f"--weights={weights} is for CPU decoding; on {device} use --dtype (autocast) and keep --weights=fp32")
    odd = weights == "int4" and sorted({m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear) and m.in_features % INT4_GROUP})
    if odd:
        raise UserError(
            f"--weights=int4 quantizes groups of {INT4_GROUP} input features; this model has layers of {odd[0]}, not a multiple of {INT4_GROUP}: use --weights=int8"
        )
    model.to(torch.bfloat16)
    if weights in ("int8", "int4"):
        for name in ("torchao", "torch.utils._pytree"):  # its import warns about CUDA kernels a CPU has no use for
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise UserError(f"--weights={weights} needs torchao: pip install torchao==0.18.0, or use --weights=bf16") from None
        if weights == "int8":
            quantize_(model, Int8WeightOnlyConfig())  # every nn.Linear: int8 weights, a scale per output row
        else:
            from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

            quantize_(model, PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP), filter_fn=int4_packable)  # a small vocabulary's output layer stays bf16
    return model


def int4_packable(module: torch.nn.Module, name: str) -> bool:
    """Whether the CPU int4 kernel takes this layer: its rows come in 16s."""
    return isinstance(module, torch.nn.Linear) and module.out_features % 16 == 0
