"""export.py --to=gguf, checked by llama.cpp itself (llama-cpp-python, in requirements-dev.txt):
it loads the file, its greedy continuations are ours token for token, its perplexity on a text is
eval's, its tokenizer is GPT-2's and its chat completion formats a conversation as chat.render.
The model is tiny (2 layers, 64 wide) with GPT-2's vocabulary, so the checks take seconds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import export
from configurator import ConfigError
from gptsuite import chat
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.errors import UserError
from gptsuite.evaluation import evaluate, token_byte_lengths
from gptsuite.gguf_export import modelfile
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import GPT2_META, GPT2Tokenizer
from model import GPT, GPTConfig

try:
    import llama_cpp
except ImportError:  # a skipped check is not a check: say what to install
    raise ImportError("tests/test_gguf.py checks GGUF files with llama.cpp: pip install -r requirements-dev.txt (llama-cpp-python)") from None

from gptsuite.llamacpp import GGUFModel, greedy, open_gguf, score  # noqa: E402

TEXT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all resolved "
    "rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius Marcius is chief enemy to the people. "
)


def tiny_model(bias: bool = True, seed: int = 0, **shape) -> GPT:
    """A random GPT-2 of 2 layers whose greedy continuations change token every step (large
    position embeddings) with logits far enough apart (larger token embeddings) that f16's
    rounding does not reorder the top tokens."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{"block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64, "bias": bias, **shape})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # non-zero biases and gains, so a wrong mapping shows
                p.normal_(0.0, 0.1).add_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0)
        model.transformer.wte.weight.mul_(3.0)
        if model.config.arch == "gpt2":
            model.transformer.wpe.weight.mul_(30.0)
    return model


def save(model: GPT, out: Path, **extra) -> Path:
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": dict(GPT2_META), **extra}, out / "ckpt.pt")
    return out


def export_gguf(out: Path, dest: Path, quant: str) -> Path:
    export.main([f"--out_dir={out}", "--to=gguf", f"--quant={quant}", str(dest)])
    return dest / f"model.{quant}.gguf"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gguf")
    model = tiny_model()
    out = save(model, root / "out", chat_template=chat.CHAT_TEMPLATE)
    files = {q: export_gguf(out, root / q, q) for q in ("f32", "f16", "q8_0", "q4_0")}
    return {"model": model, "files": files, "root": root}


def test_llama_cpp_greedy_continuations_are_ours(exported):
    model, tok = exported["model"], GPT2Tokenizer()
    prompts = [tok.encode(t) for t in ("First Citizen:", "You are all resolved", "Speak, speak.", "the people", " 12345", "Hello")]
    for quant in ("f32", "f16"):
        llm = open_gguf(exported["files"][quant])
        for ids in prompts:
            ours = model.generate(torch.tensor([ids]), 24, temperature=0, vocab_limit=50257)[0, len(ids) :].tolist()
            assert len(set(ours)) > 12  # a continuation worth comparing
            assert greedy(llm, ids, 24) == ours, (quant, ids)


def test_llama_cpp_perplexity_is_evals(exported):
    model = exported["model"]
    tok = GPT2Tokenizer()
    data = np.array(tok.encode(TEXT * 3), dtype=np.uint16)
    rt = setup_runtime("cpu", "float32", 0)
    ours = evaluate(model, data, 64, 32, 4, rt, token_byte_lengths(tok), 50257)
    ratios = {}
    for quant in ("f16", "q8_0", "q4_0"):
        nats, n = score(open_gguf(exported["files"][quant], n_ctx=64, logits_all=True), data, 64, 32)
        assert n == ours.tokens
        ratios[quant] = np.exp(nats / n) / ours.perplexity
    assert abs(ratios["f16"] - 1) < 0.005, ratios
    assert abs(ratios["q8_0"] - 1) < 0.01, ratios
    assert abs(ratios["q4_0"] - 1) < 0.2 and ratios["q4_0"] != ratios["q8_0"], ratios


