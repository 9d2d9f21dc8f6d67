"""
Was a text copied from the training data? The longest span it shares with a dataset's train.bin
and the share of its 8-grams found there (gptsuite/novelty.py has the index and its method).

    python -m tools.novelty --data_dir=data/shakespeare_char --text="ROMEO: But soft, what light"
    python -m tools.novelty --dataset=pubmed --text=FILE:sample.txt
    python -m tools.novelty --dataset=pubmed --build          # just build (or check) the index
    python sample.py --out_dir=out-x --check_novelty          # the same report for every sample
"""

import os
from dataclasses import dataclass

from configurator import option, parse_config
from gptsuite import tokenizer as tokenizers
from gptsuite.atomic import check_folder
from gptsuite.datafiles import load_meta, resolve_data_dir
from gptsuite.errors import UserError, cli
from gptsuite.generate import read_prompt
from gptsuite.novelty import format_report, open_index


@dataclass
class NoveltyConfig:
    dataset: str = ""  # data/<dataset>
    data_dir: str = ""  # or the prepared dataset folder itself
    text: str = ""  # the text to check, or FILE:path
    ngram: int = option(8, ge=2)  # n-gram length of the index
    index_dir: str = ""  # where the index lives; default: beside train.bin
    build: bool = False  # only build (or verify) the index


def main(argv: list[str]) -> None:
    cfg = parse_config(NoveltyConfig(), argv)
    if not cfg.dataset and not cfg.data_dir:
        raise UserError("pass --dataset=NAME or --data_dir=DIR: the prepared data whose train.bin to search")
    if not cfg.build and not cfg.text:
        raise UserError("pass --text=... (or FILE:path) to check, or --build to only build the index")
    data_dir = resolve_data_dir(cfg.data_dir, cfg.dataset)
    tok = tokenizers.from_meta(load_meta(data_dir)["tokenizer"])
    ids = None if cfg.build else tok.encode(read_prompt(cfg.text))  # a bad text fails before the index is built
    if cfg.index_dir:
        check_folder(cfg.index_dir, "--index_dir")
    index = open_index(data_dir, None, cfg.ngram, cfg.index_dir or None)
    print(f"index: {index.keys_path} ({os.path.getsize(index.keys_path) + os.path.getsize(index.pos_path):,} bytes)")
    if ids is not None:
        print(format_report(index.report(ids), tok))


if __name__ == "__main__":
    cli(main)
