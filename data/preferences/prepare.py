"""Preference pairs to tune a model on with DPO: for each prompt, a chosen and a rejected answer.

    python prepare.py preferences --input=arena.jsonl                 # the page's arena votes -> data/preferences
    python prepare.py preferences --input=pairs.jsonl --name=helpful  # prompt / chosen / rejected, as TRL stores them
    python train.py config/finetune_dpo.py --init_from=out-chat       # DPO on them, from the chat run

Formats, detected from the first record (.jsonl, .json holding a list of records, or .parquet):

    arena              the page's votes (gptsuite/arena.py): the winner's answer is chosen, the other's
                       rejected; ties and "both bad" say nothing about which is better: skipped, counted
    prompt/chosen/rejected   {"prompt": ..., "chosen": ..., "rejected": ...}: each a text, or a list
                       of messages (the prompt the conversation so far, the answers the assistant's turns)
    chosen/rejected    {"chosen": [messages], "rejected": [messages]}: two whole conversations, the
                       prompt their common beginning (TRL's implicit prompt)

Each pair is two documents, one after the other in train.bin / val.bin: the prompt with the chosen
answer, then the prompt with the rejected one, formatted in the chat template (gptsuite/chat.py;
--template=plain: the prompt's text followed by the answer, for a model tuned on plain text, as
the arena's votes on such a model are). The loss mask marks the answer's tokens, whose log
probabilities DPO compares; meta.json's "objective": "dpo" tells train.py what the data holds.
Both documents of a pair go to the same split, and a pair is written whole or not at all: a
record that does not fit (an answer missing, both answers the same, longer than
--block_size) stops the prepare with a line naming it, or with --skip_bad=True is skipped and counted.
"""

from dataclasses import dataclass

from configurator import option
from gptsuite.arena import preference, read_votes
from gptsuite.chat import CHAT_TEMPLATE, BadRecord, Marked, check_messages, render
from gptsuite.checkpoint import checkpoint_tokenizer_meta, load_checkpoint
from gptsuite.datafiles import DocumentCorpus, PrepareConfig, RecordRules
from gptsuite.errors import UserError
from gptsuite.loading import checkpoint_file
from gptsuite.sources import count_records, read_objects, record_files, val_mask, with_splits

PLAIN_END = {"gpt2": "<|endoftext|>", "bpe": "<|endoftext|>", "char": "\n\n"}  # what ends a plain answer: the end of text, a blank line at character level


@dataclass
class Config(PrepareConfig):
    input: str = ""  # a .jsonl, .json or .parquet file of preference pairs or arena votes, or a folder of them
    name: str = "preferences"  # the dataset's name: output in data/<name> (train.py --dataset=<name>)
    base: str = ""  # the run DPO will tune (its folder or .pt): the pairs take its tokenizer and chat template; empty: --tokenizer and --template say
    tokenizer: str = option("gpt2", choices=("gpt2", "char"))  # without --base: GPT-2 BPE (to tune GPT-2), or one token per character of these pairs
    template: str = option(
        "", choices=("", "chat", "plain")
    )  # chat: a conversation in the chat template; plain: the prompt's text, then the answer; empty: --base's, else chat
    block_size: int = option(1024, gt=0)  # the context each prompt and answer must fit in, in tokens
    val_fraction: float = option(0.1, gt=0, lt=1)  # of the pairs
    seed: int = 1337  # which pairs go to val
    skip_bad: bool = False  # skip records that do not fit (counted in the report) instead of stopping at the first


def default_name(cfg: Config) -> str:
    return cfg.name or "preferences"


def detect(record) -> str:
    if isinstance(record, dict):
        if "winner" in record and "a" in record and "b" in record:
            return "arena"
        if "chosen" in record and "rejected" in record:
            return "prompt/chosen/rejected" if "prompt" in record else "chosen/rejected"
    keys = f" (its fields: {', '.join(map(str, record))})" if isinstance(record, dict) else ""
    raise UserError(
        f"the first record is in no preference format this dataset reads{keys}; use prompt/chosen/rejected, chosen/rejected or the page's arena votes"
    )


def as_messages(value, role: str, where: str, what: str) -> list:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise BadRecord(where, f"has {what} that is neither a text nor a list of messages", "not in the format")


def split_prompt(chosen: list, rejected: list) -> tuple[list, list, list]:
    """Two whole conversations as (prompt, chosen answer, rejected answer): the prompt is the
    messages they share from the start, up to the first assistant turn where they part."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and isinstance(chosen[n - 1], dict) and chosen[n - 1].get("role") == "assistant":
        n -= 1  # an answer starts at an assistant turn
    return chosen[:n], chosen[n:], rejected[n:]


def to_pair(fmt: str, record, where: str) -> tuple:
    """(prompt, chosen, rejected, chat): texts (plain) or message lists (chat)."""
    if isinstance(record, BadRecord):
        raise record
    if not isinstance(record, dict):
        raise BadRecord(where, f"is not an object in the {fmt} format", "not in the format")
    try:
        if fmt == "arena":  # a vote for A or B (the others are left out before the split)
            prompt, (chosen, rejected) = record["prompt"], preference(record)
            if not record.get("chat", True):
                return prompt, chosen, rejected, False
            system = [{"role": "system", "content": record["system"]}] if record.get("system") else []
            return (
                system + as_messages(prompt, "user", where, "a prompt"),
                as_messages(chosen, "assistant", where, "an answer"),
                as_messages(rejected, "assistant", where, "an answer"),
                True,
            )
        if fmt == "chosen/rejected":
            if not isinstance(record["chosen"], list) or not isinstance(record["rejected"], list):
                raise BadRecord(where, "has no prompt field, and its chosen and rejected are not conversations (lists of messages) to find it in", "no prompt")
            return *split_prompt(record["chosen"], record["rejected"]), True
        prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
        return prompt, chosen, rejected, True
    except KeyError as e:
        raise BadRecord(where, f"has no field {e.args[0]!r}, which the {fmt} format needs", "not in the format") from None
    except TypeError:
        raise BadRecord(where, f"is not in the {fmt} format", "not in the format") from None


def chat_document(prompt: list, answer: list, where: str) -> Marked:
    """The prompt and the answer in the chat template; only the answer's assistant turns count."""
    messages = check_messages(prompt, CHAT_TEMPLATE, where, answered=False) + check_messages(answer, CHAT_TEMPLATE, where, empty_answers=True)
    if not any(m.get("role") == "assistant" for m in answer if isinstance(m, dict)):
        raise BadRecord(where, "has an answer with no assistant message", "no answer")
    marked = render(CHAT_TEMPLATE, messages)
    asked = len(render(CHAT_TEMPLATE, messages[: len(prompt)]).text)
    marked.spans = [s for s in marked.spans if s[0] >= asked]
    marked.where = where
    return marked


