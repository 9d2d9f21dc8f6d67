"""The arena's leaderboard: win rates per pair of models and a Bradley-Terry rating per model, with
95% bootstrap intervals, from the votes of an arena file (gptsuite/arena.py).

Bradley-Terry: model i beats model j with probability 1 / (1 + 10 ** ((R_j - R_i) / 400)), the Elo
scale (400 points: 10 to 1 odds). The ratings maximize the likelihood of the votes (logistic
regression on the rating differences, fitted by Newton's method with a vanishing L2 penalty that
keeps a model with no wins finite), anchored so that they average 0: only differences mean
anything. A tie counts as half a win for each side; "both bad" says nothing about which is better,
so it is left out of the ratings and the win rates and counted apart. With two models the rating
difference is the log odds of the win rate, 400 * log10(w / (1 - w)).

The intervals: the votes are drawn again with replacement (`resamples` times, seeded), the
ratings and win rates fitted on each draw, and the middle 95% of the results kept. A difference
is likely real when the intervals of two win rates exclude 50%, or those of two ratings do not
overlap (a stricter test). Each rating rests on the votes that include its model.

A contender is a model at its sampling settings: a model the file holds at more than one setting
of temperature, top-k, top-p or max new tokens is a contender per setting, named with the settings
that differ (out-chat @ temperature=0.5). A vote between a model and itself at the same settings
(the seeds differed) is counted apart too.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from gptsuite.errors import UserError

ELO = 400 / np.log(10)  # rating points per unit of natural log odds
PENALTY = 1e-6  # L2 on the ratings (natural scale): finite ratings for a model that never won, nothing else
RATED = ("temperature", "top_k", "top_p", "max_new_tokens")  # the settings that make another contender (not the seed)
SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}  # A's share of a vote


@dataclass
class Pair:
    first: str
    second: str
    wins: int = 0  # the first's
    losses: int = 0
    ties: int = 0
    both_bad: int = 0
    rate: float = float("nan")  # the first's win rate, ties as half a win
    low: float = float("nan")
    high: float = float("nan")

    @property
    def votes(self) -> int:
        return self.wins + self.losses + self.ties


@dataclass
class Board:
    names: list[str]
    ratings: np.ndarray  # Elo points, mean 0
    low: np.ndarray
    high: np.ndarray
    votes: np.ndarray  # the rated votes each model's rating rests on
    pairs: list[Pair] = field(default_factory=list)
    both_bad: int = 0
    itself: int = 0  # votes between a contender and itself
    resamples: int = 0


def contenders(records: list[dict]) -> list[tuple[str, str]]:
    """Each vote's (A, B) as contenders: the model, with the settings that tell its contenders apart."""

    def key(side: dict) -> tuple:
        settings = side.get("settings") or {}
        return side["model"], tuple(settings.get(k) for k in RATED)

    seen: dict[str, set] = {}
    for r in records:
        for side in (r["a"], r["b"]):
            seen.setdefault(side["model"], set()).add(key(side)[1])

    def label(side: dict) -> str:
        model, values = key(side)
        varying = [i for i in range(len(RATED)) if len({v[i] for v in seen[model]}) > 1]
        return f"{model} @ {', '.join(f'{RATED[i]}={values[i]}' for i in varying)}" if varying else model

    return [(label(r["a"]), label(r["b"])) for r in records]


