# GPT-2 124M on OpenWebText (nanoGPT's config): 8 GPUs, ~0.5M tokens per step
# (12 batch x 1024 block x 40 accumulation steps = 491,520), 600K steps (~300B tokens);
# reaches val loss ~2.85 in ~4 days on a node of 8 A100 40GB.
# Prepare data/openwebtext/{train,val}.bin first (nanoGPT's data/openwebtext/prepare.py writes them), then:
# torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

wandb_log = False  # nanoGPT logs to wandb here; set True after `pip install wandb`
wandb_project = "owt"
wandb_run_name = "gpt2-124M"

dataset = "openwebtext"
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

# weight decay
weight_decay = 1e-1
