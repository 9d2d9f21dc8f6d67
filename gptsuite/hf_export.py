"""Our GPT in Hugging Face's format: a GPT2LMHeadModel folder (config.json, model.safetensors,
generation_config.json) with its tokenizer's files (GPT-2's, or the tokenizer.json of a BPE trained
on its data) and a chat model's template, or a LoRA run's
adapter alone in peft's format; and the upload of such a folder to the hub.
The reverse direction, GPT-2's weights into our GPT, is gptsuite/pretrained.py.
"""

import json
import shutil
from pathlib import Path

import torch

from gptsuite.chat import check_template, jinja
from gptsuite.errors import UserError
from gptsuite.pretrained import CONV1D, HF_ACTIVATION, HUB_MODELS
from gptsuite.tokenizer import END_OF_TEXT, GPT2_EOT, GPT2_VOCAB_SIZE, BPETokenizer, from_meta, gpt2_files
from model import GPT


def hf_config(model: GPT, vocab_size: int = GPT2_VOCAB_SIZE, eot: int = GPT2_EOT) -> dict:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": HF_ACTIVATION[c.activation],
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "use_cache": True,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": min(c.block_size, 200)}},
        "torch_dtype": "float32",
    }


def hf_state_dict(model: GPT, vocab_size: int = GPT2_VOCAB_SIZE) -> dict[str, torch.Tensor]:
    """Our weights under transformers' GPT2LMHeadModel names: Conv1D weights are (in, out), the
    transpose of nn.Linear's; lm_head is tied to wte, so only wte is stored; missing biases are zeros."""
    out = {}
    for name, p in model.state_dict().items():
        p = p.detach().float().cpu()
        if name == "lm_head.weight":
            continue
        if name.endswith(CONV1D):
            p = p.t()
        if name == "transformer.wte.weight":
            p = p[:vocab_size]  # without the padding rows
        out[name] = p.contiguous()
    for i, block in enumerate(model.transformer.h):  # bias=False models: GPT-2 always has biases
        for sub, width in (("ln_1", model.config.n_embd), ("ln_2", model.config.n_embd), ("attn.c_attn", 3 * block.attn.n_embd)):
            out.setdefault(f"transformer.h.{i}.{sub}.bias", torch.zeros(width))
        for sub in ("attn.c_proj", "mlp.c_proj"):
            out.setdefault(f"transformer.h.{i}.{sub}.bias", torch.zeros(model.config.n_embd))
        out.setdefault(f"transformer.h.{i}.mlp.c_fc.bias", torch.zeros(4 * model.config.n_embd))
    out.setdefault("transformer.ln_f.bias", torch.zeros(model.config.n_embd))
    return out


def write_tokenizer(dest: Path, block_size: int, chat_template: dict | None = None) -> None:
    """GPT-2's tokenizer files; for a model tuned on conversations, its chat template (chat.py) in
    Jinja as tokenizer_config.json's `chat_template`, so that apply_chat_template writes our prompts."""
    src = gpt2_files()  # sha256-checked
    shutil.copyfile(src["encoder.json"], dest / "vocab.json")  # the same token -> id map
    shutil.copyfile(src["vocab.bpe"], dest / "merges.txt")  # the same merges, '#version: 0.2' header included
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "add_prefix_space": False, **special}
    if chat_template:
        tok_config["chat_template"] = jinja(check_template(chat_template))
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")


def write_bpe_tokenizer(dest: Path, tok: BPETokenizer, block_size: int, chat_template: dict | None = None) -> None:
    """A trained BPE's tokenizer.json as it is (AutoTokenizer reads it with `tokenizers`, the library
    that wrote it, so its ids are ours), and the config that names its special tokens."""
    (dest / "tokenizer.json").write_text(tok.json, encoding="utf-8")
    special = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size, "add_prefix_space": False, **special}
    if chat_template:
        tok_config["chat_template"] = jinja(check_template(chat_template))
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")


