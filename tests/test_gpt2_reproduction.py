"""The GPT-2 reproduction configs end to end on tiny local data: a fineweb_edu-format dataset and a
HellaSwag file written here, config/train_gpt2.py and config/train_gpt2_modern.py scaled down,
HellaSwag scored every hellaswag_interval steps into metrics.jsonl."""

import json
from pathlib import Path

import pytest

from conftest import TINY_MODEL_ARGS, write_shards
from gptsuite.errors import UserError
from prepare import main as prepare_main
from train import main as train_main

ITEMS = [
    {"ctx": "The man opens the door and", "endings": ["walks outside.", "eats the door.", "sings a door.", "is a door."], "label": 0},
    {"ctx": "She pours the water into the", "endings": ["sky above.", "glass on the table.", "idea.", "running."], "label": 1},
    {"ctx": "To bake bread, first you", "endings": ["fly.", "sleep.", "mix flour and water.", "paint it."], "label": 2},
    {"ctx": "The dog barks at the", "endings": ["moonlight calculus.", "theorem.", "seven.", "mail carrier."], "label": 3},
    {"ctx": "He ties his shoes before", "endings": ["going for a run.", "the ocean boils.", "blue.", "seven cats."], "label": 0},
]


@pytest.fixture(scope="module")
def web_data(tmp_path_factory) -> tuple[Path, Path]:
    """A GPT-2 BPE dataset prepared by prepare.py fineweb_edu, and a HellaSwag file of 5 items."""
    root = tmp_path_factory.mktemp("gpt2repro")
    write_shards(root / "shards", 600)
    prepare_main(["fineweb_edu", f"--data_files={root / 'shards' / '*.parquet'}", f"--data_dir={root / 'data'}", "--val_documents=40"])
    hellaswag = root / "hellaswag_val.jsonl"
    hellaswag.write_text("".join(json.dumps({"activity_label": "x", "ctx_a": i["ctx"], "ctx_b": "", "split": "val", **i}) + "\n" for i in ITEMS))
    return root / "data", hellaswag


def tiny(config: str, data: Path, hellaswag: Path, out: Path, *more: str) -> list[str]:
    """config scaled down to a CPU test: the tiny model, a few steps, the local data and items."""
    return [
        config,
        f"--data_dir={data}",
        f"--out_dir={out}",
        f"--hellaswag_file={hellaswag}",
        *TINY_MODEL_ARGS,
        "--gradient_accumulation_steps=1",
        "--max_iters=4",
        "--warmup_iters=1",
        "--lr_decay_iters=4",
        "--eval_interval=2",
        "--eval_iters=2",
        "--hellaswag_interval=2",
        "--log_interval=1",
        *more,
    ]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("config", ["config/train_gpt2.py", "config/train_gpt2_modern.py"])
def test_gpt2_configs_run_and_log_hellaswag(web_data, tmp_path: Path, config: str, capsys):
    data, hellaswag = web_data
    out = tmp_path / "out"
    train_main(tiny(config, data, hellaswag, out))
    scored = [r for r in records(out) if "hellaswag_acc_norm" in r]
    assert [r["iter"] for r in scored] == [0, 2, 4]
    assert all(r["hellaswag_items"] == len(ITEMS) and 0 <= r["hellaswag_acc"] <= 1 and 0 <= r["hellaswag_acc_norm"] <= 1 for r in scored)
    for r in scored:  # with 5 items, the accuracies are counts of 5
        assert round(r["hellaswag_acc_norm"] * 5, 9) == round(r["hellaswag_acc_norm"] * 5) and round(r["hellaswag_acc"] * 5, 9) == round(r["hellaswag_acc"] * 5)
    assert "step 4: hellaswag acc_norm" in capsys.readouterr().out

    # resumed at iter 4 with more steps: iter 4 is not scored twice, iter 6 is; a subset when asked
    train_main([*tiny(config, data, hellaswag, out, "--max_iters=6", "--lr_decay_iters=6", "--hellaswag_items=3"), "--init_from=resume"])
    scored = [r for r in records(out) if "hellaswag_acc_norm" in r]
    assert [r["iter"] for r in scored] == [0, 2, 4, 6] and scored[-1]["hellaswag_items"] == 3


def test_hellaswag_needs_gpt2_bpe_data(char_dataset: Path, web_data, tmp_path: Path):
    with pytest.raises(UserError, match=r"GPT-2 BPE.*drop --hellaswag_interval"):
        train_main([f"--data_dir={char_dataset}", f"--out_dir={tmp_path}", *TINY_MODEL_ARGS, "--max_iters=1", "--hellaswag_interval=1"])
