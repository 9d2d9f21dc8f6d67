"""LoRA runs: adapters on a frozen base through peft, checkpoints that hold only the adapters and
a sha256-checked reference to the base, and everything that reads a checkpoint reading them.

The base is a checkpoint of ours (a char-level model), so these run in a second; the Hugging Face
side (a GPT-2 base, the peft export) is tests/test_lora_export.py."""

import hashlib
import re
from pathlib import Path

import pytest
import torch

import sample
from conftest import TINY_MODEL_ARGS, train_config
from eval import main as eval_main
from gptsuite.batches import open_training_data
from gptsuite.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.loading import load_model
from gptsuite.runtime import Runtime
from gptsuite.start import start_run
from train import main as train_main

RUN = [*TINY_MODEL_ARGS, "--gradient_accumulation_steps=1", "--eval_iters=2", "--eval_interval=10", "--warmup_iters=0", "--decay_lr=False"]
TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # what the default lora_targets c_attn,c_proj,c_fc adapt in a block


def lora_run(data: Path, base: Path, out: Path, *extra: str) -> dict:
    train_main([f"--data_dir={data}", *RUN, f"--init_from={base}", f"--out_dir={out}", "--lora_rank=4", "--learning_rate=3e-2", "--max_iters=10", *extra])
    return load_checkpoint(out)


def val_loss(capsys, *args: str) -> float:
    capsys.readouterr()
    eval_main(["--device=cpu", *args])
    return float(re.search(r"val loss ([\d.]+)", capsys.readouterr().out).group(1))


def test_a_lora_checkpoint_holds_only_the_adapters_and_merges_to_base_plus_ba(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, capsys):
    base_file = tiny_checkpoint / "ckpt.pt"
    base_sha = hashlib.sha256(base_file.read_bytes()).hexdigest()
    ckpt = lora_run(char_dataset, tiny_checkpoint, tmp_path / "lora", "--lora_alpha=8", "--max_iters=40")

    # only A and B of the 4 adapted Linears of the one block, and the base referenced by its file's sha256
    base = load_checkpoint(tiny_checkpoint)
    names = {f"transformer.h.0.{t}.lora_{ab}.weight" for t in TARGETS for ab in "AB"}
    assert set(ckpt["model"]) == names
    for t in TARGETS:
        out_features, in_features = base["model"][f"transformer.h.0.{t}.weight"].shape
        assert ckpt["model"][f"transformer.h.0.{t}.lora_A.weight"].shape == (4, in_features)
        assert ckpt["model"][f"transformer.h.0.{t}.lora_B.weight"].shape == (out_features, 4)
        assert ckpt["model"][f"transformer.h.0.{t}.lora_B.weight"].abs().max() > 0  # B starts at zero: it trained
    assert ckpt["lora"]["base"] == {"init_from": str(tiny_checkpoint), "weights": str(base_file.resolve()), "sha256": base_sha}
    assert hashlib.sha256(base_file.read_bytes()).hexdigest() == base_sha  # the base is never written
    assert len(ckpt["optimizer"]["state"]) == len(names)  # AdamW state for the adapters only

    # what sample.py / eval.py load: the base with W + (alpha / rank) * B @ A in each adapted Linear, by hand here
    expected = {k: v.clone() for k, v in base["model"].items()}
    for t in TARGETS:
        a, b = ckpt["model"][f"transformer.h.0.{t}.lora_A.weight"], ckpt["model"][f"transformer.h.0.{t}.lora_B.weight"]
        expected[f"transformer.h.0.{t}.weight"] += (8 / 4) * b @ a
    reference = model_from_checkpoint(base | {"model": expected}).eval()
    loaded = load_model("resume", str(tmp_path / "lora")).model
    assert not any("lora" in k for k in loaded.state_dict())  # merged: plain Linears again
    x = torch.randint(0, base["model_args"]["vocab_size"], (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, all_logits=True)[0], reference(x, all_logits=True)[0], rtol=0, atol=1e-5)
        assert not torch.allclose(loaded(x, all_logits=True)[0], model_from_checkpoint(base).eval()(x, all_logits=True)[0], atol=1e-3)

    # and the adapters lowered the loss of the base (eval.py before and after, on the same tokens)
    before = val_loss(capsys, f"--out_dir={tiny_checkpoint}", f"--data_dir={char_dataset}")
    after = val_loss(capsys, f"--out_dir={tmp_path / 'lora'}")
    assert after < before - 0.03, (before, after)  # a 16-wide random base, adapted in 40 steps: 3.54 -> 3.46


