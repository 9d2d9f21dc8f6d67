"""Preference pairs (prepare.py preferences) and DPO training on them: the formats, a pair written
whole or not at all, the reference (LoRA's base, a precomputed cache), resume, refusals."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import train
from conftest import TINY_MODEL_ARGS
from gptsuite.arena import append_vote, now, vote_line
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError
from gptsuite.pipeline import prepare_documents
from gptsuite.sources import load_dataset_module
from gptsuite.tokenizer import GPT2Tokenizer

PAIRS = [(f"What is {i} + {i}?", str(2 * i), str(2 * i + 1)) for i in range(12)]


def prepare(tmp_path: Path, records: list, name: str, **options) -> Path:
    src = tmp_path / f"{name}.jsonl"
    if not src.exists():
        src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    module = load_dataset_module("preferences")
    out = tmp_path / name
    prepare_documents(module.corpus(module.Config(input=str(src), **options), out), out)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in ("train.bin", "val.bin", "train.mask.bin", "train.starts.bin", "val.mask.bin", "val.starts.bin")}


def vote(prompt: str, good: str, bad: str, winner: str) -> dict:
    a, b = (good, bad) if winner != "b" else (bad, good)
    return {"time": now(), "prompt": prompt, "chat": True, "a": {"model": "m1", "answer": a}, "b": {"model": "m2", "answer": b}, "winner": winner}


def test_every_format_gives_the_same_pairs_and_the_mask_counts_each_answer(tmp_path: Path):
    strings = [{"prompt": q, "chosen": good, "rejected": bad} for q, good, bad in PAIRS]
    messages = [
        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": bad}]}
        for q, good, bad in PAIRS
    ]
    implicit = [
        {
            "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": good}],
            "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}],
        }
        for q, good, bad in PAIRS
    ]
    votes = [vote(q, good, bad, "ab"[i % 2]) for i, (q, good, bad) in enumerate(PAIRS)]
    votes[3:3] = [vote("a tie", "x", "y", "tie"), vote("both bad", "x", "y", "both_bad")]  # no preference: left out before the split
    for v in votes:  # the page's file, as the page writes it, with a vote cut short by a kill at its end
        append_vote(tmp_path / "arena.jsonl", v)
    with open(tmp_path / "arena.jsonl", "ab") as f:
        f.write(vote_line(vote("torn", "x", "y", "a"))[:30])
    want = files(prepare(tmp_path, strings, "strings"))
    for name, records in (("messages", messages), ("implicit", implicit), ("arena", votes)):
        assert files(prepare(tmp_path, records, name)) == want, name
    meta = json.loads((tmp_path / "arena" / "meta.json").read_text())
    assert meta["objective"] == "dpo" and meta["undecided_votes"] == 2

    tok, folder = GPT2Tokenizer(), tmp_path / "strings"
    ids, mask = np.fromfile(folder / "train.bin", dtype=np.uint16), np.fromfile(folder / "train.mask.bin", dtype=np.uint8)
    starts = np.append(np.fromfile(folder / "train.starts.bin", dtype=np.int64), len(ids))
    documents = [tok.decode(ids[a:b].tolist()) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    counted = [tok.decode(ids[a:b][mask[a:b] == 1].tolist()) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert len(documents) % 2 == 0
    for chosen, rejected, c_counted, r_counted in zip(documents[::2], documents[1::2], counted[::2], counted[1::2], strict=True):
        q = chosen.split("<|user|>\n")[1].split("<|endoftext|>")[0]
        _, good, bad = next(p for p in PAIRS if p[0] == q)
        assert chosen == f"<|user|>\n{q}<|endoftext|><|assistant|>\n{good}<|endoftext|>"  # the chat template, by hand
        assert rejected == f"<|user|>\n{q}<|endoftext|><|assistant|>\n{bad}<|endoftext|>"
        assert (c_counted, r_counted) == (f"{good}<|endoftext|>", f"{bad}<|endoftext|>")  # only the answers count


def test_a_pair_is_written_whole_or_not_at_all(tmp_path: Path):
    records = [{"prompt": q, "chosen": good, "rejected": bad} for q, good, bad in PAIRS]
    records[4]["rejected"] = "far too long an answer " * 10  # its chosen one fits the block, its rejected one does not
    with pytest.raises(UserError, match=r"long\.jsonl line 5: is \d+ tokens, longer than --block_size=24; fix the record, or pass --skip_bad=True"):
        prepare(tmp_path, records, "long", block_size=24)
    assert not (tmp_path / "long" / "train.bin").exists()
    out = prepare(tmp_path, records, "skipped", block_size=24, skip_bad=True)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped_records"] == {"longer than block_size": 1}
    assert meta["documents"]["train"] + meta["documents"]["val"] == 2 * (len(PAIRS) - 1)  # neither of its two documents


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "2+2?", "chosen": "4", "rejected": "4"}, "has the same chosen and rejected answer"),
        ({"prompt": "2+2?", "chosen": "4"}, "has no field 'rejected'"),
        ({"chosen": "4", "rejected": "5"}, "has no prompt field, and its chosen and rejected are not conversations"),
        ({"prompt": "2+2?", "chosen": "4", "rejected": 5}, "has an answer that is neither a text nor a list of messages"),
    ],
)
def test_bad_pairs_are_refused_with_their_place(tmp_path: Path, record: dict, message: str):
    records = [{"prompt": "1+1?", "chosen": "2", "rejected": "3"}, record]
    if "prompt" not in record:
        records = [
            {
                "chosen": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
                "rejected": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "3"}],
            },
            record,
        ]
    with pytest.raises(UserError, match=f"bad.jsonl line 2: {message}"):
        prepare(tmp_path, records, "bad")


def test_votes_that_prefer_nothing_are_no_dataset(tmp_path: Path):
    with pytest.raises(UserError, match="the 2 votes in .* are all ties or both bad: no answer was preferred; vote A or B on some rounds"):
        prepare(tmp_path, [vote("q", "x", "y", "tie"), vote("q", "x", "y", "both_bad")], "ties")


@pytest.fixture
def chat_run(tmp_path: Path, chat_dataset: Path) -> Path:
    """A character-level run tuned (briefly) on chat_dataset's conversations."""
    args = [f"--data_dir={chat_dataset}", *TINY_MODEL_ARGS, "--block_size=64", "--gradient_accumulation_steps=1", "--dropout=0.0"]
    train.main(
        [*args, f"--out_dir={tmp_path / 'chat-run'}", "--max_iters=2", "--eval_iters=1", "--eval_interval=1000", "--warmup_iters=0", "--lr_decay_iters=2"]
    )
    return tmp_path / "chat-run"