def export_hf(model: GPT, tok_meta: dict, dest: Path, chat_template: dict | None = None) -> None:
    from safetensors.torch import save_file

    if model.config.arch != "gpt2":
        raise UserError(
            f"this model has arch={model.config.arch} (RoPE, RMSNorm, QK-norm, ReLU², soft-capped logits), which no transformers class computes exactly, so it does not export; "
            "use its checkpoint folder with sample.py and eval.py, or train with --arch=gpt2 to export"
        )
    if tok_meta.get("kind") not in ("gpt2", "bpe"):
        raise UserError(
            f"this model uses a {tok_meta.get('kind')} tokenizer, which Hugging Face has no tokenizer for; only GPT-2 BPE models and those of a trained BPE export (prepare the data with --tokenizer=gpt2 or bpe)"
        )
    bpe = from_meta(tok_meta) if tok_meta["kind"] == "bpe" else None
    vocab_size, eot = (bpe.vocab_size, bpe.eot_token) if bpe else (GPT2_VOCAB_SIZE, GPT2_EOT)
    if model.config.vocab_size < vocab_size:
        raise UserError(
            f"the model has {model.config.vocab_size} token ids, fewer than its tokenizer's {vocab_size}; the checkpoint is damaged or of another tokenizer"
        )
    new_folder(dest)
    (dest / "config.json").write_text(json.dumps(hf_config(model, vocab_size, eot), indent=2) + "\n")
    save_file(hf_state_dict(model, vocab_size), dest / "model.safetensors", metadata={"format": "pt"})
    shutil.copymode(dest / "config.json", dest / "model.safetensors")  # safetensors writes 0600: make it as readable as the rest (the umask's)
    # no max_length: transformers warns on every generate(max_new_tokens=...) when one is set; the
    # context limit is config.json's n_positions, as in openai-community/gpt2's generation_config.json
    generation = {"bos_token_id": eot, "eos_token_id": eot, "do_sample": True}
    (dest / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if bpe:
        write_bpe_tokenizer(dest, bpe, model.config.block_size, chat_template)
    else:
        write_tokenizer(dest, model.config.block_size, chat_template)


def new_folder(dest: Path) -> None:
    """Make the destination folder, which must not exist yet or be empty: an export never replaces files."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not an empty folder; pass a new destination")
    dest.mkdir(parents=True, exist_ok=True)


def export_peft_adapter(ckpt: dict, dest: Path, source: str) -> dict:
    """A LoRA checkpoint's adapter alone, in peft's own format: adapter_config.json (written by
    peft's LoraConfig; fan_in_fan_out, since transformers' GPT-2 keeps its weights as Conv1D) and
    adapter_model.safetensors (peft's key names under base_model.model.), plus GPT-2's tokenizer.
    PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), dest) loads it. The base must
    be GPT-2 weights transformers can load (a hub name or a Hugging Face folder), unchanged."""
    from safetensors.torch import save_file

    from gptsuite.loading import check_lora_base
    from gptsuite.lora import LoraConfig, check_base
    from gptsuite.pretrained import fetch

    record = ckpt.get("lora")
    if not record:
        raise UserError(f"{source} is not a LoRA run (no adapters): export the whole model with --to=hf")
    check_lora_base(record["base"], source)
    base = record["base"]["init_from"]
    if base not in HUB_MODELS and not (Path(base) / "config.json").is_file():
        raise UserError(
            f"{source} adapts {base}, a checkpoint of ours, which transformers cannot load as a base model; export the merged model with --to=hf instead"
        )
    check_base(record["base"], fetch(base)[1], source)
    new_folder(dest)
    name = HUB_MODELS.get(base) or str(Path(base).resolve())
    LoraConfig.from_record(record).peft_config(fan_in_fan_out=True, task_type="CAUSAL_LM", base_model_name_or_path=name).save_pretrained(str(dest))
    weights = {f"base_model.model.{k}": v.detach().float().cpu().contiguous() for k, v in ckpt["model"].items()}
    save_file(weights, dest / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copymode(dest / "adapter_config.json", dest / "adapter_model.safetensors")
    write_tokenizer(dest, ckpt["model_args"]["block_size"], ckpt.get("chat_template"))
    return {"base": name, "tensors": len(weights), "parameters": sum(v.numel() for v in weights.values())}


def push(dest: Path, repo: str) -> None:
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(dest), repo_id=repo)
    except ImportError:
        raise UserError("--push_to_hub needs huggingface_hub: pip install huggingface_hub") from None
    except Exception as e:  # network, auth, permissions: all the user's to fix
        raise UserError(
            f"could not push {dest} to the hub repo {repo} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the network and `huggingface-cli login`"
        ) from None
    print(f"pushed to https://huggingface.co/{repo}")
