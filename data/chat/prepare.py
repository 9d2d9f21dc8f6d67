"""Conversations to tune a model on, so that it answers: the loss counts only what the assistant says.

    python prepare.py chat --input=conversations.jsonl                 # -> data/chat (config/finetune_chat.py trains on it)
    python prepare.py chat --input=chats/ --name=support               # every .jsonl/.json/.parquet in a folder
    python prepare.py chat --input=alpaca.json --skip_bad=True         # skip records that do not fit, counted in the report
    python prepare.py chat --input=tasks.jsonl --tokenizer=char --block_size=256

Formats, detected from the first record and named in the output (.jsonl, .json holding a list of
records, or .parquet):

    messages        {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}  (OpenAI's, multi-turn)
    sharegpt        {"conversations": [{"from": "system" | "human" | "gpt", "value": "..."}, ...]}
    alpaca          {"instruction": "...", "input": "..." (may be empty), "output": "..."}
    prompt/completion  {"prompt": "...", "completion": "..."} (either may also be a list of messages, as TRL stores them)

Every conversation is written in the chat template (gptsuite/chat.py), which travels in
meta.json into the checkpoint, sample.py --chat, eval.py, the page and the exports. The loss
counts the assistant's messages and their end markers (train.mask.bin beside train.bin, which
stays nanoGPT's layout); rows of a batch start at a conversation (gptsuite/masks.py).

A record that does not fit its format (an unknown role, an empty assistant message, no assistant
message, longer than --block_size tokens, a field missing) stops the prepare with a line naming
its file and record; with --skip_bad=True it is skipped and counted in the dataset report
instead. A seeded random --val_fraction of the conversations is val.bin.
"""

from dataclasses import dataclass
from pathlib import Path

from configurator import option
from gptsuite.chat import CHAT_TEMPLATE, BadRecord, Marked, check_messages, render
from gptsuite.datafiles import DocumentCorpus, PrepareConfig, RecordRules
from gptsuite.errors import UserError
from gptsuite.sources import count_records, read_objects, record_files, val_mask, with_splits

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass
class Config(PrepareConfig):
    input: str = ""  # a .jsonl, .json or .parquet file of conversations, or a folder of them
    name: str = "chat"  # the dataset's name: output in data/<name> (train.py --dataset=<name>)
    tokenizer: str = "gpt2"  # GPT-2 BPE (to tune GPT-2), char (one token per character), bpe (one trained here), or a tokenizer.json / dataset to reuse
    block_size: int = option(1024, gt=0)  # the context a conversation must fit in, in tokens (with its end marker)
    val_fraction: float = option(0.1, gt=0, lt=1)  # of the conversations
    seed: int = 1337  # which conversations go to val
    skip_bad: bool = False  # skip records that do not fit (counted in the report) instead of stopping at the first


def default_name(cfg: Config) -> str:
    return cfg.name or "chat"


def detect(record) -> str:
    if isinstance(record, dict):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
        if "instruction" in record and "output" in record:
            return "alpaca"
        if "prompt" in record and "completion" in record:
            return "prompt/completion"
    keys = f" (its fields: {', '.join(map(str, record))})" if isinstance(record, dict) else ""
    raise UserError(
        f"the first record is in no format this dataset reads{keys}; use messages, conversations (ShareGPT), instruction/input/output (Alpaca) or prompt/completion"
    )


def as_messages(value, role: str) -> list:
    """A prompt or completion: a string (one message of `role`) or a list of messages."""
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def to_messages(fmt: str, record, where: str) -> list:
    """The record's conversation as messages; BadRecord where it does not fit the format."""
    if isinstance(record, BadRecord):
        raise record
    if not isinstance(record, dict):
        raise BadRecord(where, f"is not an object in the {fmt} format", "not in the format")
    try:
        if fmt == "messages":
            return record["messages"]
        if fmt == "sharegpt":
            turns = record["conversations"]
            if not isinstance(turns, list) or not all(isinstance(t, dict) and "from" in t and "value" in t for t in turns):
                raise BadRecord(where, "has conversations that are not a list of {from, value} turns", "not in the format")
            unknown = next((t["from"] for t in turns if t["from"] not in SHAREGPT_ROLES), None)
            if unknown is not None:
                raise BadRecord(where, f"has a turn from {unknown!r}; ShareGPT turns are from {', '.join(SHAREGPT_ROLES)}", "unknown role")
            return [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in turns]
        if fmt == "alpaca":
            instruction, extra = record["instruction"], record.get("input") or ""
            if not isinstance(instruction, str) or not isinstance(extra, str):
                raise BadRecord(where, "has an instruction or input that is not text", "not in the format")
            question = instruction.strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
            return [{"role": "user", "content": question}, {"role": "assistant", "content": record["output"]}]
        return as_messages(record["prompt"], "user") + as_messages(record["completion"], "assistant")
    except KeyError as e:
        raise BadRecord(where, f"has no field {e.args[0]!r}, which the {fmt} format needs", "not in the format") from None
    except TypeError:
        raise BadRecord(where, f"is not in the {fmt} format", "not in the format") from None


def corpus(cfg: Config, out_dir: Path) -> DocumentCorpus:
    paths = record_files(cfg.input, "conversations")
    n = sum(sum(1 for _ in read_objects(p)) if p.suffix.lower() == ".json" else count_records(p) for p in paths)  # jsonl and parquet counted unparsed
    first = next((r for p in paths for _, r in read_objects(p)), None)
    if first is None:
        raise UserError(f"no records in {cfg.input}; pass a file with conversations in it")
    fmt = detect(first)
    is_val = val_mask(n, cfg.val_fraction, cfg.seed)

    def format_record(item) -> Marked:
        where, record = item
        marked = render(CHAT_TEMPLATE, check_messages(to_messages(fmt, record, where), CHAT_TEMPLATE, where))
        marked.where = where
        return marked

    return DocumentCorpus(
        documents=lambda: with_splits((item for p in paths for item in read_objects(p)), is_val),
        source=f"{n:,} conversations ({fmt} format) from {cfg.input}",
        tokenizer=cfg.tokenizer,
        format=format_record,
        num_documents=n,
        meta={
            "chat_template": CHAT_TEMPLATE,
            "format": fmt,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "block_size": cfg.block_size,
            "skip_bad": cfg.skip_bad,
        },
        rules=RecordRules(masked=True, skip_bad=cfg.skip_bad, max_tokens=cfg.block_size),
        document_end=False,  # a conversation ends with the end marker of its last turn
    )
