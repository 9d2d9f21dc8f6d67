"""Scoring a model on a token split: every token after the first exactly once, in windows with
as much earlier context as the model's block_size leaves room for, optionally with training
documents put in context. eval.py's command line and tables sit on top of this.

Data with a loss mask (conversations, prompt templates: masks.py) is scored as training counts
it: only the tokens the model learns to say (the responses), each once, in windows that stay
inside its document and start at the document's start where the block leaves room, as training
rows start at documents; so a response is scored with its prompt before it, not with a window
edge cutting into the prompt. A document's first token, which nothing of it comes before, is
never scored (it is a role marker or the start of a prompt, never counted).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from gptsuite.errors import UserError
from gptsuite.masks import LossMask
from gptsuite.runtime import Runtime
from model import GPT

LOSS_CHUNK_BYTES = 1 << 28  # float32 logits scored at once: 256 MB (a GPT-2 row of 1024 tokens is 206 MB)


@dataclass
class EvalResult:
    nats: float  # summed cross-entropy of the scored tokens
    tokens: int
    bytes: int  # UTF-8 bytes of the scored tokens
    responses: bool = False  # only the counted tokens of masked data were scored

    @property
    def loss(self) -> float:
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        return self.nats / math.log(2) / self.bytes


def token_byte_lengths(tok) -> np.ndarray:
    """UTF-8 length of each token id's decoded text: bytes[id]."""
    if tok.kind == "char":
        return np.array([len(c.encode("utf-8")) for c in tok.chars], dtype=np.int64)
    if tok.kind == "bpe":
        return tok.byte_lengths()
    enc = tok.enc
    return np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], dtype=np.int64)


def windows(n_tokens: int, stride: int) -> list[tuple[int, int]]:
    """The scored ranges [s, e) of a split of n_tokens: every token but the first, once."""
    return [(s, min(s + stride, n_tokens)) for s in range(1, n_tokens, stride)]


def counted_targets(loss_mask: LossMask, n_tokens: int) -> np.ndarray:
    """Which tokens of masked data are scored: the counted ones (mask 1), but not a document's first."""
    counted = np.asarray(loss_mask.mask[:n_tokens]) != 0
    counted[loss_mask.starts[loss_mask.starts < n_tokens]] = False
    return counted


def document_windows(starts: np.ndarray, n_tokens: int, stride: int, counted: np.ndarray) -> list[tuple[int, int, int]]:
    """Scored ranges [s, e) of masked data that hold a counted token, each with the start of its
    document (no context from before it): every token of a document but its first, once."""
    ends = [*starts[1:].tolist(), n_tokens]
    spans = []
    for d, end in zip(starts.tolist(), ends, strict=True):
        spans += [(s, min(s + stride, end), d) for s in range(d + 1, end, stride) if counted[s : min(s + stride, end)].any()]
    return spans


class ContextDocs:
    """K training documents per window, drawn with a seed per window index, packed into `budget` tokens."""

    def __init__(self, train: np.ndarray, k: int, budget: int, eot: int | None, seed: int):
        if budget < k:
            raise UserError(f"no room for {k} in-context documents: block_size - stride is {budget} tokens; pass a smaller --stride")
        self.train, self.k, self.budget, self.eot, self.seed = train, k, budget, eot, seed
        self.share = budget // k
        if eot is not None:  # document i is train[starts[i]:ends[i]], its <|endoftext|> included
            ends = [np.flatnonzero(train[c : c + (1 << 24)] == eot) + c + 1 for c in range(0, len(train), 1 << 24)]
            ends = np.concatenate([*ends, [len(train)]]) if ends else np.array([len(train)])
            starts = np.concatenate([[0], ends[:-1]])
            keep = ends > starts
            self.starts, self.ends = starts[keep], ends[keep]
            if len(self.starts) < k:
                raise UserError(f"train.bin holds {len(self.starts)} documents, fewer than --in_context_docs={k}")
        elif len(train) < self.share:
            raise UserError(f"train.bin holds {len(train)} tokens, too few for chunks of {self.share}")

    def __call__(self, window: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, window))
        if self.eot is None:  # character level: K chunks at random places
            offsets = rng.integers(0, len(self.train) - self.share + 1, size=self.k)
            parts = [self.train[o : o + self.share] for o in offsets]
        else:  # K distinct documents, each cut to its share, each ending in <|endoftext|>
            picks = rng.choice(len(self.starts), size=self.k, replace=False)
            parts = []
            for i in picks:
                doc = self.train[self.starts[i] : min(self.ends[i], self.starts[i] + self.share)]
                parts.append(doc if doc[-1] == self.eot else np.append(doc[: self.share - 1], self.eot))
        return np.concatenate(parts).astype(np.int64)


