"""Text generation around GPT.generate_stream: prompts from the command line or a file, sampling
in a batch, stop rules (<|endoftext|>, a stop text) and streaming output that never shows a
partial character or the start of the stop text; for a conversation, the prompt of the turns
that fit the context (chat_prompt) and the end of an answer (chat_settings). sample.py and the
playground page (serve.py) generate through here.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from configurator import option
from gptsuite.chat import CHAT_TEMPLATE, BadRecord, check_messages, check_template, prompt_ids
from gptsuite.datafiles import read_text
from gptsuite.errors import UserError
from model import GPT


@dataclass
class SamplingConfig:
    """How to sample: the settings sample.py and the playground page (serve.py) share."""

    max_new_tokens: int = option(500, gt=0)  # tokens generated per sample, at most
    temperature: float = option(0.8, ge=0)  # 1.0 as trained, < 1 more conservative, 0 greedy
    top_k: int | None = option(200, gt=0)  # keep only the top_k most likely tokens; None keeps all
    top_p: float | None = option(None, gt=0, le=1)  # nucleus sampling: keep the most likely tokens up to this probability mass
    stop: str = ""  # end a sample at this text (not included in the output)
    stop_at_eot: bool = True  # end a sample at <|endoftext|> (tokenizers that have one)
    use_cache: bool = True  # KV cache; False recomputes the whole context for every token
    seed: int = option(1337, ge=0)  # torch's generator is seeded with it right before the first token


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


def encode_prompt(tok, text: str, block_size: int, name: str) -> list[int]:
    """The prompt's tokens, for the model `name` of context block_size. The one rule for sample.py
    and the page: a prompt must leave the model room to write, so one of block_size tokens or more
    is refused (the model would not see its beginning), never cut short without a word."""
    ids = tok.encode(text)
    if not ids:
        raise UserError("the prompt is empty after tokenizing; pass some text with --start")
    if len(ids) >= block_size:
        raise UserError(
            f"the prompt is {len(ids)} tokens, but {name} reads at most {block_size} (its context) and needs room to write; shorten it to {block_size - 1} tokens or fewer"
        )
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


def visible(tok, row: list[int], stop: str, final: bool = False) -> str:
    """The text of a sample's generated ids so far, cut at the stop text; while it is still growing
    (final=False) only the part that is safe to show (printable)."""
    text = cut_at_stop(tok.decode(row), stop)[0]
    return text if final else printable(text, stop)


def sample_rows(model: GPT, tok, prompt_ids: list[int], num_samples: int, cfg: "SamplingConfig", device: str) -> Iterator[list[list[int]]]:
    """Draw num_samples continuations of prompt_ids in one batch, yielding after every step the
    generated ids of each sample so far, ended at <|endoftext|> (when cfg.stop_at_eot) or at the
    text cfg.stop. Stops after cfg.max_new_tokens, or once every sample has ended."""
    x = torch.tensor(prompt_ids, dtype=torch.long, device=device)[None, :].repeat(num_samples, 1)
    eot = tok.eot_token if cfg.stop_at_eot else None
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    done = [False] * num_samples
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
        yield rows
        if all(done):
            break


def generate_texts(model: GPT, tok, prompt_ids: list[int], num_samples: int, cfg: "SamplingConfig", device: str, stream=None) -> list[list[int]]:
    """Draw num_samples continuations of prompt_ids in one batch (sample_rows); return each one's
    generated token ids. With `stream` (a file, batch of one), the text is written there as it comes."""
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    shown = 0
    for rows in sample_rows(model, tok, prompt_ids, num_samples, cfg, device):
        if stream is not None:
            text = visible(tok, rows[0], cfg.stop)
            stream.write(text[shown:])
            stream.flush()
            shown = max(shown, len(text))
    if stream is not None:  # what was held back: a partial stop text that never completed, a last character
        stream.write(visible(tok, rows[0], cfg.stop, final=True)[shown:])
    return rows


def chat_prompt(tok, template: dict, messages: list[dict], block_size: int, room: int) -> tuple[list[int], int]:
    """The tokens that ask for the assistant's next answer (chat.prompt_ids), leaving `room` tokens
    of the model's context to write in. Where the conversation no longer fits, its oldest
    exchanges drop, whole (the kept part starts with a user message; a leading system message
    stays); returns the ids and how many messages were dropped. Refused when even the last
    message alone leaves no room."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    cuts = [i for i, m in enumerate(rest) if i == 0 or (m["role"] == "user" and rest[i - 1]["role"] != "user")] or [0]
    cuts = sorted({*cuts, len(rest) - 1}) if rest else [0]  # the last message alone, as a last resort
    for dropped in cuts:
        ids = prompt_ids(tok, template, system + rest[dropped:])
        if len(ids) + room <= block_size:
            break
    if len(ids) >= block_size:
        raise UserError(
            f"the last message is {len(ids)} tokens with the chat template, but the model reads at most {block_size} (its context) and needs room to answer; shorten it"
        )
    return ids, dropped


