"""
Plot a run's loss curves from out_dir/metrics.jsonl into out_dir/loss.png: no wandb account needed.

    python -m tools.plot out-shakespeare-char

It draws the training loss of every logged iteration and the train / val losses of each
evaluation against the iteration. A resumed run appends to the same file; where an iteration
was logged twice, the later value wins.
"""

from pathlib import Path

from gptsuite.errors import UserError, cli
from gptsuite.metrics import plot_losses


def main(argv: list[str]) -> None:
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UserError("usage: python -m tools.plot OUT_DIR (a training run's out_dir; writes OUT_DIR/loss.png)")
    print(f"wrote {plot_losses(Path(argv[0]))}")


if __name__ == "__main__":
    cli(main)
