"""Our GPT as a GGUF file, the format llama.cpp (and ollama, LM Studio, llama-cpp-python on top of
it) runs on plain CPUs, written with the `gguf` package.

llama.cpp's "gpt2" architecture computes exactly GPT-2's block (LayerNorms with biases, a fused
QKV projection, GELU's tanh form, learned positions, the head tied to the token embedding), so a
checkpoint of arch='gpt2' goes in as it is. The tensors are the ones llama.cpp's own converter
(convert_hf_to_gguf.py, GPT2Model) writes from a Hugging Face GPT-2: our --to=hf state dict
(hf_export.hf_state_dict: the vocabulary cropped to the tokenizer's ids, zero biases where a model
has none), its Conv1D weights transposed back, renamed by gguf's TensorNameMap. Which tensors are quantized
follows llama.cpp too: norms, biases and the position embeddings stay float32, every matrix takes
the chosen type, and for a 4-bit file the token embedding (also the output layer) keeps 8 bits,
as llama-quantize keeps the output layer at a higher precision (its Q6_K has no quantizer in
gguf's Python code, so Q8_0 here). A matrix whose rows are not a whole number of quantization
blocks (32 values) is written in f16, as the converter does.

The tokenizer is GPT-2's byte-level BPE ("gpt2" model, "gpt-2" pre-tokenizer: the regex GPT-2
splits text with), its 50257 tokens and 50000 merges from the same files as the --to=hf export,
<|endoftext|> (50256) a control token that is both BOS and EOS and never added to a prompt. A
BPE trained on the data (bpe.py) is the same kind of tokenizer (GPT-2's regex, then its bytes
spelled as characters), so it goes in the same way: its tokens and merges from its tokenizer.json,
its special tokens (<|endoftext|> and the chat markers) control tokens, and its whole tokenizer
dict under gptsuite.tokenizer, for the page to encode and decode with it. A model tuned on
conversations carries its chat template in Jinja (chat.jinja) as tokenizer.chat_template, which
llama.cpp's chat completion renders (and as JSON under gptsuite.chat_template, for the page).

export_gguf writes a folder: the GGUF file and an ollama Modelfile for it (the template in
ollama's Go syntax and the stop token), into a temporary folder renamed into place when complete.
"""

import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from gptsuite.atomic import check_folder, replace_folder, temp_path
from gptsuite.chat import check_template, jinja
from gptsuite.errors import UserError
from gptsuite.hf_export import hf_state_dict
from gptsuite.pretrained import CONV1D
from gptsuite.tokenizer import GPT2_EOT, GPT2_VOCAB_SIZE, BPETokenizer, from_meta, gpt2_files
from model import GPT

QUANTS = ("f16", "q8_0", "q4_0", "f32")  # what --quant takes: f16 as trained (to fp16), 8-bit and 4-bit blocks of 32, or float32
EMBEDDING_AT_LEAST = {"q4_0": "q8_0"}  # the tied token embedding / output layer keeps more bits than the blocks (llama-quantize keeps it at Q6_K)
GPT2_PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's pre-tokenizer regex
CHAT_TEMPLATE_KEY = "gptsuite.chat_template"  # our chat template (chat.py's dict, as JSON) beside tokenizer.chat_template's Jinja, for the page
TOKENIZER_KEY = "gptsuite.tokenizer"  # a trained BPE's tokenizer dict (tokenizer.json and its sha256, as JSON), for the page
# what a tokenizer.json's BPE model may set to other than these and still tokenize as llama.cpp's byte-level BPE does
PLAIN_BPE = {"dropout": None, "continuing_subword_prefix": None, "end_of_word_suffix": None, "byte_fallback": False, "ignore_merges": False}


def gguf_name(quant: str) -> str:
    return f"model.{quant}.gguf"


