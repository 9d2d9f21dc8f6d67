# GPT-2 124M from scratch on PubMed, to compare with the fine-tuned GPT-2 of config/finetune_pubmed.py:
#   python prepare.py pubmed && python train.py config/train_pubmed.py
#   python eval.py --compare out-pubmed-scratch out-pubmed gpt2 --dataset=pubmed --stride=512
# The fine-tuning recipe (data, batch, one pass over the papers: ~1,000 iterations, ~15 minutes on an A100) with the
# architecture of GPT-2 (biases included) initialized at random, GPT-2's pretraining learning rate,
# and its own out_dir and run name (an included config's run name would otherwise be logged).

include("config/finetune_pubmed.py")

out_dir = "out-pubmed-scratch"
init_from = "scratch"
wandb_run_name = "gpt2-124M-scratch"

n_layer = 12
n_head = 12
n_embd = 768
bias = True

learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 500
