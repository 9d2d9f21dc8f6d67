"""OpenWebText (8,013,769 web documents, ~9B GPT-2 tokens), as nanoGPT prepares it for reproducing GPT-2.

    python prepare.py openwebtext                                   # streamed from the Hugging Face hub
    python prepare.py openwebtext --data_files='owt/*.parquet'      # local shards with a `text` column, no network
    python prepare.py openwebtext --data_files=a.parquet,b.parquet --num_threads=16

nanoGPT's data/openwebtext/prepare.py: the documents in the dataset's order, split with datasets'
`train_test_split(test_size=0.0005, seed=2357, shuffle=True)` (val: 4,007 documents), each
split's documents in that shuffled order, each document's GPT-2 BPE (encode_ordinary) followed
by <|endoftext|>, as uint16. This writes the same bytes for the same documents, without
loading the corpus into memory or a cache: the documents are read once, in order, and tokenized
in parallel threads; then each split is put in the shuffled order (read back from disk piece by
piece). Needs about twice the output's size on disk while it runs (train.bin is ~17 GB).
--data_files: comma-separated .parquet or .jsonl files (or glob patterns), in the dataset's order.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptsuite.datafiles import DocumentCorpus, PrepareConfig
from gptsuite.errors import UserError
from gptsuite.hub import dataset_unreachable
from gptsuite.sources import text_files

HUB = "Skylion007/openwebtext"
VAL_SIZE, SEED = 0.0005, 2357  # nanoGPT's split


@dataclass
class Config(PrepareConfig):
    data_files: str = ""  # local files instead of the hub: a.parquet,b.parquet or a glob, in the dataset's order


def nanogpt_order(n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """datasets' train_test_split(test_size=VAL_SIZE, seed=SEED, shuffle=True) of n documents:
    which are val (a mask over the documents in order), and each split's order as positions
    among that split's documents."""
    perm = np.random.default_rng(SEED).permutation(n)
    n_val = math.ceil(VAL_SIZE * n)  # as datasets rounds it
    is_val = np.zeros(n, dtype=bool)
    is_val[perm[:n_val]] = True
    rank = np.where(is_val, np.cumsum(is_val) - 1, np.cumsum(~is_val) - 1)  # position within its own split
    return is_val, {"val": rank[perm[:n_val]], "train": rank[perm[n_val:]]}


def hub_documents() -> tuple:
    def fail(reason: str) -> UserError:
        return UserError(f"could not stream {HUB} from the Hugging Face hub ({reason}); pass its parquet files instead: --data_files='owt/*.parquet'")

    if reason := dataset_unreachable(HUB):  # in seconds, not after half a minute of retries
        raise fail(reason)
    import datasets

    try:
        builder = datasets.load_dataset_builder(HUB)
        n = builder.info.splits["train"].num_examples
        stream = datasets.load_dataset(HUB, split="train", streaming=True)
    except (OSError, ConnectionError, RuntimeError, KeyError, TypeError) as e:  # the network went away; a hub version this datasets cannot read
        raise fail(str(e).splitlines()[0]) from None
    return (lambda: (row["text"] for row in stream)), n, f"{HUB} ({n:,} documents) from the Hugging Face hub"


def corpus(cfg: Config, out_dir: Path) -> DocumentCorpus:
    documents, n, source = text_files(cfg.data_files, "openwebtext") if cfg.data_files else hub_documents()
    if n < 2:
        raise UserError(f"{source} holds {n} document(s); a train/val split needs at least 2")
    is_val, order = nanogpt_order(n)

    def split_documents():
        texts, gone = iter(documents()), object()
        for val in is_val:
            text = next(texts, gone)  # None: a row without text, skipped
            if text is gone:
                raise UserError(f"the source changed while it was read (it no longer has the {n:,} documents counted before); prepare again")
            yield ("val" if val else "train"), text

    return DocumentCorpus(
        documents=split_documents,
        source=source,
        num_documents=n,
        order=order,
        meta={"split": f"nanoGPT's: train_test_split(test_size={VAL_SIZE}, seed={SEED}, shuffle=True)"},
    )
