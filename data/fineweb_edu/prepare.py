"""FineWeb-Edu (HuggingFaceFW/fineweb-edu), the web pages an annotator model scored as educational; GPT-2 BPE.

    python prepare.py fineweb_edu                                   # sample-10BT (~10B tokens), streamed from the hub
    python prepare.py fineweb_edu --max_tokens=1000000000           # at most 1B training tokens
    python prepare.py fineweb_edu --name=sample-100BT --max_tokens=20000000000
    python prepare.py fineweb_edu --data_files='fineweb/*.parquet'  # local shards with a `text` column, no network

What llm.c trains GPT-2 124M on (10B tokens of sample-10BT). The documents are streamed in the
dataset's order, never all in memory or a local copy: the first --val_documents are val.bin,
the rest train.bin, each document's GPT-2 BPE followed by <|endoftext|>, as uint16. train.bin
holds at most --max_tokens tokens (0: the whole sample): documents go in whole, and reading stops
at the first that would not fit. A row whose text is missing (null) or empty is skipped and counted.
An interrupted prepare leaves only hidden temp files, removed by the next run, which starts
over: data that looks complete (meta.json beside train.bin) is always complete.
--data_files: comma-separated .parquet or .jsonl files (or glob patterns), read in that order.
"""

from dataclasses import dataclass
from pathlib import Path

from configurator import option
from gptsuite.datafiles import DocumentCorpus, PrepareConfig
from gptsuite.errors import UserError
from gptsuite.hub import dataset_unreachable
from gptsuite.sources import text_files

HUB = "HuggingFaceFW/fineweb-edu"


@dataclass
class Config(PrepareConfig):
    name: str = "sample-10BT"  # the hub config: sample-10BT, sample-100BT, sample-350BT, or default (all 1.3T tokens)
    max_tokens: int = option(0, ge=0)  # train.bin holds at most this many tokens (whole documents); 0: every document
    val_documents: int = option(10_000, gt=0)  # the first this many documents are val.bin (~10M tokens)
    data_files: str = ""  # local files instead of the hub: a.parquet,b.parquet or a glob


def hub_documents(cfg: Config) -> tuple:
    def fail(reason: str) -> UserError:
        return UserError(
            f"could not stream {HUB} ({cfg.name}) from the Hugging Face hub ({reason}); check --name, or pass parquet files: --data_files='fineweb/*.parquet'"
        )

    if reason := dataset_unreachable(HUB):  # in seconds, not after half a minute of retries
        raise fail(reason)
    import datasets

    try:
        stream = datasets.load_dataset(HUB, name=cfg.name, split="train", streaming=True)
    except (OSError, ConnectionError, ValueError) as e:  # the network went away; an unknown --name
        raise fail(str(e).splitlines()[0]) from None
    return (lambda: (row["text"] for row in stream)), None, f"{HUB} ({cfg.name}) from the Hugging Face hub"


def corpus(cfg: Config, out_dir: Path) -> DocumentCorpus:
    documents, n, source = text_files(cfg.data_files, "fineweb_edu") if cfg.data_files else hub_documents(cfg)
    if n is not None and n <= cfg.val_documents:
        raise UserError(f"{source} holds {n:,} documents, not more than --val_documents={cfg.val_documents:,}; pass a smaller --val_documents")

    def split_documents():
        for i, text in enumerate(documents()):
            yield ("val" if i < cfg.val_documents else "train"), text

    return DocumentCorpus(
        documents=split_documents,
        source=source,
        num_documents=n,
        max_train_tokens=cfg.max_tokens,
        meta={"val_documents": cfg.val_documents, "max_tokens": cfg.max_tokens or None},
    )
