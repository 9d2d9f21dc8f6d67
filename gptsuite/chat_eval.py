"""Scoring a model's answers to conversations: exact match, per task and overall.

    items = load_items("data/tasks/test.jsonl")                          # eval.py --chat_file
    result = evaluate_chat(model, tok, template, items, rt)             # result.accuracy, result.tasks

A test file holds conversations in OpenAI's messages format, one a line, each ending in the
assistant's answer, with an optional "task" name beside the messages (tools/chat_tasks.py writes
such files). The model is asked everything before the last message, in the chat template, and
answers greedily (temperature 0, the KV cache) until its end-of-turn marker; the answer counts
if, stripped of surrounding whitespace, it is the expected one, stripped. An answer may run to
the longest expected one (in tokens) plus its end marker and a margin: past that it cannot be
right anyway, and a model that never stops does not cost the whole context per item.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptsuite.chat import BadRecord, check_messages, check_template, correct
from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig, chat_prompt, chat_settings, generate_texts, visible
from gptsuite.runtime import Runtime
from model import GPT

MARGIN = 8  # tokens an answer may run past the longest expected one
UNNAMED = "-"  # the task of items that name none


@dataclass(frozen=True)
class ChatItem:
    messages: tuple  # the conversation before the answer, as {"role", "content"} dicts
    answer: str
    task: str
    where: str  # FILE line N


@dataclass
class TaskScore:
    correct: int = 0
    items: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.items if self.items else 0.0


@dataclass
class ChatResult:
    tasks: dict[str, TaskScore] = field(default_factory=dict)  # by task name, sorted
    trimmed: int = 0  # prompts whose oldest turns were dropped to fit the model's context
    seconds: float = 0.0

    @property
    def correct(self) -> int:
        return sum(t.correct for t in self.tasks.values())

    @property
    def items(self) -> int:
        return sum(t.items for t in self.tasks.values())

    @property
    def accuracy(self) -> float:
        return self.correct / self.items if self.items else 0.0


def load_items(path: str | Path, template: dict) -> list[ChatItem]:
    """The conversations of a .jsonl test file, each split into its prompt and expected answer."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path} not found; pass --chat_file=FILE.jsonl (python -m tools.chat_tasks --out=DIR writes DIR/test.jsonl)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"could not read {path} as UTF-8 text ({e}); pass a .jsonl file of conversations") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "messages" not in record:
                raise BadRecord(where, 'is not a {"messages": [...]} conversation', "not in the format")
            messages = check_messages(record["messages"], template, where)
            if messages[-1]["role"] != "assistant":
                raise BadRecord(where, "does not end in the assistant's answer, which is what is scored", "no answer")
        except json.JSONDecodeError as e:
            raise UserError(f"{where} is not JSON ({e.msg}); a test file holds one conversation per line") from None
        except BadRecord as e:
            raise UserError(f"{e}; fix the test file") from None
        items.append(ChatItem(tuple(messages[:-1]), messages[-1]["content"], str(record.get("task") or UNNAMED), where))
    if not items:
        raise UserError(f"{path} holds no conversations; pass a file with one per line")
    return items


def answer_budget(tok, template: dict, items: list[ChatItem]) -> int:
    """Tokens an answer may take: the longest expected one, its end marker (one token with GPT-2
    BPE, spelled out at character level) and a margin."""

    def tokens(text: str) -> int:  # a character model's tokens are characters, even those it has no id for
        return len(text) if tok.kind == "char" else len(tok.encode(text))

    end = 0 if tok.eot_token is not None else tokens(template["end"])
    return max(tokens(item.answer.strip()) for item in items) + end + MARGIN


def ask(model: GPT, tok, template: dict, item: ChatItem, cfg: SamplingConfig, rt: Runtime) -> tuple[str, int]:
    """The model's greedy answer to an item, and how many of its oldest messages were dropped to fit."""
    try:
        ids, dropped = chat_prompt(tok, template, list(item.messages), model.config.block_size, cfg.max_new_tokens)
    except UserError as e:
        raise UserError(f"{item.where}: {e}") from None
    (row,) = generate_texts(model, tok, ids, 1, cfg, rt.device)
    return visible(tok, row, cfg.stop, final=True), dropped


@torch.no_grad()
def evaluate_chat(model: GPT, tok, template: dict, items: list[ChatItem], rt: Runtime, max_items: int = 0) -> ChatResult:
    """Exact match of the model's greedy answers to the first max_items items (0: all)."""
    check_template(template)
    model.eval()
    items = items[:max_items] if max_items else items
    cfg = chat_settings(SamplingConfig(max_new_tokens=answer_budget(tok, template, items), temperature=0.0, top_k=None), tok, template)
    result = ChatResult()
    t0 = time.time()
    for item in items:
        with rt.autocast():
            reply, dropped = ask(model, tok, template, item, cfg, rt)
        score = result.tasks.setdefault(item.task, TaskScore())
        score.items += 1
        score.correct += correct(reply, item.answer)
        result.trimmed += dropped > 0
    result.tasks = dict(sorted(result.tasks.items()))
    result.seconds = time.time() - t0
    return result
