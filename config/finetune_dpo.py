# Tune a chat run with DPO on preference pairs: for each prompt a chosen and a rejected answer,
# from the page's arena votes or a file of prompt / chosen / rejected (prepare.py preferences).
#   python prepare.py preferences --input=out-chat/arena.jsonl --base=out-chat && python train.py config/finetune_dpo.py
#   python serve.py --out_dir=out-chat --out_dir=out-dpo      # then judge them again in the Arena tab
#
# The reference is the run it starts from, frozen: with --lora_rank=16 the base itself with its
# adapters off (no second copy in memory); else a copy, or with --dpo_precompute_ref=True its
# log-probabilities of every pair, computed once at the start. A batch is batch_size pairs
# (2 x batch_size rows). Watch rewards/margins and val_rewards/accuracies in the log.

out_dir = "out-dpo"
init_from = "out-chat"  # the run to tune: its weights are the start and the reference
dataset = "preferences"  # the data says objective=dpo
wandb_project = "dpo"

block_size = 1024  # must cover the longest prompt + answer: the dataset report says how long
batch_size = 4
gradient_accumulation_steps = 8
dropout = 0.0

dpo_beta = 0.1
learning_rate = 5e-6  # DPO moves far with small steps (TRL's default is 5e-7); raise it for a small model or few pairs
min_lr = 5e-7
warmup_iters = 20
max_iters = 300
lr_decay_iters = 300
weight_decay = 0.0

eval_interval = 50
eval_iters = 20
always_save_checkpoint = False  # keep the best val loss (DPO's, on the val pairs)