def log_likelihood(r: np.ndarray, i: np.ndarray, j: np.ndarray, w: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Of ratings r (..., m), the last axis a model's; w and n (..., pairs) as in fit."""
    d = r[..., i] - r[..., j]
    return -(w * np.logaddexp(0, -d) + (n - w) * np.logaddexp(0, d)).sum(-1) - PENALTY / 2 * (r * r).sum(-1)


def fit(m: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, n: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry ratings (natural scale, mean 0) of m models from pairs (i[k], j[k]) that met
    n[k] times, i[k] scoring w[k] of them: Newton's method with a backtracking line search.
    w and n may hold a batch of vote counts (draws, pairs): the ratings of each (draws, m), all
    fitted at once (a bootstrap's thousand draws in one)."""
    batch = np.ndim(w) == 2
    w, n = np.atleast_2d(w), np.atleast_2d(n)
    edges = np.zeros((len(i), m))  # the rating difference of each pair: edges @ r
    edges[np.arange(len(i)), i], edges[np.arange(len(j)), j] = 1, -1
    r = np.zeros((len(w), m)) if start is None else np.broadcast_to(start, (len(w), m)).copy()
    f = log_likelihood(r, i, j, w, n)
    for _ in range(200):
        p = 1 / (1 + np.exp(-(r @ edges.T)))
        g = (w - n * p) @ edges - PENALTY * r
        hess = np.einsum("bk,ki,kj->bij", n * p * (1 - p), edges, edges) + PENALTY * np.eye(m)  # minus the Hessian: a graph Laplacian and the penalty
        step, t = np.linalg.solve(hess, g[..., None])[..., 0], np.ones((len(w), 1))
        while True:  # halve each draw's step until its likelihood does not drop
            new = log_likelihood(r + t * step, i, j, w, n)
            worse = (new < f - 1e-12) & (t[:, 0] > 1e-8)
            if not worse.any():
                break
            t[worse] /= 2
        r, f = r + t * step, new
        if np.abs(t * step).max() < 1e-9:
            break
    r = r - r.mean(-1, keepdims=True)
    return r if batch else r[0]


def leaderboard(records: list[dict], resamples: int = 1000, seed: int = 0) -> Board:
    """The board of the votes; a UserError when no vote compares two different contenders."""
    sides = contenders(records)
    names = sorted({x for pair in sides for x in pair})
    index = {name: k for k, name in enumerate(names)}
    cells: Counter = Counter()  # (first, second, first's score) -> votes, first < second
    both_bad, itself = Counter(), 0
    for r, (x, y) in zip(records, sides, strict=True):
        if x == y:
            itself += 1
            continue
        (first, second), swap = sorted((x, y)), x > y
        if r["winner"] == "both_bad":
            both_bad[first, second] += 1
            continue
        score = SCORE[r["winner"]]
        cells[first, second, 1 - score if swap else score] += 1
    if not cells:
        raise UserError(f"no vote rates one model against another ({len(records)} votes: {sum(both_bad.values())} both bad, {itself} a model against itself)")
    keys = list(cells)
    pair_keys = sorted({(a, b) for a, b, _ in keys})
    cell_pair = np.eye(len(pair_keys))[[pair_keys.index((a, b)) for a, b, _ in keys]]  # cell -> its pair, one-hot
    cell_score = np.array([s for _, _, s in keys])
    counts = np.array([cells[k] for k in keys], dtype=float)
    i = np.array([index[a] for a, _ in pair_keys])
    j = np.array([index[b] for _, b in pair_keys])

    def fitted(c: np.ndarray, start=None) -> tuple[np.ndarray, np.ndarray]:
        """Ratings and win rates of vote counts per cell c (cells,), or of a batch of them (draws, cells)."""
        n, w = c @ cell_pair, (c * cell_score) @ cell_pair
        with np.errstate(invalid="ignore", divide="ignore"):
            return fit(len(names), i, j, w, n, start), w / n

    ratings, rates = fitted(counts)
    if resamples:
        draws = np.random.default_rng(seed).multinomial(int(counts.sum()), counts / counts.sum(), size=resamples)
        boot_ratings, boot_rates = fitted(draws.astype(float), ratings)
        low, high = np.percentile(boot_ratings, [2.5, 97.5], axis=0)
        rate_low, rate_high = np.nanpercentile(boot_rates, [2.5, 97.5], axis=0)
    else:
        low = high = np.full(len(names), np.nan)
        rate_low = rate_high = np.full(len(pair_keys), np.nan)
    votes = np.zeros(len(names), dtype=int)
    pairs = []
    for k, (a, b) in enumerate(pair_keys):
        p = Pair(a, b, both_bad=both_bad.pop((a, b), 0), rate=rates[k], low=rate_low[k], high=rate_high[k])
        for (x, y, s), c in cells.items():
            if (x, y) == (a, b):
                p.wins, p.losses, p.ties = p.wins + c * (s == 1), p.losses + c * (s == 0), p.ties + c * (s == 0.5)
        votes[[index[a], index[b]]] += p.votes
        pairs.append(p)
    pairs += [Pair(a, b, both_bad=c) for (a, b), c in both_bad.items()]  # pairs that were only ever both bad
    return Board(names, ELO * ratings, ELO * low, ELO * high, votes, pairs, sum(p.both_bad for p in pairs), itself, resamples)


def format_board(board: Board) -> str:
    """The board as markdown: the ratings best first, then the pairs."""
    order = np.argsort(-board.ratings, kind="stable")
    lines = [
        "| model | rating | 95% interval | votes |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {board.names[k]} | {board.ratings[k]:+.0f} | {board.low[k]:+.0f} .. {board.high[k]:+.0f} | {board.votes[k]} |" for k in order),
        "",
        "| pair | wins | losses | ties | both bad | win rate | 95% interval |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in board.pairs:
        rate = f"{p.rate:.1%} | {p.low:.1%} .. {p.high:.1%}" if p.votes else "- | -"
        lines.append(f"| {p.first} vs {p.second} | {p.wins} | {p.losses} | {p.ties} | {p.both_bad} | {rate} |")
    lines += [
        "",
        f"Ratings: Bradley-Terry on the Elo scale (400 points: 10 to 1 odds), averaging 0; a tie is half a win for each side. "
        f"Intervals: the middle 95% of {board.resamples} bootstrap draws of the votes. "
        f"Left out: {board.both_bad} votes both bad, {board.itself} votes of a model against itself.",
    ]
    return "\n".join(lines)
