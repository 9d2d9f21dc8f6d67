# Your own text on a laptop CPU, in minutes: the CPU recipe's small model (4 layers, 128 wide,
# context 64; nanoGPT's) on any prepared dataset, character level or GPT-2 BPE.
# python prepare.py text --input=book.txt && python train.py config/train_text_cpu.py --dataset=book
# (--out_dir=out-book keeps runs on several datasets apart; --max_iters=5000 trains longer)

include("config/train_shakespeare_char_cpu.py")

out_dir = "out-text-cpu"
wandb_project = "text"
wandb_run_name = "text-cpu"
eval_interval = 250
always_save_checkpoint = True  # the newest state is what you sample from
