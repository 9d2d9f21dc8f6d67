"""Messages that name a fix: the fix they name works. Each case makes the mistake, reads the fix
out of the message, applies it, and sees the command go through."""

import re
from pathlib import Path

import pytest

from configurator import ConfigError, flatten, parse_config
from conftest import TINY_MODEL_ARGS
from eval import main as eval_main
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError
from gptsuite.settings import TrainConfig
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
    assert flatten(parse_config(TrainConfig(), fixed))["max_iters" if "iter" in wrong else "n_layer"] == 10


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


def commands_in(message: str) -> list[list[str]]:
    """The `python ...` commands a message quotes in backticks, as argument lists."""
    return [c.split()[1:] for c in re.findall(r"`(python [^`]+)`", message)]


def test_a_missing_dataset_names_the_prepare_that_makes_it(tmp_path: Path, text_file: Path, monkeypatch, capsys):
    import prepare

    monkeypatch.chdir(tmp_path)
    run = ["--dataset=mydocs", *RUN, "--out_dir=run"]
    with pytest.raises(UserError) as e:
        train_main(run)
    command = commands_in(str(e.value))[0]
    assert command[0] == "prepare.py"
    prepare.main([a.replace("FILE_OR_FOLDER", str(text_file)) for a in command[1:]])
    train_main(run)
    assert load_checkpoint("run")["iter_num"] == 2


def test_a_table_without_field_names_its_columns(tmp_path: Path):
    import json

    import prepare

    table = tmp_path / "papers.jsonl"
    table.write_text("".join(json.dumps({"id": i, "summary": f"Paper {i} is about things."}) + "\n" for i in range(20)))
    args = ["text", f"--input={table}", f"--data_dir={tmp_path / 'out'}"]
    with pytest.raises(UserError) as e:
        prepare.main(args)
    assert "its columns: id, summary" in str(e.value)
    with pytest.raises(UserError, match="not text"):  # the first column named: a number, refused with its own line
        prepare.main([*args, suggested(str(e.value))[0]])
    prepare.main([*args, "--field=summary"])
    assert (tmp_path / "out" / "train.bin").stat().st_size > 0


def test_pubmed_names_the_fields_it_reads(tmp_path: Path):
    import json

    import prepare

    rows = [{"summary": f"Abstract {i}.", "article": f"Article {i} text."} for i in range(6)]
    for name in ("train", "val"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["pubmed", f"--data_files={tmp_path / 'train.jsonl'}", f"--val_files={tmp_path / 'val.jsonl'}", f"--data_dir={tmp_path / 'out'}"]
    with pytest.raises(UserError) as e:
        prepare.main(args)
    message = str(e.value)
    assert "'abstract'" in message and "--field" not in message  # pubmed has no --field
    for name in ("train", "val"):  # what the message says to do: name the columns abstract and article
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"abstract": r["summary"], "article": r["article"]}) + "\n" for r in rows))
    prepare.main(args)
    assert (tmp_path / "out" / "meta.json").exists()


def test_plot_helps(capsys):
    from tools import plot

    plot.main(["--help"])
    assert "python -m tools.plot out-shakespeare-char" in capsys.readouterr().out


def test_prepare_help_exits_0_and_lists_the_datasets(capsys):
    import prepare

    prepare.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python prepare.py <dataset>") and "shakespeare_char" in out and "text" in out
    with pytest.raises(UserError, match="usage"):
        prepare.main([])