def test_gguf_tokenizer_is_gpt2s(exported):
    llm = open_gguf(exported["files"]["q8_0"])
    tok = GPT2Tokenizer()
    for text in ["Hello world", " leading space", "It's 3.14159 -- don't", "café naïve 日本語 😀", "a   b\t\tc\n\nd", "<|endoftext|> as text"]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text), text
        assert llm.detokenize(tok.encode(text)).decode() == text
    assert llm.token_eos() == llm.token_bos() == 50256 and llm.n_vocab() == 50257
    assert llm.detokenize([50256]) == b"" and llm.detokenize([50256], special=True) == b"<|endoftext|>"  # a control token: no text in an answer


def test_llama_cpp_chat_formats_a_conversation_as_ours(exported):
    """llama-cpp-python's chat completion renders tokenizer.chat_template with Jinja: the text and
    its tokens (the end marker the end-of-text token) are chat.render's and chat.prompt_ids'."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from test_chat_export import CONVERSATIONS

    llm = open_gguf(exported["files"]["q8_0"])
    template = llm.metadata["tokenizer.chat_template"]
    assert template == chat.jinja(chat.CHAT_TEMPLATE) and json.loads(llm.metadata["gptsuite.chat_template"]) == chat.CHAT_TEMPLATE
    formatter = Jinja2ChatFormatter(template, eos_token="<|endoftext|>", bos_token="<|endoftext|>", add_generation_prompt=True)
    tok = GPT2Tokenizer()
    for messages in CONVERSATIONS:
        prompt = formatter(messages=messages).prompt
        assert prompt == chat.render(chat.CHAT_TEMPLATE, messages, add_generation_prompt=True).text, messages
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == chat.prompt_ids(tok, chat.CHAT_TEMPLATE, messages), messages


def test_llama_cpp_chat_completion_answers_as_we_do(exported):
    """create_chat_completion (the file's template, llama.cpp's greedy sampler, its stop at the end
    token) gives our greedy answer to the same conversation (f32: no rounding between them)."""
    from test_chat_export import CONVERSATIONS

    model, tok = exported["model"], GPT2Tokenizer()
    llm = open_gguf(exported["files"]["f32"])
    for messages in CONVERSATIONS[:4]:
        ids = chat.prompt_ids(tok, chat.CHAT_TEMPLATE, messages)
        row = model.generate(torch.tensor([ids]), 12, temperature=0, vocab_limit=50257)[0, len(ids) :].tolist()
        ours = tok.decode(row[: row.index(50256)] if 50256 in row else row)
        answer = llm.create_chat_completion(messages, temperature=0.0, max_tokens=12)["choices"][0]["message"]["content"]
        assert answer == ours, messages


def test_page_model_writes_our_greedy_answer_and_samples_with_the_seed(exported):
    """GGUFModel behind generate.sample_rows: greedy, llama.cpp's argmax is our model's; sampling
    draws from torch's generator as ours does, so a seed repeats a sample."""
    from gptsuite.generate import SamplingConfig, sample_rows

    model, tok = exported["model"], GPT2Tokenizer()
    gguf = GGUFModel(exported["files"]["f32"])
    ids = tok.encode("You are all resolved")
    greedy_cfg = SamplingConfig(max_new_tokens=70, temperature=0, stop_at_eot=False)  # past the context of 64: the window slides
    *_, theirs = sample_rows(gguf, tok, ids, 1, greedy_cfg, "cpu")
    *_, ours = sample_rows(model, tok, ids, 1, greedy_cfg, "cpu")
    assert theirs == ours
    draws = []
    for _ in range(2):
        torch.manual_seed(7)
        *_, rows = sample_rows(gguf, tok, ids, 1, SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=None, stop_at_eot=False), "cpu")
        draws.append(rows[0])
    assert draws[0] == draws[1] and len(draws[0]) == 12


