"""
A sharded checkpoint (a --parallel=fsdp run's ckpt.dcp folder) as one ckpt.pt file: the whole
model, and the optimizer, RNG and sampler state that a single process resumes from.

    python -m tools.consolidate --out_dir=out-gpt2-xl                       # writes out-gpt2-xl-consolidated/ckpt.pt
    python -m tools.consolidate --out_dir=out-gpt2-xl --to=gpt2-xl-ckpt.pt

sample.py, eval.py and export.py read a sharded folder directly, and a sharded run resumes onto
any number of processes (torchrun, or --parallel=ddp in one process) from the folder itself;
this is for a file to copy elsewhere, or for tools that expect one. It refuses to overwrite.
"""

from dataclasses import dataclass
from pathlib import Path

from configurator import parse_config
from gptsuite.checkpoint import CKPT_NAME, load_checkpoint
from gptsuite.checkpointer import consolidate
from gptsuite.errors import cli


@dataclass
class ConsolidateConfig:
    out_dir: str = "out"  # the run folder (its newest checkpoint) or a ckpt-<iter>.dcp folder
    to: str = ""  # the file to write; default: <out_dir>-consolidated/ckpt.pt (beside the run, so its own resume keeps the sharded folders)


def main(argv: list[str]) -> None:
    cfg = parse_config(ConsolidateConfig(), argv)
    source = Path(cfg.out_dir)
    dest = Path(cfg.to) if cfg.to else source.parent / f"{source.name}-consolidated" / CKPT_NAME
    path = load_checkpoint(source, mmap=True).get("sharded") or source  # the newest sharded folder of a run
    state = consolidate(Path(path), dest)
    print(f"wrote {dest}: iter {state['iter_num']}, {sum(v.numel() for v in state['model'].values()) / 1e6:.2f}M weights, from {path}")


if __name__ == "__main__":
    cli(main)
