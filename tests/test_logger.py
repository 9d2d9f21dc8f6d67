import json
import sys
from pathlib import Path

import pytest

from gptsuite.errors import UserError
from gptsuite.metrics import Logger


def test_metrics_jsonl_and_a_disabled_logger(tmp_path: Path):
    logger = Logger(str(tmp_path / "a"), {"lr": 1.0})
    logger.log({"iter": 1, "loss": 2.5})
    logger.close()
    assert json.loads((tmp_path / "a" / "metrics.jsonl").read_text())["loss"] == 2.5
    Logger(str(tmp_path / "b"), {}, wandb_log=True, enabled=False).log({"iter": 1})  # other DDP ranks: nothing at all
    assert not (tmp_path / "b").exists()


def test_wandb_log_without_wandb_says_how_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(UserError, match="pip install wandb"):
        Logger(str(tmp_path), {}, wandb_log=True)


def test_wandb_offline_mode_logs_beside_the_checkpoint(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = Logger(str(tmp_path), {"n_layer": 2}, wandb_log=True, wandb_project="p", wandb_run_name="r")
    logger.log({"iter": 0, "val_loss": 3.0})
    logger.log({"iter": 1, "loss": 2.0})
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
