"""
Plot a run's loss curves from out_dir/metrics.jsonl into out_dir/loss.png: no wandb account needed.

    python plot.py out-shakespeare-char

It draws the training loss of every logged iteration and the train / val losses of each
evaluation against the iteration. A resumed run appends to the same file; where an iteration
was logged twice, the later value wins.
"""

import json
from pathlib import Path

from atomic import atomic_path
from errors import UserError, cli

SERIES = {  # metrics.jsonl key: label, line style
    "loss": ("train (logged steps)", dict(alpha=0.35, linewidth=1)),
    "train_loss": ("train (eval)", dict(marker="o", markersize=3)),
    "val_loss": ("val (eval)", dict(marker="o", markersize=3)),
}


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"no metrics at {path}; pass the out_dir of a training run (train.py writes out_dir/metrics.jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): it is not a metrics.jsonl of train.py") from None
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path} line {n} is not JSON (a run killed mid-write?); delete that line and plot again") from None
    return records


def loss_curves(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (iterations, values)} for each loss key in SERIES that the records hold."""
    curves = {}
    for key in SERIES:
        points = {r["iter"]: r[key] for r in records if isinstance(r, dict) and key in r and "iter" in r}
        if points:
            curves[key] = (sorted(points), [points[i] for i in sorted(points)])
    return curves


def plot(out_dir: Path) -> Path:
    path = out_dir / "metrics.jsonl"
    curves = loss_curves(read_metrics(path))
    if not curves:
        raise UserError(f"{path} holds no losses yet; let the run get past its first log_interval or eval_interval")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, (iters, values) in curves.items():
        label, style = SERIES[key]
        ax.plot(iters, values, label=label, **style)
    ax.set(xlabel="iteration", ylabel="loss (cross-entropy, nats)", title=str(out_dir))
    ax.grid(alpha=0.3)
    ax.legend()
    png = out_dir / "loss.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UserError("usage: python plot.py OUT_DIR (a training run's out_dir; writes OUT_DIR/loss.png)")
    print(f"wrote {plot(Path(argv[0]))}")


if __name__ == "__main__":
    cli(main)
