# Tune OpenAI's GPT-2 (124M) on conversations, so that it answers: the loss counts only what the
# assistant says (the chat data's loss mask), rows start at conversations.
#   python prepare.py chat --input=conversations.jsonl && python train.py config/finetune_chat.py
#   python sample.py --out_dir=out-chat --chat
#
# Sized for one GPU with ~16 GB (bf16): micro-batches of 8 x 1024 tokens, 4 accumulated: 32,768
# tokens per iteration, several short conversations packed into each row. The dataset report says
# how many tokens count (the answers' share) and the longest prompt, which block_size must cover.

out_dir = "out-chat"
init_from = "gpt2"  # or gpt2-medium ... gpt2-xl, a run of ours (--init_from=out-pretrained), or with --lora_rank=16 an adapter
dataset = "chat"
wandb_project = "chat"

block_size = 1024
batch_size = 8
gradient_accumulation_steps = 4
dropout = 0.0

learning_rate = 3e-5  # tuning, not pretraining: small steps keep what GPT-2 knows
min_lr = 3e-6
warmup_iters = 50
max_iters = 1000
lr_decay_iters = 1000
weight_decay = 0.0

eval_interval = 100
eval_iters = 40
always_save_checkpoint = False  # keep the best val loss (of the answers' tokens)
