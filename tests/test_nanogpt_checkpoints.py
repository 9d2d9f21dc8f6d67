"""A ckpt.pt written by nanoGPT's own train.py samples, evaluates and exports here: it records no
tokenizer, so the tokenizer is the one of the dataset folder its config names (this project's
meta.json or nanoGPT's meta.pkl), if that fits the model's vocabulary; when nothing fits, one
line says which folder the checkpoint needs."""

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import sample
from conftest import TEXT
from eval import main as eval_main
from export import main as export_main
from gptsuite.checkpoint import load_checkpoint, model_from_checkpoint
from gptsuite.errors import UserError
from gptsuite.loading import load_model
from gptsuite.tokenizer import CharTokenizer
from model import GPT, GPTConfig

# the config dict nanoGPT's train.py saves: every setting of config/train_shakespeare_char.py and its defaults
NANOGPT_CONFIG = {
    "out_dir": "out-shakespeare-char",
    "eval_interval": 250,
    "log_interval": 10,
    "eval_iters": 200,
    "eval_only": False,
    "always_save_checkpoint": False,
    "init_from": "scratch",
    "wandb_log": False,
    "wandb_project": "shakespeare-char",
    "wandb_run_name": "mini-gpt",
    "dataset": "shakespeare_char",
    "gradient_accumulation_steps": 1,
    "batch_size": 64,
    "block_size": 256,
    "n_layer": 6,
    "n_head": 6,
    "n_embd": 384,
    "dropout": 0.2,
    "bias": False,
    "learning_rate": 0.001,
    "max_iters": 5000,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "grad_clip": 1.0,
    "decay_lr": True,
    "warmup_iters": 100,
    "lr_decay_iters": 5000,
    "min_lr": 0.0001,
    "backend": "nccl",
    "device": "cuda",
    "dtype": "bfloat16",
    "compile": True,
}


def nanogpt_checkpoint(out_dir: Path, vocab_size: int, **config) -> GPT:
    """What nanoGPT's train.py writes for a torch.compile'd model: keys prefixed '_orig_mod.', the
    causal-mask buffers '.attn.bias' of a torch without flash attention, AdamW's state, its own
    config dict, no 'tokenizer'; saved with a plain torch.save."""
    model_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=vocab_size, dropout=0.0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**model_args, activation="gelu")).eval()  # nanoGPT's MLP: exact GELU (its model_args do not say)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    for i in range(model_args["n_layer"]):
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
    ckpt = {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "model_args": model_args,
        "iter_num": 250,
        "best_val_loss": torch.tensor(1.4697),
        "config": {**NANOGPT_CONFIG, **config},
    }
    out_dir.mkdir(parents=True)
    torch.save(ckpt, out_dir / "ckpt.pt")
    return model


def project_char_dataset(folder: Path, text: str = TEXT) -> list[str]:
    """data/shakespeare_char as this project's prepare writes it (meta.json, and meta.pkl for nanoGPT); its characters."""
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    source = folder.parent / "input.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text, encoding="utf-8")
    module = load_dataset_module("shakespeare_char")
    prepare_text(module.corpus(module.Config(input=str(source)), folder), folder)
    return json.loads((folder / "meta.json").read_text())["tokenizer"]["vocab"]


def nanogpt_char_dataset(folder: Path) -> list[str]:
    """data/shakespeare_char as nanoGPT's prepare writes it (meta.pkl, no meta.json); its characters."""
    vocab = project_char_dataset(folder)  # the same sorted characters, so the same ids in the same .bin files
    (folder / "meta.json").unlink()
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(vocab), "itos": dict(enumerate(vocab)), "stoi": {c: i for i, c in enumerate(vocab)}}, f)
    return vocab


@pytest.mark.parametrize("prepared_by", ["this project (meta.json)", "nanoGPT (meta.pkl)"])
def test_nanogpt_char_checkpoint_samples_and_evaluates(tmp_path: Path, monkeypatch, capsys, prepared_by):
    data = tmp_path / "data" / "shakespeare_char"
    vocab = (project_char_dataset if "meta.json" in prepared_by else nanogpt_char_dataset)(data)
    model = nanogpt_checkpoint(tmp_path / "out-shakespeare-char", len(vocab))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    eval_main(["--out_dir=out-shakespeare-char", "--device=cpu"])
    out = capsys.readouterr().out
    assert f"using the char tokenizer of {len(vocab)} ids of data/shakespeare_char" in out
    line = next(x for x in out.splitlines() if " val loss " in x)
    assert line.startswith("out-shakespeare-char: val loss ") and "of data/shakespeare_char" in line
    assert 0 < float(line.split("val loss ")[1].split(",")[0]) < 10
    assert out.count("reading nanoGPT metadata") == (1 if "meta.pkl" in prepared_by else 0)  # read twice, said once

    sample.main(["--out_dir=out-shakespeare-char", "--device=cpu", "--start=First", "--num_samples=1", "--max_new_tokens=20", "--temperature=0"])
    out = capsys.readouterr().out
    assert "using the char tokenizer of" in out and "GPT-2 BPE" not in out
    tok = CharTokenizer(vocab)
    expected = tok.decode(model.generate(torch.tensor([tok.encode("First")]), 20, temperature=0)[0].tolist())
    assert f"\n{expected}\n{sample.SEPARATOR}" in out


