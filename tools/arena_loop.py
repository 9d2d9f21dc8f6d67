"""
From votes to a better model and back, offline: a scripted voter judges a chat run's answers on
the served page, its votes become preference pairs, DPO trains on them, and the tuned model meets
its start in the arena under the same voter.

    python -m tools.chat_tasks --out=data/tasks
    python prepare.py chat --input=data/tasks/train.jsonl --name=tasks --tokenizer=char --block_size=256
    python train.py config/train_shakespeare_char_cpu.py --dataset=tasks --out_dir=out-tasks --block_size=256 --loss_on=all
    python -m tools.arena_loop --base=out-tasks --tasks=data/tasks --out=loop

The steps, each a command of the project (their output in OUT/*.log):
  1. serve.py BASE with the train questions as arena prompts; tools.arena_voter votes --collect
     rounds of BASE against itself (one side sampled at --temperature, the other greedy or at
     --second_temperature), by the
     task's reference answer: the right answer wins, both right a tie, both wrong both bad;
  2. prepare.py preferences on those votes (--base=BASE: its characters and chat template);
  3. train.py DPO from BASE on the pairs (--dpo_* and the --train_args given);
  4. serve.py BASE and the DPO run with the held-out test questions; the voter judges --judge
     rounds between them, both at --judge_temperature (greedy by default); tools.arena's leaderboard gives the DPO run's win rate
     (ties half) with its 95% bootstrap interval;
  5. eval.py --compare BASE DPO --task=chat: exact match of both on the whole test set, a table.
"""

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configurator import option, parse_config, print_config
from gptsuite.arena import read_votes
from gptsuite.atomic import check_folder
from gptsuite.errors import UserError, cli
from gptsuite.ratings import format_board, leaderboard

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LoopConfig:
    base: str = ""  # the chat run to tune (a run folder)
    tasks: str = "data/tasks"  # tools.chat_tasks' folder: train.jsonl (votes to learn from), test.jsonl (to judge on)
    out: str = "arena-loop"  # a new folder for the votes, the pairs, the DPO run and the logs
    collect: int = option(600, gt=0)  # rounds voted to make the pairs
    votes: str = ""  # a votes file collected before (an earlier loop's collect.jsonl): its pairs instead of new rounds
    judge: int = option(200, gt=0)  # rounds between the DPO run and its start
    temperature: float = option(1.0, gt=0)  # the sampled side's, when collecting
    second_temperature: float = option(0.0, ge=0)  # the other side's, when collecting: 0 greedy; sampled too, more rounds are decided
    judge_temperature: float = option(0.0, ge=0)  # both sides', when judging (0: greedy, each model's best answer)
    max_new_tokens: int = option(24, gt=0)
    dpo_beta: float = option(0.1, gt=0)
    dpo_sft_weight: float = option(0.0, ge=0)  # train.py's: the chosen answers' next-token loss, this much of it, beside DPO's
    learning_rate: float = option(1e-4, gt=0)
    max_iters: int = option(300, gt=0)
    batch_size: int = option(16, gt=0)
    train_args: str = ""  # more train.py flags, e.g. "--lora_rank=8"
    device: str = "cpu"