def check_exportable(model: GPT, tok_meta: dict) -> None:
    """Refuse, in one line, a model llama.cpp cannot run as we do."""
    if model.config.arch != "gpt2":
        raise UserError(
            f"this model has arch={model.config.arch} (RoPE, RMSNorm, QK-norm, ReLU², soft-capped logits), which llama.cpp's gpt2 architecture does not compute; "
            "run its checkpoint folder with sample.py, eval.py or serve.py, or train with --arch=gpt2 to export"
        )
    if tok_meta.get("kind") not in ("gpt2", "bpe"):
        raise UserError(
            f"this model uses a {tok_meta.get('kind')} tokenizer, and no GGUF tokenizer reproduces its vocabulary; "
            "run its checkpoint folder with sample.py, eval.py or serve.py, or prepare the data with --tokenizer=gpt2 or bpe and train again to export"
        )
    vocab_size = GPT2_VOCAB_SIZE
    if tok_meta["kind"] == "bpe":
        tok = from_meta(tok_meta)
        spec = json.loads(tok.json)
        unlike = ["normalizer"] * bool(spec.get("normalizer")) + [k for k, v in PLAIN_BPE.items() if spec["model"].get(k, v) != v]
        if unlike:
            raise UserError(
                f"this model's tokenizer.json sets {', '.join(unlike)}, which llama.cpp's byte-level BPE does not apply; "
                "run its checkpoint folder with sample.py, eval.py or serve.py, or export it with --to=hf"
            )
        vocab_size = tok.vocab_size
    if model.config.vocab_size < vocab_size:
        raise UserError(
            f"the model has {model.config.vocab_size} token ids, fewer than its tokenizer's {vocab_size}; the checkpoint is damaged or of another tokenizer"
        )


def gguf_tensors(model: GPT, quant: str, vocab_size: int = GPT2_VOCAB_SIZE) -> list[tuple[str, np.ndarray, object]]:
    """(GGUF name, data, GGML type) of every tensor, the data quantized where the type says so."""
    import gguf

    types = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16}
    types |= {q: getattr(gguf.GGMLQuantizationType, q.upper()) for q in QUANTS if q not in types}
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.GPT2, model.config.n_layer)
    out = []
    for hf_name, p in hf_state_dict(model, vocab_size).items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise AssertionError(f"no GGUF name for {hf_name}")
        data = (p.t() if hf_name.endswith(CONV1D) else p).contiguous().numpy()  # back to (out, in): ggml's rows are nn.Linear's
        kind = quant
        if data.ndim == 1 or name == "position_embd.weight":
            kind = "f32"
        elif name == "token_embd.weight":
            kind = EMBEDDING_AT_LEAST.get(quant, quant)
        qtype = types[kind]
        if qtype not in (types["f32"], types["f16"]) and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            qtype = types["f16"]  # rows that are no whole number of blocks
        if qtype == types["f32"]:
            out.append((name, data.astype(np.float32), qtype))
        elif qtype == types["f16"]:
            out.append((name, data.astype(np.float16), qtype))
        else:
            out.append((name, gguf.quants.quantize(data.astype(np.float32), qtype), qtype))
    return out


def gpt2_vocab() -> tuple[list[str], list[str]]:
    """GPT-2's tokens (byte-level strings, in id order) and merges, from its sha256-checked files."""
    files = gpt2_files()
    encoder = json.loads(files["encoder.json"].read_text(encoding="utf-8"))
    tokens = sorted(encoder, key=encoder.__getitem__)
    if [encoder[t] for t in tokens] != list(range(GPT2_VOCAB_SIZE)):
        raise AssertionError("GPT-2's encoder.json does not number its tokens 0..50256")
    lines = files["vocab.bpe"].read_text(encoding="utf-8").split("\n")
    merges = [m for m in lines if m and not m.startswith("#version")]
    return tokens, merges


def trained_bpe_vocab(tok: BPETokenizer) -> tuple[list[str], list[str]]:
    """A trained BPE's tokens (byte-level strings and its special tokens, in id order) and merges
    ("a b" lines, in rank order), from its tokenizer.json."""
    vocab = tok.tok.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(tok.vocab_size)):
        raise UserError(f"the tokenizer's {tok.vocab_size} ids are not numbered 0..{tok.vocab_size - 1}; a GGUF vocabulary lists every id")
    merges = json.loads(tok.json)["model"]["merges"]
    return tokens, [m if isinstance(m, str) else " ".join(m) for m in merges]  # pairs since tokenizers 0.20, "a b" strings before


