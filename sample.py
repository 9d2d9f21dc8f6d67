"""
Sample from a trained model, or from OpenAI's GPT-2.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --max_new_tokens=200
    python sample.py --init_from=gpt2-xl --start="What is the answer to life?" --num_samples=2
    python sample.py --init_from=./gpt2 --start="Hello"     # a local copy: config.json + model.safetensors
    python sample.py --out_dir=out-gpt2 --start="The" --temperature=0.9 --top_p=0.95 --stop="\\n\\n"
    python sample.py --out_dir=out-shakespeare-char --num_samples=1 --stream
    python sample.py --out_dir=out-shakespeare-char --interactive          # one prompt per line, until EOF
    python sample.py --out_dir=out-chat --chat                             # talk to a model tuned on conversations
    python sample.py --out_dir=out-chat --start=FILE:conversation.json     # answer {"messages": [...]}
    python sample.py --out_dir=out-shakespeare-char --check_novelty        # copied from train.bin?
    python sample.py --out_dir=out-chat --chat --weights=bf16              # on a CPU: from bf16 weights, as the page decodes

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
--chat is a conversation in the terminal: you type a message (\\n in it a newline), the answer
streams as it is written, and the conversation so far goes with each next message, in the chat
template the model was tuned with (prepare.py chat). /system TEXT sets the system message (/system
alone removes it), /reset starts the conversation over, Ctrl-D ends. Where the conversation no
longer fits the model's context with room to answer (max_new_tokens, at most half the context),
its oldest messages drop, said in a line; a system message stays. --start=FILE:path.json answers
the conversation in the file, {"messages": [{"role": "system" | "user" | "assistant", "content":
"..."}, ...]} as OpenAI's API and prepare.py chat take it, printing the num_samples answers. An
answer ends at the end-of-turn marker (<|endoftext|> with GPT-2 BPE) or after max_new_tokens, and
a seed gives the same answer to the same conversation in both. A model not tuned on conversations
(GPT-2's weights, a run on plain text) gets the suite's chat template (gptsuite/chat.py) with a note
that its answers may not follow it.
--compile compiles the model's forward (two graphs: the prompt and the one-token decode step);
worth its compile time for long or many samples (python -m tools.bench_generate --compile=True
measures it).
--weights=bf16 decodes on a CPU from bf16 weights, --weights=int8 from torchao's int8 (with
--compile: eager it is slower than fp32), --weights=int4 from torchao's CPU int4 (the fastest; it
costs the most perplexity); the page takes the same flag, and the same weights give
the same samples there (docs/deploy.md has their speed and perplexity).
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from configurator import option, parse_config
from gptsuite import templates
from gptsuite import tokenizer as tokenizers
from gptsuite.datafiles import resolve_data_dir
from gptsuite.errors import UserError, cli
from gptsuite.generate import (
    SamplingConfig,
    answer_room,
    chat_prompt,
    chat_settings,
    check_conversation,
    conversation_template,
    cut_at_stop,
    drop_note,
    encode_prompt,
    generate_texts,
    kept_messages,
    read_conversation,
    read_prompt,
)
from gptsuite.loading import check_init_from, load_model
from gptsuite.runtime import DTYPE_CHOICES, Runtime, seed_everything, setup_runtime
from gptsuite.weights import WEIGHTS, use_weights

SEPARATOR = "---------------"


@dataclass
class SampleConfig(SamplingConfig):
    init_from: str = "resume"  # 'resume' (the newest checkpoint in out_dir), or gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, or a directory
    out_dir: str = "out"  # the training run whose checkpoint to sample
    start: str = "\n"  # prompt text, or FILE:path; FILE:path.json is a conversation to answer, {"messages": [...]}
    num_samples: int = option(10, gt=0)  # drawn together, as one batch
    stream: bool = False  # print tokens as they are generated
    interactive: bool = False  # read prompts from stdin, one per line, until EOF
    chat: bool = False  # talk to the model: your messages from stdin, its answers streamed, the conversation kept (/system TEXT, /reset, Ctrl-D ends)
    check_novelty: bool = False  # report overlap of each sample with the training data
    data_dir: str = ""  # the data the model was trained on (for --check_novelty, and the vocabulary of a nanoGPT checkpoint); default: the checkpoint's dataset
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)  # auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16; fp32 on cpu/mps
    compile: bool = False  # torch.compile the model for decoding: the first sample waits for the compile (tens of seconds), later tokens come faster
    weights: str = option("fp32", choices=WEIGHTS)  # on a CPU: decode from fp32, bf16, int8 or int4 weights (gptsuite/weights.py; int8 wants --compile)


@dataclass
class Sampler:
    """A loaded model and how it samples: what a prompt, typed prompts and a conversation share."""

    cfg: SampleConfig
    model: torch.nn.Module
    tok: object
    rt: Runtime
    name: str
    index: object = None  # the novelty index of --check_novelty

    def draw(self, ids: list[int], head: str, gen: SamplingConfig) -> None:
        """num_samples continuations of ids, each printed after `head` (the prompt; nothing before an answer)."""
        cfg, tok = self.cfg, self.tok
        with torch.no_grad(), self.rt.autocast():
            batches = [1] * cfg.num_samples if cfg.stream else [cfg.num_samples]
            for n in batches:
                if cfg.stream:
                    print(head, end="", flush=True)
                rows = generate_texts(self.model, tok, ids, n, gen, self.rt.device, sys.stdout if cfg.stream else None)
                for row in rows:
                    text = cut_at_stop(tok.decode(row), gen.stop)[0]
                    print("" if cfg.stream else head + text)
                    self.novelty(text)
                    print(SEPARATOR, flush=True)

    def novelty(self, text: str) -> None:
        if self.index is not None:  # re-encoded: train.bin holds the text's canonical tokenization
            from gptsuite import novelty

            print(novelty.format_report(self.index.report(self.tok.encode(text)), self.tok), flush=True)

    def prompt(self, text: str, template: dict | None) -> None:
        if template:  # e.g. pubmed: the prompt is an abstract, the model writes the article
            text = templates.format_prompt(template, text)
        ids = encode_prompt(self.tok, text, self.model.config.block_size, self.name)  # refused if it leaves no room to write, as on the page
        self.draw(ids, text, self.cfg)

    def converse(self, chat_template: dict, conversation: list[dict] | None) -> None:
        """Answer the conversation of a file, or talk in the terminal (chat) when there is none."""
        block_size = self.model.config.block_size
        room, gen = answer_room(block_size, self.cfg.max_new_tokens), chat_settings(self.cfg, self.tok, chat_template)

        def prompt_of(messages: list[dict]) -> tuple[list[int], list[dict]]:
            """The prompt for the next answer, and the messages it holds: the oldest drop where they no longer fit."""
            ids, dropped = chat_prompt(self.tok, chat_template, messages, block_size, room)
            if dropped:
                print(drop_note(dropped, block_size, room), file=sys.stderr, flush=True)
            return ids, kept_messages(messages, dropped)

        def answer(messages: list[dict]) -> tuple[str, list[dict]]:
            ids, kept = prompt_of(messages)
            print("assistant> ", end="", flush=True)
            seed_everything(self.cfg.seed)  # each answer as --start=FILE:conversation.json gives it for the same conversation
            with torch.no_grad(), self.rt.autocast():
                row = generate_texts(self.model, self.tok, ids, 1, gen, self.rt.device, sys.stdout)[0]
            print(flush=True)
            reply = cut_at_stop(self.tok.decode(row), gen.stop)[0]
            self.novelty(reply)
            return reply, kept

        if conversation is not None:
            self.draw(prompt_of(conversation)[0], "", gen)
        else:
            chat(answer, chat_template)


def main(argv: list[str]) -> None:
    cfg = parse_config(SampleConfig(), argv)
    cfg.stop = cfg.stop.replace("\\n", "\n")
    check_init_from(cfg.init_from)
    if cfg.chat and cfg.interactive:
        raise UserError("--chat and --interactive both read what you type; pass one of them")
    if cfg.chat and cfg.start != SampleConfig.start:
        raise UserError("--chat reads the conversation from the terminal; leave out --start (or answer a conversation file with --start=FILE:path.json)")
    typed = cfg.chat or cfg.interactive
    conversation = None if typed else read_conversation(cfg.start)
    prompt = None if typed or conversation is not None else read_prompt(cfg.start)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    loaded = load_model(cfg.init_from, cfg.out_dir, data_dir=cfg.data_dir)  # a nanoGPT checkpoint finds its vocabulary there
    tok = tokenizers.from_meta(loaded.tokenizer)
    if cfg.chat or conversation is not None:
        chat_template, note = conversation_template(loaded.chat_template, tok, loaded.name)
        if note:
            print(note, file=sys.stderr, flush=True)
        if conversation is not None:
            conversation = check_conversation(conversation, chat_template, cfg.start[len("FILE:") :])
    loaded.model.to(rt.device)
    use_weights(loaded.model, cfg.weights, rt.device)
    if cfg.compile:  # in place: generate_stream calls the module itself, so a compiled wrapper would never run
        loaded.model.compile()
    sampler = Sampler(cfg, loaded.model, tok, rt, loaded.name)
    if cfg.check_novelty:
        from gptsuite import novelty

        sampler.index = novelty.open_index(resolve_data_dir(cfg.data_dir, trained_on=loaded.train_config), loaded.tokenizer)
    seed_everything(cfg.seed)  # again, after loading: a seed gives the same samples here and on the playground page
    if cfg.chat or conversation is not None:
        sampler.converse(chat_template, conversation)
    elif not cfg.interactive:
        sampler.prompt(prompt, loaded.template)
    else:
        prompts(sampler, loaded.template)


def prompts(sampler: Sampler, template: dict | None) -> None:
    """--interactive: a prompt a line from stdin, until EOF."""
    while True:
        if sys.stdin.isatty():
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n").replace("\\n", "\n")  # a typed \n stands for a newline
        if line:
            sampler.prompt(line, template)


def chat(answer: Callable[[list[dict]], tuple[str, list[dict]]], template: dict) -> None:
    """A conversation on stdin and stdout, until EOF (Ctrl-D): each line typed is the user's
    message (\\n in it a newline), and answer(messages) streams the assistant's reply and returns it
    with the messages it kept (the oldest drop once they no longer fit). /system TEXT sets the
    system message (/system alone removes it), /reset starts the conversation over."""
    tty = sys.stdin.isatty()
    if tty:
        import readline  # noqa: F401  (input() edits lines and recalls earlier ones with the arrow keys)
    system: list[dict] = []
    history: list[dict] = []
    print("chat: type a message; /system TEXT sets the system message, /reset starts over, Ctrl-D ends", flush=True)
    while True:
        try:
            line = input("you> " if tty else "")
        except EOFError:
            if tty:
                print()  # the shell's prompt on a line of its own
            return
        text = line.strip().replace("\\n", "\n")
        command, _, rest = text.partition(" ")
        if template["end"] in text:
            print(f"error: a message cannot hold the end-of-turn marker {template['end']!r}; leave it out", file=sys.stderr, flush=True)
        elif command == "/reset":
            history = []
            print("(the conversation starts over" + (", with the system message)" if system else ")"), flush=True)
        elif command == "/system" and "system" not in template["roles"]:
            print("error: this model's chat template has no system role", file=sys.stderr, flush=True)
        elif command == "/system":
            system = [{"role": "system", "content": rest.strip()}] if rest.strip() else []
            print("(system message set)" if system else "(system message removed)", flush=True)
        elif text:
            try:
                reply, kept = answer(system + history + [{"role": "user", "content": text}])
            except UserError as e:  # a message the model cannot read (too long, a character it does not know): type another
                print(f"error: {e}", file=sys.stderr, flush=True)
                continue
            history = kept[len(system) :] + [{"role": "assistant", "content": reply}]


if __name__ == "__main__":
    cli(main)
