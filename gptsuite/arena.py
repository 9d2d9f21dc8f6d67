"""The arena's votes file: one blind vote between two answers a line, appended durably.

The Arena tab of the page (serve.py --arena_file=PATH, arena.jsonl in the current folder by
default) appends a line per vote; `python -m tools.arena PATH` rates the models from it and
`prepare.py preferences` makes preference pairs of it. One vote, one JSON object (keys in this
order; "system", "reference" and "task" only when there is one):

    {"time": "2026-12-07T15:04:05.123456+00:00",     # when the vote was cast, ISO 8601, UTC
     "round": "9f2c...",                              # the round's id (hex)
     "round_seed": 123456789,                         # drew the A/B order, the prompt from a file, an unset seed
     "swapped": false,                                # A is the second model chosen (the first when false)
     "prompt": [{"role": "user", "content": "What is 2 + 3?"}] or "ROMEO:",
                                                      # the conversation before the answers when "chat", else the text continued
     "system": "Be terse.",                           # the system message, when there is one (chat only)
     "chat": true,                                    # both answers were asked in the chat template
     "a": {"model": "out-chat", "chat": true, "answer": "5",
           "settings": {"temperature": 0.8, "top_k": 200, "top_p": null, "max_new_tokens": 200, "seed": 7}},
     "b": {...the same for B...},
     "winner": "a",                                   # "a", "b", "tie" or "both_bad"
     "reference": "5",                                # the expected answer, when the prompt came from a task file
     "task": "add"}                                   # its task, when it named one

"a" and "b" are the answers as they were shown, A and B. A model answers in its chat template when
it carries one (it was tuned on conversations: the prompt is the messages, the system message
first); a model without one continues the text (the last user message). "chat" is true when both
did the former; then "prompt" holds the messages, else the text.

Durable and shared: a vote is one os.write of one line to a file opened with O_APPEND, under an
exclusive flock, then fsynced; it is acknowledged only after that. A kill -9 at any moment loses
at most the vote being written, never an earlier line, and several voters (threads of a page, or
several pages on the same file) never interleave lines. A write cut short by a kill leaves a torn
last line (a prefix of a vote); the next append starts on a new line, so it never glues onto it,
and read_votes (which reads under a shared flock, so a vote being written is not taken for a
torn one) skips torn lines and says how many. A line that is neither a vote nor a torn one is
refused with its line number. Local filesystems only (flock over NFS is not to be relied on).
"""

import datetime
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from gptsuite.atomic import fsync_dir
from gptsuite.errors import UserError

DEFAULT_FILE = "arena.jsonl"  # serve.py's --arena_file when none is given: in the current folder
WINNERS = ("a", "b", "tie", "both_bad")
SETTINGS = ("temperature", "top_k", "top_p", "max_new_tokens", "seed")  # the sampling settings a side records
TORN_PREFIX = b'{"time": '  # how every vote line starts: a line that starts so and does not parse was cut short
FORMAT = 'one JSON vote a line, {"time": ..., "prompt": ..., "a": {"model": ..., "answer": ...}, "b": {...}, "winner": "a"|"b"|"tie"|"both_bad"}'


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def vote_line(record: dict) -> bytes:
    """The bytes of one vote's line; "time" must come first (TORN_PREFIX)."""
    if next(iter(record), None) != "time":
        raise ValueError("a vote record starts with its time")
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def append_vote(path: str | os.PathLike, record: dict) -> None:
    """Append one vote to the file, durably: when this returns, the line is on disk."""
    line, path = vote_line(record), Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot open the votes file {path} ({e.strerror}); start serve.py with another --arena_file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the close; another writer waits here
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line from a killed writer: start a new one
            line = b"\n" + line
        written = os.write(fd, line)  # one write of the whole line: O_APPEND puts it at the end, whole
        if written != len(line):
            raise OSError(f"wrote {written} of {len(line)} bytes")
        os.fsync(fd)
        if not size:
            fsync_dir(path.parent)  # the new file's name is on disk too
    except OSError as e:
        raise UserError(f"could not write the vote to {path} ({e}); free some disk space or start serve.py with another --arena_file") from None
    finally:
        os.close(fd)


@dataclass
class Votes:
    """The votes of a file, and the line numbers of the torn lines skipped."""

    path: Path
    records: list[dict] = field(default_factory=list)
    torn: list[int] = field(default_factory=list)

    def note(self) -> str:
        """One line about the torn lines skipped, or ''."""
        if not self.torn:
            return ""
        which = ", ".join(map(str, self.torn[:10])) + (" ..." if len(self.torn) > 10 else "")
        return (
            f"note: {self.path}: skipped {len(self.torn)} torn line{'s' * (len(self.torn) > 1)} (a vote cut short by a kill, never acknowledged): line {which}"
        )


def check_vote(record, where: str) -> dict:
    """The record, if it is a vote; else a UserError naming what is wrong and where."""
    problem = None
    if not isinstance(record, dict):
        problem = "is not a JSON object"
    elif record.get("winner") not in WINNERS:
        problem = f"has winner {record.get('winner')!r}, not one of {', '.join(WINNERS)}"
    elif not isinstance(record.get("prompt"), (str, list)):
        problem = "has no prompt"
    else:
        for side in ("a", "b"):
            s = record.get(side)
            if not isinstance(s, dict) or not isinstance(s.get("model"), str) or not isinstance(s.get("answer"), str):
                problem = f'has no answer "{side}" with its "model" and "answer"'
                break
    if problem:
        raise UserError(f"{where} {problem}; a votes file holds {FORMAT} (remove the line, or pass the page's votes file)")
    return record


def read_votes(path: str | os.PathLike) -> Votes:
    """Every vote of the file, in order; torn lines (cut short by a kill) skipped and listed."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # no vote half-written by a live writer: those are torn only by a kill
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"{path} not found; pass the votes file the page writes (serve.py --arena_file, {DEFAULT_FILE} by default)") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); pass a readable votes file") from None
    votes = Votes(path)
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if raw.startswith(TORN_PREFIX) or TORN_PREFIX.startswith(raw):  # cut short, maybe within the first bytes
                votes.torn.append(n)
                continue
            raise UserError(f"{path} line {n} is not JSON ({getattr(e, 'msg', e)}); a votes file holds {FORMAT}") from None
        votes.records.append(check_vote(record, f"{path} line {n}"))
    return votes


def preference(record: dict) -> tuple[str, str] | None:
    """(chosen, rejected): the winner's answer and the other's; None for a tie or both bad."""
    if record["winner"] not in ("a", "b"):
        return None
    loser = "b" if record["winner"] == "a" else "a"
    return record[record["winner"]]["answer"], record[loser]["answer"]
