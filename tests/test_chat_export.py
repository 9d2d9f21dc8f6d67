"""A chat model out to Hugging Face: the export's tokenizer carries the chat template, and
transformers' apply_chat_template then gives the tokens we train and generate with (chat.render
and chat.encode), and its generate our greedy answer. No network: GPT-2's tokenizer files are local."""

import json
from pathlib import Path

import pytest
import torch
from test_datasets import prepare

import export
import sample
from conftest import TINY_MODEL_ARGS
from gptsuite import chat
from gptsuite.chat import CHAT_TEMPLATE
from gptsuite.checkpoint import load_checkpoint, save_checkpoint
from gptsuite.generate import SamplingConfig, chat_prompt, chat_settings, generate_texts
from gptsuite.hf_export import write_tokenizer
from gptsuite.loading import load_model
from gptsuite.tokenizer import GPT2_EOT, GPT2Tokenizer, from_meta
from train import main as train_main


def said(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# what apply_chat_template could get wrong: Jinja syntax in a message, whitespace that render strips
# (Python's str.strip and Jinja's trim must agree), characters of several BPE bytes, an empty turn
CONVERSATIONS = [
    [said("user", "Hi")],
    [said("system", "You are terse."), said("user", "What is 3+4?")],
    [said("user", "What is 3+4?"), said("assistant", "7"), said("user", "And 5+6?")],
    [said("user", "  leading and trailing spaces  ")],
    [said("user", "\n\nnewlines around\n\n"), said("assistant", "\tok\t"), said("user", "line one\nline two\n\nline four")],
    [said("user", "Say {{ 'hi' }} and {% if true %}yes{% endif %}")],
    [said("system", "{{ messages }} {{ roles['user'] }}"), said("user", "{%- raw -%}{{{{ }}}}{% endraw %}")],
    [said("user", "He said \"hello\" and 'bye' -- don't, it's, we'll, THEY'RE")],
    [said("user", "Emoji 😀🎉👩‍👩‍👧 and flags 🇯🇵"), said("assistant", "👍"), said("user", "more? 🤔")],
    [said("user", "日本語のテキストです。中文也可以。한국어도요.")],
    [said("system", "Numbers: 3.14159, 1,000,000, -42, 2024-01-01, 0x1F"), said("user", "12345678901234567890")],
    [said("user", "a   b    c\t\td"), said("assistant", "x  y"), said("user", "trailing tab\t")],
    [said("user", "\u00a0non-breaking spaces\u00a0"), said("assistant", "\u3000ideographic space\u3000")],
    [said("user", "   "), said("assistant", "An empty question, then."), said("user", "")],
    [said("user", "<|user|>\nfake marker <|assistant|> <|endoftext"), said("assistant", "<|system|>")],
    [said("user", "Windows line\r\nends\r\n")],
    [said("user", "Accents: café naïve résumé Ærø ß"), said("assistant", "Ελληνικά, русский, עברית, العربية")],
    [said("system", "Be helpful."), said("user", "Q1"), said("assistant", "A1"), said("user", "Q2"), said("assistant", "A2"), said("user", "Q3")],
    [said("user", "Backslashes \\n \\t \\\\ and a path C:\\Users\\x")],
    [said("user", 'JSON: {"a": [1, 2, {"b": null}]} and a set {1, 2}'), said("assistant", "}}{{"), said("user", "%}{%")],
]


def input_ids(encoded) -> list[int]:
    """apply_chat_template(tokenize=True)'s ids: a list in transformers 4, a BatchEncoding in 5."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_apply_chat_template_gives_our_tokens(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    write_tokenizer(tmp_path, 1024, CHAT_TEMPLATE)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == chat.jinja(CHAT_TEMPLATE)
    hf, tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True), GPT2Tokenizer()
    assert len(CONVERSATIONS) == 20
    for messages in CONVERSATIONS:
        assert input_ids(hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)) == chat.prompt_ids(tok, CHAT_TEMPLATE, messages), messages
        whole = chat.encode(tok, chat.render(CHAT_TEMPLATE, messages))[0].tolist()
        assert input_ids(hf.apply_chat_template(messages, add_generation_prompt=False, tokenize=True)) == whole, messages
        assert whole.count(GPT2_EOT) == len(messages)  # the end markers are the end-of-text token, in ours and theirs


@pytest.mark.slow  # training, and transformers' model
def test_exported_chat_model_answers_as_ours_in_transformers(tmp_path: Path, monkeypatch, capsys):
    """Greedy answers of the exported model in transformers (its own chat template, generate) are
    ours token for token, and what sample.py prints for the same conversation file."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, GPT2LMHeadModel

    sums = [{"messages": [said("user", f"What is {a}+{b}?"), said("assistant", f"It is {a + b}.")]} for a in range(1, 6) for b in range(1, 6)]
    (tmp_path / "sums.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sums), encoding="utf-8")
    data, out, dest = tmp_path / "data", tmp_path / "out", tmp_path / "hf"
    prepare("chat", data, input=str(tmp_path / "sums.jsonl"), block_size=64)
    args = [*TINY_MODEL_ARGS, "--block_size=64", "--batch_size=2", "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=100", "--dropout=0.0"]
    train_main([*args, f"--data_dir={data}", f"--out_dir={out}", "--max_iters=40", "--learning_rate=1e-2", "--warmup_iters=0", "--decay_lr=False"])
    export.main([f"--out_dir={out}", "--to=hf", str(dest)])

    loaded = load_model("resume", str(out))
    assert loaded.chat_template == CHAT_TEMPLATE
    tok, hf_tok = from_meta(loaded.tokenizer), AutoTokenizer.from_pretrained(dest, local_files_only=True)
    hf = GPT2LMHeadModel.from_pretrained(dest, local_files_only=True).eval()
    cfg = chat_settings(SamplingConfig(temperature=0, max_new_tokens=12), tok, CHAT_TEMPLATE)
    conversations = [
        [said("user", "What is 2+3?")],
        [said("system", "Add."), said("user", "What is 4+4?")],
        [said("user", "What is 1+1?"), said("assistant", "It is 2."), said("user", "What is 5+2?")],
    ]
    answers = []
    for messages in conversations:
        ids, _ = chat_prompt(tok, CHAT_TEMPLATE, messages, loaded.model.config.block_size, cfg.max_new_tokens)
        ours = generate_texts(loaded.model, tok, ids, 1, cfg, "cpu")[0]
        prompt = torch.tensor([input_ids(hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))])
        assert prompt[0].tolist() == ids
        with torch.no_grad():
            generated = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=cfg.max_new_tokens, eos_token_id=GPT2_EOT)
        theirs = generated[0, prompt.shape[1] :].tolist()
        assert len(ours) >= 2, tok.decode(ours)  # an answer, not an end of turn at once
        assert theirs[: theirs.index(GPT2_EOT) if GPT2_EOT in theirs else None] == ours, (tok.decode(ours), hf_tok.decode(theirs))
        answers.append(ours)
        (tmp_path / "conversation.json").write_text(json.dumps({"messages": messages}), encoding="utf-8")
        capsys.readouterr()
        sample.main(
            [f"--out_dir={out}", "--device=cpu", f"--start=FILE:{tmp_path / 'conversation.json'}", "--temperature=0", f"--max_new_tokens={cfg.max_new_tokens}"]
        )
        assert capsys.readouterr().out.split(sample.SEPARATOR)[0].strip() == hf_tok.decode(theirs, skip_special_tokens=True).strip()
    assert any(len(a) < cfg.max_new_tokens for a in answers)  # some answer ended at the end of its turn, in both


def test_checkpoint_without_a_chat_template_exports_none(tmp_path: Path):
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16))
    state = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": GPT2Tokenizer().meta()}
    save_checkpoint(state, tmp_path / "plain" / "ckpt.pt")
    save_checkpoint(state | {"chat_template": CHAT_TEMPLATE}, tmp_path / "chat" / "ckpt.pt")
    assert "chat_template" not in load_checkpoint(tmp_path / "plain")
    for name in ("plain", "chat"):
        export.main([f"--out_dir={tmp_path / name}", "--to=hf", str(tmp_path / f"hf-{name}")])
    assert "chat_template" not in json.loads((tmp_path / "hf-plain" / "tokenizer_config.json").read_text())
    assert json.loads((tmp_path / "hf-chat" / "tokenizer_config.json").read_text())["chat_template"] == chat.jinja(CHAT_TEMPLATE)
