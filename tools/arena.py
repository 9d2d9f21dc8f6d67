"""
The arena's leaderboard from its votes file: win rates per pair of models and a Bradley-Terry
rating per model with 95% bootstrap intervals, and the votes each rests on.

    python -m tools.arena arena.jsonl
    python -m tools.arena arena.jsonl --resamples=5000 --seed=1

The file is what the page's Arena tab writes (serve.py --arena_file; the format is in
gptsuite/arena.py). Ties count as half a win for each side; "both bad" votes are counted apart;
torn lines (a vote cut short by a kill) are skipped and said. How the ratings and intervals are
computed: gptsuite/ratings.py and docs/playground.md#the-leaderboard.
"""

from dataclasses import dataclass

from configurator import option, parse_config
from gptsuite.arena import read_votes
from gptsuite.errors import UserError, cli
from gptsuite.ratings import format_board, leaderboard


@dataclass
class ArenaConfig:
    resamples: int = option(1000, ge=0)  # bootstrap draws of the votes for the 95% intervals (0: none)
    seed: int = option(0, ge=0)  # of the bootstrap draws


def main(argv: list[str]) -> None:
    files = [a for a in argv if not a.startswith("-")]
    cfg = parse_config(ArenaConfig(), [a for a in argv if a not in files], prog="python -m tools.arena FILE")
    if len(files) != 1:
        raise UserError(f"pass one votes file, got {len(files)}: python -m tools.arena arena.jsonl (the page's --arena_file)")
    votes = read_votes(files[0])
    if votes.note():
        print(votes.note())
    if not votes.records:
        raise UserError(f"{files[0]} holds no votes yet; vote in the page's Arena tab first (serve.py --arena_file={files[0]})")
    print(f"{len(votes.records)} votes in {files[0]}\n")
    print(format_board(leaderboard(votes.records, cfg.resamples, cfg.seed)))


if __name__ == "__main__":
    cli(main)
