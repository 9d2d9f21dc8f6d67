"""The modern preset (arch=modern, optimizer=muon, a warmup-stable-decay schedule) against the GPT-2
recipe, trained from scratch on tinyshakespeare at character level on this machine's CPU.

For each size and seed it trains, through train.py as a user would:
  gpt2         config/train_shakespeare_char_cpu.py, 2000 iterations (nanoGPT's CPU recipe; 1000 at the larger size)
  modern       config/train_shakespeare_char_modern_cpu.py, its own short schedule
  modern-long  the same preset on the GPT-2 recipe's schedule
evaluating every 25 iterations on 20 batches (the CPU recipe's eval), and prints one table: the
iteration and the training time (evals left out) at which val loss first reaches the target, the
median ms/iter, and the val loss at the end of the schedule, as the mean over the seeds.

The target is nanoGPT's val loss after its CPU recipe's 2000 iterations, 1.8857, for the CPU recipe's
size; for a larger size it is the GPT-2 recipe's own mean val loss at the end of its schedule,
measured in the same run.

    python experiments/modern_vs_gpt2.py --input=PATH/TO/tinyshakespeare.txt   # ~15 min on 2 cores
    python experiments/modern_vs_gpt2.py --size=larger --seeds=1                 # 6 layers, 192 wide, block 128: ~15 min
    python experiments/modern_vs_gpt2.py --smoke                                 # every step, in a minute

Without --input it uses data/shakespeare_char (`python prepare.py shakespeare_char` downloads the
text). Run it from the repository's top folder on a quiet machine: the timings are only comparable
within one run. --threads is passed to every run (default 2) so that all of them use the same cores.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NANOGPT_CPU_VAL = 1.8857  # nanoGPT's CPU recipe: val loss after 2000 iterations (its README)
EVAL = ["--eval_interval=25", "--log_interval=25", "--eval_iters=20", "--always_save_checkpoint=False"]
SIZES = {  # name: (model flags, the GPT-2 recipe's iterations)
    "cpu": ([], 2000),  # the CPU recipe's own: 4 layers, 4 heads, 128 wide, block 64, batch 12
    "larger": (["--n_layer=6", "--n_head=6", "--n_embd=192", "--block_size=128"], 1000),  # ~7x the FLOPs per iteration
}
RECIPES = {  # name: config file; gpt2 and modern-long train for the size's GPT-2 iterations, modern its own schedule
    "gpt2": "config/train_shakespeare_char_cpu.py",
    "modern": "config/train_shakespeare_char_modern_cpu.py",
    "modern-long": "config/train_shakespeare_char_modern_cpu.py",
}


def run(recipe: str, size: str, seed: int, data_dir: Path, out_dir: Path, args) -> list[dict]:
    """Train one recipe with one seed; its metrics.jsonl records."""
    flags, iters = SIZES[size]
    if recipe != "modern":
        flags = [*flags, f"--max_iters={iters}", f"--lr_decay_iters={iters}"]
    if args.smoke:
        flags = [*flags, f"--max_iters={args.smoke}", f"--lr_decay_iters={args.smoke}", "--warmup_iters=2"]
    cmd = [sys.executable, "train.py", RECIPES[recipe], *flags, *EVAL, f"--seed={seed}", f"--threads={args.threads}"]
    cmd += [f"--data_dir={data_dir}", f"--out_dir={out_dir}"]
    if args.reuse and (out_dir / "metrics.jsonl").exists():
        return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    print(f"  {recipe:12s} {size} seed {seed}: {time.time() - t:.0f} s", flush=True)
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def summarize(records: list[dict], target: float) -> dict:
    """Iteration and training seconds at which val loss first reaches target (if it never does:
    None, and the seconds of the whole run, a lower bound), median ms/iter, final val loss."""
    steps = [r for r in records if "ms_per_iter" in r]
    evals = [r for r in records if "val_loss" in r]
    reached = next((r["iter"] for r in evals if r["val_loss"] <= target), None)
    seconds, last = 0.0, 0
    for r in steps:  # each log line times the iterations since the one before
        if reached is not None and r["iter"] > reached:
            break
        seconds += r["ms_per_iter"] * (r["iter"] - last) / 1000
        last = r["iter"]
    return {
        "iter": reached,
        "seconds": seconds,
        "ms": statistics.median(r["ms_per_iter"] for r in steps),
        "final": evals[-1]["val_loss"],
        "iters": evals[-1]["iter"],
    }


def table(size: str, target: float, results: dict[str, list[dict]]) -> str:
    """The results as a markdown table. A run that never reaches the target counts with its whole
    schedule, as a lower bound: the mean is then a lower bound too (">"), and a ratio against it
    an upper bound ("<")."""
    gpt2_seconds = statistics.mean(s["seconds"] for s in results["gpt2"])
    gpt2_bound = any(s["iter"] is None for s in results["gpt2"])
    lines = [
        f"size {size}, target val loss {target:.4f}, mean of {len(results['gpt2'])} seed(s) (per seed in brackets; - never reached)",
        "| recipe | iterations | reaches target at iter | training time to target | vs gpt2 | ms/iter | val loss at the end |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, runs in results.items():
        bound = ">" if any(s["iter"] is None for s in runs) else ""
        it = statistics.mean(s["iter"] or s["iters"] for s in runs)
        sec, ms = statistics.mean(s["seconds"] for s in runs), statistics.mean(s["ms"] for s in runs)
        per_seed = ", ".join("-" if s["iter"] is None else str(s["iter"]) for s in runs)
        if recipe == "gpt2":
            ratio = "1.00x"
        elif bound and gpt2_bound:
            ratio = "-"  # two lower bounds: no ratio
        else:
            ratio = f"{'>' if bound else '<' if gpt2_bound else ''}{sec / gpt2_seconds:.2f}x"
        finals = ", ".join(f"{s['final']:.4f}" for s in runs)
        reached, seconds = f"{bound}{it:.0f}", f"{bound}{sec:.1f} s"
        lines.append(
            f"| {recipe} | {runs[0]['iters']} | {reached} ({per_seed}) | {seconds} | {ratio} | {ms:.1f} | {statistics.mean(s['final'] for s in runs):.4f} ({finals}) |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", default="", help="tinyshakespeare's input.txt (default: data/shakespeare_char as prepared)")
    p.add_argument("--size", choices=[*SIZES, "both"], default="cpu")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work_dir", default="", help="where the runs go (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true", help="take the runs already in --work_dir instead of training them again")
    p.add_argument("--smoke", type=int, nargs="?", const=50, default=0, help="N iterations per run, to check the script")
    return p


def main() -> None:
    args = parser().parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="modern_vs_gpt2_"))
    data_dir = Path("data/shakespeare_char")
    if args.input and args.reuse and (work / "data" / "meta.json").exists():
        data_dir = work / "data"
    elif args.input:
        data_dir = work / "data"
        prep = [sys.executable, "prepare.py", "shakespeare_char", f"--input={args.input}", f"--data_dir={data_dir}"]
        subprocess.run(prep, check=True, capture_output=True)
    elif not (data_dir / "meta.json").exists():
        sys.exit("no data/shakespeare_char: run python prepare.py shakespeare_char, or pass --input=PATH/TO/input.txt")
    print(f"runs in {work}, load before: {Path('/proc/loadavg').read_text().split()[:3] if Path('/proc/loadavg').exists() else '?'}")
    for size in SIZES if args.size == "both" else [args.size]:
        records = {r: [run(r, size, seed, data_dir, work / f"{size}-{r}-{seed}", args) for seed in range(1, args.seeds + 1)] for r in RECIPES}
        gpt2_final = statistics.mean(rs[-1]["val_loss"] for rs in ([r for r in run_ if "val_loss" in r] for run_ in records["gpt2"]))
        target = NANOGPT_CPU_VAL if size == "cpu" else gpt2_final
        results = {r: [summarize(rs, target) for rs in runs] for r, runs in records.items()}
        print(table(size, target, results), flush=True)
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3] if Path('/proc/loadavg').exists() else '?'}")


if __name__ == "__main__":
    main()