def chat_settings(cfg: "SamplingConfig", tok, template: dict) -> "SamplingConfig":
    """Sampling settings for a chat answer: it ends at the template's end-of-turn marker (the
    <|endoftext|> token with GPT-2 BPE, its spelling at character level)."""
    return replace(cfg, stop_at_eot=True, stop=cfg.stop if tok.eot_token is not None else template["end"])  # at character level the marker is the stop


CONVERSATION_FORMAT = '{"messages": [{"role": "user", "content": "Hi"}]}'  # what a conversation file holds, in messages that show it
CONVERSATION_FIXES = {  # the fix for each chat.check_messages reason that does not name one
    "no messages": "put the conversation in its list of messages",
    "malformed message": 'write each message as {"role": "user", "content": "..."}',
    "end marker in a message": "leave the marker out",
    "empty assistant message": "give it its text, or remove it",
}


def read_conversation(start: str) -> list | None:
    """The messages of a conversation to answer, from --start=FILE:path.json holding
    {"messages": [...]} (OpenAI's format, as prepare.py chat reads it); None for a prompt of plain
    text (any other --start). Refused in one line when the file is no such conversation; the
    messages themselves are checked against the model's template (check_conversation)."""
    if not start.startswith("FILE:") or Path(start[len("FILE:") :]).suffix.lower() != ".json":
        return None
    path = Path(start[len("FILE:") :])
    text = read_text(path, "conversation file", f"pass --start=FILE:path.json with a conversation, {CONVERSATION_FORMAT}")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not JSON ({e.msg} at line {e.lineno}); a .json file is a conversation, {CONVERSATION_FORMAT} (a plain text prompt goes in a file of another suffix)"
        ) from None
    if isinstance(record, list):
        raise UserError(f"{path} holds a list; a conversation file holds one conversation, {CONVERSATION_FORMAT}")
    if not isinstance(record, dict) or "messages" not in record:
        fields = f" (its fields: {', '.join(map(str, record))})" if isinstance(record, dict) else ""
        raise UserError(f"{path} has no messages{fields}; a conversation file holds {CONVERSATION_FORMAT}")
    return record["messages"]


def check_conversation(messages, template: dict, where: str) -> list[dict]:
    """chat.check_messages for a conversation to answer (it needs no assistant message yet), its
    problem as a UserError that names the fix."""
    try:
        return check_messages(messages, template, where, answered=False)
    except BadRecord as e:
        fix = CONVERSATION_FIXES.get(e.reason)
        raise UserError(f"{e}; {fix}" if fix else str(e)) from None


def answer_room(block_size: int, max_new_tokens: int) -> int:
    """The tokens of a model's context a conversation leaves free for the answer (chat_prompt's
    room): max_new_tokens, but at most half the context, so that a long max_new_tokens does not
    push all but the last message out (an answer longer than the room slides the window on)."""
    return max(1, min(max_new_tokens, block_size // 2))


def kept_messages(messages: list[dict], dropped: int) -> list[dict]:
    """The messages chat_prompt kept when it dropped `dropped` of them: a leading system message,
    then all but the oldest `dropped` of the rest."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    return system + messages[len(system) + dropped :]


def drop_note(dropped: int, block_size: int, room: int) -> str:
    """One line saying that chat_prompt dropped the oldest messages of a conversation."""
    some = "message is" if dropped == 1 else f"{dropped} messages are"
    return f"note: the conversation no longer fits the model's context of {block_size} tokens with {room} left to answer in; its oldest {some} left out"


def conversation_template(chat_template: dict | None, tok, name: str) -> tuple[dict, str]:
    """The chat template to talk to a model in, and a note for the user when it was not tuned on
    conversations (GPT-2's weights, a run on plain text): it gets the suite's CHAT_TEMPLATE, which
    it has never seen. A character-level model can only read the template if its vocabulary spells it."""
    if chat_template:
        return check_template(chat_template), ""
    if tok.kind == "char":
        missing = sorted({c for c in "".join(CHAT_TEMPLATE["roles"].values()) + CHAT_TEMPLATE["end"] if c not in tok.stoi})
        if missing:
            raise UserError(
                f"{name} was not tuned on conversations, and its vocabulary lacks {', '.join(map(repr, missing))}, which the chat template spells; "
                "train a character-level model on conversations (python prepare.py chat --input=FILE.jsonl --tokenizer=char)"
            )
    return CHAT_TEMPLATE, f"note: {name} was not tuned on conversations (it has no chat template), so its answers may not follow the chat template it is given"