def test_4_bit_keeps_the_embedding_at_8_bits_and_files_shrink(exported):
    """llama.cpp's count of the tensors' bytes is the types' sizes by hand: a block of 32 weights
    is 34 bytes in q8_0 (32 int8 and an f16 scale), 18 in q4_0 (16 bytes of 4-bit and the scale);
    the token embedding q8_0 in the 4-bit file, norms, biases and positions f32."""
    model = exported["model"]
    embedding = 50257 * 64
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("transformer.h."))
    rest = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1) + 64 * 64  # norms and biases, positions
    expected = {
        "f32": 4 * (embedding + matrices + rest),
        "f16": 2 * (embedding + matrices) + 4 * rest,
        "q8_0": 34 * (embedding + matrices) // 32 + 4 * rest,
        "q4_0": 34 * embedding // 32 + 18 * matrices // 32 + 4 * rest,
    }
    for quant, path in exported["files"].items():
        llm = open_gguf(path)
        assert llama_cpp.llama_model_size(llm.model) == expected[quant], quant
    assert not (exported["root"] / "q4_0" / "Modelfile").read_text().count("{{ .Prompt }}")  # a chat model: the chat template


def test_modelfile_carries_the_template_in_go_syntax():
    text = modelfile("model.q8_0.gguf", chat.CHAT_TEMPLATE)
    assert text.splitlines()[0] == "FROM ./model.q8_0.gguf" and 'PARAMETER stop "<|endoftext|>"' in text
    assert '{{- range .Messages }}{{ if eq .Role "system" }}<|system|>\n{{ else if eq .Role "user" }}<|user|>\n' in text
    assert text.endswith('{{ .Content }}<|endoftext|>{{ end }}<|assistant|>\n"""\nPARAMETER stop "<|endoftext|>"\n')
    assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile("model.f16.gguf", None)


def test_bias_free_model_gets_zero_biases(tmp_path):
    model = tiny_model(bias=False, seed=1)
    path = export_gguf(save(model, tmp_path / "out"), tmp_path / "g", "f32")
    ids = GPT2Tokenizer().encode("First Citizen:")
    assert greedy(open_gguf(path), ids, 16) == model.generate(torch.tensor([ids]), 16, temperature=0, vocab_limit=50257)[0, len(ids) :].tolist()


def test_what_llama_cpp_cannot_run_is_refused_and_nothing_written(tmp_path, tiny_checkpoint):
    modern = save(tiny_model(arch="modern"), tmp_path / "modern")
    plain = save(tiny_model(), tmp_path / "plain")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        ([f"--out_dir={modern}", "--to=gguf"], UserError, "arch=modern .* llama.cpp's gpt2 architecture does not compute; run its checkpoint folder"),
        (
            [f"--out_dir={tiny_checkpoint}", "--to=gguf"],
            UserError,
            "char tokenizer, and no GGUF tokenizer reproduces its vocabulary; run its checkpoint folder with sample.py",
        ),
        ([f"--out_dir={plain}", "--to=gguf", "--quant=q3_k"], ConfigError, "quant must be one of f16, q8_0, q4_0, f32"),
        ([f"--out_dir={plain}", "--to=gguf", "--push_to_hub=me/x"], UserError, "--push_to_hub uploads a Hugging Face folder"),
    ]
    for args, error, words in cases:
        with pytest.raises(error, match=words):
            export.main([*args, str(tmp_path / "new")])
        assert not (tmp_path / "new").exists()
    with pytest.raises(UserError, match="taken exists and is not an empty folder; pass a new destination"):
        export.main([f"--out_dir={plain}", "--to=gguf", str(taken)])
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left either


