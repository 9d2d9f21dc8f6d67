"""Data and checkpoints move between this suite and nanoGPT in both directions."""

import pickle
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
