"""Text generation around GPT.generate_stream: prompts from the command line or a file, sampling
in a batch, stop rules (<|endoftext|>, a stop text) and streaming output that never shows a
partial character or the start of the stop text. sample.py and the playground page
(serve.py) generate through here.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from configurator import option
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
    of the model's context to write in. Where the conversation no longer fits, its oldest turns
    drop (a leading system message stays); returns the ids and how many messages were dropped.
    Refused when even the last message alone leaves no room."""
    from gptsuite.chat import prompt_ids

    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    for dropped in range(len(rest)):
        ids = prompt_ids(tok, template, system + rest[dropped:])
        if len(ids) + room <= block_size or dropped == len(rest) - 1:
            break
    else:
        ids, dropped = prompt_ids(tok, template, system), 0
    if len(ids) >= block_size:
        raise UserError(
            f"the last message is {len(ids)} tokens with the chat template, but the model reads at most {block_size} (its context) and needs room to answer; shorten it"
        )
    return ids, dropped


def chat_settings(cfg: "SamplingConfig", tok, template: dict) -> "SamplingConfig":
    """Sampling settings for a chat answer: it ends at the template's end-of-turn marker (the
    <|endoftext|> token with GPT-2 BPE, its spelling at character level)."""
    from dataclasses import replace

    return replace(cfg, stop_at_eot=True, stop=cfg.stop or ("" if tok.eot_token is not None else template["end"]))
