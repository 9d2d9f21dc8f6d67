"""Metrics logging: every run appends to out_dir/metrics.jsonl; wandb too when asked.

A no-op stands in for wandb when it is off, so the training loop has no wandb branches.
wandb is optional (pip install wandb); WANDB_MODE=offline logs to out_dir/wandb without an
account, and `wandb sync` uploads that later. Only the rank-0 process logs.
"""

import json
import time
from pathlib import Path

from errors import UserError


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
