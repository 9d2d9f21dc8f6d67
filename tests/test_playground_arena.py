"""The Arena tab's work without the page (gptsuite/playground_arena.py): prompts files, rounds
whose answers are the Write and Chat tabs' for the recorded settings, in the order the round's
seed draws, and the vote records."""

import json
import random
from pathlib import Path

import pytest
from test_playground import char_model, page, run

from gptsuite.arena import read_votes
from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig
from gptsuite.playground_arena import Arena, Prompt, read_prompts


def test_prompts_files_jsonl_and_txt(tmp_path: Path):
    conversation = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]
    lines = [{"messages": conversation, "task": "add"}, {"messages": conversation[1:2]}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n", encoding="utf-8")
    first, second = read_prompts(tmp_path / "p.jsonl")
    assert first == Prompt(({"role": "user", "content": "What is 2 + 3?"},), "Be terse.", "5", "add")
    assert second == Prompt(({"role": "user", "content": "What is 2 + 3?"},))
    (tmp_path / "p.txt").write_text("ROMEO:\n\n  All:  \n", encoding="utf-8")
    assert [p.messages[0]["content"] for p in read_prompts(tmp_path / "p.txt")] == ["ROMEO:", "All:"]
    bad = {
        "garbage.jsonl": ("nope\n", "line 1 is not JSON"),
        "answered.jsonl": (json.dumps({"messages": conversation[2:]}) + "\n", "does not end with a user's message"),
        "list.jsonl": ("[1]\n", "line 1 is not a conversation"),
        "empty.txt": ("\n\n", "holds no prompts"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=message):
            read_prompts(tmp_path / name)
    with pytest.raises(UserError, match="nowhere.txt not found"):
        read_prompts(tmp_path / "nowhere.txt")


def test_a_round_is_the_write_tabs_samples_in_the_seeds_order_and_its_vote_a_record(tmp_path: Path, char_dataset: Path):
    a, b = char_model(tmp_path / "a", char_dataset, 1), char_model(tmp_path / "b", char_dataset, 2)
    pg = page()
    pg.load(str(a)), pg.load(str(b))
    arena = Arena(pg, tmp_path / "votes.jsonl", read_prompts_of(tmp_path, "All:\nFirst Citizen:\n"), rng=random.Random(3))
    cfg = pg.settings(SamplingConfig(), max_new_tokens=20, temperature=1.0)
    orders = set()
    for n in range(4):
        rnd = arena.new_round("", "", str(a), str(b), cfg)
        draw = random.Random(rnd.seed)  # the round's seed draws the prompt, the sampling seed, the order
        text = ["All:", "First Citizen:"][draw.randrange(2)]
        seed = draw.randrange(2**31)
        assert rnd.swapped == (draw.random() < 0.5) and rnd.shown() == text
        orders.add(rnd.swapped)
        for side in rnd.sides:
            assert side.answer == run(pg, [side.model], text, max_new_tokens=20, temperature=1.0, seed=seed)[0].text and not side.chat
        arena.vote(rnd.id, ["a", "b", "tie", "both_bad"][n])
        record = read_votes(arena.file).records[-1]
        assert record["prompt"] == text and record["chat"] is False and "system" not in record and "reference" not in record
        assert [record[s]["model"] for s in "ab"] == ([str(b), str(a)] if rnd.swapped else [str(a), str(b)])
        assert record["a"]["settings"] == {"temperature": 1.0, "top_k": 200, "top_p": None, "max_new_tokens": 20, "seed": seed}
    assert orders == {True, False}
    board = arena.board()
    assert "| model | rating |" in board and "4 votes in" in board
    with pytest.raises(UserError, match="the prompt is empty; type one, or start serve.py with --arena_prompts"):
        Arena(pg, tmp_path / "v.jsonl").new_round(" ", "", str(a), str(b), cfg)
    with pytest.raises(UserError, match="nowhere is not loaded"):
        arena.new_round("All:", "", str(a), "nowhere", cfg)


def read_prompts_of(folder: Path, text: str) -> list[Prompt]:
    (folder / "prompts.txt").write_text(text, encoding="utf-8")
    return read_prompts(folder / "prompts.txt")
