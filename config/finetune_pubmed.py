# Fine-tune GPT-2 124M on PubMed, so that given an abstract it writes the article.
#   python prepare.py pubmed && python train.py config/finetune_pubmed.py
#   python sample.py --out_dir=out-pubmed --start=FILE:abstract.txt --max_new_tokens=800
#
# Sized for one A100 40GB: micro-batches of 12 x 1024 tokens (what nanoGPT runs GPT-2 124M with on
# that card, bf16 + compile), 10 of them accumulated: 122,880 tokens per iteration.
# Expected speed, from FLOPs: 6N + 12*L*H*Q*T = 6 * 123.7M + 12 * 12 * 768 * 1024 = 0.855 GFLOPs per
# token; at 40% MFU of the A100's 312 TFLOPS that is ~146k tokens/s, ~0.84 s per iteration.
# Rows start at a paper: its abstract, then its article, for 1024 tokens. The loss counts the
# article's tokens (and the <|endoftext|> after it), not the abstract's (--loss_on=all counts
# both). The train split has 119,924 papers: one pass over their starts is ~1,000 iterations of
# 120 rows, ~15 minutes on an A100 (~5 on an H100). An article's tokens past its first ~770 (the
# row's room after the abstract) are never trained; the dataset report counts the tokens.

out_dir = "out-pubmed"
init_from = "gpt2"  # the model's shape comes from the pretrained weights
dataset = "pubmed"
wandb_project = "pubmed"
wandb_run_name = "gpt2-124M-finetune"

block_size = 1024
batch_size = 12
gradient_accumulation_steps = 10
dropout = 0.0  # one pass over the papers does not overfit

learning_rate = 6e-5  # a tenth of GPT-2's pretraining rate: adapt, do not forget
min_lr = 6e-6
warmup_iters = 50
max_iters = 1000  # one pass over the papers
lr_decay_iters = 1000
weight_decay = 0.1

eval_interval = 100
eval_iters = 100
always_save_checkpoint = False  # keep the best val loss
