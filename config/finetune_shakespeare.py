# Fine-tune OpenAI's GPT-2 (124M) on tinyshakespeare in GPT-2 BPE tokens (nanoGPT's config, which
# starts from gpt2-xl: --init_from=gpt2-xl needs a GPU with ~40 GB). A few minutes on one GPU.
# python prepare.py shakespeare && python train.py config/finetune_shakespeare.py
# python sample.py --out_dir=out-shakespeare --start="ROMEO:"

import time

out_dir = "out-shakespeare"
eval_interval = 5
eval_iters = 40
wandb_log = False
wandb_project = "shakespeare"
wandb_run_name = "ft-" + str(int(time.time()))

dataset = "shakespeare"
init_from = "gpt2"  # or gpt2-medium, gpt2-large, gpt2-xl, or a local directory

# only save checkpoints if the validation loss improves
always_save_checkpoint = False

# 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter;
# shakespeare has 301,966 tokens, so 1 epoch ~= 9.2 iters
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# finetune at constant LR
learning_rate = 3e-5
decay_lr = False
