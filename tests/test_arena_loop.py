"""The whole loop from votes to a tuned model, offline (tools.arena_loop): a scripted voter judges a
chat run on the served page, its votes become preference pairs, DPO trains on them and learns the
preference they hold (on val pairs it never trained on), and the DPO run meets its start in the
arena under the same voter. (Whether it then wins is measured, not asserted: docs/training.md.)"""

import json
from pathlib import Path

import pytest

import train
from gptsuite.arena import read_votes
from gptsuite.pipeline import prepare_documents
from gptsuite.sources import load_dataset_module
from tools.arena_loop import main as loop


@pytest.mark.slow
def test_votes_on_the_page_train_a_model_that_wins_the_arena(tmp_path: Path, capsys):
    # a chat run that has half learned its answers (i+i? -> 2i): greedy it is mostly right, sampled often not
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    records = [{"messages": [{"role": "user", "content": f"{i}+{i}?"}, {"role": "assistant", "content": str(2 * i)}], "task": "add"} for i in range(24)]
    for name in ("train.jsonl", "test.jsonl"):  # the same questions: what is judged is whether the votes moved the model
        (tasks / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    module = load_dataset_module("chat")
    prepare_documents(module.corpus(module.Config(input=str(tasks / "train.jsonl"), tokenizer="char", block_size=64), tmp_path / "chat"), tmp_path / "chat")
    shape = ["--device=cpu", "--compile=False", "--n_layer=2", "--n_head=2", "--n_embd=48", "--block_size=96", "--batch_size=16", "--dropout=0.0"]
    schedule = [
        "--max_iters=150",
        "--lr_decay_iters=150",
        "--warmup_iters=10",
        "--learning_rate=1e-2",
        "--gradient_accumulation_steps=1",
        "--eval_interval=150",
        "--eval_iters=1",
    ]
    train.main([f"--data_dir={tmp_path / 'chat'}", f"--out_dir={tmp_path / 'base'}", *shape, *schedule, "--loss_on=all"])

    dpo = ["--collect=30", "--judge=8", "--temperature=1.5", "--max_new_tokens=16", "--max_iters=20", "--learning_rate=3e-3"]
    loop(
        [
            f"--base={tmp_path / 'base'}",
            f"--tasks={tasks}",
            f"--out={tmp_path / 'loop'}",
            *dpo,
            "--dpo_beta=0.5",
            "--dpo_sft_weight=1.0",
            "--batch_size=8",
            "--train_args=--block_size=96",
        ]
    )
    out = capsys.readouterr().out

    collected, judged = read_votes(tmp_path / "loop" / "collect.jsonl").records, read_votes(tmp_path / "loop" / "judge.jsonl").records
    assert (len(collected), len(judged)) == (30, 8)
    assert all(r["a"]["model"] == r["b"]["model"] == str(tmp_path / "base") for r in collected)
    pairs = json.loads((tmp_path / "loop" / "prefs" / "meta.json").read_text())["documents"]
    assert pairs["train"] + pairs["val"] == 2 * sum(r["winner"] in ("a", "b") for r in collected)  # each decided vote a pair
    for r in judged:  # the rule, on what the voter was shown: the right answer wins, both right a tie, both wrong both bad
        right = tuple(r[side]["answer"].strip() == r["reference"] for side in "ab")
        assert r["winner"] == {(True, True): "tie", (True, False): "a", (False, True): "b", (False, False): "both_bad"}[right]
    assert all({r["a"]["model"], r["b"]["model"]} == {str(tmp_path / "base"), str(tmp_path / "loop" / "dpo")} for r in judged)  # the DPO run against its start
    evals = [json.loads(line) for line in (tmp_path / "loop" / "dpo" / "metrics.jsonl").read_text().splitlines() if "val_loss" in json.loads(line)]
    assert evals[-1]["train_rewards/accuracies"] > 0.5 and evals[-1]["train_rewards/margins"] > 0  # it learned the votes' preference
    print(out)
    rated = sum(r["winner"] != "both_bad" for r in judged)
    assert ("| pair |" in out) == (rated > 0) and ("no leaderboard: no vote rates one model against another" in out) == (rated == 0)
    assert "| model | exact match |" in out
