"""Text generation around GPT.generate_stream: prompts from the command line or a file, sampling
in a batch, stop rules (<|endoftext|>, a stop text) and streaming output that never shows a
partial character or the start of the stop text. sample.py and anything else that generates
text go through here.
"""

from pathlib import Path

import torch

from gptsuite.datafiles import read_text
from gptsuite.errors import UserError
from model import GPT


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


def encode_prompt(tok, text: str) -> list[int]:
    ids = tok.encode(text)
    if not ids:
        raise UserError("the prompt is empty after tokenizing; pass some text with --start")
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


def generate_texts(model: GPT, tok, prompt_ids: list[int], num_samples: int, cfg, device: str, stream=None) -> list[list[int]]:
    """Draw num_samples continuations of prompt_ids in one batch; return each one's generated
    token ids, ended at <|endoftext|> (when cfg.stop_at_eot) or at the text cfg.stop. With
    `stream` (a file, batch of one), the text is written there as it comes."""
    x = torch.tensor(prompt_ids, dtype=torch.long, device=device)[None, :].repeat(num_samples, 1)
    eot = tok.eot_token if cfg.stop_at_eot else None
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    done = [False] * num_samples
    shown = 0
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
        if stream is not None:
            text = printable(cut_at_stop(tok.decode(rows[0]), cfg.stop)[0], cfg.stop)
            stream.write(text[shown:])
            stream.flush()
            shown = max(shown, len(text))
        if all(done):
            break
    if stream is not None:  # what was held back: a partial stop text that never completed, a last character
        stream.write(cut_at_stop(tok.decode(rows[0]), cfg.stop)[0][shown:])
    return rows
