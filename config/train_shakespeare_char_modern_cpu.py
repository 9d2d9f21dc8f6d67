# The CPU recipe's baby GPT (4 layers, 4 heads, 128 wide, block 64, batch 12) with the modern
# preset: RoPE, RMSNorm, QK-norm, ReLU², untied soft-capped head, Muon on the hidden matrices and
# a warmup-stable-decay schedule. It passes the GPT-2 recipe's val loss at 2000 iterations (~1.89)
# in about a quarter of the iterations: see docs/training.md for the measured table.
# python train.py config/train_shakespeare_char_modern_cpu.py

include("config/train_shakespeare_char_cpu.py")

out_dir = "out-shakespeare-char-modern"
wandb_run_name = "mini-gpt-modern-cpu"

arch = "modern"
optimizer = "muon"
learning_rate = 3e-3  # AdamW: embeddings, head, gains
muon_lr = 0.005  # Muon: the attention and MLP matrices
lr_schedule = "wsd"
warmup_iters = 20
max_iters = 350
lr_decay_iters = 350
cooldown_frac = 0.5
min_lr = 0.0
