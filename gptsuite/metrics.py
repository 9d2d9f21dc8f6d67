"""Metrics: every run appends to out_dir/metrics.jsonl (wandb too when asked); the training loop's
log lines (TrainLog); reading them back into loss curves and a PNG (tools/plot.py, the page).

A no-op stands in for wandb when it is off, so the training loop has no wandb branches.
wandb is optional (pip install wandb); WANDB_MODE=offline logs to out_dir/wandb without an
account, and `wandb sync` uploads that later. Only the rank-0 process logs.
"""

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from configurator import option
from gptsuite.atomic import atomic_path
from gptsuite.errors import UserError

METRICS_FILE = "metrics.jsonl"  # in a run's out_dir
PLOT_FILE = "loss.png"  # beside it: plot_losses draws metrics.jsonl's curves


@dataclass
class LogConfig:
    # logging (metrics always go to out_dir/metrics.jsonl; wandb is optional)
    log_interval: int = option(1, gt=0)  # print and log the training loss every this many iterations
    wandb_log: bool = False  # also log to Weights & Biases (pip install wandb)
    wandb_project: str = "owt"  # the wandb project to log to
    wandb_run_name: str = "gpt2"  # the run's name in it


def require_wandb():
    try:
        import wandb  # optional: pip install wandb
    except ImportError:
        raise UserError("wandb_log=True needs wandb: pip install wandb (WANDB_MODE=offline logs without an account), or set --wandb_log=False") from None
    return wandb


class Logger:
    def __init__(self, out_dir: str, config: dict, wandb_log: bool = False, wandb_project: str = "", wandb_run_name: str = "", enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_FILE
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


class TrainLog:
    """The loop's timing and logging: the mean loss (and the objective's metrics) of the good steps
    since the last log line, ms/iter and tokens/s of the training steps (evals left out), MFU where
    the GPU's peak is known, and the count of skipped steps, printed and appended to metrics.jsonl
    (and wandb) every log_interval iterations by rank 0 (master)."""

    def __init__(self, logger: Logger, log_interval: int, tokens_per_iter: int, flops_per_iter: float, peak: float | None, master: bool):
        self.logger, self.log_interval, self.master = logger, log_interval, master
        self.tokens_per_iter, self.flops_per_iter, self.peak = tokens_per_iter, flops_per_iter, peak
        self.sums: dict[str, float] = {}
        self.t0, self.iters, self.good_steps, self.skipped = time.time(), 0, 0, 0

    @contextmanager
    def paused(self):
        """Time spent inside (an eval) does not count in ms/iter and tokens/s."""
        start = time.time()
        try:
            yield
        finally:
            self.t0 += time.time() - start

    def eval(self, iter_num: int, losses: dict, lr: float) -> None:
        if self.master:
            more = {k: v for k, v in losses.items() if k not in ("train", "val")}  # the objective's metrics, per split
            print(
                f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                + "".join(f", {k} {v:.4f}" for k, v in more.items() if k.startswith("val_"))
            )
            self.logger.log({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], **more, "lr": lr})

    def hellaswag(self, iter_num: int, result) -> None:
        if self.master:
            print(f"step {iter_num}: hellaswag acc_norm {result.acc_norm:.4f}, acc {result.acc:.4f} ({result.items:,} items)")
            self.logger.log({"iter": iter_num, "hellaswag_acc": result.acc, "hellaswag_acc_norm": result.acc_norm, "hellaswag_items": result.items})

    def step(self, iter_num: int, loss: float, stepped: bool, metrics: dict[str, float], bad_steps: int) -> None:
        """Count one training step (iteration iter_num): its mean loss and metrics."""
        self.iters += 1
        if stepped:
            for k, v in {"loss": loss, **metrics}.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.good_steps += 1
            return
        self.skipped += 1
        if self.master:
            print(f"iter {iter_num}: loss {loss:.4f}, the loss or gradient norm is not finite: update skipped ({bad_steps} in a row)")

    def maybe_log(self, iter_num: int, lr: float) -> None:
        """At every log_interval: log the iterations since the last line, then start over."""
        if iter_num % self.log_interval:
            return
        if self.master:
            means = (
                {k: v / self.good_steps for k, v in self.sums.items()} if self.good_steps else {"loss": math.nan}
            )  # each step read the device, so the timing is real
            dt = (time.time() - self.t0) / self.iters
            record = {"iter": iter_num, **means, "lr": lr, "ms_per_iter": dt * 1000, "tokens_per_s": self.tokens_per_iter / dt}
            line = f"iter {iter_num}: loss {means['loss']:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, {self.tokens_per_iter / dt:,.0f} tok/s"
            line += "".join(f", {k} {v:.4f}" for k, v in means.items() if k != "loss")
            if self.peak:
                record["mfu"] = self.flops_per_iter / dt / self.peak
                line += f", mfu {record['mfu'] * 100:.1f}%"
            if self.skipped:
                record["skipped_steps"] = self.skipped
                line += f", {self.skipped} skipped steps"
            print(line)
            self.logger.log(record)
        self.t0, self.iters, self.good_steps, self.sums = time.time(), 0, 0, {}


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
    path = out_dir / METRICS_FILE
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
    png = out_dir / PLOT_FILE
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png
