"""The Arena tab of the playground page (serve.py) without the page: two answers to one prompt,
shown as A and B in a random order with the models' names hidden, a vote, then the names.

A round: a prompt (typed, or drawn from serve.py's --arena_prompts file: a .jsonl of conversations
as tools/chat_tasks.py writes them, each asked up to its last assistant message, which is kept as
the reference answer; or a .txt of one prompt a line), two loaded models (or one model at two
settings: a second temperature or seed), each answering as the page's other tabs do: in its chat
template when it carries one (playground_chat.reply, the system message first), else by continuing
the text (Playground.generate, the Write tab's). The round's seed (recorded) draws the A/B order,
the prompt from the file and, when the seed box is empty, the sampling seed. A vote is appended to
the votes file (gptsuite/arena.py has its format); a round takes one vote.
"""

import json
import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from gptsuite.arena import SETTINGS, WINNERS, append_vote, now, read_votes
from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig
from gptsuite.playground import Playground
from gptsuite.playground_chat import reply
from gptsuite.ratings import format_board, leaderboard

KEEP_ROUNDS = 1000  # rounds a page remembers for their votes; an older one is refused
PROMPTS_FORMAT = '.jsonl ({"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]} a line) or .txt (a prompt a line)'


@dataclass(frozen=True)
class Prompt:
    messages: tuple  # the conversation to answer (no system message), ending with the user's
    system: str = ""
    reference: str | None = None  # the expected answer, from a task file
    task: str | None = None


@dataclass
class Side:
    model: str
    cfg: SamplingConfig
    chat: bool = False  # asked in the model's chat template (else its text continued)
    answer: str = ""

    def record(self) -> dict:
        return {"model": self.model, "chat": self.chat, "answer": self.answer, "settings": {k: getattr(self.cfg, k) for k in SETTINGS}}


@dataclass
class Round:
    id: str
    seed: int
    prompt: Prompt
    sides: list[Side]  # as shown: A, B
    swapped: bool  # A is the second model chosen
    notes: list[str] = field(default_factory=list)
    winner: str | None = None

    def shown(self) -> str:
        """The prompt as the page shows it."""
        turns = [("system", self.prompt.system)] * bool(self.prompt.system) + [(m["role"], m["content"]) for m in self.prompt.messages]
        return turns[0][1] if len(turns) == 1 else "\n\n".join(f"{role}: {text}" for role, text in turns)

    def record(self, winner: str) -> dict:
        chat = all(s.chat for s in self.sides)
        record = {"time": now(), "round": self.id, "round_seed": self.seed, "swapped": self.swapped}
        record["prompt"] = [dict(m) for m in self.prompt.messages] if chat else self.prompt.messages[-1]["content"]
        if self.prompt.system and chat:
            record["system"] = self.prompt.system
        record |= {"chat": chat, "a": self.sides[0].record(), "b": self.sides[1].record(), "winner": winner}
        if self.prompt.reference is not None:
            record["reference"] = self.prompt.reference
        if self.prompt.task:
            record["task"] = self.prompt.task
        return record

    def reveal(self) -> str:
        def who(side: Side) -> str:
            s = side.cfg
            return f"**{side.model}** (temperature {s.temperature}, top-k {s.top_k}, top-p {s.top_p}, seed {s.seed})"

        said = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both are bad"}[self.winner]
        return f"A was {who(self.sides[0])}; B was {who(self.sides[1])}. Your vote: {said}."


