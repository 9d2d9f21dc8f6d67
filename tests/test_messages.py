"""Messages that name a fix: the fix they name works. Each case makes the mistake, reads the fix
out of the message, applies it, and sees the command go through."""

import re
from pathlib import Path

import pytest

from configurator import ConfigError, parse_config
from conftest import TINY_MODEL_ARGS
from eval import main as eval_main
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError
from gptsuite.training import TrainConfig
from train import main as train_main

RUN = [*TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=2", "--eval_interval=2", "--max_iters=2"]


def suggested(message: str) -> list[str]:
    """The --key=value arguments a message tells the user to pass."""
    return [a for a in re.findall(r"--\w+=[^\s;,)?]+", message) if a != "--key=value"]


@pytest.mark.parametrize("wrong", ["max_iters=10", "-max_iters=10", "max_iter=10", "--max_iter=10", "--max_iters", "--n_layer"])
def test_setting_mistakes_name_the_argument_to_write(wrong: str):
    with pytest.raises(ConfigError) as e:
        parse_config(TrainConfig(), [wrong])
    fix = suggested(str(e.value))
    assert fix, str(e.value)
    fixed = [f.replace("=VALUE", "=10") for f in fix]
    assert parse_config(TrainConfig(), fixed).max_iters == 10 or parse_config(TrainConfig(), fixed).n_layer == 10


def test_a_missing_config_file_is_not_taken_for_a_setting(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file .*nothing.py not found"):
        parse_config(TrainConfig(), [str(tmp_path / "nothing.py")])


def test_the_model_shape_refusal_names_the_flags_that_resume(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run"])
    args = ["--init_from=resume", "--out_dir=run", "--n_layer=3", "--n_embd=64", "--max_iters=3"]
    with pytest.raises(UserError) as e:
        train_main(args)
    fix = suggested(str(e.value))
    assert sorted(fix) == ["--n_embd=32", "--n_layer=2"]
    train_main([*args, *fix])
    assert load_checkpoint("run")["iter_num"] == 3


def test_a_block_size_past_the_models_names_the_one_that_fits(tmp_path: Path, char_dataset: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run"])
    with pytest.raises(UserError) as e:
        train_main(["--init_from=resume", "--out_dir=run", "--block_size=64", "--max_iters=3"])
    (fix,) = suggested(str(e.value))
    train_main(["--init_from=resume", "--out_dir=run", fix, "--max_iters=3"])
    assert load_checkpoint("run")["iter_num"] == 3


@pytest.mark.parametrize("wrong", ["--block_size=64", "--stride=32"])
def test_eval_window_mistakes_name_a_setting_that_works(tmp_path: Path, char_dataset: Path, monkeypatch, capsys, wrong: str):
    monkeypatch.chdir(tmp_path)
    train_main([f"--data_dir={char_dataset}", *RUN, "--out_dir=run"])
    with pytest.raises(UserError) as e:
        eval_main(["--out_dir=run", "--device=cpu", wrong])
    fix = [f.replace("<=", "=") for f in re.findall(r"--\w+ ?<= ?\d+", str(e.value))]
    assert fix, str(e.value)
    eval_main(["--out_dir=run", "--device=cpu", *(f.replace(" ", "") for f in fix)])
    assert " val loss " in capsys.readouterr().out
