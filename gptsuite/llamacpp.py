"""A GGUF file (export.py --to=gguf) run by llama.cpp, through llama-cpp-python: the model the
playground page puts beside the checkpoints, and what the tests and tools.bench_deploy read
llama.cpp's own numbers from.

GGUFModel stands where a GPT stands in generation (generate.sample_rows calls its
generate_stream): llama.cpp computes the logits, and the next token is drawn from them by the same
sample_logits and the same torch generator as for our models, so greedy decoding is llama.cpp's
argmax and a seed draws the same way on both. `score` is eval.py's perplexity with llama.cpp's
logits: the same windows (evaluation.windows), each token after the first scored once.
"""

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptsuite.errors import UserError
from gptsuite.evaluation import windows
from gptsuite.gguf_export import CHAT_TEMPLATE_KEY, TOKENIZER_KEY
from gptsuite.loading import Loaded
from gptsuite.tokenizer import GPT2_META, from_meta
from model import sample_logits


def llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise UserError(
            "running a GGUF file needs llama-cpp-python: pip install llama-cpp-python==0.3.36 (it builds llama.cpp from source, about 10 minutes once)"
        ) from None
    return llama_cpp


def open_gguf(path: str | os.PathLike, n_ctx: int = 0, logits_all: bool = False, n_threads: int | None = None):
    """llama-cpp-python's Llama for a GGUF file, quiet; n_ctx 0: the model's context."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no GGUF file at {path}; write one with python export.py --out_dir=RUN --to=gguf DIR")
    Llama = llama_cpp().Llama
    try:
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=512,
            logits_all=logits_all,
            n_threads=n_threads or torch.get_num_threads(),
            verbose=False,
        )
    except (ValueError, RuntimeError) as e:  # llama.cpp could not read it: not a GGUF file, or one of an architecture it does not know
        raise UserError(f"llama.cpp cannot load {path} ({e}); export it again with python export.py --to=gguf") from None


@dataclass
class GGUFConfig:
    """What generation reads of a model's config."""

    block_size: int


class GGUFModel:
    """A GGUF file's model behind GPT's generate_stream, one sample at a time."""

    def __init__(self, path: str | os.PathLike, n_threads: int | None = None):
        self.path = Path(path)
        self.llm = open_gguf(path, n_threads=n_threads)
        self.metadata = self.llm.metadata
        # the trained context (llama.cpp rounds its own up to 256, but a position past the trained ones aborts the process)
        self.config = GGUFConfig(block_size=int(self.metadata.get("gpt2.context_length", 0)) or self.llm.n_ctx())

    def eval(self) -> "GGUFModel":
        return self

    def to(self, device) -> "GGUFModel":
        if str(device) != "cpu":
            raise UserError(f"a GGUF model runs on the CPU (llama-cpp-python's build here), not {device}; start serve.py with --device=cpu")
        return self

    def logits(self, ids: list[int]) -> torch.Tensor:
        """The next token's logits after ids, continuing what the context already holds where it can."""
        llm, block = self.llm, self.config.block_size
        ids = ids[-block:]
        held = llm.n_tokens
        if 0 < held < len(ids) and list(llm.input_ids[:held]) == ids[:held]:
            llm.eval(ids[held:])
        else:  # a new prompt, or the window slid past the context: recompute it (as GPT.generate_stream does)
            llm.reset()
            llm.eval(ids)
        last = llama_cpp().llama_get_logits_ith(llm.ctx, -1)  # the last position's, which llama.cpp keeps without logits_all
        return torch.from_numpy(np.ctypeslib.as_array(last, shape=(llm.n_vocab(),)).copy())

    @torch.no_grad()
    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        vocab_limit: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """GPT.generate_stream's contract: yield (1, 1) tokens continuing idx (1, T)."""
        if idx.size(0) != 1:
            raise UserError("a GGUF model writes one sample at a time; pass --num_samples=1")
        ids = idx[0].tolist()
        for _ in range(max_new_tokens):
            logits = self.logits(ids)[None, :]
            if vocab_limit is not None:
                logits[:, vocab_limit:] = -float("inf")
            nxt = sample_logits(logits, temperature, top_k, top_p)
            ids.append(int(nxt))
            yield nxt


def gguf_chat_template(metadata: dict) -> dict | None:
    text = metadata.get(CHAT_TEMPLATE_KEY)
    return json.loads(text) if text else None


def load_gguf(path: str | os.PathLike) -> Loaded:
    """A GGUF file as the page loads a model: its tokenizer (a trained BPE's dict where the file
    carries one, else GPT-2 BPE), the chat template it carries."""
    model = GGUFModel(path)
    tok_meta = json.loads(model.metadata[TOKENIZER_KEY]) if TOKENIZER_KEY in model.metadata else dict(GPT2_META)
    if model.metadata.get("general.architecture") != "gpt2" or model.llm.n_vocab() != from_meta(tok_meta).vocab_size:
        raise UserError(f"{path} is not a GPT-2 model of ours; the page runs GGUF files written by export.py --to=gguf")
    return Loaded(model, tok_meta, str(path), Path(path), {}, None, gguf_chat_template(model.metadata))


def greedy(llm, ids: list[int], n: int) -> list[int]:
    """n tokens of llama.cpp's own greedy decoding (its sampler, temperature 0) after ids."""
    out = []
    for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(int(t))
        if len(out) == n:
            break
    return out


def score(llm, data: np.ndarray, block_size: int, stride: int) -> tuple[float, int]:
    """(summed nats, tokens) of every token of data after the first, in evaluation.evaluate's
    windows (stride tokens scored, up to block_size of input each), from llama.cpp's logits (over
    the file's vocabulary: its tokenizer's ids, without our padding rows).
    llm must be opened with logits_all=True and n_ctx >= block_size."""
    nats, count = 0.0, 0
    for s, e in windows(len(data), stride):
        a = max(0, e - 1 - block_size)
        seq = data[a:e].astype(np.int64).tolist()
        llm.reset()
        llm.eval(seq[:-1])
        logits = np.asarray(llm.scores[: len(seq) - 1], dtype=np.float64)[-(e - s) :, : llm.n_vocab()]
        targets = np.asarray(seq[-(e - s) :])
        top = logits.max(axis=1)
        logz = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        nats += math.fsum((logz - logits[np.arange(len(targets)), targets]).tolist())
        count += e - s
    return nats, count
