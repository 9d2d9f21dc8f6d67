"""
Sample from a trained model, or from OpenAI's GPT-2.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --max_new_tokens=200
    python sample.py --init_from=gpt2-xl --start="What is the answer to life?" --num_samples=2
    python sample.py --init_from=./gpt2 --start="Hello"     # a local copy: config.json + model.safetensors
    python sample.py --out_dir=out-gpt2 --start="The" --temperature=0.9 --top_p=0.95 --stop="\\n\\n"
    python sample.py --out_dir=out-shakespeare-char --num_samples=1 --stream
    python sample.py --out_dir=out-shakespeare-char --interactive          # one prompt per line, until EOF
    python sample.py --out_dir=out-shakespeare-char --check_novelty        # copied from train.bin?

With --init_from=resume (the default) the model and its tokenizer come from out_dir/ckpt.pt; a
GPT-2 name or directory samples OpenAI's weights with GPT-2 BPE. --start is the prompt text, or
FILE:path to read it from a file. All num_samples samples are drawn in one batch, with the KV cache
(--use_cache=False for the plain recompute-everything loop). A sample ends at max_new_tokens,
at <|endoftext|> (GPT-2 BPE models; --stop_at_eot=False keeps going) or at the text --stop,
which is cut off. --stream prints each sample token by token as it comes (samples one after
another). --interactive reads prompts from stdin, one a line, until EOF. In --stop and in
interactive prompts, \\n stands for a newline. --check_novelty reports for each sample the
longest token span also found in the training data and the share of its 8-grams found there
(see novelty.py; the index is built once and cached beside the data).
A checkpoint trained on a dataset with a prompt template (pubmed) formats --start into it, e.g.
`--start=FILE:abstract.txt` becomes "ABSTRACT:\n...\n\nARTICLE:\n", and the sample is the article,
ended at <|endoftext|> (or after max_new_tokens).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import templates
import tokenizer as tokenizers
from checkpoint import checkpoint_tokenizer_meta, load_checkpoint, model_from_checkpoint
from configurator import parse_config
from datafiles import read_text
from errors import UserError, cli
from model import GPT
from pretrained import HUB_MODELS, from_pretrained, is_pretrained
from runtime import setup_runtime

SEPARATOR = "---------------"


@dataclass
class SampleConfig:
    init_from: str = "resume"  # 'resume' (out_dir/ckpt.pt), or gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, or a directory
    out_dir: str = "out"  # the checkpoint is out_dir/ckpt.pt
    start: str = "\n"  # prompt text, or FILE:path
    num_samples: int = 10  # drawn together, as one batch
    max_new_tokens: int = 500
    temperature: float = 0.8  # 1.0 as trained, < 1 more conservative, 0 greedy
    top_k: int | None = 200  # keep only the top_k most likely tokens; None keeps all
    top_p: float | None = None  # nucleus sampling: keep the most likely tokens up to this probability mass
    stop: str = ""  # end a sample at this text (not included in the output)
    stop_at_eot: bool = True  # end a sample at <|endoftext|> (tokenizers that have one)
    stream: bool = False  # print tokens as they are generated
    interactive: bool = False  # read prompts from stdin, one per line, until EOF
    check_novelty: bool = False  # report overlap of each sample with the training data
    data_dir: str = ""  # training data for --check_novelty; default: the checkpoint's dataset
    use_cache: bool = True  # KV cache; False recomputes the whole context for every token
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
    return read_text(Path(start[len("FILE:") :]), "prompt file", "pass --start=FILE:path with a readable UTF-8 text file")


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
    if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] or None, got {cfg.top_p}")


def load_model(cfg) -> tuple[GPT, dict, dict, dict | None]:
    """The model (on CPU, in eval mode), its tokenizer metadata, its training config and its
    dataset's prompt template (templates.py; None if it has none): from cfg.out_dir/ckpt.pt when
    cfg.init_from is 'resume', else OpenAI's GPT-2 weights (a hub name or a Hugging Face folder)
    with GPT-2 BPE. Any config with init_from and out_dir works (SampleConfig, EvalConfig)."""
    if cfg.init_from != "resume":
        return from_pretrained(cfg.init_from).eval(), {"kind": "gpt2", "vocab_size": tokenizers.GPT2_VOCAB_SIZE}, {}, None
    ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt", map_location="cpu")
    model = model_from_checkpoint(ckpt, dropout=0.0)
    return model.eval(), checkpoint_tokenizer_meta(ckpt), ckpt.get("config", {}), ckpt.get("template")


def encode_prompt(tok, text: str) -> list[int]:
    ids = tok.encode(text)
    if not ids:
        raise UserError("the prompt is empty after tokenizing; pass some text with --start")
    return ids


def cut_at_stop(text: str, stop: str) -> tuple[str, bool]:
    """text up to the first occurrence of stop, and whether it was there."""
    if stop and stop in text:
        return text[: text.index(stop)], True
    return text, False


def printable(text: str, stop: str) -> str:
    """The part of a growing sample that is safe to print while streaming: no trailing partial
    UTF-8 character (decoded as U+FFFD) and no tail that could still become the stop text."""
    text = text.rstrip("\ufffd")
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if stop.startswith(text[-n:]):
            return text[:-n]
    return text


def generate_texts(model: GPT, tok, prompt_ids: list[int], num_samples: int, cfg: SampleConfig, device: str, stream=None) -> list[list[int]]:
    """Draw num_samples continuations of prompt_ids in one batch; return each one's generated
    token ids, ended at <|endoftext|> (when cfg.stop_at_eot) or at the text cfg.stop. With
    `stream` (a file, batch of one), the text is written there as it comes."""
    x = torch.tensor(prompt_ids, dtype=torch.long, device=device)[None, :].repeat(num_samples, 1)
    eot = tok.eot_token if cfg.stop_at_eot else None
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    done = [False] * num_samples
    shown = 0
    tail = 4 * len(cfg.stop) + 1  # enough tokens to hold the stop text (a character is at most 4 tokens)
    steps = model.generate_stream(x, cfg.max_new_tokens, cfg.temperature, cfg.top_k, tok.vocab_size, cfg.top_p, cfg.use_cache)
    for step in steps:
        for r, t in enumerate(step[:, 0].tolist()):
            if done[r]:
                continue
            if t == eot:
                done[r] = True
                continue
            rows[r].append(t)
            if cfg.stop and cut_at_stop(tok.decode(rows[r][-tail:]), cfg.stop)[1]:
                done[r] = True
        if stream is not None:
            text = printable(cut_at_stop(tok.decode(rows[0]), cfg.stop)[0], cfg.stop)
            stream.write(text[shown:])
            stream.flush()
            shown = max(shown, len(text))
        if all(done):
            break
    if stream is not None:  # what was held back: a partial stop text that never completed, a last character
        stream.write(cut_at_stop(tok.decode(rows[0]), cfg.stop)[0][shown:])
    return rows


def main(argv: list[str]) -> None:
    cfg = parse_config(SampleConfig(), argv)
    cfg.stop = cfg.stop.replace("\\n", "\n")
    validate(cfg)
    prompt = None if cfg.interactive else read_prompt(cfg.start)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok_meta, train_cfg, template = load_model(cfg)
    tok = tokenizers.from_meta(tok_meta)
    model.to(rt.device)
    if cfg.compile:
        model = torch.compile(model)
    index = None
    if cfg.check_novelty:
        import novelty

        index = novelty.open_index(novelty.training_data_dir(cfg.data_dir, train_cfg), tok_meta)

    def run(prompt: str) -> None:
        if template:  # e.g. pubmed: the prompt is an abstract, the model writes the article
            prompt = templates.format_prompt(template, prompt)
        ids = encode_prompt(tok, prompt)
        with torch.no_grad(), rt.autocast():
            batches = [1] * cfg.num_samples if cfg.stream else [cfg.num_samples]
            for n in batches:
                if cfg.stream:
                    print(prompt, end="", flush=True)
                rows = generate_texts(model, tok, ids, n, cfg, rt.device, sys.stdout if cfg.stream else None)
                for row in rows:
                    text = cut_at_stop(tok.decode(row), cfg.stop)[0]
                    print("" if cfg.stream else prompt + text)
                    if index is not None:  # re-encoded: train.bin holds the text's canonical tokenization
                        print(novelty.format_report(index.report(tok.encode(text)), tok))
                    print(SEPARATOR, flush=True)

    if not cfg.interactive:
        run(prompt)
        return
    while True:
        if sys.stdin.isatty():
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n").replace("\\n", "\n")  # a typed \n stands for a newline
        if line:
            run(line)


if __name__ == "__main__":
    cli(main)
