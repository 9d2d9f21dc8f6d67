# GPT-2 124M from scratch on the Azure documentation, to compare with fine-tuned and pretrained GPT-2:
#   python prepare.py azure_docs && python train.py config/train_azure_docs.py
#   python train.py config/finetune_azure_docs.py                         # fine-tuned from GPT-2
#   python train.py config/finetune_azure_docs.py --eval_only=True         # pretrained GPT-2 as it is
# The same architecture as GPT-2 (biases included), so the three val losses compare like with like.
# 12 x 1024 x 8 = 98,304 tokens per iteration on one A100 40GB; at ~146k tokens/s (0.855 GFLOPs per
# token at 40% MFU) 10,000 iterations (~1B tokens, several epochs of the docs: see the dataset
# report for their size) take ~2 hours.

out_dir = "out-azure-docs"
dataset = "azure_docs"
wandb_project = "azure-docs"
wandb_run_name = "gpt2-124M-scratch"

n_layer = 12
n_head = 12
n_embd = 768
bias = True
block_size = 1024
batch_size = 12
gradient_accumulation_steps = 8
dropout = 0.1  # several epochs over a small corpus

learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 500
max_iters = 10000
lr_decay_iters = 10000

eval_interval = 500
eval_iters = 100
