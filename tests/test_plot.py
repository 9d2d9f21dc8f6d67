import json
from pathlib import Path

import pytest

from gptsuite.errors import UserError
from gptsuite.metrics import loss_curves
from gptsuite.metrics import plot_losses as plot
from tools.plot import main


def write_metrics(out: Path, records: list[dict]) -> None:
    out.mkdir(exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps({"time": 0.0, **r}) + "\n" for r in records))


def test_plot_writes_loss_png_from_metrics(tmp_path: Path, capsys):
    records = [{"iter": 0, "train_loss": 4.2, "val_loss": 4.3, "lr": 1e-4}]
    records += [{"iter": i, "loss": 4.2 - 0.1 * i, "lr": 1e-3, "tokens_per_s": 100.0} for i in range(1, 6)]
    records += [{"iter": 5, "train_loss": 3.8, "val_loss": 3.9, "lr": 1e-3}]
    records += [{"iter": 5, "train_loss": 3.7, "val_loss": 3.85, "lr": 1e-3}]  # a resumed run logs iteration 5 again
    write_metrics(tmp_path, records)
    curves = loss_curves(records)
    assert curves["loss"] == ([1, 2, 3, 4, 5], pytest.approx([4.1, 4.0, 3.9, 3.8, 3.7]))
    assert curves["val_loss"] == ([0, 5], [4.3, 3.85])
    main([str(tmp_path)])
    png = tmp_path / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert f"wrote {png}" in capsys.readouterr().out


def test_plot_errors(tmp_path: Path):
    with pytest.raises(UserError, match="no metrics at .*metrics.jsonl"):
        plot(tmp_path)
    write_metrics(tmp_path, [])
    with pytest.raises(UserError, match="no losses"):
        plot(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"iter": 1, "loss": 2.0}\n{"iter": 2, "lo')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        plot(tmp_path)
    with pytest.raises(UserError, match="usage"):
        main([])
    assert not (tmp_path / "loss.png").exists()
