"""Conversations: the chat template, and which tokens of a conversation the model learns to say.

A chat template is a small JSON dict that a chat dataset writes into meta.json, train.py copies
into the checkpoint, and sample.py, eval.py, the page and the exports read back (CHAT_TEMPLATE):

    {"kind": "chat", "roles": {"system": "<|system|>\\n", "user": "<|user|>\\n", "assistant": "<|assistant|>\\n"},
     "end": "<|endoftext|>"}

A conversation is its turns one after another, each the role's marker, the message (stripped of
surrounding whitespace, as the prompt templates strip fields) and the end-of-turn marker:

    <|system|>\\nYou are terse.<|endoftext|><|user|>\\nHi<|endoftext|><|assistant|>\\nHello.<|endoftext|>

and a prompt for the model's next answer is the conversation so far followed by the assistant's
marker. With GPT-2 BPE the end marker is the <|endoftext|> token (50256), so generation stops at
it as it does at the end of a document, and llama.cpp and transformers see it as end of text; a
message that spells it out is refused. At character level it is spelled out in characters.

`render` is the one function that formats a conversation, for training and for generation alike;
`encode` turns it into token ids, with the loss mask when training: the assistant's messages and
their end markers count (1), the markers and the other turns are context (0). `jinja` writes the
same template in Jinja, as transformers' tokenizer.apply_chat_template reads it.
"""

import re
from dataclasses import dataclass, field

import numpy as np

from gptsuite.errors import UserError

ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE = {"kind": "chat", "roles": {r: f"<|{r}|>\n" for r in ROLES}, "end": "<|endoftext|>"}


class BadRecord(ValueError):
    """A record that does not fit its dataset's format: refused with one line naming where it is,
    or skipped and counted under `reason` when the user asked for that."""

    def __init__(self, where: str, problem: str, reason: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem, self.reason = where, problem, reason


@dataclass
class Marked:
    """A text and the character spans [start, end) of it whose tokens count in the loss; the rest is
    context. `special_end`: the text's spellings of the template's end marker are the tokenizer's
    end-of-text token (a chat), not ordinary text (a document)."""

    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    special_end: str = ""
    where: str = ""  # the record it came from, for a message about it


def check_template(template) -> dict:
    if not isinstance(template, dict) or template.get("kind") != "chat" or not isinstance(template.get("roles"), dict) or not template.get("end"):
        raise UserError(f"the chat template {template!r} is malformed; prepare the dataset again")
    return template


def check_messages(messages, template: dict, where: str, answered: bool = True, empty_answers: bool = False) -> list[dict]:
    """The messages of one conversation as [{"role", "content"}], or BadRecord: a role the template
    does not know, a message that is not text or spells the end marker, an empty assistant message
    (unless empty_answers: a preference pair's answer may be the empty one, as a model gave it),
    and (answered) no assistant message at all."""
    if not isinstance(messages, list) or not messages:
        raise BadRecord(where, "has no messages", "no messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRecord(where, f"message {i + 1} is not an object with a text 'role' and 'content'", "malformed message")
        role, content = m["role"], m["content"]
        if role not in template["roles"]:
            raise BadRecord(where, f"message {i + 1} has the role {role!r}; use one of {', '.join(template['roles'])}", "unknown role")
        if template["end"] in content:
            raise BadRecord(where, f"message {i + 1} contains the end-of-turn marker {template['end']!r}", "end marker in a message")
        if role == "assistant" and not content.strip() and not empty_answers:
            raise BadRecord(where, f"message {i + 1} is an empty assistant message", "empty assistant message")
        out.append({"role": role, "content": content})
    if answered and not any(m["role"] == "assistant" for m in out):
        raise BadRecord(where, "has no assistant message: nothing to learn from", "no assistant message")
    return out


def render(template: dict, messages: list[dict], add_generation_prompt: bool = False) -> Marked:
    """The conversation as text, with the spans the model learns to say: each assistant message and
    its end marker. add_generation_prompt: ending with the assistant's marker, for the next answer."""
    text, spans = "", []
    for m in messages:
        text += template["roles"][m["role"]]
        start = len(text)
        text += m["content"].strip() + template["end"]
        if m["role"] == "assistant":
            spans.append((start, len(text)))
    if add_generation_prompt:
        text += template["roles"]["assistant"]
    return Marked(text, spans, special_end=template["end"])


def token_offsets(tok, text: str) -> tuple[np.ndarray, np.ndarray]:
    """The text's ordinary tokens (tok.encode_array) and where each starts in it, in characters."""
    ids = tok.encode_array(text)
    if tok.kind == "char":
        return ids, np.arange(len(ids))
    if tok.kind == "bpe":  # a token starts in the character its first byte belongs to
        lengths = tok.byte_lengths()[ids]
        token_start = np.cumsum(lengths) - lengths
        char_start = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])[:-1]
        return ids, np.searchsorted(char_start, token_start, side="right") - 1
    _, offsets = tok.enc.decode_with_offsets(ids.tolist())
    return ids, np.asarray(offsets, dtype=np.int64)


def encode(tok, marked: Marked) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a marked text and its loss mask (uint8, 1 where the token counts), each token
    counted if it starts inside a span. The text is tokenized whole, as transformers tokenizes what
    a chat template renders: between the end markers (the end-of-text token, where the tokenizer
    has one and marked.special_end says so) and a trained BPE's other special tokens (the role
    markers), as ordinary text."""
    specials = {}
    if marked.special_end and tok.eot_token is not None:
        specials = getattr(tok, "specials", {}) | {marked.special_end: tok.eot_token}
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    pieces = re.split(pattern, marked.text) if specials else [marked.text]
    ids, starts, at = [], [], 0
    for i, piece in enumerate(pieces):
        if i % 2:  # a special token
            ids.append(np.array([specials[piece]], dtype=np.int64))
            starts.append(np.array([at]))
        else:
            piece_ids, offsets = token_offsets(tok, piece)
            ids.append(piece_ids)
            starts.append(offsets + at)
        at += len(piece)
    ids_all = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)
    starts_all = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    mask = np.zeros(len(ids_all), dtype=np.uint8)
    for a, b in marked.spans:
        mask[(starts_all >= a) & (starts_all < b)] = 1
    return ids_all, mask


def prompt_ids(tok, template: dict, messages: list[dict]) -> list[int]:
    """The tokens that ask the model for its next answer in this conversation."""
    return encode(tok, render(template, messages, add_generation_prompt=True))[0].tolist()


def jinja(template: dict) -> str:
    """The template in Jinja for transformers' tokenizer_config.json `chat_template`:
    apply_chat_template(messages, add_generation_prompt=True) renders the text `render` does."""
    roles = "{" + ", ".join(f"{r!r}: {m!r}" for r, m in template["roles"].items()) + "}"
    return (
        f"{{%- set roles = {roles} -%}}"
        "{%- for message in messages -%}"
        f"{{{{ roles[message['role']] + (message['content'] | trim) + {template['end']!r} }}}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ roles['assistant'] }}{%- endif -%}"
    )


def correct(answer: str, expected: str) -> bool:
    """Whether an answer counts: stripped of surrounding whitespace, it is the expected one, stripped."""
    return answer.strip() == expected.strip()
