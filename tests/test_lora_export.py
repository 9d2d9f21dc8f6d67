"""A LoRA run out to Hugging Face: merged into a GPT2LMHeadModel, or the adapter alone in peft's
format on top of transformers' GPT-2; both give our logits. No network: the base is a small
random GPT2LMHeadModel saved as the hub does."""

from pathlib import Path

import pytest
import torch

import export
from gptsuite.chat import CHAT_TEMPLATE, jinja, prompt_ids
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.loading import load_model, lora_model
from gptsuite.tokenizer import GPT2Tokenizer
from train import main as train_main

pytestmark = pytest.mark.slow  # transformers and peft models


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("hf") / "base"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_layer=2, n_head=2, n_embd=32)).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory) -> Path:
    from conftest import TEXT
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    root = tmp_path_factory.mktemp("bpe")
    (root / "input.txt").write_text(TEXT, encoding="utf-8")
    module = load_dataset_module("shakespeare")
    prepare_text(module.corpus(module.Config(input=str(root / "input.txt")), root / "data"), root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> Path:
    """Short conversations in GPT-2 BPE (prepare.py chat)."""
    import json

    from gptsuite.pipeline import prepare_documents
    from gptsuite.sources import load_dataset_module

    root = tmp_path_factory.mktemp("chat")
    records = [
        {"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w}, {w}!"}]}
        for w in ("alpha beta gamma delta epsilon zeta eta theta " * 3).split()
    ]
    (root / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    module = load_dataset_module("chat")
    prepare_documents(module.corpus(module.Config(input=str(root / "c.jsonl"), block_size=32), root / "data"), root / "data")
    return root / "data"


@pytest.mark.parametrize("bias", ["none", "all"])
def test_merged_and_peft_exports_give_our_logits(base: Path, bpe_data: Path, chat_data: Path, tmp_path: Path, bias: str):
    """lora_bias=all trains on conversations: the adapter's export carries the chat template."""
    from peft import PeftModel
    from transformers import AutoTokenizer, GPT2LMHeadModel

    args = ["--device=cpu", "--compile=False", "--batch_size=2", "--block_size=32", "--gradient_accumulation_steps=1", "--eval_iters=2", "--eval_interval=100"]
    data = chat_data if bias == "all" else bpe_data
    train_main(
        [*args, f"--data_dir={data}", f"--out_dir={tmp_path / 'lora'}", f"--init_from={base}", "--lora_rank=4", f"--lora_bias={bias}"]
        + ["--learning_rate=3e-2", "--max_iters=8", "--warmup_iters=0", "--decay_lr=False", "--weight_decay=0"]
    )
    ckpt = load_checkpoint(tmp_path / "lora")
    assert all(v.abs().max() > 0 for k, v in ckpt["model"].items() if "lora_B" in k)  # the adapters trained
    assert any(k.endswith(".bias") for k in ckpt["model"]) == (bias == "all")

    export.main([f"--out_dir={tmp_path / 'lora'}", "--to=hf", str(tmp_path / "merged")])
    export.main([f"--out_dir={tmp_path / 'lora'}", "--to=peft", str(tmp_path / "adapter")])
    x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = load_model("resume", str(tmp_path / "lora")).model(x, all_logits=True)[0][..., :50257]
        unmerged = lora_model(ckpt, "lora", merged=False).eval()(x, all_logits=True)[0][..., :50257]
        merged = GPT2LMHeadModel.from_pretrained(tmp_path / "merged").eval()(x).logits
        peft = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), tmp_path / "adapter").eval()(x).logits
        plain = GPT2LMHeadModel.from_pretrained(base).eval()(x).logits
    diffs = {
        name: (other - ours).abs().max().item() for name, other in (("unmerged", unmerged), ("transformers merged", merged), ("transformers + peft", peft))
    }
    print(f"lora_bias={bias}: max abs logit difference against ours: {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs
    assert (plain - ours).abs().max() > 1e-3  # the adapters change the logits: the comparison can fail
    messages = [{"role": "user", "content": "Say alpha."}]
    for folder in ("merged", "adapter"):
        template = AutoTokenizer.from_pretrained(tmp_path / folder).chat_template
        assert (template == jinja(CHAT_TEMPLATE)) == (bias == "all"), (folder, template)
    if bias == "all":
        ids = AutoTokenizer.from_pretrained(tmp_path / "adapter").apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        assert ids == prompt_ids(GPT2Tokenizer(), CHAT_TEMPLATE, messages)


def test_peft_export_refusals(base: Path, bpe_data: Path, tmp_path: Path, tiny_checkpoint: Path, char_dataset: Path):
    with pytest.raises(UserError, match="is not a LoRA run .* --to=hf"):
        export.main([f"--out_dir={tiny_checkpoint}", "--to=peft", str(tmp_path / "a")])
    args = ["--device=cpu", "--compile=False", "--batch_size=2", "--block_size=16", "--gradient_accumulation_steps=1", "--eval_iters=1", "--max_iters=1"]
    train_main([*args, f"--data_dir={char_dataset}", f"--out_dir={tmp_path / 'ours'}", f"--init_from={tiny_checkpoint}", "--lora_rank=2"])
    with pytest.raises(UserError, match="a checkpoint of ours, which transformers cannot load as a base model; export the merged model with --to=hf"):
        export.main([f"--out_dir={tmp_path / 'ours'}", "--to=peft", str(tmp_path / "b")])

    train_main([*args, "--block_size=32", f"--data_dir={bpe_data}", f"--out_dir={tmp_path / 'hf'}", f"--init_from={base}", "--lora_rank=2"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not an empty folder"):
        export.main([f"--out_dir={tmp_path / 'hf'}", "--to=peft", str(tmp_path / "c")])
    assert (tmp_path / "c" / "keep.txt").read_text() == "mine"
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in base.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    ckpt = load_checkpoint(tmp_path / "hf")
    ckpt["lora"]["base"]["init_from"] = str(changed)
    save_checkpoint(ckpt, tmp_path / "hf" / "ckpt.pt")
    with (changed / "model.safetensors").open("ab") as f:
        f.write(b" ")  # another file than the adapters were trained on
    with pytest.raises(UserError, match="the base weights changed"):
        export.main([f"--out_dir={tmp_path / 'hf'}", "--to=peft", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()
