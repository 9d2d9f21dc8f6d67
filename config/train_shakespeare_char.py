# nanoGPT's "baby GPT" on tinyshakespeare, character level: ~10.7M parameters.
# On an A100 this reaches val loss ~1.47 in ~3 minutes.
# python prepare.py shakespeare_char && python train.py config/train_shakespeare_char.py

out_dir = "out-shakespeare-char"
eval_interval = 250  # it overfits: evaluate often
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # keep only the best val loss

wandb_project = "shakespeare-char"
wandb_run_name = "mini-gpt"

dataset = "shakespeare_char"
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3  # a small network can take a larger step
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99  # a bit larger: few tokens per iteration
warmup_iters = 100
