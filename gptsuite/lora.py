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

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

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
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]
    bias: str = "none"

    @classmethod
    def from_config(cls, cfg) -> "LoraSettings":
        """From a TrainConfig's lora_* fields."""
        targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
        return cls(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, targets, cfg.lora_bias)

    @classmethod
    def from_record(cls, record: dict) -> "LoraSettings":
        """From what a checkpoint's 'lora' entry recorded (the base reference besides)."""
        return cls(record["rank"], record["alpha"], record["dropout"], tuple(record["targets"]), record.get("bias", "none"))

    def record(self) -> dict:
        return asdict(self) | {"targets": list(self.targets)}

    def peft_config(self, **extra):
        return require_peft().LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.targets), bias=self.bias, **extra
        )


def adapt(model: GPT, lora: LoraSettings) -> GPT:
    """Put LoRA layers on the targeted Linears of model (in place; it stays a GPT) and freeze all
    but the adapters (and the biases lora.bias names)."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    unknown = [t for t in lora.targets if t not in names]
    if unknown or not lora.targets:
        raise UserError(
            f"lora_targets={','.join(lora.targets)} names no Linear layer of this GPT ({', '.join(unknown) or 'empty'}); pick from {','.join(sorted(names))}"
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


def freeze_base_dtype(model: GPT, dtype: torch.dtype) -> None:
    """Keep the frozen weights in dtype (bf16 or fp16: half their memory; autocast computes in it
    anyway); the trained adapters stay float32 for the optimizer (and the GradScaler)."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)


def trainable_counts(model: GPT) -> tuple[int, int]:
    """(trainable, all) parameters; tied weights counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def check_base(recorded: dict, path: Path, source: str) -> None:
    """Refuse a base whose weights file is not the one the adapters were trained on."""
    want = recorded.get("sha256")
    got = file_sha256(path)
    if want != got:
        raise UserError(
            f"{source} is a LoRA adapter for the base {recorded.get('init_from')} ({recorded.get('weights')}, sha256 {str(want)[:12]}), but {path} now has sha256 {got[:12]}: "
            f"the base weights changed; put the original base back at {recorded.get('init_from')}, or train a new adapter on this one"
        )
