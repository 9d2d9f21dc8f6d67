"""
Evaluate a model on the whole validation split of a prepared dataset: loss, perplexity, bits per byte.

    python eval.py --out_dir=out-shakespeare-char                       # the dataset it was trained on
    python eval.py --out_dir=out-shakespeare-char --data_dir=/tmp/other --stride=128
    python eval.py --init_from=gpt2 --dataset=pubmed                    # OpenAI's GPT-2 (pretrained.py)
    python eval.py --init_from=gpt2 --dataset=pubmed --in_context_docs=2
    python eval.py --compare out-scratch out-finetuned gpt2 gpt2@2 --dataset=azure_docs --stride=512

Every token of the split after the first is scored exactly once, in order, with no sampling:
windows of `stride` scored tokens, each preceded by as much earlier context as the model's
block_size leaves room for (stride = block_size: non-overlapping windows, the default; a smaller
stride gives every token more context and costs block_size/stride times the compute).
Logits of padded vocabulary ids (50257..50303) are left out of the softmax.

  loss        mean cross-entropy in nats per token
  perplexity  exp(loss)
  bits/byte   total loss in bits / UTF-8 bytes of the scored tokens' decoded text (each token's
              own bytes; <|endoftext|> counts as its 13 characters). Comparable across tokenizers.

--in_context_docs=K puts K training documents before each window (the in-context setting): for
GPT-2 BPE data, documents are train.bin split at <|endoftext|>; for character-level data (no
document markers) they are K chunks at random places of train.bin. They are drawn per window
with a fixed seed (the same for every model) and packed in front of the window, each cut to an
equal share of block_size - stride tokens (stride defaults to block_size/2 here); room they leave
goes to earlier context of the split.

--compare MODEL ... prints a markdown table for several models on the same dataset and the same
tokens. A MODEL is a checkpoint folder (out_dir with ckpt.pt), or a GPT-2 name / Hugging Face
folder (loaded by pretrained.py), optionally with @K for K in-context documents (gpt2@3).
A model whose tokenizer differs from the dataset's is an error.
"""

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import tokenizer as tokenizers
from configurator import parse_config
from datafiles import check_token_ids, load_meta, open_split
from errors import UserError, cli
from model import GPT
from runtime import Runtime, setup_runtime
from sample import load_model


@dataclass
class EvalConfig:
    out_dir: str = "out"  # the checkpoint out_dir/ckpt.pt, with init_from='resume'
    init_from: str = "resume"  # 'resume', or a GPT-2 name ('gpt2', 'gpt2-medium', ...) or Hugging Face folder
    dataset: str = ""  # data/<dataset>; default: the dataset the checkpoint was trained on
    data_dir: str = ""  # or the prepared dataset folder itself
    split: str = "val"
    block_size: int = 0  # window length; 0: the model's block_size
    stride: int = 0  # tokens scored per window; 0: block_size (block_size // 2 with in-context docs)
    in_context_docs: int = 0  # K training documents packed before each window
    batch_size: int = 0  # windows per forward pass; 0: as many as make 8,192 tokens (8 at block 1024)
    max_tokens: int = 0  # score only the first max_tokens tokens of the split; 0: all of it
    seed: int = 1337  # which training documents go in context
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False


@dataclass
class EvalResult:
    nats: float  # summed cross-entropy of the scored tokens
    tokens: int
    bytes: int  # UTF-8 bytes of the scored tokens

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
    enc = tok.enc
    return np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], dtype=np.int64)


def windows(n_tokens: int, stride: int) -> list[tuple[int, int]]:
    """The scored ranges [s, e) of a split of n_tokens: every token but the first, once."""
    return [(s, min(s + stride, n_tokens)) for s in range(1, n_tokens, stride)]


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
) -> EvalResult:
    """Score every token of data after the first, once, in windows of `stride` tokens with up to
    block_size tokens of input each; `context(window_index)` gives tokens to put in front."""
    model.eval()
    nats = torch.zeros((), dtype=torch.float64, device=rt.device)
    spans = windows(len(data), stride)
    for b in range(0, len(spans), batch_size):
        xs, ys = [], []
        for w, (s, e) in enumerate(spans[b : b + batch_size], start=b):
            prefix = context(w) if context is not None else np.zeros(0, dtype=np.int64)
            a = max(0, e - 1 - block_size + len(prefix))  # earlier tokens of the split that still fit
            seq = np.concatenate([prefix, data[a:e].astype(np.int64)])
            y = seq[1:].copy()
            y[: len(y) - (e - s)] = -1  # score only data[s:e]
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
            logits, _ = model(x, y)
        for i in range(len(xs)):  # row by row: the float32 logits of a whole batch can be large
            nats += F.cross_entropy(logits[i, :, :vocab_size].float(), y[i], ignore_index=-1, reduction="sum").double()
    n_bytes = sum(int(byte_lengths[data[c : c + (1 << 24)].astype(np.int64)].sum()) for c in range(1, len(data), 1 << 24))
    return EvalResult(nats.item(), len(data) - 1, n_bytes)


@dataclass
class Loaded:
    model: GPT
    tokenizer: dict
    train_config: dict


def load_for_eval(cfg: EvalConfig) -> Loaded:
    """The model of cfg.init_from: a checkpoint ('resume', cfg.out_dir) or a pretrained GPT-2."""
    model, tokenizer, train_config, _ = load_model(cfg)
    return Loaded(model, tokenizer, train_config)


