"""Prepare a dataset: text -> token ids in train.bin / val.bin (uint16 memmaps) + meta.json.

    python prepare.py shakespeare_char                     # tinyshakespeare, character level
    python prepare.py shakespeare_char --input=my.txt      # your own text, character level
    python prepare.py <dataset> --help                     # a dataset's options

Each data/<dataset>/prepare.py says only what is special about its data: a Config of its
options and `corpus(cfg, out_dir)` that returns the text and where it came from. Everything
else (tokenizing, splitting, writing the memmaps atomically, metadata, statistics) lives here.
"""

import hashlib
import importlib.util
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from atomic import check_folder
from configurator import parse_config, print_config
from datafiles import DTYPES, TextCorpus, TokenWriter, write_json
from errors import UserError, cli
from tokenizer import CharTokenizer, GPT2Tokenizer

DATA_ROOT = Path(__file__).resolve().parent / "data"


def available_datasets() -> list[str]:
    return sorted(p.parent.name for p in DATA_ROOT.glob("*/prepare.py"))


def load_dataset_module(name: str):
    path = DATA_ROOT / name / "prepare.py"
    if not path.is_file():
        raise UserError(f"unknown dataset '{name}'; available: {', '.join(available_datasets())}")
    spec = importlib.util.spec_from_file_location(f"dataset_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_bpe_chunks(text: str, size: int = 1 << 20) -> list[str]:
    """Cut text into ~size pieces at points where GPT-2's pre-tokenizer always splits anyway
    (after a newline that is followed by a non-space), so encoding the pieces equals encoding the whole."""
    chunks, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        while end < len(text) and not (text[end - 1] == "\n" and not text[end].isspace()):
            end += 1
        chunks.append(text[start:end])
        start = end
    return chunks


def encode_text(tok, text: str, desc: str) -> np.ndarray:
    if isinstance(tok, CharTokenizer):
        return tok.encode_array(text)
    chunks = split_bpe_chunks(text)
    out = []
    with tqdm(total=len(text), desc=desc, unit="char", unit_scale=True, disable=len(chunks) < 4) as bar:
        for i in range(0, len(chunks), 16):
            batch = chunks[i : i + 16]
            out.extend(np.array(ids, dtype=np.int64) for ids in tok.encode_batch(batch))
            bar.update(sum(map(len, batch)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def prepare_text(corpus: TextCorpus, out_dir: Path, dtype: str = "uint16") -> dict:
    """Tokenize one text, split it by position and write train.bin, val.bin and meta.json."""
    text = corpus.text
    if not text:
        raise UserError("the text is empty; pass a file with some text in it (--input=FILE)")
    tok = CharTokenizer.from_text(text) if corpus.tokenizer == "char" else GPT2Tokenizer()
    cut = int(len(text) * (1 - corpus.val_fraction))
    counts = {}
    for split, part in (("train", text[:cut]), ("val", text[cut:])):
        ids = encode_text(tok, part, f"tokenizing {split}")
        writer = TokenWriter(out_dir / f"{split}.bin", dtype)
        try:
            writer.write(ids)
        except BaseException:
            writer.abort()
            raise
        counts[split] = writer.close()
    meta = {
        "tokenizer": tok.meta(),
        "vocab_size": tok.vocab_size,
        "dtype": dtype,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "characters": len(text),
        "val_fraction": corpus.val_fraction,
        "source": corpus.source,
        "source_sha256": corpus.source_sha256,
    }
    write_json(out_dir / "meta.json", meta)
    return meta


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise UserError(f"usage: python prepare.py <dataset> [--key=value ...]; datasets: {', '.join(available_datasets())}")
    name, argv = argv[0], argv[1:]
    module = load_dataset_module(name)
    cfg = parse_config(module.Config(), argv)
    print_config(cfg)
    out_dir = Path(cfg.out_dir or Path("data") / name)
    if cfg.dtype not in DTYPES:
        raise UserError(f"unknown dtype '{cfg.dtype}'; use uint16 (vocabularies up to 65,536 ids) or uint32")
    check_folder(out_dir, "--out_dir")
    t0 = time.time()
    corpus = module.corpus(cfg, out_dir)
    print(f"source: {corpus.source}")
    meta = prepare_text(corpus, out_dir, cfg.dtype)
    print(f"characters: {meta['characters']:,}  vocab size: {meta['vocab_size']:,}  tokenizer: {meta['tokenizer']['kind']}")
    print(f"train: {meta['train_tokens']:,} tokens  val: {meta['val_tokens']:,} tokens")
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    cli(main)
