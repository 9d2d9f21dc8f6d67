"""Character level, GPT-2's BPE and a BPE trained on the text, for a small model trained from
scratch on this machine's CPU: bits per byte on val at equal training FLOPs and at equal wall time.

It prepares one text three ways (prepare.py shakespeare_char, shakespeare, and shakespeare
--tokenizer=bpe --vocab_size=N: the same split by position, so the same val text), then trains
the CPU recipe's model (config/train_shakespeare_char_cpu.py: 4 layers, 128 wide, block 64 tokens,
batch 12) on each through train.py, as a user would, with the same training FLOPs: the character
model's --iters iterations, and for the others as many as their FLOPs per token allow (a larger
vocabulary costs more per token: its output layer). Then it prints one table:

  equal FLOPs  eval.py's bits per byte on the whole val split, of each run's last checkpoint
  equal time   bits per byte from the last val loss (train.py's estimate on 20 batches) logged
               within the shortest run's training time (evals left out), per run

    python experiments/tokenizer_bpb.py --input=PATH/TO/tinyshakespeare.txt    # ~10 min on 2 cores
    python experiments/tokenizer_bpb.py --smoke                                 # every step, in a minute

Timings are of this machine as it is: `uptime`'s load is printed with the table.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptsuite.flops import flops_per_token  # noqa: E402
from gptsuite.loading import padded_vocab_size  # noqa: E402

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12}
EVAL = ["--eval_iters=20", "--log_interval=25", "--always_save_checkpoint=True", "--gradient_accumulation_steps=1"]


def prepare(kind: str, text: str, dest: Path, vocab_size: int) -> dict:
    dataset, extra = {"char": ("shakespeare_char", []), "gpt2": ("shakespeare", []), "bpe": ("shakespeare", ["--tokenizer=bpe", f"--vocab_size={vocab_size}"])}[
        kind
    ]
    if not (dest / "meta.json").exists():
        subprocess.run([sys.executable, "prepare.py", dataset, f"--input={text}", f"--data_dir={dest}", *extra], cwd=ROOT, check=True, capture_output=True)
    return json.loads((dest / "meta.json").read_text())


def flops(meta: dict) -> float:
    """Training FLOPs per token of the recipe's model on this tokenizer (6N + attention)."""
    d, n_layer = SHAPE["n_embd"], SHAPE["n_layer"]
    params = 12 * n_layer * d * d + padded_vocab_size(meta["tokenizer"]) * d  # blocks, and the tied embedding / output layer
    return flops_per_token(params, n_layer, SHAPE["n_head"], d, SHAPE["block_size"])


def train(data: Path, out: Path, iters: int, threads: int) -> float:
    shape = [f"--{k}={v}" for k, v in SHAPE.items()]
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char_cpu.py", *shape, *EVAL, f"--max_iters={iters}", f"--lr_decay_iters={iters}"]
    cmd += [
        f"--eval_interval={max(iters // 10, 1)}",
        f"--warmup_iters={min(100, iters // 10)}",
        f"--threads={threads}",
        f"--data_dir={data}",
        f"--out_dir={out}",
    ]
    t = time.time()
    if not (out / "ckpt.pt").exists():
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.time() - t


def evaluate(out: Path, threads: int) -> float:
    proc = subprocess.run(
        [sys.executable, "eval.py", f"--out_dir={out}", "--device=cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    if proc.returncode:
        sys.exit(f"eval.py on {out} failed:\n{proc.stderr[-2000:]}")
    line = next(x for x in proc.stdout.splitlines() if "bits per byte" in x)
    return float(line.split("bits per byte ")[1].split()[0])


def curve(out: Path) -> list[tuple[float, float, int]]:
    """(training seconds so far, val loss, iter) at each eval; evals' own time left out. A log line
    times the iterations since the one before; an eval between two log lines gets the time of the
    iterations before it at the rate of the next line (of the last one, after it)."""
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [(r["iter"], r["ms_per_iter"] / 1000) for r in records if "ms_per_iter" in r]
    points = []
    for r in (r for r in records if "val_loss" in r):
        seconds, last = 0.0, 0
        for it, rate in logs:
            seconds += rate * (min(it, r["iter"]) - last)
            last = min(it, r["iter"])
        seconds += (logs[-1][1] if logs else 0.0) * (r["iter"] - last)
        points.append((seconds, r["val_loss"], r["iter"]))
    return points


def evaluate_once(out: Path, threads: int) -> float:
    """eval.py's bits per byte of a run's last checkpoint, kept in the run's folder."""
    cached = out / "bits_per_byte.json"
    if not cached.exists():
        cached.write_text(json.dumps(evaluate(out, threads)))
    return json.loads(cached.read_text())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="a text file (e.g. tinyshakespeare's input.txt)")
    p.add_argument("--vocab_size", type=int, default=4096, help="of the trained BPE")
    p.add_argument("--iters", type=int, default=1500, help="of the character model; the others get its FLOPs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work_dir", default="", help="where the data and runs go (default: a temporary folder); runs already there are reused")
    p.add_argument("--smoke", action="store_true", help="30 iterations of the character model, to check the script")
    return p


def main() -> None:
    args = parser().parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tokenizer_bpb_"))
    iters = 30 if args.smoke else args.iters
    kinds = ("char", "gpt2", "bpe")
    metas = {k: prepare(k, args.input, work / f"data-{k}", args.vocab_size) for k in kinds}
    tokens_per_iter = SHAPE["batch_size"] * SHAPE["block_size"]
    budget = flops(metas["char"]) * iters * tokens_per_iter
    rows = {}
    for k in kinds:
        n = max(1, round(budget / (flops(metas[k]) * tokens_per_iter)))
        wall = train(work / f"data-{k}", work / f"out-{k}", n, args.threads)
        load = os.getloadavg()
        bpb = evaluate_once(work / f"out-{k}", args.threads)
        rows[k] = {"iters": n, "wall": wall, "load": load, "bpb": bpb, "curve": curve(work / f"out-{k}")}
        print(f"{k}: {n} iterations, {wall:.0f} s, load {load[0]:.1f}, bits/byte {bpb:.4f}", flush=True)
    # val loss (nats per token) to bits per byte: the val split's tokens per byte, the same text for every tokenizer
    val_bytes = len(Path(args.input).read_text(encoding="utf-8")[int(metas["char"]["characters"] * 0.9) :].encode("utf-8"))
    t_equal = min(r["curve"][-1][0] for r in rows.values())
    print(f"\nval: {val_bytes:,} bytes; the same FLOPs: {budget:.3g}; equal time: {t_equal:.0f} s of training")
    print(
        "| tokenizer | vocab | train tokens | FLOPs/token | iterations | training time | load (1 min) | bits/byte, equal FLOPs | bits/byte at equal time (iter) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        m = metas[k]
        seconds, loss, it = max((pt for pt in r["curve"] if pt[0] <= t_equal + 1e-6), key=lambda pt: pt[2])
        at_time = loss / math.log(2) * m["val_tokens"] / val_bytes
        print(
            f"| {k} | {m['vocab_size']:,} | {m['train_tokens']:,} | {flops(m) / 1e6:.1f}M | {r['iters']} | {r['curve'][-1][0]:.0f} s | {r['load'][0]:.1f} | {r['bpb']:.4f} | {at_time:.4f} ({it}) |"
        )
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
