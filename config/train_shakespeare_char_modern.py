# nanoGPT's baby GPT on tinyshakespeare (6 layers, 6 heads, 384 wide, block 256) with the modern
# preset: RoPE, RMSNorm, QK-norm, ReLU², untied soft-capped head, Muon on the hidden matrices and a
# warmup-stable-decay schedule, in half of config/train_shakespeare_char.py's 5000 iterations.
# The learning rates are the ones tuned for the CPU recipe's size (config/train_shakespeare_char_modern_cpu.py,
# docs/training.md); at this size on a GPU they are a starting point, not a measured optimum.
# python prepare.py shakespeare_char && python train.py config/train_shakespeare_char_modern.py

include("config/train_shakespeare_char.py")

out_dir = "out-shakespeare-char-modern"
wandb_run_name = "mini-gpt-modern"

include("config/modern.py")
warmup_iters = 100
max_iters = 2500
lr_decay_iters = 2500