def dataset_dir(cfg: EvalConfig, train_config: dict) -> Path:
    if cfg.data_dir:
        return Path(cfg.data_dir)
    if cfg.dataset:
        return Path("data") / cfg.dataset
    if train_config.get("data_dir"):
        return Path(train_config["data_dir"])
    if train_config.get("dataset"):
        return Path("data") / train_config["dataset"]
    raise UserError("pass --dataset=NAME or --data_dir=DIR: the model does not say which data it was trained on")


def describe(tok_meta: dict) -> str:
    return f"{tok_meta['kind']} tokenizer of {tok_meta['vocab_size']} ids"


def run_eval(cfg: EvalConfig, rt: Runtime, data_dir: Path, loaded: Loaded, name: str) -> tuple[EvalResult, int, int]:
    """Evaluate one model; returns the result, the block size and the stride used."""
    meta = load_meta(data_dir)
    if loaded.tokenizer != meta["tokenizer"]:
        same_kind = loaded.tokenizer["kind"] == meta["tokenizer"]["kind"] and loaded.tokenizer["vocab_size"] == meta["tokenizer"]["vocab_size"]
        detail = " (same size, different characters)" if same_kind else ""
        raise UserError(
            f"{name} uses a {describe(loaded.tokenizer)} but {data_dir} uses a {describe(meta['tokenizer'])}{detail}; evaluate on data prepared with the model's tokenizer"
        )
    tok = tokenizers.from_meta(meta["tokenizer"])
    dtype = meta.get("dtype", "uint16")
    data = open_split(data_dir, cfg.split, dtype)
    if cfg.max_tokens:
        data = data[: cfg.max_tokens]
    check_token_ids(data, meta["tokenizer"]["vocab_size"], data_dir / f"{cfg.split}.bin")
    model = loaded.model
    if cfg.block_size > model.config.block_size:
        raise UserError(
            f"block_size={cfg.block_size} is larger than {name}'s {model.config.block_size}; pass --block_size <= {model.config.block_size} (or 0 for the model's)"
        )
    block = cfg.block_size or model.config.block_size
    stride = cfg.stride or (block // 2 if cfg.in_context_docs else block)
    if stride > block:
        raise UserError(f"stride={stride} is larger than the block size {block}; pass --stride <= {block}")
    context = None
    if cfg.in_context_docs:
        train = open_split(data_dir, "train", dtype)
        check_token_ids(train, meta["tokenizer"]["vocab_size"], data_dir / "train.bin")
        context = ContextDocs(train, cfg.in_context_docs, block - stride, tok.eot_token, cfg.seed)
    model.to(rt.device)
    fwd = torch.compile(model) if cfg.compile else model
    batch_size = cfg.batch_size or max(1, 8192 // block)
    result = evaluate(fwd, data, block, stride, batch_size, rt, token_byte_lengths(tok), tok.vocab_size, context)
    return result, block, stride


def parse_spec(spec: str) -> tuple[str, int]:
    """'out-x' -> ('out-x', 0); 'gpt2@3' -> ('gpt2', 3)."""
    name, at, k = spec.rpartition("@")
    if not at:
        return spec, 0
    if not k.isdigit():
        raise UserError(f"{spec!r}: write MODEL@K with K the number of in-context documents, e.g. gpt2@3")
    return name, int(k)


def spec_config(cfg: EvalConfig, spec: str) -> EvalConfig:
    name, k = parse_spec(spec)
    k = k or cfg.in_context_docs
    if Path(name).is_dir() and not (Path(name) / "config.json").exists():  # an out_dir, not a Hugging Face folder
        return dataclasses.replace(cfg, init_from="resume", out_dir=name, in_context_docs=k)
    return dataclasses.replace(cfg, init_from=name, in_context_docs=k)


def split_compare(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take `--compare A B C` out of argv: the models, and the remaining arguments."""
    if "--compare" not in argv:
        return [], argv
    i = argv.index("--compare")
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    specs = argv[i + 1 : j]
    if not specs:
        raise UserError("--compare needs the models after it: --compare out-a out-b gpt2")
    return specs, argv[:i] + argv[j:]


def compare_table(rows: list[tuple[str, int, int, int, EvalResult]]) -> str:
    lines = [
        "| model | in-context docs | block | stride | tokens | loss | perplexity | bits/byte |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, k, block, stride, r in rows:
        lines.append(f"| {name} | {k} | {block} | {stride} | {r.tokens:,} | {r.loss:.4f} | {r.perplexity:.2f} | {r.bits_per_byte:.4f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    specs, argv = split_compare(argv)
    cfg = parse_config(EvalConfig(), argv)
    for name in ("batch_size", "block_size", "stride", "in_context_docs", "max_tokens"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must not be negative, got {getattr(cfg, name)}")
    if cfg.split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {cfg.split!r}")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    configs = [spec_config(cfg, s) for s in specs] if specs else [cfg]
    rows, data_dir = [], None
    for c in configs:
        name = c.out_dir if c.init_from == "resume" else c.init_from
        t0 = time.time()
        loaded = load_for_eval(c)
        data_dir = data_dir or dataset_dir(c, loaded.train_config)  # every row on the first row's data
        result, block, stride = run_eval(c, rt, data_dir, loaded, name)
        rows.append((name, c.in_context_docs, block, stride, result))
        print(
            f"{name}: {c.split} loss {result.loss:.4f}, perplexity {result.perplexity:.2f}, bits per byte {result.bits_per_byte:.4f} "
            f"({result.tokens:,} tokens, {result.bytes:,} bytes of {data_dir}; block {block}, stride {stride}, {c.in_context_docs} in-context docs; {time.time() - t0:.1f}s)",
            flush=True,
        )
        del loaded
    if specs:
        print(f"\n{cfg.split} split of {data_dir}: every token after the first, scored once\n")
        print(compare_table(rows))


if __name__ == "__main__":
    cli(main)
