"""DPO's loss, gradient and metrics equal TRL's DPOTrainer on the same model, pairs and beta.

The pairs go through our whole path (prepare.py preferences in the chat template, the pair rows
of the objective) and through TRL's (apply_chat_template with the template our export writes,
its tokenization and collator); the models are one GPT exported to transformers' GPT-2."""

import copy
import json
from pathlib import Path

import pytest
import torch

from gptsuite.batches import Batches, DataConfig, open_training_data
from gptsuite.chat import CHAT_TEMPLATE
from gptsuite.dpo import DPO, DpoConfig
from gptsuite.hf_export import export_hf
from gptsuite.objectives import Reference
from gptsuite.pipeline import prepare_documents
from gptsuite.runtime import setup_runtime
from gptsuite.sources import load_dataset_module, val_mask
from gptsuite.tokenizer import GPT2_META
from model import GPT, GPTConfig

PAIRS = [
    {
        "prompt": [{"role": "user", "content": "What is 12 + 30?"}],
        "chosen": [{"role": "assistant", "content": "42"}],
        "rejected": [{"role": "assistant", "content": "It is 24, I think."}],
    },
    {
        "prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Reverse the word 'stone'."}],
        "chosen": [{"role": "assistant", "content": "enots"}],
        "rejected": [{"role": "assistant", "content": "stone"}],
    },
    {
        "prompt": [{"role": "user", "content": "Spell cat."}],
        "chosen": [{"role": "assistant", "content": "c-a-t"}],
        "rejected": [{"role": "assistant", "content": "k-a-t, or c-a-t"}],
    },
    {
        "prompt": [{"role": "user", "content": "Next letter after q?"}],
        "chosen": [{"role": "assistant", "content": "r"}],
        "rejected": [{"role": "assistant", "content": "p"}],
    },
    {
        "prompt": [{"role": "user", "content": "Sort the letters of 'dcba'."}],
        "chosen": [{"role": "assistant", "content": "abcd"}],
        "rejected": [{"role": "assistant", "content": "dcba"}],
    },
]


@pytest.mark.slow  # TRL and transformers take seconds to import
def test_dpo_loss_gradient_and_metrics_equal_trls(tmp_path: Path):
    pytest.importorskip("trl", reason="trl is in requirements-dev.txt")
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    module = load_dataset_module("preferences")
    cfg = module.Config(input=str(src), val_fraction=0.2, block_size=64)
    prepare_documents(module.corpus(cfg, tmp_path / "prefs"), tmp_path / "prefs")
    train_pairs = [p for p, v in zip(PAIRS, val_mask(len(PAIRS), 0.2, cfg.seed), strict=True) if not v]

    torch.manual_seed(0)
    ref = GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=32, dropout=0.0))  # no padded ids: the exported model has none
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # a policy that has moved from its reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    export_hf(ref, GPT2_META, tmp_path / "hf-ref", CHAT_TEMPLATE)
    export_hf(policy, GPT2_META, tmp_path / "hf-policy", CHAT_TEMPLATE)

    # TRL: its tokenization of the pairs through the exported chat template, its collator, its loss
    hf_policy = GPT2LMHeadModel.from_pretrained(tmp_path / "hf-policy", local_files_only=True)
    hf_ref = GPT2LMHeadModel.from_pretrained(tmp_path / "hf-ref", local_files_only=True)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.3,
        loss_type=["sigmoid"],
        per_device_train_batch_size=3,
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_length=None,
    )  # float32, as ours (TRL defaults to bf16)
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf-policy", local_files_only=True)
    trainer = DPOTrainer(model=hf_policy, ref_model=hf_ref, args=args, train_dataset=Dataset.from_list(train_pairs), processing_class=tok)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    trainer.model.train()

    # ours: the prepared pairs 0, 1, 2 of train, the objective's rows
    rt = setup_runtime("cpu", "float32", 0)
    data_cfg = DataConfig(data_dir=str(tmp_path / "prefs"), batch_size=3, gradient_accumulation_steps=1)
    batches = Batches(open_training_data(data_cfg, 64), data_cfg, 64, 0, rt)
    reference = Reference(ref, lora=False)
    policy.train()
    for kind, sft in (("sigmoid", 0.0), ("ipo", 0.0), ("sigmoid", 0.7)):
        trainer.loss_types, trainer.loss_weights = [kind, "sft"], [1.0, sft]
        trl_loss = trainer._compute_loss(trainer.model, inputs, False)
        trl_loss.backward()
        trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        dpo = DPO(batches, reference, DpoConfig(beta=0.3, loss=kind, sft_weight=sft))
        loss, metrics = dpo.loss(policy, dpo.eval_batch("train", 0))
        loss.backward()

        assert abs(loss.item() - trl_loss.item()) < 1e-5, (kind, loss.item(), trl_loss.item())
        ours = policy.transformer.h[0].mlp.c_fc.weight.grad
        theirs = hf_policy.transformer.h[0].mlp.c_fc.weight.grad.T  # transformers' Conv1D stores (in, out)
        assert ours.abs().max() > 1e-4  # a gradient worth comparing
        assert (ours - theirs).abs().max().item() < 1e-5, kind
        for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
            assert metrics[name].item() == pytest.approx(trl_metrics[name], abs=1e-5), (kind, name)
        print(f"{kind}, sft {sft}: loss {loss.item():.6f} (TRL {trl_loss.item():.6f}), c_fc gradient max |difference| {(ours - theirs).abs().max().item():.2e}")
        policy.zero_grad(), hf_policy.zero_grad()
