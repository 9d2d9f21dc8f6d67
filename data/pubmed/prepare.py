"""PubMed articles with their abstracts (armanc/scientific_papers, config pubmed), GPT-2 BPE.

    python prepare.py pubmed                                    # through `datasets` from the Hugging Face hub
    python prepare.py pubmed --cache_dir=/big/disk/hf           # keep the download (~1.2 GB of parquet) elsewhere
    python prepare.py pubmed --max_docs=2000 --max_article_tokens=2048
    python prepare.py pubmed --data_files=train.parquet --val_files=val.parquet   # local files, no network

Every document is the abstract, then the article, in this fixed template (TEMPLATE below),
followed by <|endoftext|>; paragraphs stay separated by newlines as in the dataset:

    ABSTRACT:
    <abstract>

    ARTICLE:
    <article>

so a model learns to write the article that follows an abstract: the article's tokens and the
<|endoftext|> after it count in the loss, the abstract is context (train.mask.bin beside
train.bin; --loss_on=all in train.py counts every token). The template travels in
meta.json and the checkpoint: `python sample.py --out_dir=out-pubmed --start=FILE:abstract.txt`
formats an abstract the same way and generates up to <|endoftext|>.
The dataset's train split becomes train.bin, its validation split val.bin (test is not used).
--data_files / --val_files: comma-separated .parquet or .jsonl files (or glob patterns) with the
fields `abstract` and `article`, for train.bin and val.bin. --max_docs caps each split.
--max_article_tokens cuts each article after that many GPT-2 tokens (at a token boundary).
"""

import contextlib
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from configurator import option
from gptsuite.chat import Marked
from gptsuite.datafiles import DocumentCorpus, PrepareConfig, RecordRules
from gptsuite.errors import UserError
from gptsuite.sources import count_records, expand_files, read_records
from gptsuite.templates import format_marked
from gptsuite.tokenizer import GPT2Tokenizer

HUB = ("armanc/scientific_papers", "pubmed")
TEMPLATE = {"format": "ABSTRACT:\n{abstract}\n\nARTICLE:\n{article}", "prompt_field": "abstract", "stop": "<|endoftext|>"}
FIELDS = ["abstract", "article"]
FIELDS_FIX = "pubmed reads the fields 'abstract' and 'article': give the file's columns those names"


@dataclass
class Config(PrepareConfig):
    cache_dir: str = ""  # the Hugging Face datasets cache (default ~/.cache/huggingface/datasets)
    max_docs: int = option(0, ge=0)  # at most this many documents of each split; 0: all
    max_article_tokens: int = option(0, ge=0)  # cut articles after this many GPT-2 tokens; 0: whole articles
    data_files: str = ""  # local train files instead of the hub: a.parquet,b.jsonl or a glob
    val_files: str = ""  # local validation files, with --data_files


def local_splits(cfg: Config) -> tuple[dict, dict]:
    if not cfg.data_files or not cfg.val_files:
        raise UserError("local files need both --data_files=TRAIN_FILES and --val_files=VALIDATION_FILES")
    files = {"train": expand_files(cfg.data_files, "--data_files"), "val": expand_files(cfg.val_files, "--val_files")}
    rows = {split: (lambda paths=paths: (r for p in paths for r in read_records(p, FIELDS, FIELDS_FIX))) for split, paths in files.items()}
    return rows, {split: sum(count_records(p) for p in paths) for split, paths in files.items()}


def hub_splits(cfg: Config) -> tuple[dict, dict]:
    import datasets

    from gptsuite.hub import dataset_unreachable, offline

    # without the hub (found out in seconds, not after half a minute of retries), datasets loads
    # its cached copy in offline mode, or fails at once
    reason = dataset_unreachable(HUB[0])
    try:
        with offline() if reason else contextlib.nullcontext():
            ds = datasets.load_dataset(*HUB, cache_dir=cfg.cache_dir or None)
    except (OSError, ConnectionError) as e:
        got = f"{reason}; it is not in the cache" if reason else str(e).splitlines()[0]
        raise UserError(
            f"could not load {HUB[0]} ({HUB[1]}) from the Hugging Face hub ({got}); without network pass local files: --data_files=train.parquet --val_files=val.parquet"
        ) from None
    tables = {"train": ds["train"].select_columns(FIELDS), "val": ds["validation"].select_columns(FIELDS)}
    rows = {s: (lambda t=t: (row for b in t.iter(batch_size=256) for row in zip(b["abstract"], b["article"], strict=True))) for s, t in tables.items()}
    return rows, {s: len(t) for s, t in tables.items()}


def corpus(cfg: Config, out_dir: Path) -> DocumentCorpus:
    rows, counts = local_splits(cfg) if cfg.data_files or cfg.val_files else hub_splits(cfg)
    limit = cfg.max_docs or None
    tok = GPT2Tokenizer()

    def format_row(row: tuple[str, str]) -> Marked:
        abstract, article = (v or "" for v in row)  # a missing value (null) is empty
        if cfg.max_article_tokens:
            article = tok.truncate(article.strip(), cfg.max_article_tokens)
        return format_marked(TEMPLATE, {"abstract": abstract, "article": article})

    source = f"local files {cfg.data_files} (train), {cfg.val_files} (val)" if cfg.data_files else f"{HUB[0]} ({HUB[1]}) from the Hugging Face hub"
    return DocumentCorpus(
        documents=lambda: ((s, row) for s in ("train", "val") for row in islice(rows[s](), limit)),
        source=source,
        format=format_row,
        template=TEMPLATE,
        rules=RecordRules(masked=True),  # the article and its <|endoftext|> count in the loss, the abstract is context
        num_documents=sum(min(n, limit or n) for n in counts.values()),
        meta={"max_article_tokens": cfg.max_article_tokens or None, "max_docs": limit},
    )