def prompt_of(record, where: str) -> Prompt:
    """A conversation line of a prompts file as a Prompt: up to its last assistant message, which is the reference."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise UserError(f"{where} is not a conversation; a prompts file is {PROMPTS_FORMAT}")
    reference = None
    if messages and messages[-1].get("role") == "assistant":
        reference, messages = messages[-1]["content"], messages[:-1]
    system = messages[0]["content"] if messages and messages[0].get("role") == "system" else ""
    messages = messages[1:] if system else messages
    if not messages or messages[-1].get("role") != "user" or any(m.get("role") not in ("user", "assistant") for m in messages):
        raise UserError(f"{where} does not end with a user's message to answer (before its answer); a prompts file is {PROMPTS_FORMAT}")
    task = record.get("task")
    return Prompt(tuple({"role": m["role"], "content": m["content"]} for m in messages), system, reference, str(task) if task else None)


def read_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of a .jsonl or .txt prompts file, refused in one line when it holds none or a bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"--arena_prompts={path} not found; pass a prompts file, {PROMPTS_FORMAT} (python -m tools.chat_tasks writes one)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --arena_prompts={path} as UTF-8 text ({e}); pass a prompts file, {PROMPTS_FORMAT}") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            prompts.append(Prompt(({"role": "user", "content": line.strip()},)))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {n} is not JSON ({e.msg}); a prompts file is {PROMPTS_FORMAT}") from None
        prompts.append(prompt_of(record, f"{path} line {n}"))
    if not prompts:
        raise UserError(f"--arena_prompts={path} holds no prompts; pass a prompts file, {PROMPTS_FORMAT}")
    return prompts


class Arena:
    """The rounds of one page, and its votes file."""

    def __init__(self, playground: Playground, votes_file: str | Path, prompts: list[Prompt] | None = None, rng: random.Random | None = None):
        self.playground, self.file, self.prompts = playground, Path(votes_file), prompts or []
        self.rng = rng or random.Random(secrets.randbits(64))  # a page's rounds differ from another's and from its last start's
        self.rounds: OrderedDict[str, Round] = OrderedDict()
        self.lock = threading.Lock()

    def new_round(
        self, text: str, system: str, first: str, second: str, cfg: SamplingConfig, seed: int | None = None, second_values: dict | None = None
    ) -> Round:
        """Both answers to the prompt (typed, or drawn from the prompts file when `text` is empty).
        `seed`: the sampling seed (None: drawn from the round's seed); `second_values`: settings of
        the second model that differ from `cfg` (temperature, seed)."""
        with self.lock:
            round_seed = self.rng.randrange(2**31)
        rng = random.Random(round_seed)
        if (text or "").strip():
            prompt = Prompt(({"role": "user", "content": text},), (system or "").strip())
        elif self.prompts:
            prompt = self.prompts[rng.randrange(len(self.prompts))]
        else:
            raise UserError("the prompt is empty; type one, or start serve.py with --arena_prompts=FILE to draw prompts from a file")
        self.playground.chosen([first, second])  # loaded, both
        cfg = replace(cfg, seed=rng.randrange(2**31) if seed is None else seed)
        other = self.playground.settings(cfg, **(second_values or {}))
        if first == second and other == cfg:
            raise UserError(f"both sides are {first} at the same settings; choose two models, or give the second another temperature or seed")
        swapped = rng.random() < 0.5
        sides = [Side(first, cfg), Side(second, other)]
        rnd = Round(secrets.token_hex(8), round_seed, prompt, sides[::-1] if swapped else sides, swapped)
        for side in sides:
            self.answer(rnd, side)
        with self.lock:
            self.rounds[rnd.id] = rnd
            while len(self.rounds) > KEEP_ROUNDS:
                self.rounds.popitem(last=False)
        return rnd

    def answer(self, rnd: Round, side: Side) -> None:
        """The side's answer: in its chat template when the model carries one, else its text continued."""
        pg, prompt = self.playground, rnd.prompt
        model = pg.models[side.model]
        pg.refresh(model)  # a run still training: its newest checkpoint
        if model.loaded.chat_template:
            side.chat = True
            messages = [{"role": "system", "content": prompt.system}] * bool(prompt.system) + [dict(m) for m in prompt.messages]
            *_, said = reply(pg, side.model, messages, side.cfg)
            side.answer = said.text
            if said.dropped:
                rnd.notes.append(f"the oldest {said.dropped} messages did not fit one model's context")
        else:
            *_, columns = pg.generate([side.model], prompt.messages[-1]["content"], side.cfg)
            side.answer = columns[0].text

    def vote(self, round_id: str, winner: str) -> Round:
        """Record the vote of a round (appended durably before this returns); the round, now named."""
        winner = (winner or "").strip().lower().replace(" ", "_")
        if winner not in WINNERS:
            raise UserError(f"a vote is one of {', '.join(WINNERS)}, got {winner!r}")
        with self.lock:
            rnd = self.rounds.get((round_id or "").strip())
            if rnd is None:
                raise UserError(f"no round {round_id!r} on this page (older than its last {KEEP_ROUNDS} rounds, or from before a restart); start a new round")
            if rnd.winner is not None:
                raise UserError(f"this round has its vote already ({rnd.winner}); start a new round")
            append_vote(self.file, rnd.record(winner))
            rnd.winner = winner
        return rnd

    def board(self, resamples: int = 1000) -> str:
        """The leaderboard of the votes file, as markdown (or why there is none yet)."""
        if not self.file.exists():
            return f"no votes yet in {self.file}"
        try:
            votes = read_votes(self.file)
            if not votes.records:
                return f"no votes yet in {self.file}"
            text = f"{len(votes.records)} votes in {self.file}\n\n" + format_board(leaderboard(votes.records, resamples))
        except UserError as e:
            return str(e)
        return "\n\n".join(t for t in (votes.note(), text) if t)
