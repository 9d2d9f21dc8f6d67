"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A reader (or a resumed run) sees either the old file or the complete new one, never a torn one,
even if the writer is killed mid-write or the disk fills up.
"""

import contextlib
import os
from pathlib import Path


def temp_path(path: str | os.PathLike) -> Path:
    """A hidden temp name beside `path` (same filesystem, so the final rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def publish(tmp: Path, path: str | os.PathLike) -> None:
    """fsync the finished temp file and rename it to `path`."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path to write; on success it replaces `path`, on any error it is removed."""
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