def test_sample_novelty_and_compare_read_a_lora_checkpoint(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, capsys):
    train_main(
        [f"--data_dir={char_dataset}", *RUN, f"--init_from={tiny_checkpoint}", f"--out_dir={tmp_path / 'full'}", "--learning_rate=3e-3", "--max_iters=10"]
    )
    lora_run(char_dataset, tiny_checkpoint, tmp_path / "lora")
    capsys.readouterr()
    sample.main([f"--out_dir={tmp_path / 'lora'}", "--device=cpu", "--start=All:", "--num_samples=1", "--max_new_tokens=20", "--check_novelty", "--seed=3"])
    out = capsys.readouterr().out
    assert "All:" in out and "8-grams found in train.bin" in out

    eval_main(["--device=cpu", "--compare", str(tiny_checkpoint), str(tmp_path / "full"), str(tmp_path / "lora"), f"--data_dir={char_dataset}"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [str(tiny_checkpoint), str(tmp_path / "full"), str(tmp_path / "lora")]
    lora_row_loss = float(rows[2].split("|")[6])
    assert lora_row_loss == pytest.approx(val_loss(capsys, f"--out_dir={tmp_path / 'lora'}"), abs=1e-4)


def test_a_base_that_changed_is_refused_everywhere(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path):
    lora_run(char_dataset, tiny_checkpoint, tmp_path / "lora", "--max_iters=2")
    base = load_checkpoint(tiny_checkpoint)
    base["model"]["transformer.wte.weight"][0, 0] += 1.0
    save_checkpoint(base, tiny_checkpoint / "ckpt.pt")  # e.g. the base run went on training
    for action in (
        lambda: sample.main([f"--out_dir={tmp_path / 'lora'}", "--device=cpu", "--max_new_tokens=2"]),
        lambda: eval_main([f"--out_dir={tmp_path / 'lora'}", "--device=cpu"]),
        lambda: train_main(["--init_from=resume", f"--out_dir={tmp_path / 'lora'}", "--max_iters=4"]),
    ):
        with pytest.raises(UserError, match=r"LoRA adapter for the base .* the base weights changed; put the original base back"):
            action()


def test_settings_that_cannot_work_are_refused(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path):
    args = [f"--data_dir={char_dataset}", *RUN, "--max_iters=2"]
    with pytest.raises(UserError, match="lora_rank>0 adapts trained weights, but init_from=scratch"):
        train_main([*args, f"--out_dir={tmp_path / 'a'}", "--lora_rank=4"])
    with pytest.raises(UserError, match="LoRA trains its low-rank factors with AdamW"):
        train_main([*args, f"--out_dir={tmp_path / 'a'}", f"--init_from={tiny_checkpoint}", "--lora_rank=4", "--optimizer=muon"])
    with pytest.raises(UserError, match=r"lora_targets=c_attn,q_proj names no Linear layer of this GPT \(q_proj\); pick from c_attn,c_fc,c_proj"):
        train_main([*args, f"--out_dir={tmp_path / 'a'}", f"--init_from={tiny_checkpoint}", "--lora_rank=4", "--lora_targets=c_attn,q_proj"])

    lora_run(char_dataset, tiny_checkpoint, tmp_path / "lora", "--max_iters=2")
    with pytest.raises(UserError, match="holds LoRA adapters with lora_rank=4, but this run asks for lora_rank=8; resume with --lora_rank=4"):
        train_main(["--init_from=resume", f"--out_dir={tmp_path / 'lora'}", "--lora_rank=8"])
    train_main([*args, f"--out_dir={tmp_path / 'full'}", f"--init_from={tiny_checkpoint}"])
    with pytest.raises(UserError, match="is a full fine-tuning checkpoint, with no adapters to resume; .* --init_from="):
        train_main(["--init_from=resume", f"--out_dir={tmp_path / 'full'}", "--lora_rank=4"])


def test_a_resume_keeps_the_adapters_bias_and_takes_a_new_dropout(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path):
    """lora_bias says which weights train, so a resume with another is refused; lora_dropout may
    change, and the resumed adapters then drop out at the new rate. The checkpoint is made by hand:
    start_run's fine-tune from tiny_checkpoint, saved as a LoRA run saves, without training."""
    from gptsuite.lora import adapter_state
    from gptsuite.settings import read_settings

    cfg = train_config(data_dir=str(char_dataset), init_from=str(tiny_checkpoint), lora_rank=4, lora_bias="all", lora_dropout=0.1, block_size=16, device="cpu")
    data, rt = open_training_data(cfg.data, 16), Runtime("cpu", "cpu", "float32")
    start = start_run(cfg, None, data, rt)
    meta = {"model_args": start.model.model_args(), "config": cfg.record(), "tokenizer": data.tokenizer, "lora": start.lora}
    save_checkpoint(meta | {"model": adapter_state(start.model), "optimizer": {}, "iter_num": 1, "best_val_loss": 9.0}, tmp_path / "run" / "ckpt.pt")

    resume = ["--init_from=resume", f"--out_dir={tmp_path / 'run'}"]
    with pytest.raises(UserError, match=r"holds LoRA adapters with lora_bias=all, but this run asks for lora_bias=none; resume with --lora_bias=all$"):
        start_run(*read_settings([*resume, "--lora_bias=none"]), data, rt)
    for flags, rate in (([], 0.1), (["--lora_dropout=0.3"], 0.3)):
        cfg, resumed = read_settings([*resume, *flags])
        assert cfg.lora.dropout == rate and cfg.lora.bias == "all"
        rates = {m.p for name, m in start_run(cfg, resumed, data, rt).model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in name}
        assert rates == {rate}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_lora_run_keeps_the_frozen_base_in_half_precision(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path, dtype: str):
    cfg = train_config(data_dir=str(char_dataset), init_from=str(tiny_checkpoint), lora_rank=4, block_size=16, device="cpu")
    start = start_run(cfg, None, open_training_data(cfg.data, 16), Runtime("cpu", "cpu", dtype))
    dtypes = {n: p.dtype for n, p in start.model.named_parameters()}
    half = [n for n in dtypes if n.startswith("transformer.h.") and "lora_" not in n and (".c_" in n) and n.endswith("weight")]  # the blocks' frozen matrices
    assert half and all(dtypes[n] == getattr(torch, dtype) for n in half), dtypes
    assert all(d == torch.float32 for n, d in dtypes.items() if n not in half), dtypes  # adapters, embeddings, norms
    # the residual stream stays float32 through every block, as in full training and in the merged model
    seen = []
    for block in start.model.transformer.h:
        block.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0].dtype, out.dtype)))
    with torch.autocast("cpu", dtype=getattr(torch, dtype)):
        start.model(torch.zeros(1, 8, dtype=torch.long))
    assert seen and all(d == (torch.float32, torch.float32) for d in seen), seen

    ckpt = lora_run(char_dataset, tiny_checkpoint, tmp_path / "lora", f"--dtype={dtype}", "--max_iters=3")
    assert ckpt["iter_num"] == 3 and all(v.dtype == torch.float32 for v in ckpt["model"].values())
    assert all(v.abs().max() > 0 for k, v in ckpt["model"].items() if "lora_B" in k)  # it trained


def test_a_full_fine_tune_can_start_from_a_checkpoint_of_ours(tmp_path: Path, char_dataset: Path, tiny_checkpoint: Path):
    """init_from=<run folder> or <file.pt>: its weights, as a new run (iteration 0, a new optimizer)."""
    base = load_checkpoint(tiny_checkpoint)["model"]
    for source in (tiny_checkpoint, tiny_checkpoint / "ckpt.pt"):
        cfg = train_config(data_dir=str(char_dataset), init_from=str(source), block_size=16)
        start = start_run(cfg, None, open_training_data(cfg.data, 16), Runtime("cpu", "cpu", "float32"))
        assert start.ckpt is None and start.lora is None
        assert start.model.state_dict().keys() == base.keys()
        for k, v in base.items():
            assert torch.equal(start.model.state_dict()[k], v), k
    train_main([f"--data_dir={char_dataset}", *RUN, f"--out_dir={tmp_path / 'new'}", f"--init_from={tiny_checkpoint}", "--max_iters=2"])
    assert load_checkpoint(tmp_path / "new")["iter_num"] == 2
