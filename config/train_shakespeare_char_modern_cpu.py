# The CPU recipe's baby GPT (4 layers, 4 heads, 128 wide, block 64, batch 12) with the modern
# preset: RoPE, RMSNorm, QK-norm, ReLU², untied soft-capped head, Muon on the hidden matrices and
# a warmup-stable-decay schedule. It passes the GPT-2 recipe's val loss at 2000 iterations (~1.89)
# in about a quarter of the iterations: see docs/training.md for the measured table.
# python train.py config/train_shakespeare_char_modern_cpu.py

include("config/train_shakespeare_char_cpu.py")

out_dir = "out-shakespeare-char-modern"
wandb_run_name = "mini-gpt-modern-cpu"

include("config/modern.py")
warmup_iters = 20
max_iters = 350
lr_decay_iters = 350
