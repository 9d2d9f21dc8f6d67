"""Low-rank adapters (LoRA) on a model.py GPT, through peft.

peft's `inject_adapter_in_model` wraps each targeted nn.Linear (by module name: c_attn, c_proj,
c_fc) in a LoRA layer that adds (alpha / rank) * B @ A to its output, A (rank x in) random and B
(out x rank) zero, so an adapted model starts out computing exactly what its base does. The GPT
stays a GPT (its forward, KV cache and generation are untouched); only A and B (and, with
lora_bias, biases) require gradients, the rest is frozen.

A LoRA run's checkpoint holds the adapter weights (peft's state dict, a few MB) where a full
checkpoint holds the model, and a reference to the base weights: what init_from named, the
file read and its sha256. Whatever loads it (resume, sample.py, eval.py, export.py) rebuilds the
base from that reference and refuses a base whose file no longer has that sha256.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from configurator import option
from gptsuite.atomic import file_sha256
from gptsuite.errors import UserError
from model import GPT

LORA_BIAS = ("none", "lora_only", "all")  # peft's bias modes: which biases train with the adapters
ADAPTER = "default"  # peft's name for the one adapter a model carries here


def require_peft():
    """peft, imported when a LoRA model is first made (it takes seconds: it imports transformers)."""
    try:
        import peft
    except ImportError:
        raise UserError("LoRA needs the peft package: pip install peft (requirements.txt lists it)") from None
    return peft


@dataclass(frozen=True)
class LoraConfig:
    """A run's LoRA settings (its --lora_* keys), and what a LoRA checkpoint records of them."""

    KEY_PREFIX: ClassVar[str] = "lora_"
    # LoRA (gptsuite/lora.py): train low-rank adapters on a frozen init_from instead of every weight
    rank: int = option(0, ge=0)  # the adapters' rank R; 0: off (full fine-tuning)
    alpha: float = option(16.0, gt=0)  # the adapters' output is scaled by lora_alpha / lora_rank
    dropout: float = option(0.05, ge=0, lt=1)  # dropout on the adapters' input
    targets: str = "c_attn,c_proj,c_fc"  # comma-separated Linear names to adapt: attention (c_attn, c_proj) and MLP (c_fc, c_proj)
    bias: str = option("none", choices=LORA_BIAS)  # which biases train too: none, lora_only (of the adapted layers), all

    LAYOUT: ClassVar[tuple[str, ...]] = ("rank", "targets", "bias")  # what a resumed run must keep: the adapters' shapes and what trains

    def __post_init__(self):
        object.__setattr__(self, "targets", ",".join(self.target_names))  # "c_attn, c_fc" is "c_attn,c_fc"

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.targets.split(",") if t.strip())

    @classmethod
    def from_record(cls, record: dict) -> "LoraConfig":
        """From what a checkpoint's 'lora' entry recorded (the base reference besides)."""
        return cls(record["rank"], record["alpha"], record["dropout"], ",".join(record["targets"]), record.get("bias", "none"))

    def record(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.target_names), "bias": self.bias}

    def peft_config(self, **extra):
        return require_peft().LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.target_names), bias=self.bias, **extra
        )


def adapt(model: GPT, lora: LoraConfig) -> GPT:
    """Put LoRA layers on the targeted Linears of model (in place; it stays a GPT) and freeze all
    but the adapters (and the biases lora.bias names)."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    unknown = [t for t in lora.target_names if t not in names]
    if unknown or not lora.target_names:
        raise UserError(
            f"lora_targets={','.join(lora.target_names)} names no Linear layer of this GPT ({', '.join(unknown) or 'empty'}); pick from {','.join(sorted(names))}"
        )
    return require_peft().inject_adapter_in_model(lora.peft_config(), model, adapter_name=ADAPTER)  # marks only peft's trainables as requiring grad


def adapter_state(model: GPT) -> dict[str, torch.Tensor]:
    """The adapter weights (and trained biases) under peft's names, e.g.
    transformer.h.0.attn.c_attn.lora_A.weight: what a LoRA checkpoint holds."""
    return {k: v.detach().clone() for k, v in require_peft().get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def load_adapter(model: GPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Load adapter_state() output into an adapted model, refusing a state that does not fit it."""
    expected = set(adapter_state(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(
            f"{source} holds adapter weights that do not fit its LoRA settings ({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]}); the file is damaged"
        )
    try:
        require_peft().set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    except RuntimeError as e:
        raise UserError(f"{source} holds adapter weights of other shapes than its LoRA settings ({str(e).splitlines()[0]}); the file is damaged") from None


def merge(model: GPT) -> GPT:
    """Fold each adapter into its base weight (peft's merge: W + alpha/rank * B @ A) and put the
    plain Linear back, in place: a GPT without LoRA layers, as fast as its base."""
    base_tuner_layer = require_peft().tuners.tuners_utils.BaseTunerLayer
    for name, module in list(model.named_modules()):
        if isinstance(module, base_tuner_layer):
            module.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return model


@contextlib.contextmanager
def adapters_off(model: GPT):
    """Inside, an adapted model computes what its frozen base does (peft's adapter layers
    switched off): a DPO reference without a second copy of the weights."""
    layers = [m for m in model.modules() if isinstance(m, require_peft().tuners.tuners_utils.BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)


def freeze_base_dtype(model: GPT, dtype: torch.dtype) -> None:
    """Keep the frozen matrices of the blocks' Linears in dtype (bf16 or fp16: half their memory;
    autocast computes in it anyway); the trained adapters stay float32 for the optimizer (and the
    GradScaler). The embeddings (wte, tied to the head) and the norms stay float32, so that the
    residual stream is float32, as in full training and as the merged model samples."""
    for module in model.transformer.h.modules():
        if isinstance(module, torch.nn.Linear):
            for p in module.parameters(recurse=False):
                if not p.requires_grad and p.is_floating_point():
                    p.data = p.data.to(dtype)


def trainable_counts(model: GPT) -> tuple[int, int]:
    """(trainable, all) parameters; tied weights counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def check_base(recorded: dict, path: Path, source: str) -> None:
    """Refuse a base whose weights file is not the one the adapters were trained on."""
    want = recorded.get("sha256")
    got = file_sha256(path)
    if want != got:
        raise UserError(
            f"{source} is a LoRA adapter for the base {recorded.get('init_from')} ({recorded.get('weights')}, sha256 {str(want)[:12]}), but {path} now has sha256 {got[:12]}: "
            f"the base weights changed; put the original base back at {recorded.get('init_from')}, or train a new adapter on this one"
        )
