"""Loading GPT-2 weights in the Hugging Face layout, checked against transformers itself.

No network: the tests build small random GPT2LMHeadModels with transformers and save them as the
hub does (config.json + model.safetensors)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sample
from conftest import forked
from eval import main as eval_main
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError
from gptsuite.pretrained import HUB_MODELS, from_pretrained
from gptsuite.tokenizer import GPT2Tokenizer
from train import main as train_main

pytestmark = pytest.mark.slow  # every test builds GPT-2 weights with transformers, most compare logits with it

SHAPES = {  # GPT-2's and distilgpt2's depth and vocabulary, narrower
    "gpt2": dict(n_layer=12, n_head=12, n_embd=48),
    "distilgpt2": dict(n_layer=6, n_head=12, n_embd=48),
}


def save_hf_model(folder: Path, **shape) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, **shape)).eval()
    hf.save_pretrained(folder, safe_serialization=True)
    return hf


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hf")
    return {name: (root / name, save_hf_model(root / name, **shape)) for name, shape in SHAPES.items()}


def hf_logits(hf, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(x).logits


def our_logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x, x)[0]  # with targets: logits at every position


@pytest.mark.parametrize("name", SHAPES)
def test_logits_match_transformers(hf_models, name):
    folder, hf = hf_models[name]
    model = from_pretrained(str(folder))
    assert model.config.n_layer == SHAPES[name]["n_layer"] and model.config.bias and model.config.vocab_size == 50257
    assert model.transformer.wte.weight is model.lm_head.weight
    assert model.get_num_params(non_embedding=False) == sum(p.numel() for p in hf.parameters())  # transformers counts the tied weight once too
    x = torch.randint(0, 50257, (2, 64))
    torch.testing.assert_close(our_logits(model, x), hf_logits(hf, x), atol=1e-5, rtol=0)


def test_hub_layout_without_prefix_and_with_mask_buffers(hf_models, tmp_path: Path):
    """The hub's own files name keys h.0... (no 'transformer.') and carry attn.bias buffers."""
    folder, hf = hf_models["distilgpt2"]
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in load_file(folder / "model.safetensors").items()}
    for i in range(6):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    x = torch.randint(0, 50257, (1, 40))
    torch.testing.assert_close(our_logits(from_pretrained(str(tmp_path)), x), hf_logits(hf, x), atol=1e-5, rtol=0)


def test_crop_block_size_and_dropout(hf_models):
    folder, hf = hf_models["distilgpt2"]
    model = from_pretrained(str(folder), dropout=0.1, block_size=16)
    assert model.config.block_size == 16 and model.config.dropout == 0.1
    assert model.transformer.wpe.weight.shape == (16, 48)
    x = torch.randint(0, 50257, (2, 16))
    torch.testing.assert_close(our_logits(model, x), hf_logits(hf, x), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="block_size=128 is longer .* 64"):
        from_pretrained(str(folder), block_size=128)


def test_bad_sources_are_clear_errors(hf_models, tmp_path: Path):
    with pytest.raises(UserError, match="unknown init_from 'gpt3'.*gpt2-xl"):
        from_pretrained("gpt3")
    with pytest.raises(UserError, match="no model.safetensors"):
        (tmp_path / "config.json").write_text("{}")
        from_pretrained(str(tmp_path))
    folder, _ = hf_models["gpt2"]
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text((hf_models["distilgpt2"][0] / "config.json").read_text())  # 6 layers, 12 in the file
    with pytest.raises(UserError, match="does not match its config.json"):
        from_pretrained(str(tmp_path))


def test_offline_hub_download_is_a_clear_error_then_uses_the_cache(hf_models, tmp_path: Path):
    # huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported: sample.py runs in a
    # process of its own with them (conftest.forked: huggingface_hub is not imported there yet)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    [proc] = forked("sample.py", "--init_from=distilgpt2", "--device=cpu", envs=[env], fresh=("huggingface_hub",))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "--init_from=" in proc.stderr and "hf download distilbert/distilgpt2" in proc.stderr

    # what huggingface_hub leaves in its cache after a download: the same name then loads offline
    snapshot = tmp_path / "hf" / "hub" / f"models--{HUB_MODELS['distilgpt2'].replace('/', '--')}"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0" * 40)
    (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / "snapshots" / ("0" * 40) / name).write_bytes((hf_models["distilgpt2"][0] / name).read_bytes())
    [proc] = forked(
        "sample.py", "--init_from=distilgpt2", "--device=cpu", "--start=Hello", "--num_samples=1", "--max_new_tokens=4", envs=[env], fresh=("huggingface_hub",)
    )
    assert proc.returncode == 0, proc.stderr
    assert "loading GPT-2 weights distilgpt2: 6 layers" in proc.stdout and "\nHello" in proc.stdout


def test_finetune_and_sample_from_gpt2_weights(hf_models, tmp_path: Path, text_file: Path, char_dataset: Path, capsys):
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    module = load_dataset_module("shakespeare")
    data = tmp_path / "bpe"
    prepare_text(module.corpus(module.Config(input=str(text_file)), data), data)
    ids = [np.fromfile(data / f"{split}.bin", dtype=np.uint16).tolist() for split in ("train", "val")]
    assert GPT2Tokenizer().decode(ids[0]) + GPT2Tokenizer().decode(ids[1]) == text_file.read_text()  # nanoGPT's data/shakespeare
    folder, _ = hf_models["distilgpt2"]
    args = ["--device=cpu", "--compile=False", "--batch_size=2", "--block_size=32", "--gradient_accumulation_steps=1", "--eval_iters=2", "--max_iters=2"]
    train_main([f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", f"--init_from={folder}", "--dropout=0.1", *args])
    ckpt = load_checkpoint(tmp_path / "out")
    assert ckpt["iter_num"] == 2 and ckpt["tokenizer"]["kind"] == "gpt2"
    assert ckpt["model_args"] | {"dropout": 0} == dict(
        block_size=32, vocab_size=50257, n_layer=6, n_head=12, n_embd=48, dropout=0, bias=True, arch="gpt2", activation="gelu_tanh"
    )

    capsys.readouterr()
    sample.main([f"--init_from={folder}", "--device=cpu", "--start=All:", "--num_samples=1", "--max_new_tokens=5"])
    assert capsys.readouterr().out.split("\n", 1)[1].startswith("All:")
    eval_main([f"--init_from={folder}", f"--data_dir={data}", "--device=cpu", "--block_size=32"])  # GPT-2 as it is, on the data
    assert "perplexity" in capsys.readouterr().out

    with pytest.raises(UserError, match="GPT-2 BPE.*char"):
        train_main([f"--data_dir={char_dataset}", f"--out_dir={tmp_path / 'x'}", f"--init_from={folder}", *args])