@torch.no_grad()
def evaluate(
    model: GPT,
    data: np.ndarray,
    block_size: int,
    stride: int,
    batch_size: int,
    rt: Runtime,
    byte_lengths: np.ndarray,
    vocab_size: int,
    context=None,
    loss_mask: LossMask | None = None,
) -> EvalResult:
    """Score every token of data after the first, once, in windows of `stride` tokens with up to
    block_size tokens of input each; `context(window_index)` gives tokens to put in front.
    With a loss_mask, only the counted tokens, in windows within their documents."""
    model.eval()
    row_nats = []  # each row's summed loss, in float32 (MPS has no float64): at most block_size terms
    counted = counted_targets(loss_mask, len(data)) if loss_mask is not None else None
    if counted is None:
        spans = [(s, e, 0) for s, e in windows(len(data), stride)]
    else:
        spans = document_windows(loss_mask.starts[loss_mask.starts < len(data)], len(data), stride, counted)
    for b in range(0, len(spans), batch_size):
        xs, ys = [], []
        for w, (s, e, floor) in enumerate(spans[b : b + batch_size], start=b):
            prefix = context(w) if context is not None else np.zeros(0, dtype=np.int64)
            a = max(floor, e - 1 - block_size + len(prefix))  # earlier tokens of the split (of the document) that still fit
            seq = np.concatenate([prefix, data[a:e].astype(np.int64)])
            y = seq[1:].copy()
            y[: len(y) - (e - s)] = -1  # score only data[s:e]
            if counted is not None:
                y[len(y) - (e - s) :][~counted[s:e]] = -1  # and of those only the counted ones
            xs.append(seq[:-1])
            ys.append(y)
        T = max(len(x) for x in xs)
        x = torch.zeros(len(xs), T, dtype=torch.long)
        y = torch.full((len(xs), T), -1, dtype=torch.long)
        for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):  # right padding: causal, so it changes nothing before it
            x[i, : len(xi)] = torch.from_numpy(xi)
            y[i, : len(yi)] = torch.from_numpy(yi)
        x, y = x.to(rt.device), y.to(rt.device)
        with rt.autocast():
            logits, _ = model(x, all_logits=True)
        rows = max(1, LOSS_CHUNK_BYTES // (4 * T * vocab_size))  # rows at a time: the float32 logits of a whole batch can be large
        for i in range(0, len(xs), rows):
            chunk = logits[i : i + rows, :, :vocab_size].float()
            token_nats = F.cross_entropy(chunk.flatten(0, 1), y[i : i + rows].flatten(), ignore_index=-1, reduction="none")
            row_nats.append(token_nats.view(len(chunk), T).sum(dim=1))
    nats = math.fsum(torch.cat(row_nats).tolist()) if row_nats else 0.0  # one read of the device; an exact sum of the rows
    if counted is None:
        n_bytes = sum(int(byte_lengths[data[c : c + (1 << 24)].astype(np.int64)].sum()) for c in range(1, len(data), 1 << 24))
        return EvalResult(nats, len(data) - 1, n_bytes)
    n_bytes = sum(int(byte_lengths[data[c : c + (1 << 24)][counted[c : c + (1 << 24)]].astype(np.int64)].sum()) for c in range(0, len(data), 1 << 24))
    return EvalResult(nats, int(counted.sum()), n_bytes, responses=True)
