# GPT-2 124M's shape with the modern preset (RoPE, RMSNorm, QK-norm, ReLU², untied soft-capped head,
# Muon on the hidden matrices, warmup-stable-decay), on FineWeb-Edu's 10B tokens: compare its
# val loss and HellaSwag acc_norm with config/train_gpt2.py's on the same data.
# The learning rates are a starting point at this size, not a measured optimum (the preset's were
# tuned on the CPU recipe, docs/training.md).
#   python prepare.py fineweb_edu && torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_modern.py

include("config/train_gpt2.py")

dataset = "fineweb_edu"
out_dir = "out-gpt2-modern"
wandb_run_name = "gpt2-124M-modern"

include("config/modern.py")
learning_rate = 6e-4  # AdamW: embeddings, head, gains
muon_lr = 0.02  # Muon: the attention and MLP matrices
warmup_iters = 700
max_iters = 20000  # ~10B tokens at 491,520 a step
lr_decay_iters = 20000
