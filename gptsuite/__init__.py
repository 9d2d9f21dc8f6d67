"""The library under the entry points (prepare.py, train.py, sample.py, eval.py, export.py,
serve.py, bench.py and tools/). One concern a module; imports point one way: entry points -> gptsuite ->
model.py / configurator.py.

    errors       UserError and the one-line command-line wrapper
    atomic       atomic file writes (temp + fsync + rename)
    datafiles    the prepared dataset format (memmaps, meta.json) and where datasets live
    sources      dataset plugins (data/<name>/prepare.py) and the readers of user files they share
    textscan     reading a text for the pipeline: in blocks, cut where BPE cuts, split and scanned once
    pipeline     the prepare pipeline: tokenize in threads, write the memmaps
    report       the dataset report written by every prepare
    tokenizer    character level, GPT-2 BPE (offline, sha256-checked) and a BPE trained on the corpus
    bpe          training that BPE on a train split (prepare.py --tokenizer=bpe), or reusing one
    templates    prompt templates (pubmed: abstract -> article)
    flops        FLOPs per token and GPU peaks (MFU, the dataset report)
    runtime      device, precision, the process group, CPU threads, the stop signal
    memory       per-GPU memory estimates: DDP, FSDP, LoRA, activations
    parallel     how the model runs on the ranks: DDP, or FSDP2 sharding; activation checkpointing, compile
    checkpoint   checkpoint files: atomic saves, rotation, safe loads, RNG state; sharded (DCP) folders
    pretrained   OpenAI's GPT-2 weights into our GPT
    hf_export    our GPT out to a Hugging Face folder
    lora         LoRA adapters through peft: adapt, save, merge; the base's sha256
    loading      a model from a checkpoint folder or a GPT-2 name (sample, eval, export, bench)
    optim        the optimizers (AdamW, or Muon with AdamW) and the learning-rate schedule
    settings     TrainConfig, made of the parts above that use them; the one layered parse (resume)
    batches      a prepared dataset opened for training, and the batches drawn from it
    objectives   what a step computes from a batch (next-token, ...); one optimizer step; the loss estimate
    start        where a run starts: new, trained weights, or the checkpoint it resumes, checked
    checkpointer what a run saves; the NaN guard; a sharded checkpoint consolidated
    policy       when a run evaluates and saves
    metrics      metrics.jsonl (and wandb), the training log, read back into loss curves
    generate     sampling text: the settings, prompts, stop rules, streaming
    evaluation   scoring every token of a split (loss, perplexity, bits per byte)
    hellaswag    HellaSwag's items and their completion-style scoring (acc, acc_norm)
    novelty      the n-gram index of train.bin: was a sample copied?
    playground   the page's models and requests: side by side, seen in training, the runs
    playground_chat   the Chat tab's answers
    playground_arena  the Arena tab's rounds: two answers, blind, and their votes
    arena        the arena's votes file: durable appends, read_votes (no Gradio, no torch)
    ratings      the arena's leaderboard: Bradley-Terry ratings and win rates, bootstrap intervals
    page         the playground page (Gradio) over playground; page_arena its Arena tab
"""
