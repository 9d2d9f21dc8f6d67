"""Prepared data is never silently replaced, and a model is not silently resumed or scored on data
other than it was trained on.

  - `prepare.py text` names each corpus' folder after its input (data/a for a.txt);
  - a prepare into a folder that holds data from another source, or with other settings, stops
    before writing anything, naming both sources and --overwrite=True; preparing the same source
    again writes the same bytes; --overwrite=True replaces;
  - a checkpoint records the sha256 of its data: resuming on other data stops, naming
    --allow_data_change=True, which lets it go on; eval.py on other data prints a note;
  - nanoGPT checkpoints and data without sha256 are taken as they are.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import prepare as prepare_cli
import train
from conftest import TEXT, TINY_MODEL_ARGS
from eval import main as eval_main
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.datafiles import DocumentCorpus
from gptsuite.errors import UserError
from gptsuite.pipeline import prepare_documents

RUN = [*TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=2", "--eval_interval=2", "--warmup_iters=1", "--lr_decay_iters=10"]
# a second corpus with exactly the first one's characters (so the same character vocabulary: the
# tokenizer check passes and only the data differs), in another order
OTHER = "".join(reversed(TEXT.splitlines(keepends=True)))


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def corpora(tmp_path: Path, monkeypatch) -> Path:
    """a.txt and b.txt (another text of the same characters) in the current folder, tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "b.txt").write_text(OTHER, encoding="utf-8")
    assert sorted(set(TEXT)) == sorted(set(OTHER)) and TEXT != OTHER
    return tmp_path


def prepare(*args: str) -> None:
    prepare_cli.main(["text", "--tokenizer=char", *args])


def test_each_corpus_has_its_own_folder_by_default(corpora: Path):
    prepare("--input=a.txt")
    before = files(Path("data/a"))
    prepare("--input=b.txt")
    assert json.loads(Path("data/b/meta.json").read_text())["source"] == "file b.txt"
    assert files(Path("data/a")) == before  # the first corpus' data is as it was
    prepare("--input=a.txt", "--name=mine")
    assert Path("data/mine/train.bin").read_bytes() == before["train.bin"]


def test_another_source_is_refused_and_the_data_stays_byte_identical(corpora: Path, capsys):
    prepare("--input=a.txt", "--name=x")
    before = files(Path("data/x"))
    with pytest.raises(UserError) as e:
        prepare("--input=b.txt", "--name=x")
    message = str(e.value)
    assert "\n" not in message and "a.txt" in message and "b.txt" in message and "--overwrite=True" in message
    assert files(Path("data/x")) == before

    prepare("--input=a.txt", "--name=x")  # the same source again: allowed, the same bytes
    assert files(Path("data/x")) == before
    Path("copy.txt").write_text(TEXT, encoding="utf-8")
    prepare("--input=copy.txt", "--name=x")  # the same text from another file is the same source
    assert {k: v for k, v in files(Path("data/x")).items() if k != "meta.json"} == {k: v for k, v in before.items() if k != "meta.json"}

    with pytest.raises(UserError, match="val_fraction"):  # the same text with other settings is other data
        prepare("--input=a.txt", "--name=x", "--val_fraction=0.2")
    Path("a.txt").write_text(TEXT + "more\n", encoding="utf-8")  # the same file, edited: other data
    with pytest.raises(UserError, match="--overwrite=True"):
        prepare("--input=a.txt", "--name=x")

    prepare("--input=b.txt", "--name=x", "--overwrite=True")  # told to: replaces
    meta = json.loads(Path("data/x/meta.json").read_text())
    assert meta["source"] == "file b.txt" and meta["prepared_from"]["text_sha256"] == meta["source_sha256"]
    assert Path("data/x/train.bin").read_bytes() != before["train.bin"]


def test_documents_compare_their_source_and_settings(tmp_path: Path):
    def corpus(source: str, seed: int = 1) -> DocumentCorpus:
        docs = [("val" if i < 2 else "train", f"document {i} of {source}") for i in range(10)]
        return DocumentCorpus(lambda: iter(docs), source, meta={"seed": seed})

    out = tmp_path / "d"
    prepare_documents(corpus("one"), out)
    before = files(out)
    prepare_documents(corpus("one"), out)
    assert files(out) == before
    for other in (corpus("two"), corpus("one", seed=2)):
        with pytest.raises(UserError, match="--overwrite=True"):
            prepare_documents(other, out)
        assert files(out) == before
    meta, _ = prepare_documents(corpus("two"), out, overwrite=True)
    assert meta["prepared_from"] == {"source": "two", "tokenizer": "gpt2", "dtype": "uint16", "template": None, "seed": 1}


