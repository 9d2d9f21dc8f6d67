"""HellaSwag (Zellers et al., 2019) scored in completion style, as llm.c and build-nanogpt score it.

    items = load_items()                                   # the 10,042 validation items, downloaded once
    items = load_items("hellaswag_val.jsonl")              # or a local copy (--hellaswag_file)
    result = evaluate_hellaswag(model, items, rt)          # result.acc, result.acc_norm, result.items

Each item is a context and 4 endings, one of them right (`label`). Each ending is scored as a
continuation of the context: the rows context + " " + ending (GPT-2 BPE) go through the model in
one forward, and each ending's tokens' cross-entropy, given everything before them, is summed
(sum_loss) and divided by their number (avg_loss). `acc` counts the items whose lowest sum_loss
is the right ending's, `acc_norm` those whose lowest avg_loss is (llm.c's completion-only
normalization). Logits of padded vocabulary ids (50257..50303) are left out of the softmax.

The data is rowanz/hellaswag's hellaswag_val.jsonl, downloaded at first use into
$GPTSUITE_CACHE/hellaswag/ if GPTSUITE_CACHE is set, else ~/.cache/gptsuite/hellaswag/, and read
from there afterwards; on a machine without network, pass a copy of the file instead.
"""

import json
import math
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from configurator import option
from gptsuite.atomic import atomic_path
from gptsuite.errors import UserError
from gptsuite.runtime import Runtime
from gptsuite.tokenizer import GPT2_VOCAB_SIZE, GPT2Tokenizer

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
VAL_ITEMS = 10042  # items of the validation set: a download with fewer or more is not the file
DOWNLOAD_TIMEOUT = 30  # seconds without an answer before a download counts as failed
BATCH_ITEMS = 4  # items (4 rows each) per forward
FORMAT = "a HellaSwag line is a JSON object with ctx (text), endings (4 texts) and label (0-3)"


@dataclass(frozen=True)
class Item:
    ctx: str
    endings: tuple[str, str, str, str]
    label: int  # the right ending's index


@dataclass
class HellaSwagResult:
    correct: int  # items whose ending with the lowest summed loss is the right one
    correct_norm: int  # ... with the lowest loss per token
    items: int  # items scored
    seconds: float = 0.0

    @property
    def acc(self) -> float:
        return self.correct / self.items if self.items else math.nan

    @property
    def acc_norm(self) -> float:
        return self.correct_norm / self.items if self.items else math.nan


def cache_path() -> Path:
    """Where the downloaded validation set lives: $GPTSUITE_CACHE/hellaswag/ if GPTSUITE_CACHE is
    set, else ~/.cache/gptsuite/hellaswag/."""
    root = Path(os.environ["GPTSUITE_CACHE"]) if os.environ.get("GPTSUITE_CACHE") else Path.home() / ".cache" / "gptsuite"
    return root.expanduser() / "hellaswag" / "hellaswag_val.jsonl"


def parse_items(text: str, source: str) -> list[Item]:
    """The items of a JSONL text; a line that is not one is a UserError naming source and line."""
    items = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{source} line {n} is not JSON ({e.msg}); {FORMAT}") from None
        problem = None
        if not isinstance(d, dict):
            problem = "is not a JSON object"
        elif not isinstance(d.get("ctx"), str):
            problem = "has no text ctx"
        elif not (isinstance(d.get("endings"), list) and len(d["endings"]) == 4 and all(isinstance(e, str) for e in d["endings"])):
            problem = "has no endings of 4 texts"
        elif type(d.get("label")) is not int or not 0 <= d["label"] < 4:
            problem = "has no label 0-3"
        if problem:
            raise UserError(f"{source} line {n} {problem}; {FORMAT}")
        items.append(Item(d["ctx"], tuple(d["endings"]), d["label"]))
    if not items:
        raise UserError(f"{source} holds no HellaSwag items; pass a copy of hellaswag_val.jsonl ({URL})")
    return items


