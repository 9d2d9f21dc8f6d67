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

With --init_from=resume (the default) the model and its tokenizer come from the newest checkpoint
in out_dir (ckpt.pt, or the highest ckpt-<iter>.pt if ckpt.pt is gone); a
GPT-2 name or directory samples OpenAI's weights with GPT-2 BPE. --start is the prompt text, or
FILE:path to read it from a file. All num_samples samples are drawn in one batch, with the KV cache
(--use_cache=False for the plain recompute-everything loop). A sample ends at max_new_tokens,
at <|endoftext|> (GPT-2 BPE models; --stop_at_eot=False keeps going) or at the text --stop,
which is cut off. --stream prints each sample token by token as it comes (samples one after
another). --interactive reads prompts from stdin, one a line, until EOF. In --stop and in
interactive prompts, \\n stands for a newline. --check_novelty reports for each sample the
longest token span also found in the training data and the share of its 8-grams found there
(see gptsuite/novelty.py; the index is built once and cached beside the data).
--seed seeds torch once the model is loaded, right before the first token: a prompt, a seed and the
settings give the same first sample here as on the playground page (serve.py).
A checkpoint trained on a dataset with a prompt template (pubmed) formats --start into it, e.g.
`--start=FILE:abstract.txt` becomes "ABSTRACT:\n...\n\nARTICLE:\n", and the sample is the article,
ended at <|endoftext|> (or after max_new_tokens).
--compile compiles the model's forward (two graphs: the prompt and the one-token decode step);
worth its compile time for long or many samples (python -m tools.bench_generate --compile=True
measures it).
"""

import sys
from dataclasses import dataclass

import torch

from configurator import option, parse_config
from gptsuite import templates
from gptsuite import tokenizer as tokenizers
from gptsuite.datafiles import resolve_data_dir
from gptsuite.errors import cli
from gptsuite.generate import SamplingConfig, cut_at_stop, encode_prompt, generate_texts, read_prompt
from gptsuite.loading import check_init_from, load_model
from gptsuite.runtime import DTYPE_CHOICES, seed_everything, setup_runtime

SEPARATOR = "---------------"


@dataclass
class SampleConfig(SamplingConfig):
    init_from: str = "resume"  # 'resume' (the newest checkpoint in out_dir), or gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, or a directory
    out_dir: str = "out"  # the training run whose checkpoint to sample
    start: str = "\n"  # prompt text, or FILE:path
    num_samples: int = option(10, gt=0)  # drawn together, as one batch
    stream: bool = False  # print tokens as they are generated
    interactive: bool = False  # read prompts from stdin, one per line, until EOF
    check_novelty: bool = False  # report overlap of each sample with the training data
    data_dir: str = ""  # the data the model was trained on (for --check_novelty, and the vocabulary of a nanoGPT checkpoint); default: the checkpoint's dataset
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)  # auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16; fp32 on cpu/mps
    compile: bool = False  # torch.compile the model for decoding: the first sample waits for the compile (tens of seconds), later tokens come faster


def main(argv: list[str]) -> None:
    cfg = parse_config(SampleConfig(), argv)
    cfg.stop = cfg.stop.replace("\\n", "\n")
    check_init_from(cfg.init_from)
    prompt = None if cfg.interactive else read_prompt(cfg.start)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    loaded = load_model(cfg.init_from, cfg.out_dir, data_dir=cfg.data_dir)  # a nanoGPT checkpoint finds its vocabulary there
    model, tok_meta, template = loaded.model, loaded.tokenizer, loaded.template
    tok = tokenizers.from_meta(tok_meta)
    model.to(rt.device)
    if cfg.compile:  # in place: generate_stream calls the module itself, so a compiled wrapper would never run
        model.compile()
    index = None
    if cfg.check_novelty:
        from gptsuite import novelty

        index = novelty.open_index(resolve_data_dir(cfg.data_dir, trained_on=loaded.train_config), tok_meta)
    seed_everything(cfg.seed)  # again, after loading: a seed gives the same samples here and on the playground page

    def run(prompt: str) -> None:
        if template:  # e.g. pubmed: the prompt is an abstract, the model writes the article
            prompt = templates.format_prompt(template, prompt)
        ids = encode_prompt(tok, prompt, model.config.block_size, loaded.name)  # refused if it leaves no room to write, as on the page
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