def write_bpe_tokenizer(writer, tokens: list[str], merges: list[str], eot: int, pre: str = GPT2_PRE_TOKENIZER, special: Collection[int] = ()) -> None:
    """A byte-level BPE tokenizer in GGUF's keys: tokens as byte-level strings (GPT-2's byte-to-
    unicode map, as tokenizers' ByteLevel writes them too), merges as "a b" lines, the end-of-text
    id a control token that is BOS, EOS and padding and is not added to prompts; the `special` ids
    control tokens too (read from a prompt only where special tokens are parsed, as ours are). `pre`
    names the regex that splits text before BPE, one llama.cpp knows ("gpt-2" for GPT-2's)."""
    import gguf

    control = {eot, *special}
    types = [gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL for i in range(len(tokens))]
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_pad_token_id(eot)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def write_gguf(model: GPT, path: Path, quant: str, name: str, chat_template: dict | None = None, tok_meta: dict | None = None) -> None:
    import gguf

    c = model.config
    writer = gguf.GGUFWriter(str(path), arch="gpt2")
    writer.add_name(name)
    writer.add_block_count(c.n_layer)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(4 * c.n_embd)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(1e-5)  # nn.LayerNorm's
    file_types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
    writer.add_file_type(getattr(gguf.LlamaFileType, file_types[quant]))
    if tok_meta and tok_meta.get("kind") == "bpe":
        tok = from_meta(tok_meta)
        tokens, merges = trained_bpe_vocab(tok)
        write_bpe_tokenizer(writer, tokens, merges, tok.eot_token, special=tok.specials.values())
        writer.add_string(TOKENIZER_KEY, json.dumps(tok.meta()))
    else:
        tokens, merges = gpt2_vocab()
        write_bpe_tokenizer(writer, tokens, merges, GPT2_EOT)
    if chat_template:
        writer.add_chat_template(jinja(check_template(chat_template)))
        writer.add_string(CHAT_TEMPLATE_KEY, json.dumps(chat_template))
    for tensor_name, data, qtype in gguf_tensors(model, quant, len(tokens)):
        writer.add_tensor(tensor_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def modelfile(gguf_file: str, chat_template: dict | None) -> str:
    """An ollama Modelfile for the GGUF file: `ollama create NAME -f Modelfile`. A chat model's
    template in ollama's Go syntax (each message: its role's marker, the text, the end marker;
    then the assistant's marker), a plain model's prompt as it is; generation stops at the end
    marker. (Go templates cannot strip a message's surrounding whitespace as ours does: send
    messages without it.)"""
    lines = [f"FROM ./{gguf_file}"]
    if chat_template:
        t = check_template(chat_template)
        roles = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{r}" }}}}{m}' for i, (r, m) in enumerate(t["roles"].items()))
        body = f"{{{{- range .Messages }}}}{roles}{{{{ end }}}}{{{{ .Content }}}}{t['end']}{{{{ end }}}}{t['roles']['assistant']}"
        lines.append(f'TEMPLATE """{body}"""')
    else:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    lines.append('PARAMETER stop "<|endoftext|>"')
    return "\n".join(lines) + "\n"


def check_destination(dest: Path) -> None:
    """Refuse, before any work, a destination that holds anything: an export never replaces files."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not an empty folder; pass a new destination")
    check_folder(dest, "the destination")


def export_gguf(model: GPT, tok_meta: dict, dest: Path, quant: str, name: str, chat_template: dict | None = None) -> Path:
    """Write dest/model.<quant>.gguf and dest/Modelfile, the folder appearing whole or not at all;
    returns the GGUF file's path."""
    if quant not in QUANTS:
        raise UserError(f"unknown quantization {quant!r}; use one of {', '.join(QUANTS)}")
    check_exportable(model, tok_meta)
    check_destination(dest)
    tmp = temp_path(dest)
    tmp.mkdir()
    try:
        with torch.no_grad():
            write_gguf(model, tmp / gguf_name(quant), quant, name, chat_template, tok_meta)
        (tmp / "Modelfile").write_text(modelfile(gguf_name(quant), chat_template), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        check_destination(dest)  # still free: another writer may have taken it meanwhile
        if dest.exists():
            dest.rmdir()  # empty: replace_folder renames the finished one into its place
        replace_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / gguf_name(quant)
