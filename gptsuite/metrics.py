"""Metrics: every run appends to out_dir/metrics.jsonl (wandb too when asked); reading them back
into loss curves and a PNG (tools/plot.py, and anything that shows a run).

A no-op stands in for wandb when it is off, so the training loop has no wandb branches.
wandb is optional (pip install wandb); WANDB_MODE=offline logs to out_dir/wandb without an
account, and `wandb sync` uploads that later. Only the rank-0 process logs.
"""

import json
import time
from pathlib import Path

from gptsuite.atomic import atomic_path
from gptsuite.errors import UserError


def require_wandb():
    try:
        import wandb  # optional: pip install wandb
    except ImportError:
        raise UserError("wandb_log=True needs wandb: pip install wandb (WANDB_MODE=offline logs without an account), or set --wandb_log=False") from None
    return wandb


class Logger:
    def __init__(self, out_dir: str, config: dict, wandb_log: bool = False, wandb_project: str = "", wandb_run_name: str = "", enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.wandb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if enabled and wandb_log:
            wandb = require_wandb()
            # its run files go beside the checkpoint; WANDB_MODE=offline keeps them there (wandb sync uploads later)
            try:
                self.wandb = wandb.init(project=wandb_project, name=wandb_run_name, config=config, dir=str(self.path.parent))
            except wandb.errors.Error as e:
                raise UserError(f"wandb could not start ({str(e).splitlines()[0]}); run `wandb login`, set WANDB_MODE=offline, or --wandb_log=False") from None

    def log(self, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=metrics.get("iter"))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


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


def plot_losses(out_dir: Path) -> Path:
    """Draw out_dir/metrics.jsonl's loss curves into out_dir/loss.png; returns its path."""
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
