# The quickstart: a small character-level GPT that trains in a few minutes on any device
# (~0.8M parameters; val loss ~1.9 after 2000 iterations on a 2-core CPU, ~4 minutes).
# python train.py config/train_shakespeare_char_small.py

include("config/train_shakespeare_char_cpu.py")

out_dir = "out-shakespeare-char-small"
wandb_run_name = "mini-gpt-small"  # not the included config's
device = "auto"  # cuda, mps or cpu, whichever is there
eval_interval = 500
