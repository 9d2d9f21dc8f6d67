"""The Chat tab of the playground page (serve.py) without the page: a loaded model answers a
conversation, its reply growing as it is written.

The prompt is the conversation in the model's chat template (the one its checkpoint carries; a
model that was not tuned on conversations gets chat.CHAT_TEMPLATE, and the page says so:
generate.conversation_template), built by
generate.chat_prompt, which drops the oldest turns when the history no longer fits the context
with room to answer. The reply is drawn as the Write tab draws a sample: the model's own random
stream (playground.SeededStream) seeded with the request's seed right before the first token, the
same SamplingConfig, ending at the template's end-of-turn marker (generate.chat_settings).
"""

from collections.abc import Iterator
from dataclasses import dataclass

from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig, answer_room, chat_prompt, chat_settings, check_conversation, conversation_template, cut_at_stop, visible
from gptsuite.playground import Model, Playground, SeededStream


@dataclass
class Reply:
    """A model's answer to a conversation, as it grows."""

    name: str
    seed: int
    tuned: bool  # the model carries a chat template of its own (it was tuned on conversations)
    dropped: int = 0  # the oldest messages left out of the prompt to fit the model's context
    text: str = ""  # what it wrote so far (safe to show)
    tokens: int = 0
    done: bool = False

    def notes(self, block_size: int) -> str:
        lines = [f"**{self.name}** {'answered' if self.done else 'is answering'} with seed {self.seed} ({self.tokens} tokens)"]
        if not self.tuned:
            lines.append(untuned(self.name))
        if self.dropped:
            which = "the oldest message" if self.dropped == 1 else f"the {self.dropped} oldest messages"
            lines.append(
                f"{which} did not fit in its context of {block_size} tokens with room to answer: the model did not see {'it' if self.dropped == 1 else 'them'}"
            )
        return "\n\n".join(lines)


def untuned(name: str) -> str:
    return f"{name} was not tuned on conversations: it is prompted with the default chat template and may not answer as a chat model would"


def chat_model(playground: Playground, name: str) -> Model:
    if not name:
        raise UserError("choose a model to chat with")
    if name not in playground.models:
        raise UserError(f"{name} is not loaded; load it in the Write tab first")
    return playground.models[name]


def reply(playground: Playground, name: str, messages: list[dict], cfg: SamplingConfig) -> Iterator[Reply]:
    """The model's answer to the conversation (which ends with the user's message), yielded after
    every token and once more at the end with what was held back; all checks are made before the
    first yield."""
    if not messages or messages[-1].get("role") != "user" or not str(messages[-1].get("content", "")).strip():
        raise UserError("the message is empty; type something for the model to answer")
    model = chat_model(playground, name)
    tok = model.tok
    template, _ = conversation_template(model.loaded.chat_template, tok, name)  # the note is Reply.notes'
    messages = check_conversation(messages, template, "the conversation")
    cfg = chat_settings(cfg, tok, template)
    ids, dropped = chat_prompt(tok, template, messages, model.block_size, answer_room(model.block_size, cfg.max_new_tokens))
    answer = Reply(name, cfg.seed, model.loaded.chat_template is not None, dropped)
    stream = SeededStream(playground, model, ids, cfg)
    yield answer
    for row in stream:
        playground.threads.adjust()
        answer.text, answer.tokens = visible(tok, row, cfg.stop), len(row)
        yield answer
    answer.text, cut = cut_at_stop(tok.decode(stream.last), cfg.stop)
    answer.tokens = len(tok.encode(answer.text)) if cut else len(stream.last)  # the answer's, not its end marker's
    answer.done = True
    yield answer
