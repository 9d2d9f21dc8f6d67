"""
Benchmark eval.py's scoring: seconds to score a split, against scoring it with the loss the
training forward computes (and eval throws away) as the baseline.

    python -m tools.bench_eval --out_dir=out-shakespeare-char-small              # its whole val split
    python -m tools.bench_eval --out_dir=out-gpt2 --device=cuda --max_tokens=1000000

eval.py asks the model for every position's logits without a loss (GPT.forward's all_logits)
and computes each row's cross-entropy itself; the baseline passes targets, as training does,
so every batch's full cross-entropy is computed once more. Both score the same windows with
the same code otherwise, alternating `repeats` times; the table gives each one's best and
median seconds and their nats (which must agree). CPU numbers depend on how busy the machine
is: compare within one run.
"""

import statistics
import time
from dataclasses import dataclass

import torch

from configurator import option, parse_config, print_config
from gptsuite import tokenizer as tokenizers
from gptsuite.datafiles import load_meta, open_split, resolve_data_dir, token_dtype
from gptsuite.errors import cli
from gptsuite.evaluation import evaluate, token_byte_lengths
from gptsuite.loading import load_model
from gptsuite.runtime import DTYPE_CHOICES, setup_runtime


@dataclass
class BenchEvalConfig:
    out_dir: str = "out-shakespeare-char-small"  # the training run whose checkpoint to score
    data_dir: str = ""  # default: the data it was trained on
    split: str = option("val", choices=("train", "val"))
    max_tokens: int = option(0, ge=0)  # score only the first max_tokens tokens; 0: the whole split
    batch_size: int = option(0, ge=0)  # windows per forward; 0: as eval.py (8,192 tokens a batch)
    repeats: int = option(3, gt=0)  # timings of each way, alternating
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)
    seed: int = option(1337, ge=0)


class LossInForward(torch.nn.Module):
    """The baseline: the model's forward with targets, so that it computes the full cross-entropy
    of the batch too (the targets' values do not change the cost); the loss is dropped."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, all_logits: bool = True):
        return self.model(x, x)[0], None


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchEvalConfig(), argv)
    print_config(cfg)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    loaded = load_model("resume", cfg.out_dir)
    data_dir = resolve_data_dir(cfg.data_dir, trained_on=loaded.train_config)
    meta = load_meta(data_dir)
    tok = tokenizers.from_meta(meta["tokenizer"])
    data = open_split(data_dir, cfg.split, token_dtype(meta))
    data = data[: cfg.max_tokens] if cfg.max_tokens else data
    model = loaded.model.to(rt.device)
    block = model.config.block_size
    batch_size = cfg.batch_size or max(1, 8192 // block)
    lengths = token_byte_lengths(tok)
    print(f"{loaded.name}: {len(data):,} tokens of {data_dir}/{cfg.split}.bin, block {block}, batch {batch_size}, device {rt.device}, {rt.dtype}")

    ways = {"eval (logits only)": model, "baseline (loss in forward)": LossInForward(model)}
    seconds, nats = {w: [] for w in ways}, {}
    for _ in range(cfg.repeats):
        for way, fwd in ways.items():
            rt.synchronize()
            t0 = time.perf_counter()
            nats[way] = evaluate(fwd, data, block, block, batch_size, rt, lengths, tok.vocab_size).nats
            seconds[way].append(time.perf_counter() - t0)
    base = statistics.median(seconds["baseline (loss in forward)"])
    print("| way | best s | median s | vs baseline | nats |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for way, s in seconds.items():
        print(f"| {way} | {min(s):.3f} | {statistics.median(s):.3f} | {statistics.median(s) / base:.2f}x | {nats[way]:.4f} |")


if __name__ == "__main__":
    cli(main)