def dpo_args(tmp_path: Path, chat_run: Path, *more: str) -> list[str]:
    records = [{"prompt": f"{i}+{i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(40)]
    data = prepare(tmp_path, records, "prefs", base=str(chat_run), block_size=64, val_fraction=0.2)
    return [
        f"--data_dir={data}",
        f"--init_from={chat_run}",
        *TINY_MODEL_ARGS,
        "--block_size=64",
        "--gradient_accumulation_steps=2",
        "--dropout=0.0",
        "--learning_rate=3e-3",
        *more,
    ]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_under_lora_starts_at_log2_against_its_base_and_learns_the_preference(tmp_path: Path, chat_run: Path):
    """At the start the adapters are zero, so the policy is its reference: every log-ratio is 0 and
    the loss log(2), with no pair's chosen reward above its rejected one. Then it learns them."""
    args = dpo_args(
        tmp_path,
        chat_run,
        "--lora_rank=4",
        "--lora_dropout=0.0",
        "--eval_iters=4",
        "--eval_interval=15",
        "--warmup_iters=0",
        "--lr_decay_iters=30",
        "--learning_rate=2e-2",
        "--dpo_beta=1.0",
    )
    train.main([*args, f"--out_dir={tmp_path / 'dpo'}", "--max_iters=30", "--log_interval=15"])
    evals = [r for r in metrics(tmp_path / "dpo") if "val_loss" in r]
    assert evals[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-6) and evals[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert evals[0]["val_rewards/accuracies"] == 0 and evals[0]["val_rewards/margins"] == pytest.approx(0, abs=1e-6)
    assert evals[-1]["train_loss"] < 0.6 and evals[-1]["train_rewards/accuracies"] > 0.7  # what it was shown, it now prefers
    assert load_checkpoint(tmp_path / "dpo")["config"]["objective"] == ""  # the data said dpo: a resume asks it again


def test_a_precomputed_reference_gives_the_same_run_and_resume_continues_it_exactly(tmp_path: Path, chat_run: Path):
    """Full fine-tuning: the reference's log-probs computed once (its copy of the weights let go)
    train as the reference model computed every step does; a run stopped and resumed (with LoRA,
    whose reference is its base) ends where the one that did not stop ends."""
    base = dpo_args(tmp_path, chat_run, "--eval_iters=2", "--eval_interval=2", "--warmup_iters=0", "--lr_decay_iters=4", "--log_interval=1", "--max_iters=4")
    train.main([*base, f"--out_dir={tmp_path / 'each-step'}"])
    train.main([*base, f"--out_dir={tmp_path / 'cached'}", "--dpo_precompute_ref=True"])
    each, cached = metrics(tmp_path / "each-step"), metrics(tmp_path / "cached")
    assert len(each) == len(cached)
    for a, b in zip(each, cached, strict=True):
        for k in ("loss", "val_loss", "rewards/margins", "val_rewards/chosen"):
            if k in a:
                assert b[k] == pytest.approx(a[k], abs=1e-5), k

    lora = [*base, "--lora_rank=4", "--lora_dropout=0.0"]
    train.main([*lora, f"--out_dir={tmp_path / 'straight'}"])
    for args, stopped, straight in ((lora, "stopped", "straight"), (base, "full-stopped", "each-step")):  # LoRA; full fine-tuning
        train.main([*args, f"--out_dir={tmp_path / stopped}", "--max_iters=2"])
        train.main(["--init_from=resume", f"--out_dir={tmp_path / stopped}", "--max_iters=4"])
        want, got = load_checkpoint(tmp_path / straight), load_checkpoint(tmp_path / stopped)
        assert got["iter_num"] == 4
        for k, v in want["model"].items():
            assert (v == got["model"][k]).all(), (stopped, k)

    # the full run's reference is its starting weights, loaded again on resume: refused if they changed
    shutil.copy(tmp_path / "each-step" / "ckpt.pt", chat_run / "ckpt.pt")
    with pytest.raises(
        UserError, match=r"compares with the weights it started from, .*ckpt.pt \(sha256 \w+\), which are now \w+: put that file back, or start a new run"
    ):
        train.main(["--init_from=resume", f"--out_dir={tmp_path / 'full-stopped'}", "--max_iters=6"])


def test_an_objective_is_refused_on_data_it_does_not_train_on(tmp_path: Path, chat_run: Path, char_dataset: Path):
    args = dpo_args(tmp_path, chat_run, "--max_iters=1")
    with pytest.raises(UserError, match="holds preference pairs, which objective=next_token does not train on: drop --objective"):
        train.main([*args, f"--out_dir={tmp_path / 'a'}", "--objective=next_token"])
    with pytest.raises(UserError, match=r"objective=dpo trains on preference pairs \(python prepare.py preferences --input=...\); .* holds text"):
        train.main([f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, f"--out_dir={tmp_path / 'b'}", "--objective=dpo", "--max_iters=1"])
    with pytest.raises(UserError, match="pass --block_size=\\d+ or more"):
        train.main([*args, f"--out_dir={tmp_path / 'c'}", "--block_size=8"])