def read_items(path: Path) -> list[Item]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass --hellaswag_file=PATH of a copy of hellaswag_val.jsonl ({URL})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; pass --hellaswag_file=PATH of a copy of hellaswag_val.jsonl ({URL})") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); pass --hellaswag_file=PATH of a readable copy of hellaswag_val.jsonl") from None
    return parse_items(text, str(path))


def download(dest: Path) -> list[Item]:
    """Download the validation set, check it is whole (it parses, 10,042 items) and only then
    put it at dest, atomically: an interrupted download never leaves a file that looks done."""
    print(f"downloading HellaSwag's validation set from {URL} to {dest}", flush=True)
    fix = f"download it on a machine with network and pass --hellaswag_file=PATH (or put it at {dest})"
    try:
        with urllib.request.urlopen(URL, timeout=DOWNLOAD_TIMEOUT) as r:
            text = r.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:  # URLError, HTTPError, timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        raise UserError(f"could not download HellaSwag's validation set from {URL} ({reason}); {fix}") from None
    items = parse_items(text, URL)
    if len(items) != VAL_ITEMS:
        raise UserError(f"the HellaSwag file downloaded from {URL} holds {len(items):,} items, not {VAL_ITEMS:,}; {fix}")
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return items


def load_items(path: str | None = None) -> list[Item]:
    """HellaSwag's validation items, in the file's order: from `path`, or (None) from the cache,
    downloaded into it the first time."""
    if path:
        return read_items(Path(path).expanduser())
    cached = cache_path()
    return read_items(cached) if cached.exists() else download(cached)


@dataclass
class HellaswagConfig:
    """A training run's HellaSwag scoring (its --hellaswag_* keys)."""

    KEY_PREFIX: ClassVar[str] = "hellaswag_"
    # evaluation
    interval: int = option(0, ge=0)  # every this many iterations also score HellaSwag (acc, acc_norm; GPT-2 BPE data only); 0: off
    items: int = option(0, ge=0)  # score only the first this many of its 10,042 validation items; 0: all
    file: str = ""  # a local copy of hellaswag_val.jsonl; default: downloaded once and cached


def load_for_training(cfg: HellaswagConfig, tokenizer_meta: dict, data_dir) -> list[Item] | None:
    """The items a training run scores every cfg.interval steps (None if 0), loaded (downloaded
    once) before training starts, so that a missing file stops the run now, not hours in."""
    if not cfg.interval:
        return None
    if tokenizer_meta["kind"] != "gpt2":
        raise UserError(f"HellaSwag is scored with GPT-2 BPE, and {data_dir} is {tokenizer_meta['kind']}-level; drop --hellaswag_interval")
    return load_items(cfg.file or None)


def check_gpt2(tokenizer_meta: dict, name: str) -> None:
    """Refuse a model that does not use GPT-2 BPE: the items are GPT-2 BPE tokens."""
    kind = tokenizer_meta.get("kind")
    if kind != "gpt2":
        raise UserError(
            f"HellaSwag needs a GPT-2 BPE model, and {name} uses a {kind}-level tokenizer; score a model trained on GPT-2 BPE data, or --init_from=gpt2"
        )


