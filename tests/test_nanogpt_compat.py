"""Data and checkpoints move between this suite and nanoGPT in both directions."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEXT
from gptsuite.checkpoint import checkpoint_tokenizer_meta, load_checkpoint, model_from_checkpoint, save_checkpoint
from gptsuite.datafiles import load_meta
from gptsuite.errors import UserError
from gptsuite.tokenizer import from_meta
from model import GPT, GPTConfig
from prepare import main as prepare_main


def nanogpt_char_dataset(folder: Path) -> None:
    """What nanoGPT's data/shakespeare_char/prepare.py writes."""
    chars = sorted(set(TEXT))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    n = len(TEXT)
    folder.mkdir(parents=True)
    np.array([stoi[c] for c in TEXT[: int(n * 0.9)]], dtype=np.uint16).tofile(folder / "train.bin")
    np.array([stoi[c] for c in TEXT[int(n * 0.9) :]], dtype=np.uint16).tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)


def test_nanogpt_char_dataset_reads_without_unpickling_code(tmp_path: Path):
    nanogpt_char_dataset(tmp_path / "d")
    meta = load_meta(tmp_path / "d")
    tok = from_meta(meta["tokenizer"])
    assert tok.decode(np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).tolist()) == TEXT[: int(len(TEXT) * 0.9)]


def test_malicious_meta_pkl_is_refused(tmp_path: Path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    (tmp_path / "train.bin").write_bytes(b"\0\0" * 10)
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 1, "itos": Evil()}, f)
    with pytest.raises(UserError, match="posix.system|os.system|nt.system"):
        load_meta(tmp_path)


def test_nanogpt_gpt2_folder_without_meta_reads_as_gpt2(tmp_path: Path):
    np.array([1, 2, 3], dtype=np.uint16).tofile(tmp_path / "train.bin")
    assert load_meta(tmp_path)["tokenizer"]["kind"] == "gpt2"


def test_nanogpt_checkpoint_samples(tmp_path: Path, monkeypatch):
    """A nanoGPT ckpt.pt: compiled-model key prefix, its own config dict, tokenizer from data/<dataset>/meta.pkl."""
    monkeypatch.chdir(tmp_path)
    nanogpt_char_dataset(tmp_path / "data" / "shakespeare_char")
    vocab = len(set(TEXT))
    model_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=vocab, dropout=0.0)
    model = GPT(GPTConfig(**model_args))
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    ckpt = {
        "model": state,
        "optimizer": {},
        "model_args": model_args,
        "iter_num": 5,
        "best_val_loss": torch.tensor(2.5),
        "config": {"dataset": "shakespeare_char", "batch_size": 12},
    }
    save_checkpoint(ckpt, tmp_path / "out" / "ckpt.pt")
    loaded = load_checkpoint(tmp_path / "out")
    tok = from_meta(checkpoint_tokenizer_meta(loaded))
    again = model_from_checkpoint(loaded).eval()
    x = torch.tensor([tok.encode("First")])
    out = again.generate(x, 5, temperature=0)
    assert tok.decode(out[0].tolist()).startswith("First")
    assert torch.equal(out, model.eval().generate(x, 5, temperature=0))  # the weights that were saved, not fresh ones


# tinyshakespeare's 65 characters, as nanoGPT's data/shakespeare_char/prepare.py prints them
TINYSHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# nanoGPT's reading of a dataset folder, its lines as they are (karpathy/nanoGPT): train.py's
# get_batch memmap, "attempt to derive vocab_size from the dataset" and the scratch model's
# vocab_size; sample.py's "look for the meta pickle" encode/decode. Run with `python -I` from a
# folder holding data/<dataset>, as nanoGPT runs from its checkout: plain pickle, nothing of ours
# importable.
NANOGPT_READER = """
import json, os, pickle, sys
import numpy as np
dataset, prompt = sys.argv[1], sys.argv[2]
data_dir = os.path.join('data', dataset)
data = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=np.uint16, mode='r')
# train.py: attempt to derive vocab_size from the dataset
meta_path = os.path.join(data_dir, 'meta.pkl')
meta_vocab_size = None
if os.path.exists(meta_path):
    with open(meta_path, 'rb') as f:
        meta = pickle.load(f)
    meta_vocab_size = meta['vocab_size']
    print(f"found vocab_size = {meta_vocab_size} (inside {meta_path})", file=sys.stderr)
vocab_size = meta_vocab_size if meta_vocab_size is not None else 50304
# sample.py: look for the meta pickle in case it is available in the dataset folder
load_meta = os.path.exists(meta_path)
if load_meta:
    with open(meta_path, 'rb') as f:
        meta = pickle.load(f)
    stoi, itos = meta['stoi'], meta['itos']
    encode = lambda s: [stoi[c] for c in s]
    decode = lambda l: ''.join([itos[i] for i in l])
else:
    decode = None
print(json.dumps({
    'vocab_size': vocab_size,
    'train_text': decode(data.tolist()) if decode else None,
    'prompt_ids': encode(prompt) if decode else None,
}))
"""


def nanogpt_reads(root: Path, dataset: str, prompt: str) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-c", NANOGPT_READER, dataset, prompt], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_nanogpt_reads_character_data_prepared_here(tmp_path: Path):
    """nanoGPT's train.py and sample.py read a character-level folder of ours: a 65-character vocabulary
    for tinyshakespeare's characters (not GPT-2's 50304), decoding train.bin back to its text."""
    text = TEXT + TINYSHAKESPEARE_CHARS[::-1] * 3 + TEXT
    (tmp_path / "shakespeare.txt").write_text(text, encoding="utf-8")
    folder = tmp_path / "data" / "shakespeare_char"
    prepare_main(["shakespeare_char", f"--input={tmp_path / 'shakespeare.txt'}", f"--data_dir={folder}"])
    read = nanogpt_reads(tmp_path, "shakespeare_char", "First Citizen:")
    assert read["vocab_size"] == 65
    assert read["train_text"] == text[: int(len(text) * 0.9)]
    assert read["prompt_ids"] == [TINYSHAKESPEARE_CHARS.index(c) for c in "First Citizen:"]

    # the text dataset at character level (documents) writes it too
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.md").write_text(f"Document {i}: {TEXT[:200]}", encoding="utf-8")
    prepare_main(["text", f"--input={docs}", "--tokenizer=char", f"--data_dir={tmp_path / 'data' / 'docs'}"])
    read = nanogpt_reads(tmp_path, "docs", "Document")
    assert read["vocab_size"] == load_meta(tmp_path / "data" / "docs")["vocab_size"] == len(set("".join(p.read_text() for p in docs.iterdir()) + "\n"))


def test_meta_pkl_is_for_nanogpt_only_and_goes_with_its_data(tmp_path: Path, text_file: Path):
    """This suite reads meta.json, never the meta.pkl beside it; GPT-2 data replacing character data
    takes the old vocabulary away, so nanoGPT reads the new data as GPT-2 BPE."""
    folder = tmp_path / "data" / "d"
    prepare_main(["shakespeare_char", f"--input={text_file}", f"--data_dir={folder}"])
    (folder / "meta.pkl").write_bytes(b"not a pickle")
    assert load_meta(folder)["tokenizer"]["vocab"] == sorted(set(TEXT))
    prepare_main(["text", f"--input={text_file}", f"--data_dir={folder}", "--overwrite=True"])
    assert not (folder / "meta.pkl").exists()
    assert nanogpt_reads(tmp_path, "d", "")["vocab_size"] == 50304
