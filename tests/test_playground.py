"""The playground's library (gptsuite/playground.py), without the page: its samples against
sample.py's, its checks, reloading and vanished checkpoints, the seen-in-training marks against
a brute-force search of train.bin, and the run view against the files it reads."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import sample
from gptsuite.checkpoint import save_checkpoint
from gptsuite.datafiles import load_meta
from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig
from gptsuite.playground import Playground
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import GPT2Tokenizer
from model import GPT, GPTConfig

PUBMED = {"format": "ABSTRACT:\n{abstract}\n\nARTICLE:\n{article}", "prompt_field": "abstract", "stop": "<|endoftext|>"}


def char_data(folder: Path) -> Path:
    """conftest's char_dataset, for a module's fixtures."""
    from conftest import TEXT
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    (folder / "input.txt").write_text(TEXT, encoding="utf-8")
    module = load_dataset_module("shakespeare_char")
    prepare_text(module.corpus(module.Config(input=str(folder / "input.txt")), folder / "data"), folder / "data")
    return folder / "data"


def char_model(out: Path, data: Path, seed: int, n_embd: int = 16, block_size: int = 64) -> Path:
    meta = load_meta(data)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=meta["vocab_size"], n_layer=1, n_head=2, n_embd=n_embd))
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": meta["tokenizer"], "config": {"data_dir": str(data)}}, out / "ckpt.pt"
    )
    return out


def bpe_model(out: Path, template: dict | None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=64, vocab_size=50304, n_layer=1, n_head=2, n_embd=16))
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": GPT2Tokenizer().meta(), "template": template}, out / "ckpt.pt")
    return out


def page(max_new_tokens: int = 100, memory_limit: float = 0.0) -> Playground:
    return Playground(setup_runtime("cpu", "float32", 0), max_new_tokens, memory_limit)


def run(pg: Playground, names: list[str], text: str, **settings) -> list:
    cfg = pg.settings(SamplingConfig(), **settings)
    *_, columns = pg.generate(names, text, cfg)
    return columns


def sample_py(capsys, out: Path, start: str, *flags: str) -> str:
    """What sample.py writes for one sample: the prompt and the generated text."""
    capsys.readouterr()
    sample.main([f"--out_dir={out}", f"--start={start}", "--num_samples=1", "--device=cpu", *flags])
    return capsys.readouterr().out.split("\n---------------")[0]


def test_side_by_side_samples_are_sample_pys(tmp_path: Path, char_dataset: Path, capsys):
    a, b = char_model(tmp_path / "a", char_dataset, 1), char_model(tmp_path / "b", char_dataset, 2)
    pg = page()
    pg.load(str(a)), pg.load(str(b))
    flags = {"max_new_tokens": 40, "temperature": 0.9, "top_k": 20, "seed": 7}
    alone = run(pg, [str(a)], "First Citizen:", **flags)
    both = run(pg, [str(a), str(b)], "First Citizen:", **flags)
    for out, col in ((a, both[0]), (b, both[1])):
        assert col.prompt + col.text == sample_py(capsys, out, "First Citizen:", "--max_new_tokens=40", "--temperature=0.9", "--top_k=20", "--seed=7")
        assert col.done and col.tokens == 40 and col.first_token is not None
    assert alone[0].text == both[0].text  # its own random stream: the model beside it changes nothing
    assert both[0].text != both[1].text
    assert torch.is_grad_enabled()  # the streams' no_grad ended with each step: training in this process still works


def test_stop_text_and_top_p_as_in_sample_py(tmp_path: Path, char_dataset: Path, capsys):
    a = char_model(tmp_path / "a", char_dataset, 3)
    pg = page()
    pg.load(str(a))
    col = run(pg, [str(a)], "All:", max_new_tokens=60, temperature=1.5, top_p=0.9, stop="e", seed=11)[0]
    expected = sample_py(capsys, a, "All:", "--max_new_tokens=60", "--temperature=1.5", "--top_p=0.9", "--stop=e", "--seed=11")
    assert col.prompt + col.text == expected and "e" not in col.text


def test_template_prompts_every_model_alike(tmp_path: Path, capsys):
    tuned, plain = bpe_model(tmp_path / "tuned", PUBMED, 0), bpe_model(tmp_path / "plain", None, 1)
    pg = page()
    pg.load(str(plain)), pg.load(str(tuned))
    assert pg.prompt_label() == "abstract (the models write the article)"
    columns = run(pg, [str(tuned), str(plain)], "We measured protein 7.", max_new_tokens=10, seed=5, stop_at_eot=False)
    assert [c.prompt for c in columns] == ["ABSTRACT:\nWe measured protein 7.\n\nARTICLE:\n"] * 2
    expected = sample_py(capsys, tuned, "We measured protein 7.", "--max_new_tokens=10", "--seed=5", "--stop_at_eot=False")
    assert columns[0].prompt + columns[0].text == expected


def test_bad_requests_are_one_line_each(tmp_path: Path, char_dataset: Path):
    a = char_model(tmp_path / "a", char_dataset, 1, block_size=16)
    pg = page(max_new_tokens=50)
    pg.load(str(a))
    cases = [
        (dict(text="   "), "the prompt is empty"),
        (dict(text="First Citizen: hear me"), "the prompt is 22 tokens, but .* reads at most 16"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(max_new_tokens=51), "max_new_tokens must be at most 50 on this page"),
        (dict(temperature=-1.0), "temperature must not be negative"),
        (dict(names=[]), "choose at least one model"),
        (dict(names=["gpt9"]), "gpt9 is not loaded"),
        (dict(names=[str(a)] * 5), "at most 4 models"),
    ]
    for case, message in cases:
        names, text = case.pop("names", [str(a)]), case.pop("text", "All:")
        with pytest.raises(UserError, match=message):
            run(pg, names, text, **{"max_new_tokens": 5, **case})
    assert run(pg, [str(a)], "All:", max_new_tokens=5)[0].tokens == 5  # and the page goes on


def test_loading_refuses_what_does_not_fit_or_does_not_exist(tmp_path: Path, char_dataset: Path):
    small, big = char_model(tmp_path / "small", char_dataset, 1), char_model(tmp_path / "big", char_dataset, 2, n_embd=256)
    pg = page(memory_limit=1e-3)  # 1 MB for weights: the small model (~22 KB) fits, the big one (~3.2 MB) does not
    pg.load(str(small))
    with pytest.raises(UserError, match=r"needs 0.00 GB for its weights, but the page's models may take 0.00 GB.*--memory_limit"):
        pg.load(str(big))
    assert list(pg.models) == [str(small)]
    with pytest.raises(UserError, match="no model 'gpt9'"):
        pg.load("gpt9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no checkpoint yet"):
        pg.load(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="loaded already"):
        pg.load(str(small))
    # the limit is for the page's models in all: two that fit one by one do not fit together
    pair = page(memory_limit=1.5 * pg.models[str(small)].nbytes / 2**30)
    pair.load(str(small))
    with pytest.raises(UserError, match=r"GB are in use; start serve.py with a larger --memory_limit"):
        pair.load(str(char_model(tmp_path / "small2", char_dataset, 3)))


def test_a_newer_checkpoint_is_loaded_and_a_vanished_one_is_said(tmp_path: Path, char_dataset: Path, capsys):
    run_dir = char_model(tmp_path / "run", char_dataset, 1)
    pg = page()
    model = pg.load(str(run_dir))
    first = run(pg, [str(run_dir)], "All:", max_new_tokens=20)[0].text
    assert pg.refresh(model) == ""
    saved = (run_dir / "ckpt.pt").stat()
    char_model(run_dir, char_dataset, 9)  # the run saved again: the same size, within the same second
    assert (run_dir / "ckpt.pt").stat().st_size == saved.st_size
    os.utime(run_dir / "ckpt.pt", ns=(saved.st_atime_ns, saved.st_mtime_ns + 1))  # a nanosecond later
    assert "loaded its newer checkpoint ckpt.pt" in pg.refresh(model)
    second = run(pg, [str(run_dir)], "All:", max_new_tokens=20)[0]
    assert second.prompt + second.text == sample_py(capsys, run_dir, "All:", "--max_new_tokens=20", "--seed=1337")
    assert second.text != first
    (run_dir / "ckpt.pt").unlink()
    assert "its checkpoint is no longer on disk" in pg.refresh(model)
    assert run(pg, [str(run_dir)], "All:", max_new_tokens=20)[0].text == second.text  # the weights in memory still write


def brute_force_seen(train: np.ndarray, ids: list[int], n: int) -> np.ndarray:
    """Token i is seen when some n-gram of ids that covers it occurs in train (searched as bytes)."""
    hay = train.astype(np.uint16).tobytes()
    seen = np.zeros(len(ids), dtype=bool)
    for i in range(len(ids) - n + 1):
        needle = np.asarray(ids[i : i + n], dtype=np.uint16).tobytes()
        at = hay.find(needle)
        while at != -1 and at % 2:  # aligned to a token
            at = hay.find(needle, at + 1)
        if at != -1:
            seen[i : i + n] = True
    return seen


def test_seen_in_training_marks_the_spans_in_train_bin(tmp_path: Path, char_dataset: Path):
    a = char_model(tmp_path / "a", char_dataset, 1)
    pg = page()
    pg.load(str(a))
    text = "zz: Speak, speak.\n\nAll:\nResolved. Fir proceed any further, hear me. dd"
    pieces, line = pg.seen_in_training(str(a), text)
    assert "".join(p for p, _ in pieces) == text
    tok = pg.models[str(a)].tok
    labels = np.concatenate([np.full(len(tok.encode(p)), label is not None) for p, label in pieces])
    expected = brute_force_seen(np.fromfile(char_dataset / "train.bin", dtype=np.uint16), tok.encode(text), 8)
    assert labels.tolist() == expected.tolist() and expected.any() and not expected.all()
    longest = [p for p, label in pieces if label == "longest"]
    assert len(longest) == 1 and f"longest span also in train.bin: {len(longest[0])} tokens" in line
    with pytest.raises(UserError, match="no text to check"):
        pg.seen_in_training(str(a), " ")


def test_run_view_reads_the_runs_metrics_and_dataset_report(tmp_path: Path, char_dataset: Path):
    a = char_model(tmp_path / "a", char_dataset, 1)
    records = [{"iter": 0, "val_loss": 4.0, "train_loss": 4.1}, {"iter": 10, "loss": 3.5}, {"iter": 20, "val_loss": 3.0, "train_loss": 2.9}]
    (a / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    pg = page()
    pg.load(str(a))
    rows = pg.loss_rows()
    val = [(r["iteration"], r["loss"]) for r in rows if r["curve"] == f"{a}: val (eval)"]
    assert val == [(0, 4.0), (20, 3.0)] and len(rows) == 5
    assert "has no dataset report" in pg.dataset_reports()
    report = {
        "dataset": "t",
        "histogram": "doc_tokens.png",
        "documents": {"total": 1, "train": 1, "val": 0, "skipped_empty": 0},
        "per_document": {},
        "tokens_per_split": {"train": 123, "val": 7},
        "epoch": {"tokens": 123, "block_size": 64, "mfu": 0.4, "models": {}},
    }
    (char_dataset / "report.json").write_text(json.dumps(report), encoding="utf-8")
    assert "tokens per split: train 123, val 7" in pg.dataset_reports()
