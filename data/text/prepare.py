"""Your own corpus: a text file, a folder of .txt/.md files, or a table with one document per row.

    python prepare.py text --input=book.txt                         # one text: first 90% train, last 10% val
    python prepare.py text --input=transcripts/ --name=podcasts     # one document per file -> data/podcasts
    python prepare.py text --input=papers.jsonl --field=abstract    # one document per row (.jsonl, .parquet, .csv)
    python prepare.py text --input=book.txt --tokenizer=char        # character level

GPT-2 BPE (the default) ends every document with <|endoftext|>; at character level, where the
vocabulary is the corpus' characters, a blank line ("\\n\\n") ends each document instead. A folder
(searched recursively, sorted paths) or a table is split by document: a seeded random
--val_fraction of the documents is val.bin; a single file is split by position. All of them are
read in blocks, never whole, so a corpus larger than memory prepares. Output goes to data/<name>,
by default the input's name (data/book for book.txt, data/transcripts for transcripts/), or
--data_dir; train with --dataset=<name>. Another corpus of the same name does not replace it:
the prepare stops, naming both, unless --overwrite=True.
"""

from dataclasses import dataclass
from pathlib import Path

from configurator import option
from gptsuite.datafiles import DocumentCorpus, PrepareConfig, TextFileCorpus
from gptsuite.errors import UserError
from gptsuite.sources import TABLE_SUFFIXES, count_records, read_document, read_records, table_fields, val_mask, with_splits


@dataclass
class Config(PrepareConfig):
    input: str = ""  # a .txt/.md file, a folder of them, or a .jsonl/.parquet/.csv table
    field: str = ""  # the column with the text, for tables
    tokenizer: str = "gpt2"  # GPT-2 BPE, char (one token per character), bpe (one trained on this corpus), or a tokenizer.json / dataset to reuse
    name: str = ""  # the dataset's name: output in data/<name>; default: the input's name (data/book for book.txt)
    val_fraction: float = option(0.1, gt=0, lt=1)  # of the documents (a single file: of its characters, at the end)
    seed: int = 1337  # which documents go to val


def default_name(cfg: Config) -> str:
    """data/<name>: --name, else the input's name without its suffix, so that each corpus has its own folder."""
    if cfg.name or not cfg.input:
        return cfg.name or "text"
    path = Path(cfg.input).expanduser()
    path = path.resolve() if path.name in ("", ".", "..") else path  # --input=. names the folder it is
    return path.stem if path.is_file() else path.name


def corpus(cfg: Config, out_dir: Path) -> TextFileCorpus | DocumentCorpus:
    path = Path(cfg.input).expanduser()
    if not cfg.input or not path.exists():
        raise UserError(f"pass your corpus with --input=FILE_OR_FOLDER{f' ({path} not found)' if cfg.input else ''}")
    if path.is_file() and path.suffix.lower() not in TABLE_SUFFIXES:
        return TextFileCorpus(path, f"file {path}", cfg.tokenizer, cfg.val_fraction)
    if path.is_dir():
        records = sorted((p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()), key=lambda p: p.relative_to(path).as_posix())
        if not records:
            raise UserError(f"no .txt or .md files in {path}; pass a folder that has some, or one file")
        documents, fmt, n = (lambda: records), read_document, len(records)
    else:
        if not cfg.field:
            columns = table_fields(path)
            example = f"--field={columns[0]}" if columns else "--field=NAME"
            listed = f" (its columns: {', '.join(columns)})" if columns else ""
            raise UserError(f"{path.name} is a table: name the column with the text, e.g. {example}{listed}")
        documents, fmt, n = (lambda: (row[0] for row in read_records(path, [cfg.field]))), None, count_records(path)
    is_val = val_mask(n, cfg.val_fraction, cfg.seed)
    return DocumentCorpus(
        documents=lambda: with_splits(documents(), is_val),
        source=f"{n:,} documents from {path}" + (f" (field {cfg.field})" if cfg.field else ""),
        tokenizer=cfg.tokenizer,
        format=fmt,
        num_documents=n,
        meta={"val_fraction": cfg.val_fraction, "seed": cfg.seed},
    )
