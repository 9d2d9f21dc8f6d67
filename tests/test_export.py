from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import sample
from configurator import ConfigError
from conftest import TINY_MODEL_ARGS
from export import main as export_main
from export import split_destination
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.pipeline import prepare_text
from gptsuite.sources import load_dataset_module
from gptsuite.tokenizer import GPT2Tokenizer
from model import GPT, GPTConfig
from train import main as train_main


def gpt2_checkpoint(out: Path, bias: bool, activation: str = "gelu_tanh") -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=2, n_embd=32, bias=bias, activation=activation)).eval()
    with torch.no_grad():  # non-zero biases and gains, so a wrong mapping shows in the logits
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1).add_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") else 0.0)
            elif name.endswith(("mlp.c_fc.weight", "mlp.c_proj.weight")):
                p.normal_(0.0, 0.5)  # MLP inputs where GELU's two forms differ by more than the tolerance
    state = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": {"kind": "gpt2", "vocab_size": 50257}}
    save_checkpoint(state, out / "ckpt.pt")
    return model


@pytest.mark.slow
@pytest.mark.parametrize("bias, activation", [(True, "gelu_tanh"), (False, "gelu_tanh"), (False, "gelu")])
def test_export_loads_in_transformers_with_equal_logits(tmp_path: Path, monkeypatch, bias: bool, activation: str):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline

    model = gpt2_checkpoint(tmp_path / "out", bias, activation)
    export_main([f"--out_dir={tmp_path / 'out'}", "--to=hf", str(tmp_path / "hf")])
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert hf.config.vocab_size == 50257 and hf.config.activation_function == {"gelu_tanh": "gelu_new", "gelu": "gelu"}[activation]
    x = torch.randint(0, 50257, (2, 32))
    with torch.no_grad():
        ours, _ = model(x, x)
        theirs = hf(x).logits
    torch.testing.assert_close(theirs, ours[..., :50257], atol=1e-5, rtol=1e-5)

    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    text = "Hello world, exported"
    assert tok(text)["input_ids"] == GPT2Tokenizer().encode(text) and tok.eos_token_id == 50256
    if bias:  # the pipeline once is enough
        pipe = pipeline("text-generation", model=str(tmp_path / "hf"), tokenizer=str(tmp_path / "hf"), device="cpu")
        out = pipe("Hello", max_new_tokens=5, do_sample=False)[0]["generated_text"]
        expected = model.generate(torch.tensor([tok("Hello")["input_ids"]]), 5, temperature=0, vocab_limit=50257)
        assert out == tok.decode(expected[0])


def test_transformers_generates_max_new_tokens_from_the_export_without_a_warning(tmp_path: Path, monkeypatch):
    """generation_config.json sets no max_length, which transformers would warn about on every
    generate(max_new_tokens=...): "Both `max_new_tokens` and `max_length` seem to have been set"."""
    import logging

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import GPT2LMHeadModel

    gpt2_checkpoint(tmp_path / "out", bias=True)
    export_main([f"--out_dir={tmp_path / 'out'}", "--to=hf", str(tmp_path / "hf")])
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")  # transformers' loggers do not propagate to the root
    logger.addHandler(handler)
    try:
        prompt = torch.tensor([GPT2Tokenizer().encode("Hello world")])
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False)
    finally:
        logger.removeHandler(handler)
    assert out.shape == (1, prompt.shape[1] + 3)
    assert [r.getMessage() for r in records] == []


