"""
Kill -9 a training run at random moments, many times, and check that no checkpoint is ever lost,
corrupt or partial.

    python tests/stress_kill.py                  # 60 trials, a few minutes on a laptop CPU
    python tests/stress_kill.py --trials=200 --seed=7

Each trial starts a tiny CPU run in the same out_dir (resuming from the newest checkpoint once
there is one) that saves at every iteration (ckpt.pt, the last 3 as ckpt-<iter>.pt, best.pt), with
the checkpoint writer slowed down by its test hook so that writes take most of the time. Then it
kills the run with SIGKILL: on even trials in its first, second or third checkpoint write once an
earlier checkpoint exists (at a random moment within the write), on odd ones at a random moment after the start (importing,
loading, training or writing). After every kill:
  - the newest checkpoint loads with weights_only and builds the model,
  - its iter_num never goes back from one trial to the next (nothing lost),
  - every ckpt-*.pt and best.pt loads (nothing partial behind a checkpoint name),
and the next trial must report that it resumed from exactly that checkpoint. Prints the counts and
exits 1 on any failure. tests/test_reliability.py runs a few trials of this.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from conftest import TINY_MODEL_ARGS  # noqa: E402
from gptsuite.checkpoint import SLOW_SAVE_ENV, load_checkpoint, model_from_checkpoint, newest_checkpoint, numbered_checkpoints  # noqa: E402
from gptsuite.errors import UserError  # noqa: E402

SLOW_SAVE_S = 0.2  # one checkpoint write, with the hook
TINY = [
    *TINY_MODEL_ARGS,
    "--gradient_accumulation_steps=1",
    "--eval_iters=2",
    "--eval_interval=5",
    "--checkpoint_interval=1",
    "--keep_last=3",
    "--max_iters=1000000",
    "--lr_decay_iters=1000",
    "--warmup_iters=10",
]


def check_out_dir(out: Path) -> tuple[int | None, list[str]]:
    """(iter_num of the newest checkpoint or None, problems found)."""
    problems = []
    newest = newest_checkpoint(out)
    if newest is None:
        return None, problems
    try:
        ckpt = load_checkpoint(newest)
        model_from_checkpoint(ckpt)
    except UserError as e:
        return None, [f"newest checkpoint {newest.name} does not load: {e}"]
    for p in [*numbered_checkpoints(out), out / "best.pt"]:
        if p.exists():
            try:
                other = load_checkpoint(p)
            except UserError as e:
                problems.append(f"{p.name} does not load: {e}")
                continue
            if other["iter_num"] > ckpt["iter_num"]:
                problems.append(f"{p.name} is at iter {other['iter_num']}, newer than {newest.name} at {ckpt['iter_num']}")
    return ckpt["iter_num"], problems


def run_trials(trials: int, out: Path, data_dir: Path, seed: int = 0, verbose: bool = False) -> dict:
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", SLOW_SAVE_ENV: str(SLOW_SAVE_S)}
    stats = {"trials": 0, "killed_mid_write": 0, "killed_before_first_save": 0, "resumed": 0, "failures": [], "final_iter": 0}
    last_iter = None
    for trial in range(trials):
        log = out.parent / f"trial-{trial}.log"
        resume = last_iter is not None
        cmd = [sys.executable, str(ROOT / "train.py"), f"--data_dir={data_dir}", f"--out_dir={out}", *TINY]
        cmd.append("--init_from=resume" if resume else "--init_from=scratch")
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
        tmp = out / f".ckpt.pt.{proc.pid}.tmp"
        start, mode = time.time(), "mid-write" if trial % 2 == 0 else "random"
        deadline = start + (60 if mode == "mid-write" else rng.uniform(0.3, 4.0))
        writes, in_write, kill_in_write = 0, False, rng.randint(1, 3)
        try:
            while time.time() < deadline and proc.poll() is None:
                if mode == "mid-write" and tmp.exists() != in_write:
                    in_write = not in_write
                    writes += in_write
                    if in_write and writes >= kill_in_write and newest_checkpoint(out) is not None:  # a write that could destroy a checkpoint
                        time.sleep(rng.uniform(0, 0.8 * SLOW_SAVE_S))
                        break
                time.sleep(0.005)
        except BaseException:  # Ctrl-C of this script: leave no run behind
            proc.kill()
            raise
        if proc.poll() is not None:
            stats["failures"].append(f"trial {trial}: the run exited by itself ({proc.returncode}):\n{log.read_text()[-2000:]}")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stats["trials"] += 1
        stats["killed_mid_write"] += tmp.exists()
        text = log.read_text()
        if resume:
            if f"at iter {last_iter}" in text.split("resuming from", 1)[-1].split("\n", 1)[0]:
                stats["resumed"] += 1
            elif "resuming from" in text:
                stats["failures"].append(
                    f"trial {trial}: resumed from the wrong place: {text.split('resuming from', 1)[1].splitlines()[0]} (newest is iter {last_iter})"
                )
        it, problems = check_out_dir(out)
        stats["failures"] += [f"trial {trial}: {p}" for p in problems]
        if last_iter is not None and (it is None or it < last_iter):
            stats["failures"].append(f"trial {trial}: the newest checkpoint went from iter {last_iter} to {it}")
        if it is None and last_iter is None:
            stats["killed_before_first_save"] += 1
        last_iter = it if it is not None else last_iter
        if verbose:
            print(
                f"trial {trial:3d} ({mode:9s}): killed after {time.time() - start:4.1f}s{' mid-write' if tmp.exists() else ''}, newest checkpoint at iter {it}",
                flush=True,
            )
    stats["final_iter"] = last_iter or 0
    return stats


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # as Ctrl-C: the running trial is killed too
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    trials, seed = int(opts.get("trials", 60)), int(opts.get("seed", 0))
    from conftest import TEXT
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "input.txt").write_text(TEXT, encoding="utf-8")
        module = load_dataset_module("shakespeare_char")
        prepare_text(module.corpus(module.Config(input=str(tmp / "input.txt")), tmp / "data"), tmp / "data")
        t0 = time.time()
        stats = run_trials(trials, tmp / "out", tmp / "data", seed=seed, verbose=True)
        print(
            f"\n{stats['trials']} kill -9 trials in {time.time() - t0:.0f}s: {stats['killed_mid_write']} during a checkpoint write, "
            f"{stats['killed_before_first_save']} before the first save, {stats['resumed']} resumed from the newest checkpoint; "
            f"newest checkpoint at iter {stats['final_iter']}; {len(stats['failures'])} corrupt or lost checkpoints"
        )
        for failure in stats["failures"]:
            print(failure)
    return 1 if stats["failures"] or stats["trials"] < trials else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