def test_data_of_unknown_origin_is_not_replaced_and_older_meta_still_compares(corpora: Path):
    Path("data/nano").mkdir(parents=True)
    np.arange(100, dtype=np.uint16).tofile("data/nano/train.bin")  # nanoGPT data: no meta.json
    with pytest.raises(UserError, match="no meta.json.*--overwrite=True"):
        prepare("--input=a.txt", "--name=nano")
    assert Path("data/nano/train.bin").stat().st_size == 200
    prepare("--input=a.txt", "--name=nano", "--overwrite=True")

    meta_path = Path("data/nano/meta.json")  # as written before meta.json recorded prepared_from
    meta_path.write_text(json.dumps({k: v for k, v in json.loads(meta_path.read_text()).items() if k != "prepared_from"}))
    prepare("--input=a.txt", "--name=nano")
    with pytest.raises(UserError, match="--overwrite=True"):
        prepare("--input=b.txt", "--name=nano")


def train_on(data: str, *args: str) -> None:
    train.main([f"--data_dir={data}", *RUN, "--out_dir=run", *args])


def test_resume_on_changed_data_is_refused_unless_allowed(corpora: Path, capsys):
    prepare("--input=a.txt", "--name=x")
    train_on("data/x", "--max_iters=2")
    ckpt = load_checkpoint("run")
    assert ckpt["data"]["sha256"] == json.loads(Path("data/x/meta.json").read_text())["sha256"]
    assert "allow_data_change" not in ckpt["config"]

    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=3"])  # the same data: goes on
    prepare("--input=b.txt", "--name=x", "--overwrite=True")
    with pytest.raises(UserError) as e:
        train.main(["--init_from=resume", "--out_dir=run", "--max_iters=4"])
    assert "--allow_data_change=True" in str(e.value) and "a.txt" in str(e.value) and "b.txt" in str(e.value)
    assert load_checkpoint("run")["iter_num"] == 3
    capsys.readouterr()

    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=4", "--allow_data_change=True"])
    assert "allow_data_change=True" in capsys.readouterr().out
    ckpt = load_checkpoint("run")
    assert ckpt["iter_num"] == 4 and ckpt["data"]["source"] == "file b.txt" and "allow_data_change" not in ckpt["config"]
    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=5"])  # it now records the new data: no flag needed
    assert load_checkpoint("run")["iter_num"] == 5


def test_checkpoints_and_data_without_sha256_resume_as_before(corpora: Path):
    prepare("--input=a.txt", "--name=x")
    train_on("data/x", "--max_iters=2")
    prepare("--input=b.txt", "--name=x", "--overwrite=True")
    ckpt = load_checkpoint("run")
    save_checkpoint({k: v for k, v in ckpt.items() if k != "data"}, Path("run/ckpt.pt"))  # as nanoGPT's: no data record
    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=3"])
    assert load_checkpoint("run")["iter_num"] == 3

    prepare("--input=a.txt", "--name=x", "--overwrite=True")
    meta_path = Path("data/x/meta.json")  # data whose meta.json has no sha256
    meta_path.write_text(json.dumps({k: v for k, v in json.loads(meta_path.read_text()).items() if k != "sha256"}))
    train.main(["--init_from=resume", "--out_dir=run", "--max_iters=4"])
    assert load_checkpoint("run")["iter_num"] == 4


def test_eval_on_other_data_notes_it(corpora: Path, capsys):
    prepare("--input=a.txt", "--name=x")
    prepare("--input=b.txt", "--name=y")
    train_on("data/x", "--max_iters=2")
    capsys.readouterr()
    eval_main(["--out_dir=run", "--device=cpu", "--max_tokens=64"])
    assert "note:" not in capsys.readouterr().out  # its own data
    eval_main(["--out_dir=run", "--device=cpu", "--data_dir=data/y", "--max_tokens=64"])
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if line.startswith("note:"))
    assert "data/x" in note and "a.txt" in note and "data/y" in note and "b.txt" in note
    assert "val loss" in out  # a note, not an error: it is scored


def test_the_reading_bar_is_hidden_for_a_small_text_and_ends_its_line(tmp_path: Path, capsys, monkeypatch):
    from functools import partial

    from tqdm import tqdm

    from gptsuite import pipeline, textscan
    from gptsuite.datafiles import TextFileCorpus
    from gptsuite.pipeline import prepare_text

    for module in (pipeline, textscan):  # the reading bar is textscan's, the tokenizing bar pipeline's
        monkeypatch.setattr(module, "progress", partial(tqdm, file=sys.stdout))  # the bars write where capsys reads
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    prepare_text(TextFileCorpus(path, "small", tokenizer="char"), tmp_path / "small")
    assert "reading" not in capsys.readouterr().out
    prepare_text(TextFileCorpus(path, "large", tokenizer="char"), tmp_path / "large", chunk_chars=256)  # 20+ chunks: shown
    out = capsys.readouterr().out
    assert re.search(r"reading: 100%[^\n]*\n", out) and "block" not in out
