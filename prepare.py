"""Prepare a dataset: text -> token ids in train.bin / val.bin (uint16 memmaps) + meta.json.

    python prepare.py shakespeare_char                     # tinyshakespeare, character level
    python prepare.py shakespeare_char --input=my.txt      # your own text, character level
    python prepare.py pubmed                               # PubMed abstracts -> articles, GPT-2 BPE
    python prepare.py azure_docs --docs_dir=PATH           # a folder of markdown, one document per file
    python prepare.py text --input=FILE_OR_FOLDER          # your own corpus (.txt, .md, .jsonl, .parquet, .csv)
    python prepare.py chat --input=FILE_OR_FOLDER          # conversations to tune on, the loss on the answers (-> data/chat)
    python prepare.py preferences --input=FILE --base=RUN  # preference pairs (arena votes, prompt/chosen/rejected) for DPO
    python prepare.py openwebtext                          # nanoGPT's GPT-2 reproduction data, GPT-2 BPE
    python prepare.py fineweb_edu --max_tokens=10000000000 # llm.c's: FineWeb-Edu sample-10BT
    python prepare.py text --input=FILE --tokenizer=bpe --vocab_size=8192  # a BPE trained on this text's train split
    python prepare.py text --input=OTHER --tokenizer=book  # reuse data/book's trained BPE (or a tokenizer.json)
    python prepare.py <dataset> --help                     # a dataset's options

Output goes to data/<dataset> (the text dataset: data/<the input's name>, e.g. data/book for
book.txt), or --data_dir (the folder train.py's --data_dir reads). Prepared data is never replaced by data from another source: a prepare
into a folder whose meta.json says it was prepared from other text, other documents or with other
settings stops before writing anything, naming both; --overwrite=True replaces it. Preparing the
same source again with the same settings writes the same bytes.

--tokenizer picks the tokens (every dataset takes it; without it, the dataset's own: GPT-2 BPE for
most, characters for shakespeare_char): gpt2, char, bpe, or FILE_OR_DATASET. bpe trains a
byte-level BPE of --vocab_size ids (special tokens included) on the train split only, with GPT-2's
pre-tokenizer and <|endoftext|>, <|system|>, <|user|>, <|assistant|> as special tokens, and writes
it as tokenizer.json beside the memmaps (its sha256 in meta.json; ids in uint32 past 65,536).
A tokenizer.json, or a prepared dataset that has one (its folder or its name under data/), is
reused as it is, so that several datasets share one vocabulary. The dataset report compares its
bytes per token with GPT-2's on the val split.

Each data/<dataset>/prepare.py says only what is special about its data: a Config of its
options and `corpus(cfg, out_dir)` that returns a TextCorpus (one text, split by position), a
TextFileCorpus (the same, read from a file in blocks) or a DocumentCorpus (documents streamed
from the source, each with its split).
The shared pipeline (gptsuite/pipeline.py) does the rest: tokenizing in parallel threads,
writing the memmaps in chunks through temp files, meta.json last, then the dataset report
(gptsuite/report.py). A prepare that was stopped leaves only hidden temp files, which the next
run into the same folder removes.
"""

import dataclasses
import time

from configurator import parse_config, print_config
from gptsuite.atomic import check_folder, remove_stale_temps
from gptsuite.datafiles import DocumentCorpus, PrepareConfig, resolve_data_dir
from gptsuite.errors import UserError, cli
from gptsuite.pipeline import prepare_documents, prepare_text
from gptsuite.report import build_report, format_report, write_report
from gptsuite.sources import available_datasets, load_dataset_module


def main(argv: list[str]) -> None:
    usage = (
        f"usage: python prepare.py <dataset> [--key=value ...]; datasets: {', '.join(available_datasets())}; python prepare.py <dataset> --help for its options"
    )
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{usage}\n\n{__doc__.strip()}")
        return
    if not argv or argv[0].startswith("-"):
        raise UserError(usage)
    name, argv = argv[0], argv[1:]
    module = load_dataset_module(name)
    cfg = parse_config(module.Config(), argv, prog=f"prepare.py {name}", tolerate=RENAMED)
    print_config(cfg)
    default_name = getattr(module, "default_name", None)  # a dataset may name its folder after its input
    out_dir = resolve_data_dir(cfg.data_dir, default_name(cfg) if default_name else name)
    check_folder(out_dir, "--data_dir")
    for p in remove_stale_temps(out_dir):
        print(f"removed {p}, left by a prepare that was stopped while writing")
    t0 = time.time()
    corpus = module.corpus(cfg, out_dir)
    if cfg.tokenizer and not isinstance(corpus.tokenizer, dict):  # a dict: the tokenizer of the model the data is for (preferences' --base)
        corpus = dataclasses.replace(corpus, tokenizer=cfg.tokenizer)
    if cfg.vocab_size != PrepareConfig.vocab_size and corpus.tokenizer != "bpe":
        raise UserError(
            f"--vocab_size is the size of a BPE to train, and this prepare uses --tokenizer={corpus.tokenizer}; drop --vocab_size or pass --tokenizer=bpe"
        )
    print(f"source: {corpus.source}")
    prepare_corpus = prepare_documents if isinstance(corpus, DocumentCorpus) else prepare_text
    meta, stats = prepare_corpus(corpus, out_dir, cfg.dtype, cfg.num_threads, overwrite=cfg.overwrite, vocab_size=cfg.vocab_size)
    seconds = time.time() - t0
    tokens = meta["train_tokens"] + meta["val_tokens"]
    print(f"characters: {meta['characters']:,}  vocab size: {meta['vocab_size']:,}  tokenizer: {meta['tokenizer']['kind']}")
    print(f"train: {meta['train_tokens']:,} tokens  val: {meta['val_tokens']:,} tokens")
    extra = ", tokenizer.json" if meta["tokenizer"]["kind"] == "bpe" else ""
    print(f"wrote {out_dir}/train.bin, val.bin{extra}, meta.json in {seconds:.1f}s ({tokens / max(seconds, 1e-9):,.0f} tokens/s)")
    report = build_report(out_dir.name, meta, stats, out_dir)
    write_report(report, stats, out_dir)
    print(format_report(report, out_dir))


RENAMED = {"out_dir": "prepare.py writes to --data_dir (the folder train.py's --data_dir reads; --out_dir is a run's folder): write --data_dir=DIR"}


if __name__ == "__main__":
    cli(main)
