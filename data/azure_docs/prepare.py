"""The Azure documentation (MicrosoftDocs/azure-docs): one document per markdown file, GPT-2 BPE.

    python prepare.py azure_docs --docs_dir=~/azure-docs/articles   # a local checkout, or any folder of .md files
    python prepare.py azure_docs                                    # clone articles/ from GitHub first (git, ~1 GB)

Without --docs_dir, a shallow sparse clone of https://github.com/MicrosoftDocs/azure-docs (only
articles/) goes to --cache_dir (default data/azure_docs/cache/azure-docs) and is reused next time.
From each file the YAML front matter and HTML comments are removed; the markdown stays as it is.
Files are read in sorted path order, and a seeded random --val_fraction of them forms val.bin.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from configurator import option
from gptsuite.datafiles import DocumentCorpus, PrepareConfig
from gptsuite.errors import UserError
from gptsuite.sources import read_document, val_mask, with_splits

REPO = "https://github.com/MicrosoftDocs/azure-docs"
FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n.*?^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


@dataclass
class Config(PrepareConfig):
    docs_dir: str = ""  # a folder of markdown files; default: clone the repository's articles/
    cache_dir: str = ""  # where the clone goes; default data/azure_docs/cache/azure-docs
    val_fraction: float = option(0.05, gt=0, lt=1)  # of the files
    seed: int = 1337  # which files go to val


def clean(path: Path) -> str:
    return HTML_COMMENT.sub("", FRONT_MATTER.sub("", read_document(path), count=1)).strip()


def clone(dest: Path) -> Path:
    """A shallow clone of the repository with only articles/ checked out; reused if already there."""
    if not (dest / "articles").is_dir():
        partial = dest.with_name(dest.name + ".partial")  # an interrupted clone is never taken for a finished one
        shutil.rmtree(partial, ignore_errors=True)
        steps = [
            ["git", "clone", "--depth=1", "--filter=blob:none", "--sparse", REPO, str(partial)],
            ["git", "-C", str(partial), "sparse-checkout", "set", "articles"],
        ]
        for cmd in steps:
            print(" ".join(cmd))
            try:
                subprocess.run(cmd, check=True)
            except FileNotFoundError:
                raise UserError("git is not installed; install git, or pass a local folder of markdown files with --docs_dir=PATH") from None
            except subprocess.CalledProcessError as e:
                raise UserError(
                    f"`{' '.join(cmd)}` failed (exit {e.returncode}); without network pass a local folder of markdown files with --docs_dir=PATH"
                ) from None
        partial.rename(dest)
    return dest / "articles"


def corpus(cfg: Config, out_dir: Path) -> DocumentCorpus:
    root = Path(cfg.docs_dir).expanduser() if cfg.docs_dir else clone(Path(cfg.cache_dir or out_dir / "cache" / "azure-docs"))
    if not root.is_dir():
        raise UserError(f"--docs_dir={root} is not a folder; pass a folder of markdown files")
    files = sorted((p for p in root.rglob("*.md") if p.is_file() and ".git" not in p.relative_to(root).parts), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise UserError(f"no .md files in {root}; pass a folder of markdown files with --docs_dir=PATH")
    is_val = val_mask(len(files), cfg.val_fraction, cfg.seed)
    return DocumentCorpus(
        documents=lambda: with_splits(files, is_val),
        source=f"{len(files):,} markdown files in {root}",
        format=clean,
        num_documents=len(files),
        meta={"val_fraction": cfg.val_fraction, "seed": cfg.seed},
    )