def unwrap(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The module to call, and the GPT under it (for its config). A DDP wrapper is left out: its
    forward would synchronize the ranks, which score different numbers of items."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return model, getattr(model, "_orig_mod", model)  # torch.compile's wrapper keeps the module as _orig_mod


def render(items: list[Item], tok: GPT2Tokenizer, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (4 * len(items), T) for the rows context + ending, right-padded; the
    targets are -1 but at the endings' tokens. An ending's tokens are those of " " + ending (GPT-2
    BPE puts a word's space in front of it); an empty context is <|endoftext|>, so an ending's
    first token has something to follow.

    A row longer than block_size keeps its last block_size tokens: context is cut from the front
    and the ending is kept whole, with at least the context token before it (an ending of more
    than block_size tokens has only its last block_size scored; HellaSwag's endings are far
    shorter than GPT-2's 1024)."""
    xs, ys = [], []
    for item in items:
        ctx = tok.encode(item.ctx) or [tok.eot_token]
        for ending in item.endings:
            row = torch.tensor(ctx + tok.encode(" " + ending))
            target = row.clone()
            target[: len(ctx)] = -1  # only the ending's tokens are scored
            xs.append(row[:-1][-block_size:])  # row[t] predicts row[t + 1]
            ys.append(target[1:][-block_size:])
    T = max(len(x) for x in xs)
    x = torch.zeros(len(xs), T, dtype=torch.long)
    y = torch.full((len(xs), T), -1, dtype=torch.long)
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):  # right padding: causal, so it changes nothing before it
        x[i, : len(xi)] = xi
        y[i, : len(yi)] = yi
    return x, y


@torch.no_grad()
def item_losses(model: torch.nn.Module, items: list[Item], rt: Runtime, tok: GPT2Tokenizer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_loss and avg_loss (len(items), 4) on the CPU: each ending's summed cross-entropy in nats
    and that per token, from one forward over the items' rows (model in the mode it is in)."""
    fwd, gpt = unwrap(model)
    x, y = render(items, tok or GPT2Tokenizer(), gpt.config.block_size)
    row, pos = (y >= 0).nonzero(as_tuple=True)  # the scored positions, found on the host: no device sync
    with rt.autocast():
        logits, _ = fwd(x.to(rt.device), all_logits=True)  # (4B, T, vocab_size)
    scored = logits[row.to(rt.device), pos.to(rt.device), :GPT2_VOCAB_SIZE].float()  # (N, 50257): padded ids left out
    nats = F.cross_entropy(scored, y[row, pos].to(rt.device), reduction="none").cpu().double()  # float64 on the host (MPS has none)
    sum_loss = torch.zeros(len(x), dtype=torch.float64).index_add_(0, row, nats)
    avg_loss = sum_loss / torch.bincount(row, minlength=len(x))
    return sum_loss.view(-1, 4), avg_loss.view(-1, 4)


def evaluate_hellaswag(model: torch.nn.Module, items: list[Item], rt: Runtime, limit: int = 0, batch_items: int = BATCH_ITEMS) -> HellaSwagResult:
    """Score items (limit > 0: only the first `limit`, the same subset every time) with model, a
    model.py GPT or a compiled or DDP wrapper of it, in eval mode (its mode is restored after).
    Rank r of world_size scores items r::world_size and the counts are all-reduced under DDP, so
    every rank returns the result one process would."""
    fwd, gpt = unwrap(model)
    if gpt.config.vocab_size < GPT2_VOCAB_SIZE:
        raise UserError(f"HellaSwag needs a GPT-2 BPE model, and this one has {gpt.config.vocab_size} token ids (character level?); score a GPT-2 BPE model")
    t0 = time.time()
    tok = GPT2Tokenizer()
    mine = (items[:limit] if limit else items)[rt.rank :: rt.world_size]
    counts = torch.zeros(3, dtype=torch.long)  # correct, correct_norm, items
    training = model.training
    model.eval()
    try:
        for b in range(0, len(mine), batch_items):
            batch = mine[b : b + batch_items]
            sum_loss, avg_loss = item_losses(fwd, batch, rt, tok)
            labels = torch.tensor([item.label for item in batch])
            counts += torch.stack([(sum_loss.argmin(1) == labels).sum(), (avg_loss.argmin(1) == labels).sum(), torch.tensor(len(batch))])
    finally:
        model.train(training)
    if rt.distributed:
        counts = counts.to(rt.device)
        torch.distributed.all_reduce(counts)
        counts = counts.cpu()
    correct, correct_norm, n = counts.tolist()
    return HellaSwagResult(correct, correct_norm, n, time.time() - t0)
