# GPT-2 124M from scratch, nanoGPT's config: 8 GPUs, ~0.5M tokens per step
# (12 batch x 1024 block x 40 accumulation steps = 491,520), 600K steps (~300B tokens).
# On OpenWebText it reaches val loss ~2.85 in ~4 days on a node of 8 A100 40GB (nanoGPT);
# on FineWeb-Edu (dataset = "fineweb_edu", llm.c's data) 10B tokens, ~20K steps, give HellaSwag
# acc_norm ~0.30 (docs/scaling.md, "Reproduce GPT-2").
#   python prepare.py openwebtext && torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
# or on FineWeb-Edu, 10B tokens (llm.c's run):
#   python prepare.py fineweb_edu && torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py --dataset=fineweb_edu --max_iters=20000 --lr_decay_iters=20000 --warmup_iters=700

wandb_log = False  # nanoGPT logs to wandb here; set True after `pip install wandb`
wandb_project = "owt"
wandb_run_name = "gpt2-124M"

dataset = "openwebtext"  # or "fineweb_edu"
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8  # global: each of the 8 processes does 5

# this makes the total number of tokens 300B
max_iters = 600000
lr_decay_iters = 600000

# eval stuff
eval_interval = 1000
eval_iters = 200
log_interval = 10
hellaswag_interval = 1000  # HellaSwag acc_norm on the 10,042 validation items (the ranks share them), logged beside val loss

# weight decay
weight_decay = 1e-1
