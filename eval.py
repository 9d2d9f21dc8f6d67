"""
Evaluate a model on the whole validation split of a prepared dataset: loss, perplexity, bits per
byte; on HellaSwag's validation set: acc, acc_norm; or on its answers to conversations: exact match.

    python eval.py --out_dir=out-shakespeare-char                       # the dataset it was trained on
    python eval.py --out_dir=out-shakespeare-char --data_dir=/tmp/other --stride=128
    python eval.py --init_from=gpt2 --dataset=pubmed                    # OpenAI's GPT-2 (gptsuite/pretrained.py)
    python eval.py --init_from=gpt2 --dataset=pubmed --in_context_docs=2
    python eval.py --compare out-scratch out-finetuned gpt2 gpt2@2 --dataset=azure_docs --stride=512
    python eval.py --init_from=gpt2 --task=hellaswag                    # HellaSwag (gptsuite/hellaswag.py)
    python eval.py --compare out-gpt2 gpt2 gpt2-medium --task=hellaswag --hellaswag_file=hellaswag_val.jsonl
    python eval.py --out_dir=out-tasks --task=chat --chat_file=data/tasks/test.jsonl  # answers (gptsuite/chat_eval.py)
    python eval.py --compare gpt2 out-tasks --task=chat --chat_file=data/tasks/test.jsonl --chat_items=200
    python eval.py --out_dir=out-chat --weights=bf16                    # what decoding from bf16 (int8, int4) weights costs

Every token of the split after the first is scored exactly once, in order, with no sampling:
windows of `stride` scored tokens, each preceded by as much earlier context as the model's
block_size leaves room for (stride = block_size: non-overlapping windows, the default; a smaller
stride gives every token more context and costs block_size/stride times the compute).
Logits of padded vocabulary ids (50257..50303) are left out of the softmax.

  loss        mean cross-entropy in nats per token
  perplexity  exp(loss)
  bits/byte   total loss in bits / UTF-8 bytes of the scored tokens' decoded text (each token's
              own bytes; <|endoftext|> counts as its 13 characters). Comparable across tokenizers.

Data with a loss mask (prepare.py chat, a prompt template such as pubmed's) is scored as training
counts it: the loss, perplexity and bits per byte (bytes of those tokens only) of the response
tokens alone, each in a window that stays inside its conversation or document and starts at its
start where the block leaves room, so that a response is scored with its prompt before it, as in
a training row. --loss_on=all scores every token of the split instead, as for plain text.

--in_context_docs=K puts K training documents before each window (the in-context setting): for
GPT-2 BPE data, documents are train.bin split at <|endoftext|>; for character-level data (no
document markers) they are K chunks at random places of train.bin. They are drawn per window
with a fixed seed (the same for every model) and packed in front of the window, each cut to an
equal share of block_size - stride tokens (stride defaults to block_size/2 here); room they leave
goes to earlier context of the split.

--compare MODEL ... prints a markdown table for several models on the same dataset and the same
tokens. A MODEL is a checkpoint folder (out_dir with ckpt.pt), or a GPT-2 name / Hugging Face
folder (loaded by gptsuite/pretrained.py), optionally with @K for K in-context documents (gpt2@3).
A model whose tokenizer differs from the dataset's is an error. A checkpoint scored on data other
than it was trained on (the sha256 of train.bin / val.bin in its record and the dataset's
meta.json differ) is scored all the same, with a note that says so.

--task=hellaswag scores a GPT-2 BPE model on HellaSwag's 10,042 validation items in completion
style, as llm.c does: acc counts the items whose right ending has the lowest summed loss, acc_norm
those whose right ending has the lowest loss per token. The items are downloaded once into
$GPTSUITE_CACHE/hellaswag/ (default ~/.cache/gptsuite/hellaswag/); --hellaswag_file=PATH reads a
local copy instead, --hellaswag_items=N only the first N items. With --compare, the table gives
every model's acc and acc_norm on the same items.

--task=chat asks the model every conversation of --chat_file (a .jsonl file in OpenAI's messages
format, as `python -m tools.chat_tasks` writes) without its last message, the assistant's
answer, in the model's chat template, and counts the greedy answers (temperature 0, the KV
cache) that equal the expected one, both stripped: exact match per "task" of the records and
overall, with counts. An answer may run to the longest expected one plus a few tokens.
--chat_items=N asks only the first N. A model that was not tuned on conversations (GPT-2's
weights) is asked in the default template (gptsuite/chat.py), with a note: a baseline to
compare a tuned model against. With --compare, the table gives every model's scores.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from configurator import option, parse_config
from gptsuite import chat_eval, hellaswag
from gptsuite import tokenizer as tokenizers
from gptsuite.checkpoint import load_checkpoint
from gptsuite.datafiles import check_token_ids, load_meta, open_split, resolve_data_dir, token_dtype
from gptsuite.errors import UserError, cli
from gptsuite.evaluation import ContextDocs, EvalResult, counted_targets, evaluate, token_byte_lengths
from gptsuite.generate import conversation_template
from gptsuite.loading import Loaded, load_model
from gptsuite.masks import open_loss_mask
from gptsuite.runtime import DTYPE_CHOICES, Runtime, setup_runtime
from gptsuite.weights import WEIGHTS, use_weights


@dataclass
class EvalConfig:
    out_dir: str = "out"  # the training run whose newest checkpoint to score, with init_from='resume'
    init_from: str = "resume"  # 'resume', or a GPT-2 name ('gpt2', 'gpt2-medium', ...) or Hugging Face folder
    dataset: str = ""  # data/<dataset>; default: the dataset the checkpoint was trained on
    data_dir: str = ""  # or the prepared dataset folder itself
    split: str = option("val", choices=("train", "val"))  # which split to score
    block_size: int = option(0, ge=0)  # window length; 0: the model's block_size
    stride: int = option(0, ge=0)  # tokens scored per window; 0: block_size (block_size // 2 with in-context docs)
    in_context_docs: int = option(0, ge=0)  # K training documents packed before each window
    batch_size: int = option(0, ge=0)  # windows per forward pass; 0: as many as make 8,192 tokens (8 at block 1024)
    max_tokens: int = option(0, ge=0)  # score only the first max_tokens tokens of the split; 0: all of it
    seed: int = option(1337, ge=0)  # which training documents go in context
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)  # auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16; fp32 on cpu/mps
    compile: bool = False  # torch.compile the model first
    weights: str = option("fp32", choices=WEIGHTS)  # on a CPU: score from fp32, bf16, int8 or int4 weights (gptsuite/weights.py): the perplexity each costs
    loss_on: str = option(
        "response", choices=("response", "all")
    )  # data with a loss mask (chat, prompt templates): score only the response tokens, as training counts them, or every token
    task: str = option(
        "loss", choices=("loss", "hellaswag", "chat")
    )  # loss: score a dataset split; hellaswag: HellaSwag's validation items (acc, acc_norm); chat: answers to conversations (exact match)
    hellaswag_file: str = ""  # with --task=hellaswag: a local copy of hellaswag_val.jsonl; default: downloaded once and cached
    hellaswag_items: int = option(0, ge=0)  # with --task=hellaswag: score only its first this many items; 0: all 10,042
    chat_file: str = ""  # with --task=chat: a .jsonl file of conversations ending in the expected answer (python -m tools.chat_tasks writes one)
    chat_items: int = option(0, ge=0)  # with --task=chat: score only its first this many conversations; 0: all


def describe(tok_meta: dict) -> str:
    return f"{tok_meta['kind']} tokenizer of {tok_meta['vocab_size']} ids"


def run_eval(cfg: EvalConfig, rt: Runtime, data_dir: Path, loaded: Loaded) -> tuple[EvalResult, int, int]:
    """Evaluate one model; returns the result, the block size and the stride used."""
    meta = load_meta(data_dir)
    if loaded.tokenizer != meta["tokenizer"]:
        same_kind = loaded.tokenizer["kind"] == meta["tokenizer"]["kind"] and loaded.tokenizer["vocab_size"] == meta["tokenizer"]["vocab_size"]
        detail = " (same size, different characters)" if same_kind else ""
        raise UserError(
            f"{loaded.name} uses a {describe(loaded.tokenizer)} but {data_dir} uses a {describe(meta['tokenizer'])}{detail}; evaluate on data prepared with the model's tokenizer"
        )
    if note := other_data_note(cfg, data_dir, meta):
        print(note, flush=True)
    tok = tokenizers.from_meta(meta["tokenizer"])
    dtype = token_dtype(meta)
    data = open_split(data_dir, cfg.split, dtype)
    loss_mask = open_loss_mask(data_dir, cfg.split, meta, len(data)) if cfg.loss_on == "response" else None
    if cfg.max_tokens:
        data = data[: cfg.max_tokens]
    if loss_mask is not None and not counted_targets(loss_mask, len(data)).any():
        raise UserError(
            f"the first {len(data):,} tokens of {data_dir / f'{cfg.split}.bin'} hold no response tokens to score; pass a larger --max_tokens, or --loss_on=all"
        )
    check_token_ids(data, meta["tokenizer"]["vocab_size"], data_dir / f"{cfg.split}.bin")
    model = loaded.model
    if cfg.block_size > model.config.block_size:
        raise UserError(
            f"block_size={cfg.block_size} is larger than {loaded.name}'s {model.config.block_size}; pass --block_size <= {model.config.block_size} (or 0 for the model's)"
        )
    block = cfg.block_size or model.config.block_size
    stride = cfg.stride or (block // 2 if cfg.in_context_docs else block)
    if stride > block:
        raise UserError(f"stride={stride} is larger than the block size {block}; pass --stride <= {block}")
    context = None
    if cfg.in_context_docs:
        train = open_split(data_dir, "train", dtype)
        check_token_ids(train, meta["tokenizer"]["vocab_size"], data_dir / "train.bin")
        context = ContextDocs(train, cfg.in_context_docs, block - stride, tok.eot_token, cfg.seed)
    model.to(rt.device)
    fwd = torch.compile(model) if cfg.compile else model
    batch_size = cfg.batch_size or max(1, 8192 // block)
    result = evaluate(fwd, data, block, stride, batch_size, rt, token_byte_lengths(tok), tok.vocab_size, context, loss_mask)
    return result, block, stride


def other_data_note(cfg: EvalConfig, data_dir: Path, meta: dict) -> str | None:
    """A note if the checkpoint was trained on other data than data_dir holds (both record the
    sha256 of train.bin and val.bin; GPT-2's weights, nanoGPT checkpoints and data record none)."""
    if cfg.init_from != "resume":
        return None
    trained_on = load_checkpoint(cfg.out_dir, mmap=True).get("data") or {}  # mapped: only its record is read
    if not trained_on.get("sha256") or not meta.get("sha256") or trained_on["sha256"] == meta["sha256"]:
        return None
    then, now = (f" (from {d['source']})" if d.get("source") else "" for d in (trained_on, meta))
    if Path(str(trained_on.get("dir"))) == Path(data_dir):
        return f"note: {cfg.out_dir} was trained on {data_dir}{then}, which now holds other data{now}: it is scored on data it was not trained on"
    return f"note: {cfg.out_dir} was trained on {trained_on.get('dir')}{then}, not on the data it is scored on here, {data_dir}{now}"


def parse_spec(spec: str) -> tuple[str, int]:
    """'out-x' -> ('out-x', 0); 'gpt2@3' -> ('gpt2', 3)."""
    name, at, k = spec.rpartition("@")
    if not at:
        return spec, 0
    if not k.isdigit():
        raise UserError(f"{spec!r}: write MODEL@K with K the number of in-context documents, e.g. gpt2@3")
    return name, int(k)


def spec_config(cfg: EvalConfig, spec: str) -> EvalConfig:
    name, k = parse_spec(spec)
    k = k or cfg.in_context_docs
    if Path(name).is_dir() and not (Path(name) / "config.json").exists():  # an out_dir, not a Hugging Face folder
        return dataclasses.replace(cfg, init_from="resume", out_dir=name, in_context_docs=k)
    return dataclasses.replace(cfg, init_from=name, in_context_docs=k)


def split_compare(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take `--compare A B C` out of argv: the models, and the remaining arguments."""
    if "--compare" not in argv:
        return [], argv
    i = argv.index("--compare")
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    specs = argv[i + 1 : j]
    if not specs:
        raise UserError("--compare needs the models after it: --compare out-a out-b gpt2")
    return specs, argv[:i] + argv[j:]


def compare_table(rows: list[tuple[str, int, int, int, EvalResult]]) -> str:
    lines = [
        "| model | in-context docs | block | stride | tokens | loss | perplexity | bits/byte |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, k, block, stride, r in rows:
        lines.append(f"| {name} | {k} | {block} | {stride} | {r.tokens:,} | {r.loss:.4f} | {r.perplexity:.2f} | {r.bits_per_byte:.4f} |")
    return "\n".join(lines)


def hellaswag_table(rows: list[tuple[str, hellaswag.HellaSwagResult]]) -> str:
    lines = ["| model | items | acc | acc_norm |", "| --- | ---: | ---: | ---: |"]
    for name, r in rows:
        lines.append(f"| {name} | {r.items:,} | {r.acc:.4f} | {r.acc_norm:.4f} |")
    return "\n".join(lines)


def main_hellaswag(configs: list[EvalConfig], rt: Runtime, compare: bool) -> None:
    """--task=hellaswag: score each model on the same HellaSwag items."""
    if any(c.in_context_docs for c in configs):
        raise UserError("HellaSwag scores each item on its own: drop --in_context_docs (and @K in --compare)")
    rows, items = [], None
    for c in configs:
        loaded = load_model(c.init_from, c.out_dir)
        hellaswag.check_gpt2(loaded.tokenizer, loaded.name)
        items = items or hellaswag.load_items(c.hellaswag_file or None)  # after the first model is known to fit
        model = loaded.model.to(rt.device)
        r = hellaswag.evaluate_hellaswag(torch.compile(model) if c.compile else model, items, rt, c.hellaswag_items)
        rows.append((loaded.name, r))
        speed = f"{r.seconds:.1f} s, {r.items / max(r.seconds, 1e-9):.1f} items/s"
        print(f"{loaded.name}: hellaswag acc {r.acc:.4f}, acc_norm {r.acc_norm:.4f} ({r.items:,} items, {speed})", flush=True)
        del loaded, model
    if compare:
        n = rows[0][1].items
        which = f"all {n:,} items" if n == len(items) else f"its first {n:,} of {len(items):,} items"
        print(f"\nHellaSwag validation set, {which}, scored in completion style (as llm.c)\n")
        print(hellaswag_table(rows))


def chat_table(rows: list[tuple[str, chat_eval.ChatResult]]) -> str:
    tasks = list(dict.fromkeys(t for _, r in rows for t in r.tasks))
    lines = [f"| model | exact match | {' | '.join(tasks)} |", "| --- | ---: |" + " ---: |" * len(tasks)]
    for name, r in rows:
        cells = [f"{r.tasks[t].accuracy:.4f} ({r.tasks[t].correct}/{r.tasks[t].items})" if t in r.tasks else "" for t in tasks]
        lines.append(f"| {name} | {r.accuracy:.4f} ({r.correct}/{r.items}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def main_chat(configs: list[EvalConfig], rt: Runtime, compare: bool) -> None:
    """--task=chat: each model's greedy answers to the same conversations, exact match per task."""
    if not configs[0].chat_file:
        raise UserError(
            "--task=chat needs the conversations to answer: pass --chat_file=FILE.jsonl (python -m tools.chat_tasks --out=DIR writes DIR/test.jsonl)"
        )
    if any(c.in_context_docs for c in configs):
        raise UserError("--task=chat asks each conversation on its own: drop --in_context_docs (and @K in --compare)")
    rows = []
    for c in configs:
        loaded = load_model(c.init_from, c.out_dir)
        tok = tokenizers.from_meta(loaded.tokenizer)
        template, note = conversation_template(loaded.chat_template, tok, loaded.name)  # a model not tuned on conversations: a row to compare against
        if note:
            print(note, flush=True)
        items = chat_eval.load_items(c.chat_file, template)
        model = loaded.model.to(rt.device)
        r = chat_eval.evaluate_chat(torch.compile(model) if c.compile else model, tok, template, items, rt, c.chat_items)
        rows.append((loaded.name, r))
        trimmed = f"; {r.trimmed:,} prompts lost their oldest turns to fit the context" if r.trimmed else ""
        print(
            f"{loaded.name}: chat exact match {r.accuracy:.4f} ({r.correct:,} of {r.items:,} answers of {c.chat_file}; {r.seconds:.1f} s{trimmed})", flush=True
        )
        if not compare:
            for task, score in r.tasks.items():
                print(f"  {task:<12} {score.accuracy:.4f} ({score.correct:,} of {score.items:,})")
        del loaded, model
    if compare:
        n = rows[0][1].items
        print(f"\n{n:,} conversations of {configs[0].chat_file}, answered greedily; exact match (right/asked) per task\n")
        print(chat_table(rows))


def main(argv: list[str]) -> None:
    specs, argv = split_compare(argv)
    cfg = parse_config(EvalConfig(), argv)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    configs = [spec_config(cfg, s) for s in specs] if specs else [cfg]
    if cfg.task == "hellaswag":
        return main_hellaswag(configs, rt, bool(specs))
    if cfg.task == "chat":
        return main_chat(configs, rt, bool(specs))
    rows, data_dir = [], None
    for c in configs:
        t0 = time.time()
        loaded = load_model(c.init_from, c.out_dir)
        use_weights(loaded.model, c.weights, rt.device)
        name = loaded.name if c.weights == "fp32" else f"{loaded.name} ({c.weights})"
        data_dir = data_dir or resolve_data_dir(c.data_dir, c.dataset, loaded.train_config)  # every row on the first row's data
        result, block, stride = run_eval(c, rt, data_dir, loaded)
        rows.append((name, c.in_context_docs, block, stride, result))
        which = " of the response tokens" if result.responses else ""
        print(
            f"{name}: {c.split} loss {result.loss:.4f}, perplexity {result.perplexity:.2f}, bits per byte {result.bits_per_byte:.4f}{which} "
            f"({result.tokens:,}{' response' if result.responses else ''} tokens, {result.bytes:,} bytes of {data_dir}; block {block}, stride {stride}, {c.in_context_docs} in-context docs; {time.time() - t0:.1f}s)",
            flush=True,
        )
        del loaded
    if rows and rows[0][-1].responses:
        print("(only the response tokens count, as in training, each with its conversation or prompt before it; --loss_on=all scores every token)")
    if specs:
        scored = "the response tokens, each scored once" if rows[0][-1].responses else "every token after the first, scored once"
        print(f"\n{cfg.split} split of {data_dir}: {scored}\n")
        print(compare_table(rows))


if __name__ == "__main__":
    cli(main)
