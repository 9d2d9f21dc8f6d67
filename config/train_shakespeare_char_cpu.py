# The baby GPT sized for a laptop CPU (nanoGPT README's CPU recipe): ~0.8M parameters,
# val loss ~1.88 after 2000 iterations, a few minutes on a recent laptop.
# python train.py config/train_shakespeare_char_cpu.py

include("config/train_shakespeare_char.py")

wandb_run_name = "mini-gpt-cpu"  # not the included config's

device = "cpu"
compile = False
eval_iters = 20
log_interval = 50
block_size = 64
batch_size = 12
n_layer = 4
n_head = 4
n_embd = 128
max_iters = 2000
lr_decay_iters = 2000
dropout = 0.0
