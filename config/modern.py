# The modern preset, to include in a from-scratch config after its base: RoPE, RMSNorm, QK-norm,
# ReLU², untied soft-capped head (arch), Muon on the hidden matrices (optimizer) and a
# warmup-stable-decay schedule to 0, with the learning rates tuned at the CPU recipe's size
# (docs/training.md, "The modern preset"). The including config sets warmup_iters, max_iters and
# lr_decay_iters.

arch = "modern"
optimizer = "muon"
learning_rate = 3e-3  # AdamW: embeddings, head, gains
muon_lr = 0.005  # Muon: the attention and MLP matrices
lr_schedule = "wsd"
cooldown_frac = 0.5
min_lr = 0.0
