"""
A scripted voter for the page's Arena tab: asks a served page for rounds drawn from its prompts
file (tasks with checkable answers, as tools/chat_tasks.py writes them) and votes by a rule that
can be checked: the answer that is the task's expected one wins, a tie when both are, "both bad"
when neither is (chat_eval's rule: equal once stripped of surrounding whitespace).

    python serve.py out-chat out-dpo --arena_prompts=data/tasks/test.jsonl --arena_file=votes.jsonl
    python -m tools.arena_voter --url=http://127.0.0.1:7860 --rounds=200 --first=out-chat --second=out-dpo
    python -m tools.arena votes.jsonl

It goes through the page's API (gradio_client: arena_round, then arena_vote), as a person's
votes do, so its votes land in the page's --arena_file. --first and --second name two of the
page's models (empty: the page's first two); one model against itself at another temperature
or seed: --second_temperature, --second_seed. An empty --seed gives every round a seed of its own.
"""

from collections import Counter
from dataclasses import dataclass

from configurator import option, parse_config
from gptsuite.errors import UserError, cli


@dataclass
class VoterConfig:
    url: str = "http://127.0.0.1:7860"  # the page, as serve.py printed it
    rounds: int = option(20, gt=0)  # rounds to ask for and vote on
    first: str = ""  # one of the page's models (empty: the page's first)
    second: str = ""  # the other (empty: the page's second)
    temperature: float = option(0.0, ge=0)  # 0: greedy, each model's best answer
    top_k: int = option(0, ge=0)  # 0: every token
    max_new_tokens: int = option(32, gt=0)  # per answer; a task's answer is short
    seed: int | None = option(None, ge=0)  # the sampling seed of every round (None: the round's own)
    second_temperature: float | None = option(None, ge=0)  # the second model's, when not the same
    second_seed: int | None = option(None, ge=0)  # the second model's, when not the same
    verbose: bool = False  # a line per round


def judge(reference: str, a: str, b: str) -> str:
    """The vote: the answer that is the reference wins; a tie when both are; both_bad when neither is."""
    from gptsuite.chat import correct  # chat_eval's rule (torch-free: the voter is a client)

    right_a, right_b = correct(a, reference), correct(b, reference)
    return "tie" if right_a and right_b else "a" if right_a else "b" if right_b else "both_bad"


def connect(url: str):
    import gradio_client
    import httpx

    try:
        return gradio_client.Client(url, verbose=False)
    except (httpx.HTTPError, OSError, ValueError) as e:
        raise UserError(
            f"cannot reach the page at {url} ({type(e).__name__}); start it with python serve.py MODELS --arena_prompts=FILE.jsonl, and pass the address it prints as --url"
        ) from None


def main(argv: list[str]) -> None:
    cfg = parse_config(VoterConfig(), argv)
    from gradio_client.exceptions import AppError

    client = connect(cfg.url)
    names = {k: v for k, v in (("first", cfg.first), ("second", cfg.second)) if v}
    ask = dict(prompt="", system="", temperature=cfg.temperature, top_k=cfg.top_k, top_p=1.0, max_new_tokens=cfg.max_new_tokens, stop="")
    other = {k: "" if v is None else str(v) for k, v in (("second_temperature", cfg.second_temperature), ("second_seed", cfg.second_seed))}
    ask |= dict(seed=cfg.seed, **other, **names)
    votes, board = Counter(), ""
    try:
        for n in range(1, cfg.rounds + 1):
            _, reference, a, b, round_id, _ = client.predict(**ask, api_name="/arena_round")
            if not reference:
                raise UserError(
                    "the page's round has no reference answer; start serve.py with --arena_prompts=FILE.jsonl of tasks with answers (python -m tools.chat_tasks)"
                )
            winner = judge(reference, a, b)
            _, board = client.predict(round_id, winner, api_name="/arena_vote")
            votes[winner] += 1
            if cfg.verbose:
                print(f"round {n}: expected {reference!r}, A {a.strip()!r}, B {b.strip()!r}: {winner}", flush=True)
    except AppError as e:
        raise UserError(f"the page refused: {e}") from None
    one = votes["a"] + votes["b"]
    print(f"{cfg.rounds} votes: {one} for the one right answer, {votes['tie']} ties (both right), {votes['both_bad']} both bad (both wrong)\n")
    print(board)


if __name__ == "__main__":
    cli(main)