def test_char_models_and_bad_destinations_are_refused(tmp_path: Path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=3, n_layer=1, n_head=2, n_embd=8))
    char = {"kind": "char", "vocab_size": 3, "vocab": ["a", "b", "c"]}
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": char}, tmp_path / "char" / "ckpt.pt")
    with pytest.raises(UserError, match="char"):
        export_main([f"--out_dir={tmp_path / 'char'}", "--to=hf", str(tmp_path / "hf")])
    assert not (tmp_path / "hf").exists()
    with pytest.raises(ConfigError, match="to must be one of hf"):
        export_main([f"--out_dir={tmp_path / 'char'}", "--to=onnx", str(tmp_path / "hf")])
    with pytest.raises(UserError, match="folder to write"):
        export_main([f"--out_dir={tmp_path / 'char'}"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    gpt2_checkpoint(tmp_path / "bpe", bias=True)
    with pytest.raises(UserError, match="not an empty folder"):
        export_main([f"--out_dir={tmp_path / 'bpe'}", f"--hf_dir={tmp_path / 'full'}"])
    assert split_destination(["config/a.py", "--to=hf", "dest"]) == ("dest", ["config/a.py", "--to=hf"])


def test_sample_and_export_read_a_run_whose_ckpt_pt_is_gone(tmp_path: Path, text_file: Path, capsys):
    """Only the numbered checkpoints of --keep_last are left: sample.py and export.py take the newest,
    as train.py --init_from=resume does."""
    module, data, out = load_dataset_module("shakespeare"), tmp_path / "data", tmp_path / "out"
    prepare_text(module.corpus(module.Config(input=str(text_file)), data), data)  # GPT-2 BPE: export needs it
    args = [*TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=100", "--learning_rate=1e-2"]
    train_main([f"--data_dir={data}", f"--out_dir={out}", *args, "--max_iters=10", "--checkpoint_interval=5", "--keep_last=2"])
    assert sorted(p.name for p in out.glob("ckpt*.pt")) == ["ckpt-000005.pt", "ckpt-000010.pt", "ckpt.pt"]
    (out / "ckpt.pt").unlink()
    newest = load_checkpoint(out / "ckpt-000010.pt")
    (tmp_path / "only").mkdir()
    save_checkpoint(newest, tmp_path / "only" / "ckpt.pt")  # the same checkpoint where everything finds it

    flags = ["--device=cpu", "--start=First", "--num_samples=1", "--max_new_tokens=8", "--temperature=0"]
    capsys.readouterr()
    sample.main([f"--out_dir={out}", *flags])
    sampled = capsys.readouterr().out
    sample.main([f"--out_dir={tmp_path / 'only'}", *flags])
    assert sampled.startswith("First") and sampled == capsys.readouterr().out

    export_main([f"--out_dir={out}", "--to=hf", str(tmp_path / "hf")])
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    for name in ("transformer.wpe.weight", "transformer.h.1.mlp.c_proj.weight"):  # c_proj: GPT-2's Conv1D stores it transposed
        trained = newest["model"][name]
        assert torch.equal(exported[name], trained.t() if name.endswith("c_proj.weight") else trained), name


def test_a_peft_export_names_each_adapter_weight_under_base_model_model(tmp_path: Path, monkeypatch):
    """peft's PeftModel wraps a model as base_model (its LoraModel) with the model as .model, so
    adapter_model.safetensors names the checkpoint's transformer.h.0... weights
    base_model.model.transformer.h.0...; tests/test_lora_export.py loads such an export in peft.
    Here peft's config writer is stood in for (importing peft takes seconds)."""
    from gptsuite.atomic import file_sha256
    from gptsuite.hf_export import export_peft_adapter
    from gptsuite.lora import LoraConfig

    base = tmp_path / "base"  # a Hugging Face folder as far as the export looks: it is not loaded
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"weights")
    reference = {"init_from": str(base), "weights": str(base / "model.safetensors"), "sha256": file_sha256(base / "model.safetensors")}
    adapters = {f"transformer.h.0.attn.c_attn.lora_{m}.weight": torch.full((2, 2), float(i)) for i, m in enumerate("AB")}
    ckpt = {"lora": LoraConfig(rank=2).record() | {"base": reference}, "model": adapters, "model_args": {"block_size": 16}}
    written = lambda dest: (Path(dest) / "adapter_config.json").write_text("{}")  # noqa: E731
    monkeypatch.setattr(LoraConfig, "peft_config", lambda self, **extra: SimpleNamespace(save_pretrained=written))
    export_peft_adapter(ckpt, tmp_path / "peft", "run")
    exported = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    assert exported.keys() == {f"base_model.model.{k}" for k in adapters}
    assert all(torch.equal(exported[f"base_model.model.{k}"], v) for k, v in adapters.items())