def test_a_lora_run_exports_merged_and_refuses_a_changed_base(tmp_path):
    """The adapters merged into the base (their logits ours); the base's sha256 checked first."""
    from gptsuite.loading import load_model
    from gptsuite.lora import LoraConfig, adapt, adapter_state

    base = save(tiny_model(), tmp_path / "base")
    lora = adapt(tiny_model(), LoraConfig(rank=2))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # adapters that change the logits
    record = LoraConfig(rank=2).record() | {"base": {"init_from": str(base), "weights": str(base / "ckpt.pt"), "sha256": None}}
    from gptsuite.atomic import file_sha256

    record["base"]["sha256"] = file_sha256(base / "ckpt.pt")
    run = save(tiny_model(), tmp_path / "run")
    ckpt = load_checkpoint(run)
    save_checkpoint({**ckpt, "model": adapter_state(lora), "lora": record}, run / "ckpt.pt")
    merged = load_model("resume", str(run)).model
    path = export_gguf(run, tmp_path / "g", "f32")
    ids = GPT2Tokenizer().encode("First Citizen:")
    ours = merged.generate(torch.tensor([ids]), 16, temperature=0, vocab_limit=50257)[0, len(ids) :].tolist()
    assert greedy(open_gguf(path), ids, 16) == ours
    assert ours != tiny_model().generate(torch.tensor([ids]), 16, temperature=0, vocab_limit=50257)[0, len(ids) :].tolist()  # the adapters count

    with (base / "ckpt.pt").open("ab") as f:
        f.write(b" ")  # another file than the adapters were trained on
    with pytest.raises(UserError, match="the base weights changed"):
        export.main([f"--out_dir={run}", "--to=gguf", str(tmp_path / "g2")])
    assert not (tmp_path / "g2").exists()


def test_llama_cpp_is_the_version_pinned():
    pins = dict(
        line.split("#")[0].strip().split("==") for line in (Path(__file__).parents[1] / "requirements-dev.txt").read_text().splitlines() if "==" in line
    )
    assert llama_cpp.__version__ == pins["llama-cpp-python"]


def test_the_page_puts_a_gguf_file_beside_its_checkpoint(exported):
    """The Write tab: the GGUF file writes the checkpoint's greedy text beside it; the Chat tab:
    it answers in the chat template it carries, as the checkpoint does."""
    from gptsuite.generate import SamplingConfig
    from gptsuite.playground import Playground
    from gptsuite.playground_chat import reply

    out, gguf = str(exported["root"] / "out"), str(exported["files"]["f16"])
    pg = Playground(setup_runtime("cpu", "float32", 0), 100)
    pg.load(out), pg.load(gguf)
    assert pg.models[gguf].loaded.chat_template == chat.CHAT_TEMPLATE and pg.models[gguf].block_size == 64
    cfg = pg.settings(SamplingConfig(), max_new_tokens=20, temperature=0, stop_at_eot=False)
    *_, (ours, theirs) = pg.generate([out, gguf], "First Citizen:", cfg)
    assert theirs.text == ours.text and theirs.tokens == ours.tokens == 20 and theirs.done
    messages = [{"role": "user", "content": "Speak, speak."}]
    answers = [list(reply(pg, name, messages, pg.settings(SamplingConfig(), max_new_tokens=12, temperature=0)))[-1] for name in (out, gguf)]
    assert answers[0].text == answers[1].text and answers[1].tuned
    # the Arena: the GGUF file against its checkpoint, blind; greedy, both give the checkpoint's answer
    from gptsuite.arena import read_votes
    from gptsuite.playground_arena import Arena

    arena = Arena(pg, exported["root"] / "votes.jsonl")
    rnd = arena.new_round("Speak, speak.", "", out, gguf, pg.settings(SamplingConfig(), max_new_tokens=12, temperature=0))
    assert [side.answer for side in rnd.sides] == [answers[0].text] * 2 and all(side.chat for side in rnd.sides)
    arena.vote(rnd.id, "tie")
    (record,) = read_votes(exported["root"] / "votes.jsonl").records
    assert {record["a"]["model"], record["b"]["model"]} == {out, gguf} and record["winner"] == "tie"
    with pytest.raises(UserError, match="no GGUF file at"):
        pg.load(str(exported["root"] / "missing.gguf"))