def plain_document(prompt: str, answer: str, end: str, where: str) -> Marked:
    """The prompt's text, then the answer (which may be empty, as a model gave it) and the end marker, which count."""
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise BadRecord(where, "has a prompt or answer that is not text (--template=plain takes texts)", "not in the format")
    if end in prompt + answer:
        raise BadRecord(where, f"spells the end marker {end!r} in its prompt or answer", "end marker in a message")
    return Marked(prompt + answer + end, [(len(prompt), len(prompt + answer + end))], special_end=end, where=where)


def base_tokenizer(cfg: Config) -> tuple[str | dict, str]:
    """The tokenizer (a name, or the base's tokenizer metadata) and template ('chat' or 'plain') of the pairs."""
    if not cfg.base:
        return cfg.tokenizer, cfg.template or "chat"
    path = checkpoint_file(cfg.base)
    if path is None:
        raise UserError(f"--base={cfg.base} is not a run folder or .pt checkpoint of ours; pass the run DPO will tune (e.g. --base=out-chat)")
    ckpt = load_checkpoint(path, mmap=True)
    chat = ckpt.get("chat_template")
    if chat is not None and chat != CHAT_TEMPLATE:
        raise UserError(f"{path} was tuned with another chat template than this version writes; prepare its conversations again")
    if cfg.template == "chat" and chat is None:
        raise UserError(
            f"{path} was not tuned on conversations, so it has no chat template: drop --template (plain is then used) or tune it on conversations first"
        )
    meta = checkpoint_tokenizer_meta(ckpt, name=str(path))
    return ("gpt2" if meta["kind"] == "gpt2" else meta), cfg.template or ("chat" if chat else "plain")


def corpus(cfg: Config, out_dir):
    paths = record_files(cfg.input, "preference pairs")
    first = next((r for p in paths for _, r in read_objects(p)), None)
    if first is None:
        raise UserError(f"no records in {cfg.input}; pass a file with preference pairs in it")
    fmt = detect(first)
    undecided = 0  # arena votes with no preference (ties, both bad): not pairs, left out before the split
    if fmt == "arena":  # the page's votes (gptsuite/arena.py): torn lines from a kill skipped, votes that prefer neither answer left out
        files = [read_votes(p) for p in paths]
        for v in files:
            if v.torn:
                print(v.note())
        cast = [(f"{v.path} vote {i}", r) for v in files for i, r in enumerate(v.records, 1)]
        items = [(w, r) for w, r in cast if preference(r) is not None]
        undecided = len(cast) - len(items)
        if not items:
            raise UserError(f"the {undecided} votes in {cfg.input} are all ties or both bad: no answer was preferred; vote A or B on some rounds")
        records, n = (lambda: iter(items)), len(items)
    else:
        records = lambda: (item for p in paths for item in read_objects(p))  # noqa: E731
        n = sum(sum(1 for _ in read_objects(p)) if p.suffix.lower() == ".json" else count_records(p) for p in paths)
    is_val = val_mask(n, cfg.val_fraction, cfg.seed)
    tokenizer, template = base_tokenizer(cfg)
    end = PLAIN_END[tokenizer if isinstance(tokenizer, str) else tokenizer["kind"]]

    def format_pair(item) -> tuple[Marked, Marked]:
        where, record = item
        prompt, chosen, rejected, is_chat = to_pair(fmt, record, where)
        if chosen == rejected:
            raise BadRecord(where, "has the same chosen and rejected answer: nothing to prefer", "same answers")
        if is_chat and template == "chat":
            prompt = as_messages(prompt, "user", where, "a prompt")
            return tuple(chat_document(prompt, as_messages(a, "assistant", where, "an answer"), where) for a in (chosen, rejected))
        return tuple(plain_document(prompt, a, end, where) for a in (chosen, rejected))

    return DocumentCorpus(
        documents=lambda: with_splits(records(), is_val),
        source=f"{n:,} preference pairs ({fmt} format) from {cfg.input}" + (f", {undecided:,} votes without a preference left out" if undecided else ""),
        tokenizer=tokenizer,
        format=format_pair,
        num_documents=n,
        meta={
            "objective": "dpo",
            **({"chat_template": CHAT_TEMPLATE} if template == "chat" else {}),
            "format": fmt,
            "pair_template": template,
            "base": cfg.base,
            "undecided_votes": undecided,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "block_size": cfg.block_size,
            "skip_bad": cfg.skip_bad,
        },
        rules=RecordRules(masked=True, skip_bad=cfg.skip_bad, max_tokens=cfg.block_size),
        document_end=False,  # each document ends with its answer's end marker
    )
