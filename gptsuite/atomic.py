"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A reader (or a resumed run) sees either the old file or the complete new one, never a torn one,
even if the writer is killed mid-write or the disk fills up. Temp files are hidden
(`.NAME.PID.tmp`), so nothing that looks for `NAME` ever picks up a partial one; a writer killed
with SIGKILL leaves its temp file (or folder) behind, and `remove_stale_temps` clears those of dead processes.
"""

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from gptsuite.errors import UserError


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 16 MB blocks (memory stays flat on large files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def check_folder(path: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, an output folder that cannot be made because a file is in the way."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{what} {path} cannot be a folder: {existing} is a file; pass another {what}")


def temp_path(path: str | os.PathLike) -> Path:
    """A hidden temp name beside `path` (same filesystem, so the final rename is atomic)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder {path.parent} ({e.strerror}); pass another output folder") from None
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, path: str | os.PathLike) -> None:
    """fsync the finished temp file and rename it to `path`."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


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


def link_atomic(src: str | os.PathLike, dst: str | os.PathLike, symlink: bool = False) -> None:
    """Make `dst` another name for the complete file `src`, atomically: a hard link (no copy, no
    extra space) where the filesystem has them, else a copy, renamed over `dst` either way.
    symlink=True: a symbolic link to `src` (a folder; relative to dst's folder), renamed the same way."""
    if symlink:
        tmp = temp_path(dst)
        os.symlink(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(Path(dst).parent)
        return
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def replace_folder(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` to `final`. A folder cannot be renamed over another, so
    an existing `final` (the same checkpoint saved again) is first moved aside to a temp name."""
    if final.exists():
        aside = final.with_name(f".{final.name}.old.{os.getpid()}.tmp")
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process that nobody has reaped yet (a zombie: its parent died too, and a container's init may not reap) writes nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that writers which no longer run left in `folder` (a SIGKILL mid-write
    leaves one); a live writer's temp file is kept. Returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp"):
        pid = p.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()  # a sharded checkpoint's temp folder, or a file
                removed.append(p)
    return removed
