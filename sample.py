"""
Sample from a trained model, or from OpenAI's GPT-2.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --max_new_tokens=200
    python sample.py --init_from=gpt2-xl --start="What is the answer to life?" --num_samples=2
    python sample.py --init_from=./gpt2 --start="Hello"     # a local copy: config.json + model.safetensors

With --init_from=resume (the default) the model and its tokenizer come from out_dir/ckpt.pt; a
GPT-2 name or directory samples OpenAI's weights with GPT-2 BPE. --start is the prompt text, or
FILE:path to read it from a file.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

import tokenizer as tokenizers
from checkpoint import checkpoint_tokenizer_meta, load_checkpoint, model_from_checkpoint
from configurator import parse_config
from errors import UserError, cli
from pretrained import HUB_MODELS, from_pretrained, is_pretrained
from runtime import setup_runtime


@dataclass
class SampleConfig:
    init_from: str = "resume"  # 'resume' (out_dir/ckpt.pt), or gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, or a directory
    out_dir: str = "out"  # the checkpoint is out_dir/ckpt.pt
    start: str = "\n"  # prompt text, or FILE:path
    num_samples: int = 10
    max_new_tokens: int = 500
    temperature: float = 0.8  # 1.0 as trained, < 1 more conservative, 0 greedy
    top_k: int | None = 200  # keep only the top_k most likely tokens; None keeps all
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False


def read_prompt(start: str) -> str:
    if not start.startswith("FILE:"):
        try:
            start.encode("utf-8")
        except UnicodeEncodeError as e:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
            raise UserError(
                f"--start is not UTF-8 text (at position {e.start}); pass UTF-8 text, or the prompt in a UTF-8 file with --start=FILE:path"
            ) from None
        return start
    path = Path(start[len("FILE:") :])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"prompt file {path} not found; pass --start=FILE:path with an existing file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read prompt file {path} ({e.strerror}); pass --start=FILE:path with a readable text file") from None


def validate(cfg: SampleConfig) -> None:
    if cfg.init_from != "resume" and not is_pretrained(cfg.init_from):
        raise UserError(
            f"unknown init_from '{cfg.init_from}'; use 'resume' (out_dir/ckpt.pt), one of {', '.join(HUB_MODELS)}, or a directory holding config.json and model.safetensors"
        )
    if cfg.num_samples <= 0 or cfg.max_new_tokens <= 0:
        raise UserError("num_samples and max_new_tokens must be positive")
    if cfg.temperature < 0:
        raise UserError(f"temperature must be >= 0, got {cfg.temperature}")
    if cfg.top_k is not None and cfg.top_k <= 0:
        raise UserError(f"top_k must be positive or None, got {cfg.top_k}")


def main(argv: list[str]) -> None:
    cfg = parse_config(SampleConfig(), argv)
    validate(cfg)
    prompt = read_prompt(cfg.start)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    if cfg.init_from == "resume":
        ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt", map_location="cpu")
        tok = tokenizers.from_meta(checkpoint_tokenizer_meta(ckpt))
        model = model_from_checkpoint(ckpt, dropout=0.0)
        del ckpt
    else:
        tok, model = tokenizers.GPT2Tokenizer(), from_pretrained(cfg.init_from)
    model.eval().to(rt.device)
    if cfg.compile:
        model = torch.compile(model)

    ids = tok.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty after tokenizing; pass some text with --start")
    x = torch.tensor(ids, dtype=torch.long, device=rt.device)[None, ...]
    with torch.no_grad(), rt.autocast():
        for _ in range(cfg.num_samples):
            y = model.generate(x, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, vocab_limit=tok.vocab_size)
            print(tok.decode(y[0].tolist()))
            print("---------------")


if __name__ == "__main__":
    cli(main)
