# Evaluate OpenAI's GPT-2 (124M) on OpenWebText and exit (nanoGPT: train 3.11, val 3.12).
# Larger models: --init_from=gpt2-medium (2.85), gpt2-large (2.66), gpt2-xl (2.56).
# python train.py config/eval_gpt2.py

batch_size = 8
eval_iters = 500  # use more iterations to get a good estimate
eval_only = True
wandb_log = False
init_from = "gpt2"