def run(cmd: list[str], log: Path) -> str:
    """A command of the project, its output into log; refused with its last line if it fails."""
    print(f"$ {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        last = next((line for line in reversed((proc.stdout + proc.stderr).splitlines()) if line.strip()), "no output")
        raise UserError(f"{cmd[0]} failed: {last} (its output: {log})")
    print(f"  done in {time.time() - t0:.0f} s", flush=True)
    return proc.stdout


class Page:
    """serve.py in the background, for as long as the with-block runs."""

    def __init__(self, models: list[str], prompts: Path, votes: Path, log: Path, device: str):
        self.args = [
            *models,
            "--port=0",
            f"--device={device}",
            f"--arena_prompts={prompts}",
            f"--arena_file={votes}",
            "--weights=fp32",
        ]  # as eval.py scores them
        self.log = log

    def __enter__(self) -> str:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        print(f"$ python serve.py {shlex.join(self.args)}", flush=True)
        self.out = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "serve.py", *self.args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.time() + 300
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            self.out.write(line)
            if line.startswith("the playground is at "):
                return line.split()[4]
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise UserError(f"serve.py did not come up (its output: {self.log})")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.out.close()


def collect(cfg: LoopConfig, base: str, tasks: Path, out: Path) -> None:
    """Step 1: the voter's votes on BASE against itself, sampled against greedy (or sampled), on the train questions."""
    voter = ["-m", "tools.arena_voter", f"--max_new_tokens={cfg.max_new_tokens}"]
    with Page([base], tasks.resolve() / "train.jsonl", out / "collect.jsonl", out / "serve-collect.log", cfg.device) as url:
        run(
            [
                *voter,
                f"--url={url}",
                f"--rounds={cfg.collect}",
                f"--first={base}",
                f"--second={base}",
                f"--temperature={cfg.temperature}",
                f"--second_temperature={cfg.second_temperature}",
            ],
            out / "voter-collect.log",
        )


def main(argv: list[str]) -> None:
    cfg = parse_config(LoopConfig(), argv)
    print_config(cfg)
    tasks, out = Path(cfg.tasks), Path(cfg.out)
    if not cfg.base or not Path(cfg.base).is_dir():
        raise UserError(f"pass the chat run to tune with --base=RUN_FOLDER{f'; {cfg.base} is not a folder' if cfg.base else ''}")
    for name in ("train.jsonl", "test.jsonl"):
        if not (tasks / name).is_file():
            raise UserError(f"{tasks / name} not found; make the task set with python -m tools.chat_tasks --out={tasks}")
    check_folder(out, "--out")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; pass a new --out folder (this tool never replaces earlier results)")
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    base, dpo = str(Path(cfg.base).resolve()), str(out / "dpo")
    voter = ["-m", "tools.arena_voter", f"--max_new_tokens={cfg.max_new_tokens}"]

    if cfg.votes:
        if not Path(cfg.votes).is_file():
            raise UserError(f"--votes={cfg.votes} not found; pass an earlier loop's collect.jsonl, or leave it out to vote now")
        (out / "collect.jsonl").write_bytes(Path(cfg.votes).read_bytes())
    else:
        collect(cfg, base, tasks, out)
    run(["prepare.py", "preferences", f"--input={out / 'collect.jsonl'}", f"--base={base}", f"--data_dir={out / 'prefs'}"], out / "prepare.log")
    train = [f"--init_from={base}", f"--data_dir={out / 'prefs'}", f"--out_dir={dpo}", f"--device={cfg.device}", "--compile=False", "--dropout=0.0"]
    train += [
        f"--dpo_beta={cfg.dpo_beta}",
        f"--dpo_sft_weight={cfg.dpo_sft_weight}",
        f"--learning_rate={cfg.learning_rate}",
        f"--max_iters={cfg.max_iters}",
        f"--lr_decay_iters={cfg.max_iters}",
    ]
    train += [
        f"--batch_size={cfg.batch_size}",
        "--gradient_accumulation_steps=1",
        "--warmup_iters=10",
        "--eval_interval=50",
        "--eval_iters=10",
        "--log_interval=50",
    ]
    run(["train.py", *train, "--always_save_checkpoint=True", *shlex.split(cfg.train_args)], out / "train.log")
    with Page([base, dpo], tasks.resolve() / "test.jsonl", out / "judge.jsonl", out / "serve-judge.log", cfg.device) as url:
        run(
            [*voter, f"--url={url}", f"--rounds={cfg.judge}", f"--first={dpo}", f"--second={base}", f"--temperature={cfg.judge_temperature}"],
            out / "voter-judge.log",
        )
    scores = run(
        ["eval.py", "--compare", base, dpo, "--task=chat", f"--chat_file={tasks.resolve() / 'test.jsonl'}", f"--device={cfg.device}"], out / "eval.log"
    )

    collected = read_votes(out / "collect.jsonl").records
    decided = sum(r["winner"] in ("a", "b") for r in collected)
    judged = read_votes(out / "judge.jsonl").records
    print(f"\ncollected {len(collected)} votes of {base} against itself: {decided} preferred one answer (the pairs DPO trained on)")
    print(f"judged {len(judged)} rounds of the DPO run against its start on the test questions:\n")
    try:
        print(format_board(leaderboard(judged)))
    except UserError as e:  # every round both bad: no board, and the scores below still count
        print(f"no leaderboard: {e}; judge more rounds (--judge)")
    print(f"\nexact match on {tasks / 'test.jsonl'}, before (the start) and after (the DPO run):\n")
    print(scores[scores.index("| model |") :].strip())


if __name__ == "__main__":
    cli(main)
