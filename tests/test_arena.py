"""The arena's votes file (gptsuite/arena.py) and leaderboard (gptsuite/ratings.py, tools.arena):
durable appends that never glue onto a torn line nor interleave, a reader that skips torn lines and
refuses others, Bradley-Terry ratings against known strengths, a hand-computed two-model case and
Hunter's MM algorithm, bootstrap intervals, the command's bad inputs, and kill -9 trials."""

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import run_entry
from gptsuite.arena import append_vote, now, preference, read_votes
from gptsuite.errors import UserError
from gptsuite.ratings import ELO, contenders, format_board, leaderboard


def vote(a: str, b: str, winner: str, answer_a: str = "x", answer_b: str = "y", settings_a: dict | None = None, settings_b: dict | None = None) -> dict:
    side = lambda model, answer, s: {"model": model, "chat": False, "answer": answer, "settings": {"temperature": 0.8, "seed": 1, **(s or {})}}  # noqa: E731
    return {"time": now(), "prompt": "p", "chat": False, "a": side(a, answer_a, settings_a), "b": side(b, answer_b, settings_b), "winner": winner}


def test_votes_are_lines_read_back_and_a_torn_line_is_skipped_not_glued_onto(tmp_path: Path):
    path = tmp_path / "votes" / "arena.jsonl"
    path.parent.mkdir()
    append_vote(path, vote("m1", "m2", "a", answer_a="héllo\nworld"))
    whole = path.read_bytes()
    assert whole.endswith(b"\n") and whole.count(b"\n") == 1  # one line: the answer's newline is escaped
    with open(path, "ab") as f:  # a writer killed mid-write: a prefix of a vote, no newline
        f.write(whole[: len(whole) // 2])
    append_vote(path, vote("m1", "m2", "tie"))
    with open(path, "ab") as f:  # killed within its first bytes
        f.write(b'{"ti')
    append_vote(path, vote("m1", "m2", "b"))
    votes = read_votes(path)
    assert [r["winner"] for r in votes.records] == ["a", "tie", "b"] and votes.records[0]["a"]["answer"] == "héllo\nworld"
    assert votes.torn == [2, 4] and "skipped 2 torn lines" in votes.note() and "line 2, 4" in votes.note()
    assert preference(votes.records[0]) == ("héllo\nworld", "y") and preference(votes.records[1]) is None
    assert preference(vote("m1", "m2", "b")) == ("y", "x")


def test_threads_appending_at_once_never_interleave(tmp_path: Path):
    path = tmp_path / "arena.jsonl"

    def many(t: int) -> None:
        for n in range(15):
            append_vote(path, vote(f"t{t}", "other", "a", answer_a=f"{t}-{n};" * 20_000))  # ~150 KB lines

    threads = [threading.Thread(target=many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    votes = read_votes(path)
    assert len(votes.records) == 60 and not votes.torn
    for r in votes.records:
        unit = r["a"]["answer"].split(";")[0]
        assert r["a"]["answer"] == f"{unit};" * 20_000 and unit.startswith(r["a"]["model"][1:] + "-")


def test_the_reader_refuses_what_is_not_a_vote(tmp_path: Path):
    path = tmp_path / "arena.jsonl"
    good = json.dumps(vote("m1", "m2", "a"))
    cases = [
        ("not json at all", "line 2 is not JSON"),
        ('{"time": "t", "prompt": "p", "a": {"model": "m", "answer": ""}, "b": {"model": "n", "answer": ""}, "winner": "c"}', "winner 'c', not one of"),
        ('{"time": "t", "prompt": "p", "a": {"model": "m"}, "b": {"model": "n", "answer": ""}, "winner": "a"}', 'no answer "a"'),
        ("[1, 2]", "line 2 is not a JSON object"),
    ]
    for line, message in cases:
        path.write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
        with pytest.raises(UserError, match=message):
            read_votes(path)
    with pytest.raises(UserError, match="not found; pass the votes file the page writes"):
        read_votes(tmp_path / "nowhere.jsonl")


def simulate(strengths: dict[str, float], n: int, seed: int, tie: float = 0.0) -> list[dict]:
    """Votes between random pairs drawn from Bradley-Terry with these Elo ratings; a share `tie` of
    the votes are ties (a coin decides which of its sides would have won: no bias)."""
    rng, names = random.Random(seed), list(strengths)
    records = []
    for _ in range(n):
        x, y = rng.sample(names, 2)
        p = 1 / (1 + 10 ** ((strengths[y] - strengths[x]) / 400))
        records.append(vote(x, y, "tie" if rng.random() < tie else "a" if rng.random() < p else "b"))
    return records


def test_ratings_recover_known_strengths():
    true = {"m0": 0.0, "m1": 120.0, "m2": -200.0, "m3": 310.0}
    board = leaderboard(simulate(true, 20_000, seed=1), resamples=200)
    fitted = dict(zip(board.names, board.ratings, strict=True))
    expected = np.array(list(true.values())) - np.mean(list(true.values()))
    assert np.abs(np.array([fitted[k] for k in true]) - expected).max() < 20
    assert abs(np.mean(board.ratings)) < 1e-6  # anchored: they average 0
    assert all(lo <= r <= hi for r, lo, hi in zip(board.ratings, board.low, board.high, strict=True))
    assert board.votes.sum() == 2 * 20_000


def test_two_models_rating_difference_is_the_log_odds_of_the_win_rate():
    records = [vote("x", "y", "a")] * 27 + [vote("y", "x", "a")] * 9 + [vote("x", "y", "tie")] * 4 + [vote("x", "y", "both_bad")] * 5
    board = leaderboard(records, resamples=0)
    w = (27 + 2) / 40  # ties as half a win; both bad left out
    assert board.ratings[0] - board.ratings[1] == pytest.approx(400 * np.log10(w / (1 - w)), abs=1e-3)
    (pair,) = board.pairs
    assert (pair.first, pair.second, pair.wins, pair.losses, pair.ties, pair.both_bad, pair.rate) == ("x", "y", 27, 9, 4, 5, w)
    assert board.both_bad == 5 and list(board.votes) == [40, 40]


def mm_reference(records: list[dict], iters: int = 5000) -> dict[str, float]:
    """Hunter's MM algorithm for Bradley-Terry (2004), ties as half wins: an independent fit."""
    names = sorted({r[s]["model"] for r in records for s in "ab"})
    wins, games = {n: 0.0 for n in names}, {}
    for r in records:
        a, b, s = r["a"]["model"], r["b"]["model"], {"a": 1.0, "b": 0.0, "tie": 0.5}[r["winner"]]
        wins[a] += s
        wins[b] += 1 - s
        games[a, b] = games.get((a, b), 0) + 1
        games[b, a] = games.get((b, a), 0) + 1
    p = {n: 1.0 for n in names}
    for _ in range(iters):
        p = {i: wins[i] / sum(c / (p[i] + p[j]) for (k, j), c in games.items() if k == i) for i in names}
        mean_log = np.mean(np.log(list(p.values())))
        p = {i: v / np.exp(mean_log) for i, v in p.items()}
    return {i: ELO * np.log(v) for i, v in p.items()}


def test_ratings_equal_hunters_mm_algorithm():
    records = simulate({"a": 0.0, "b": 50.0, "c": -80.0}, 300, seed=2, tie=0.2)
    board = leaderboard(records, resamples=0)
    reference = mm_reference(records)
    assert np.allclose(board.ratings, [reference[n] for n in board.names], atol=0.01)


def test_bootstrap_intervals_are_seeded_and_narrow_with_more_votes():
    true = {"x": 100.0, "y": 0.0}
    small, large = simulate(true, 200, seed=3), simulate(true, 3200, seed=3)
    a, b = leaderboard(small, 300, seed=5), leaderboard(small, 300, seed=5)
    assert np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)
    width = lambda board: board.high[0] - board.low[0]  # noqa: E731
    assert 2.5 < width(a) / width(leaderboard(large, 300, seed=5)) < 6  # 16 times the votes: about a quarter as wide
    p = a.pairs[0]
    assert p.low < p.rate < p.high


def test_two_models_rating_interval_is_the_win_rate_interval_in_log_odds():
    # each draw's rating difference is the log odds of its win rate, so the percentiles of the
    # ratings (fitted) are those of the win rates (counted), mapped: an independent check of every draw's fit
    records = simulate({"x": 100.0, "y": 0.0}, 120, seed=4, tie=0.2)
    board = leaderboard(records, 400, seed=6)
    (pair,) = board.pairs
    half_log_odds = lambda rate: ELO / 2 * np.log(rate / (1 - rate))  # noqa: E731  (the first's rating, the two averaging 0)
    first = board.names.index(pair.first)
    assert board.low[first] == pytest.approx(half_log_odds(pair.low), abs=0.5)
    assert board.high[first] == pytest.approx(half_log_odds(pair.high), abs=0.5)
    assert board.high[first] - board.low[first] > 50


def test_a_model_at_two_settings_is_two_contenders():
    records = [
        vote("m", "m", "a", settings_a={"temperature": 0.5}, settings_b={"temperature": 1.2}),
        vote("m", "n", "b", settings_a={"temperature": 1.2}),
        vote("n", "n", "tie", settings_b={"seed": 9}),  # the same settings but the seed: a model against itself
    ]
    assert contenders(records) == [("m @ temperature=0.5", "m @ temperature=1.2"), ("m @ temperature=1.2", "n"), ("n", "n")]
    board = leaderboard(records, resamples=10)
    assert board.itself == 1 and "1 votes of a model against itself" in format_board(board)
    with pytest.raises(UserError, match=r"no vote rates one model against another \(2 votes: 1 both bad, 1 a model against itself\)"):
        leaderboard([vote("m", "n", "both_bad"), vote("n", "n", "a")])


def test_the_command_prints_the_board(tmp_path: Path):
    """(Its bad inputs are in tests/test_bad_inputs.py.)"""
    path = tmp_path / "arena.jsonl"
    for r in simulate({"x": 100.0, "y": 0.0}, 60, seed=4):
        append_vote(path, r)
    with open(path, "ab") as f:
        f.write(b'{"time": "2026')  # torn
    out = run_entry("-m", "tools.arena", str(path), "--resamples=100").stdout
    assert "60 votes in" in out and "skipped 1 torn line" in out and "| x vs y |" in out and "| x | +" in out


@pytest.mark.slow
def test_kill_9_while_votes_are_written_never_loses_an_acknowledged_one(tmp_path: Path):
    """20 trials of 2 writer processes killed at random; tests/stress_arena.py runs many more."""
    from stress_arena import run_trials

    stats = run_trials(20, tmp_path, seed=0, writers=2, wait=0.05, big=20_000)
    assert not stats["failures"], stats["failures"]
    assert stats["trials"] == 20 and stats["votes"] > 20