def test_nanogpt_checkpoint_without_its_data_is_one_clear_line(tmp_path: Path, monkeypatch):
    nanogpt_checkpoint(tmp_path / "out", len(set(TEXT)))
    monkeypatch.chdir(tmp_path)
    for run, also in (  # sample.py has --data_dir for the data the model was trained on; eval's and export has none
        (lambda: sample.main(["--out_dir=out", "--device=cpu", "--num_samples=1", "--max_new_tokens=5"]), " or pass --data_dir=that folder"),
        (lambda: eval_main(["--out_dir=out", "--device=cpu"]), ""),
        (lambda: export_main(["--out_dir=out", "hf"]), ""),
    ):
        with pytest.raises(UserError) as e:
            run()
        msg = str(e.value)
        assert "\n" not in msg and "GPT-2 BPE's 50257" in msg and f"its {len(set(TEXT))} token ids" in msg
        assert "there is no folder data/shakespeare_char" in msg
        assert msg.endswith("put the dataset folder it was trained on, with its meta.json or nanoGPT's meta.pkl, at data/shakespeare_char" + also)
    assert not (tmp_path / "hf").exists()


def test_a_dataset_folder_whose_vocabulary_does_not_fit_is_refused(tmp_path: Path, monkeypatch):
    """data/shakespeare_char holds other text (34 characters), the model was trained on 65."""
    have = len(project_char_dataset(tmp_path / "data" / "shakespeare_char"))
    nanogpt_checkpoint(tmp_path / "out", 65)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"its 65 token ids .* the char tokenizer of data/shakespeare_char has {have} ids; put the dataset folder"):
        sample.main(["--out_dir=out", "--device=cpu", "--num_samples=1", "--max_new_tokens=5"])


def test_data_dir_is_looked_at_first_and_named_in_the_error(tmp_path: Path, monkeypatch):
    """load_model(data_dir=...): where the caller's --data_dir says the training data is."""
    vocab = project_char_dataset(tmp_path / "elsewhere" / "chars")
    nanogpt_checkpoint(tmp_path / "out", len(vocab))
    monkeypatch.chdir(tmp_path)
    assert load_model("resume", "out", data_dir=str(tmp_path / "elsewhere" / "chars")).tokenizer["vocab"] == vocab
    assert "Z" not in vocab
    other = project_char_dataset(tmp_path / "data" / "shakespeare_char", TEXT.replace("F", "Z"))  # as many characters, not the same
    assert load_model("resume", "out").tokenizer["vocab"] == other
    assert load_model("resume", "out", data_dir=str(tmp_path / "elsewhere" / "chars")).tokenizer["vocab"] == vocab
    (tmp_path / "data" / "shakespeare_char" / "meta.json").unlink()
    (tmp_path / "data" / "shakespeare_char" / "meta.pkl").unlink()
    with pytest.raises(UserError, match=r"data/shakespeare_char has no meta.json or meta.pkl; .* at data/shakespeare_char or pass --data_dir=that folder$"):
        load_model("resume", "out", data_dir="")
    with pytest.raises(UserError, match=r"at data/shakespeare_char$"):
        load_model("resume", "out")  # a caller without a --data_dir option: not suggested


def test_nanogpt_gpt2_checkpoint_exports_with_readable_files(tmp_path: Path, monkeypatch, capsys):
    """A GPT-2 BPE nanoGPT run (openwebtext, 50304 ids) whose data is not here: GPT-2 BPE, as nanoGPT
    assumes; every exported file, model.safetensors too, gets the mode the umask gives new files."""
    nanogpt_checkpoint(tmp_path / "out", 50304, dataset="openwebtext")
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o027)
    try:
        export_main(["--out_dir=out", "hf"])
    finally:
        os.umask(old)
    assert "records no tokenizer (a nanoGPT checkpoint): using GPT-2 BPE" in capsys.readouterr().out
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}, modes


def nanogpt_logits(state: dict, n_head: int, idx: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """nanoGPT's model.py forward, written out from its state dict (keys as its GPT names them):
    learned positions, pre-LayerNorm blocks, causal attention, an MLP with nn.GELU() (exact unless
    `approximate`), the head tied to wte."""
    sd = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    ln = lambda x, name: F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd.get(f"{name}.bias"), 1e-5)
    lin = lambda x, name: F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    n_layer = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    for i in range(n_layer):
        h = f"transformer.h.{i}"
        q, k, v = lin(ln(x, f"{h}.ln_1"), f"{h}.attn.c_attn").split(x.shape[-1], dim=2)
        q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
        x = x + lin(y, f"{h}.attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, f"{h}.ln_2"), f"{h}.mlp.c_fc"), approximate=approximate), f"{h}.mlp.c_proj")
    return F.linear(ln(x, "transformer.ln_f"), sd["transformer.wte.weight"])


def test_a_nanogpt_checkpoint_computes_what_nanogpt_computes(tmp_path: Path):
    """nanoGPT trains with exact GELU; OpenAI's GPT-2 (and our default) uses its tanh form. A nanoGPT
    checkpoint (no arch, no activation in its model_args) runs with exact GELU here."""
    nanogpt_checkpoint(tmp_path / "out", 65)
    state = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["model"]
    with torch.no_grad():
        for k, v in state.items():  # weights of a trained size, so that the two GELUs differ as they do in real runs
            if k.endswith(("mlp.c_fc.weight", "mlp.c_proj.weight", "wte.weight")):
                v.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    torch.save({**torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True), "model": state}, tmp_path / "out" / "ckpt.pt")
    idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(2))
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "out")).eval()
    assert loaded.config.activation == "gelu" and loaded.model_args()["activation"] == "gelu"
    with torch.no_grad():
        ours, theirs = loaded(idx, all_logits=True)[0], nanogpt_logits(state, 2, idx)
        tanh = nanogpt_logits(state, 2, idx, approximate="tanh")
    assert (ours - theirs).abs().max() <= 1e-5
    assert (tanh - theirs).abs().max() > 1e-3  # the test tells the two apart
