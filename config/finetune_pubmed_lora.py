# LoRA on GPT-2 XL (1.5B) for PubMed abstract -> article: adapters of rank 8 on the attention and
# MLP projections train 9.8M parameters (0.63%); the frozen base stays in bf16 (fp16 on a T4).
#   python prepare.py pubmed && python train.py config/finetune_pubmed_lora.py
#   python sample.py --out_dir=out-pubmed-lora --start=FILE:abstract.txt --max_new_tokens=800
#
# Memory before activations: 3 GiB (base in half precision) + 0.15 GiB (adapters and AdamW), where
# a full fine-tune of gpt2-xl needs 23 GiB. With micro-batches of 4 x 1024 tokens it is sized for a
# 24-40 GB card; on a 16 GB T4 use --batch_size=1 --gradient_accumulation_steps=128.
# Expected speed, from FLOPs: a LoRA step skips the weight gradients of the frozen layers, ~4N + the
# attention = 4 * 1.56G + 12 * 48 * 1600 * 1024 = ~7.2 GFLOPs per token; at 40% MFU of an A100's 312
# TFLOPS ~17k tokens/s, ~7.5 s per iteration of 131,072 tokens, ~2 hours for the 1000 below (a
# quarter of an epoch).

out_dir = "out-pubmed-lora"
init_from = "gpt2-xl"
dataset = "pubmed"
wandb_project = "pubmed"
wandb_run_name = "gpt2-xl-lora-r8"

lora_rank = 8
lora_alpha = 16
lora_dropout = 0.05

block_size = 1024
batch_size = 4
gradient_accumulation_steps = 32
dropout = 0.0

learning_rate = 2e-4  # adapters start at zero and take larger steps than full fine-tuning's 6e-5
min_lr = 2e-5
warmup_iters = 50
max_iters = 1000
lr_decay_iters = 1000
weight_decay = 0.0  # decaying the adapters pulls them to zero, i.e. toward the base

eval_interval = 100
eval_iters = 50
always_save_checkpoint = False  # keep the best val loss
