"""
Kill -9 writers of an arena votes file at random moments, many times, and check that the file
always parses and that no acknowledged vote is ever lost.

    python tests/stress_arena.py                  # 200 trials, about a minute
    python tests/stress_arena.py --trials=1000 --seed=7

Each trial forks 3 writer processes of 2 threads each on the same file (as several pages, each
with several voters); every thread appends votes with gptsuite.arena.append_vote, some of them
megabytes long so that a kill can land inside a write, and prints `ack ID` once append_vote has
returned (after the fsync). Then every writer is killed with SIGKILL, each at its own random
moment. After every trial:
  - read_votes reads the file: every line is a whole vote or a torn one (a write cut short), and
    there are no more new torn lines than writers killed;
  - every vote whose ack was printed is in the file, exactly once;
  - every vote is the one its writer made (its answer is its id's: no bytes of two votes mixed).
Prints the counts and exits 1 on any failure. tests/test_arena.py runs a few trials of this.
"""

import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptsuite.arena import append_vote, now, read_votes  # noqa: E402
from gptsuite.errors import UserError  # noqa: E402

WRITERS, THREADS = 3, 2
BIG = 2 << 20  # the longest answer, in characters


def answer(vote_id: str, size: int) -> str:
    """The answer of a vote: its id repeated, so that a mixed line shows."""
    return (vote_id + ";") * (size // (len(vote_id) + 1) + 1)


def vote(vote_id: str, size: int) -> dict:
    side = {"model": "m-" + vote_id.split("-")[0], "settings": {"seed": 0}, "answer": answer(vote_id, size)}
    return {"time": now(), "round": vote_id, "prompt": "p", "chat": False, "a": side, "b": {**side, "model": "other"}, "winner": "a"}


def writer(path: Path, name: str, seed: int, out: int, big: int) -> None:
    """A writer process: THREADS threads appending votes until it is killed, each ack one os.write to `out`."""

    def loop(t: int) -> None:
        rng = random.Random(f"{seed}-{name}-{t}")
        for n in range(10**9):
            vote_id = f"{name}-{t}-{n}"
            append_vote(path, vote(vote_id, rng.choice((10, 1000, big // 20, rng.randrange(big)))))
            os.write(out, f"ack {vote_id}\n".encode())

    for t in range(THREADS):
        threading.Thread(target=loop, args=(t,), daemon=True).start()
    time.sleep(3600)


def start_writer(path: Path, name: str, seed: int, big: int) -> tuple[int, int]:
    """(pid, the read end of its acks): a forked process, this one's modules already imported."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            writer(path, name, seed, w, big)
        finally:
            os._exit(1)
    os.close(w)
    return pid, r


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def check(path: Path, acked: set[str], torn_before: int, killed: int) -> tuple[int, int, list[str]]:
    """(votes in the file, torn lines in it, problems) after a trial."""
    try:
        votes = read_votes(path)
    except UserError as e:
        return 0, torn_before, [f"the file does not parse: {e}"]
    problems = []
    ids = [r["round"] for r in votes.records]
    if len(votes.torn) - torn_before > killed:
        problems.append(f"{len(votes.torn) - torn_before} new torn lines from {killed} writers killed (lines {votes.torn})")
    if len(set(ids)) != len(ids):
        problems.append("a vote is in the file twice")
    lost = acked - set(ids)
    if lost:
        problems.append(f"{len(lost)} acknowledged votes are not in the file: {sorted(lost)[:5]}")
    for r in votes.records:
        unit = r["round"] + ";"
        if r["a"]["answer"] != unit * (len(r["a"]["answer"]) // len(unit)) or r["b"]["answer"] != r["a"]["answer"]:
            problems.append(f"vote {r['round']} holds bytes that are not its own")
    return len(ids), len(votes.torn), problems


def run_trials(trials: int, folder: Path, seed: int = 0, verbose: bool = False, writers: int = WRITERS, wait: float = 0.3, big: int = BIG) -> dict:
    """`trials` trials of `writers` processes, killed within `wait` (and 50 ms each) of their start,
    writing answers of up to `big` characters."""
    rng = random.Random(seed)
    path = folder / "arena.jsonl"
    stats = {"trials": 0, "votes": 0, "torn": 0, "failures": []}  # votes: acknowledged
    acked: set[str] = set()
    torn_before = 0
    for trial in range(trials):
        procs = [start_writer(path, f"w{trial}x{k}", seed, big) for k in range(writers)]
        try:
            outs = [bytearray() for _ in procs]
            readers = [threading.Thread(target=lambda fd=fd, out=out: out.extend(read_all(fd))) for (_, fd), out in zip(procs, outs, strict=True)]
            for r in readers:
                r.start()
            time.sleep(rng.uniform(0.0, wait))
            for pid, _ in procs:  # each at its own moment
                time.sleep(rng.uniform(0.0, 0.05))
                os.kill(pid, signal.SIGKILL)
        except BaseException:  # Ctrl-C of this script: leave no writer behind
            for pid, _ in procs:
                os.kill(pid, signal.SIGKILL)
            raise
        for (pid, _), r in zip(procs, readers, strict=True):
            os.waitpid(pid, 0)
            r.join()
        new = {line.split()[1].decode() for out in outs for line in out.splitlines(keepends=True) if line.startswith(b"ack ") and line.endswith(b"\n")}
        acked |= new
        votes, torn, problems = check(path, acked, torn_before, len(procs))
        stats["failures"] += [f"trial {trial}: {p}" for p in problems]
        stats["trials"] += 1
        stats["votes"] += len(new)
        stats["torn"] += torn - torn_before
        if verbose:
            print(f"trial {trial:4d}: {len(new):3d} votes acknowledged, {votes:6d} in the file, {torn - torn_before} new torn lines", flush=True)
        torn_before = torn
        if path.stat().st_size > 64 << 20:  # keep the file small enough to read at every trial: start another
            path.rename(folder / f"arena-{trial}.jsonl")
            acked, torn_before = set(), 0
    return stats


def main(argv: list[str]) -> int:
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # as Ctrl-C: the running writers are killed too
    trials, seed = int(opts.get("trials", 200)), int(opts.get("seed", 0))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        stats = run_trials(trials, Path(tmp), seed=seed, verbose=True)
        print(
            f"\n{stats['trials']} kill -9 trials of {WRITERS} writers x {THREADS} threads in {time.time() - t0:.0f}s: "
            f"{stats['votes']} votes acknowledged, all found; {stats['torn']} torn lines (a write cut by the kill) skipped by the reader; "
            f"{len(stats['failures'])} failures"
        )
        for failure in stats["failures"]:
            print(failure)
    return 1 if stats["failures"] or stats["trials"] < trials else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
