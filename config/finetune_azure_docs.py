# Fine-tune GPT-2 124M on the Azure documentation (see config/train_azure_docs.py for the comparison).
#   python prepare.py azure_docs && python train.py config/finetune_azure_docs.py
# 98,304 tokens per iteration on one A100 40GB, ~0.7 s each at 40% MFU; 2,000 iterations (~200M
# tokens) take ~25 minutes.

out_dir = "out-azure-docs-finetune"
init_from = "gpt2"
dataset = "azure_docs"
wandb_project = "azure-docs"
wandb_run_name = "gpt2-124M-finetune"

block_size = 1024
batch_size = 12
gradient_accumulation_steps = 8
dropout = 0.1

learning_rate = 6e-5
min_lr = 6e-6
warmup_iters = 100
max_iters = 2000
lr_decay_iters = 2000

eval_interval = 250
eval_iters = 100
always_save_checkpoint = False
