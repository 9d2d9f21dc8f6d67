"""sample.py with conversations: --start=FILE:conversation.json answers one, --chat holds one in the
terminal; both through generate.chat_prompt, which drops the oldest turns that no longer fit."""

import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

import sample
from conftest import ROOT, TINY_MODEL_ARGS
from gptsuite.chat import CHAT_TEMPLATE, prompt_ids
from gptsuite.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from gptsuite.errors import UserError, cli
from gptsuite.generate import answer_room, chat_prompt, kept_messages
from gptsuite.pipeline import prepare_documents
from gptsuite.sources import load_dataset_module
from gptsuite.tokenizer import GPT2_EOT, GPT2Tokenizer
from train import main as train_main

BLOCK = 64  # a conversation of the test data with its template fits, with room to answer
THINGS = {"sky": "blue", "grass": "green", "sun": "yellow", "sea": "blue", "snow": "white", "fire": "red", "night": "black", "leaf": "green"}


def conversations() -> list[dict]:
    """A few dozen short conversations in OpenAI's messages format: every answer starts with 'Sure!'."""
    out = []
    for thing, color in THINGS.items():
        out.append(
            {"messages": [{"role": "user", "content": f"What color is the {thing}?"}, {"role": "assistant", "content": f"Sure! The {thing} is {color}."}]}
        )
        out.append(
            {
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": f"Tell me about the {thing}."},
                    {"role": "assistant", "content": f"Sure! It is {color}."},
                ]
            }
        )
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"Hi, the {thing}?"},
                    {"role": "assistant", "content": f"Sure! {color.title()}."},
                    {"role": "user", "content": "Thanks."},
                    {"role": "assistant", "content": "Sure! Glad to help."},
                ]
            }
        )
    return out


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> Path:
    """A tiny GPT-2-vocabulary model trained a few steps on the conversations (prepare.py chat, train.py)."""
    tmp = tmp_path_factory.mktemp("chat")
    (tmp / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in conversations()), encoding="utf-8")
    module = load_dataset_module("chat")
    data = tmp / "data"
    prepare_documents(module.corpus(module.Config(data_dir=str(data), input=str(tmp / "chats.jsonl"), block_size=BLOCK), data), data, num_threads=1)
    args = [*TINY_MODEL_ARGS, f"--block_size={BLOCK}", "--gradient_accumulation_steps=1", "--eval_iters=1", "--eval_interval=100", "--dropout=0.0"]
    train_main([f"--data_dir={data}", f"--out_dir={tmp / 'run'}", *args, "--max_iters=4", "--learning_rate=1e-2", "--warmup_iters=0", "--log_interval=100"])
    return tmp / "run"


def write(path: Path, messages) -> str:
    path.write_text(json.dumps({"messages": messages}), encoding="utf-8")
    return f"--start=FILE:{path}"


def greedy_reply(run: Path, messages: list[dict], max_new_tokens: int) -> str:
    """The answer, worked out without sample.py: the model's argmax token after token, from the
    conversation's prompt ids, until <|endoftext|>."""
    ckpt = load_checkpoint(run)
    assert ckpt["chat_template"] == CHAT_TEMPLATE  # the dataset's template, carried by the checkpoint
    model, tok = model_from_checkpoint(ckpt).eval(), GPT2Tokenizer()
    ids = prompt_ids(tok, CHAT_TEMPLATE, messages)
    assert len(ids) + max_new_tokens <= BLOCK  # no sliding window to reproduce
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits, _ = model(torch.tensor([ids + out]))
            token = int(logits[0, -1, : tok.vocab_size].argmax())  # not the padded ids past the vocabulary
            if token == GPT2_EOT:
                break
            out.append(token)
    return tok.decode(out)


def test_a_conversation_file_is_answered_as_the_greedy_loop_answers(chat_run: Path, tmp_path: Path, capsys):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What color is the sun?"}]
    start = write(tmp_path / "conversation.json", messages)
    expected = greedy_reply(chat_run, messages, 12)
    assert expected.strip()
    common = [f"--out_dir={chat_run}", "--device=cpu", start, "--temperature=0", "--max_new_tokens=12"]
    sample.main([*common, "--num_samples=2"])
    batch = capsys.readouterr()
    assert batch.out == f"{expected}\n{sample.SEPARATOR}\n" * 2 and batch.err == ""
    sample.main([*common, "--num_samples=1", "--stream"])
    assert capsys.readouterr().out == f"{expected}\n{sample.SEPARATOR}\n"


def test_chat_prompt_drops_the_oldest_turns_and_keeps_the_system_message():
    tok = GPT2Tokenizer()
    system = {"role": "system", "content": "You are terse."}
    turns = [{"role": r, "content": f"{r} says {i}"} for i in range(4) for r in ("user", "assistant")][:-1]  # ends with a question
    lengths = [len(prompt_ids(tok, CHAT_TEMPLATE, [system, *turns[d:]])) for d in range(len(turns))]
    ids, dropped = chat_prompt(tok, CHAT_TEMPLATE, [system, *turns], lengths[0] + 10, 10)  # fits as it is
    assert dropped == 0 and ids == prompt_ids(tok, CHAT_TEMPLATE, [system, *turns])
    ids, dropped = chat_prompt(tok, CHAT_TEMPLATE, [system, *turns], lengths[3] + 10, 10)  # three fewer messages fit: whole exchanges drop, four
    assert dropped == 4 and ids == prompt_ids(tok, CHAT_TEMPLATE, [system, *turns[4:]]) and turns[4]["role"] == "user"
    assert kept_messages([system, *turns], 3) == [system, *turns[3:]] and kept_messages(turns, 3) == turns[3:]
    ids, dropped = chat_prompt(tok, CHAT_TEMPLATE, turns, len(prompt_ids(tok, CHAT_TEMPLATE, turns[2:])) + 10, 10)  # no system message
    assert dropped == 2 and ids == prompt_ids(tok, CHAT_TEMPLATE, turns[2:])
    with pytest.raises(UserError, match="the last message is .* tokens with the chat template, but the model reads at most 12"):
        chat_prompt(tok, CHAT_TEMPLATE, [system, *turns], 12, 4)
    assert answer_room(64, 16) == 16 and answer_room(64, 500) == 32 and answer_room(1024, 500) == 500


def test_a_conversation_longer_than_the_context_drops_its_oldest_turns_with_a_note(chat_run: Path, tmp_path: Path, capsys, monkeypatch):
    tok, used = GPT2Tokenizer(), []
    generate = sample.generate_texts
    monkeypatch.setattr(sample, "generate_texts", lambda model, tok, ids, *a, **k: used.append(ids) or generate(model, tok, ids, *a, **k))
    system = {"role": "system", "content": "You are terse."}
    turns = [m for thing, color in THINGS.items() for m in ({"role": "user", "content": f"The {thing}?"}, {"role": "assistant", "content": f"Sure! {color}."})]
    messages = [system, *turns, {"role": "user", "content": "What color is the sky?"}]
    assert len(prompt_ids(tok, CHAT_TEMPLATE, messages)) > BLOCK
    sample.main([f"--out_dir={chat_run}", "--device=cpu", write(tmp_path / "long.json", messages), "--temperature=0", "--max_new_tokens=16", "--num_samples=1"])
    out, err = capsys.readouterr()
    (note,) = err.splitlines()
    dropped = int(
        re.fullmatch(
            r"note: the conversation no longer fits the model's context of 64 tokens with 16 left to answer in; its oldest (\d+) messages are left out", note
        )[1]
    )
    assert used == [prompt_ids(tok, CHAT_TEMPLATE, [system, *messages[1 + dropped :]])]  # the system message and the newest turns
    assert messages[1 + dropped]["role"] == "user"  # whole exchanges drop
    assert len(used[0]) + 16 <= BLOCK < len(prompt_ids(tok, CHAT_TEMPLATE, [system, *messages[dropped - 1 :]])) + 16  # as many as leave the room
    assert out.endswith(f"\n{sample.SEPARATOR}\n")


def test_chat_refuses_a_message_it_cannot_take_and_goes_on(chat_run: Path, capsys, monkeypatch):
    """Without a terminal too (stdin a pipe): a message too long for the context, or holding the
    end marker, gets an error line and the conversation goes on; EOF ends it."""
    lines = ["Hi<|endoftext|>", "sky " * 60, "/system", "What color is the sky?"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    sample.main([f"--out_dir={chat_run}", "--device=cpu", "--chat", "--temperature=0", "--max_new_tokens=8"])
    out, err = capsys.readouterr()
    reply = greedy_reply(chat_run, [{"role": "user", "content": "What color is the sky?"}], 8)
    assert out.splitlines()[1:] == ["(system message removed)", f"assistant> {reply}"]
    first, second = err.splitlines()
    assert first == "error: a message cannot hold the end-of-turn marker '<|endoftext|>'; leave it out"
    assert second.startswith("error: the last message is 74 tokens with the chat template, but the model reads at most 64 (its context)")


def test_a_model_not_tuned_on_conversations_gets_the_chat_template_with_a_note(chat_run: Path, tmp_path: Path, tiny_checkpoint: Path, capsys):
    ckpt = load_checkpoint(chat_run)
    del ckpt["chat_template"]  # as GPT-2's weights, or a run on plain text
    save_checkpoint(ckpt, tmp_path / "plain" / "ckpt.pt")
    messages = [{"role": "user", "content": "What color is the sea?"}]
    sample.main(
        [f"--out_dir={tmp_path / 'plain'}", "--device=cpu", write(tmp_path / "c.json", messages), "--temperature=0", "--max_new_tokens=8", "--num_samples=1"]
    )
    out, err = capsys.readouterr()
    assert out == f"{greedy_reply(chat_run, messages, 8)}\n{sample.SEPARATOR}\n"  # in CHAT_TEMPLATE
    assert (
        err
        == f"note: {tmp_path / 'plain'} was not tuned on conversations (it has no chat template), so its answers may not follow the chat template it is given\n"
    )
    with pytest.raises(
        UserError, match=r"was not tuned on conversations, and its vocabulary lacks '<', '>', 'x', '\|', which the chat template spells; .*prepare.py chat"
    ):
        sample.main([f"--out_dir={tiny_checkpoint}", "--device=cpu", "--chat"])  # Shakespeare's characters


BAD_FILES = {
    "not JSON": ('{"messages": [', r"conversation.json is not JSON \(.*\); a .json file is a conversation, \{\"messages\""),
    "a list": ("[]", r"holds a list; a conversation file holds one conversation, \{\"messages\""),
    "no messages": ('{"conversations": []}', r"has no messages \(its fields: conversations\); a conversation file holds \{\"messages\""),
    "empty": ('{"messages": []}', r"conversation.json: has no messages; put the conversation in its list of messages"),
    "unknown role": ('{"messages": [{"role": "bot", "content": "Hi"}]}', r"message 1 has the role 'bot'; use one of system, user, assistant"),
    "malformed": ('{"messages": ["Hi"]}', r"message 1 is not an object .*; write each message as \{\"role\": \"user\""),
    "end marker": ('{"messages": [{"role": "user", "content": "Hi<|endoftext|>"}]}', r"message 1 contains the end-of-turn marker .*; leave the marker out"),
    "empty answer": ('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]}', r"message 2 is an empty .*; give it its text"),
}


@pytest.mark.parametrize("bad", BAD_FILES)
def test_a_bad_conversation_file_gets_one_line_that_names_the_fix(chat_run: Path, tmp_path: Path, capsys, monkeypatch, bad: str):
    text, expected = BAD_FILES[bad]
    (tmp_path / "conversation.json").write_text(text, encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["sample.py", f"--out_dir={chat_run}", "--device=cpu", f"--start=FILE:{tmp_path / 'conversation.json'}"])
    with pytest.raises(SystemExit) as e:
        cli(sample.main)
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == ""
    (line,) = err.splitlines()
    assert re.match(r"error: .*" + expected, line), line


LONG = "Tell me about the sea, the sky, the sun, the snow, the fire and the night."


@pytest.mark.slow
def test_chat_in_a_terminal_answers_as_the_conversation_files_do(chat_run: Path, tmp_path: Path, capsys):
    """Two turns, /system, /reset and Ctrl-D through a real terminal; each streamed answer is the
    one the conversation file of the same messages gets with the same seed."""
    import pexpect

    def user(text):
        return {"role": "user", "content": text}

    system = {"role": "system", "content": "You are terse."}
    settings = ["--device=cpu", "--max_new_tokens=10", "--temperature=1.0", "--top_k=20", "--seed=7"]
    env = {**os.environ, "TERM": "dumb", "PYTHONUNBUFFERED": "1"}  # dumb, and wide: readline echoes lines as typed, no escape sequences
    child = pexpect.spawn(
        sys.executable, ["sample.py", f"--out_dir={chat_run}", "--chat", *settings], cwd=ROOT, env=env, encoding="utf-8", timeout=30, dimensions=(24, 200)
    )

    def say(line: str) -> str:
        """What the terminal shows after the line is typed, up to the next prompt."""
        child.sendline(line)
        child.expect_exact("you> ")
        return child.before.replace("\r\n", "\n").removeprefix(line + "\n")

    def answer(line: str) -> tuple[str, str]:
        """The note that the oldest turns dropped (or ''), and the streamed answer."""
        note, _, shown = say(line).rpartition("assistant> ")
        assert shown.endswith("\n"), shown
        return note, shown[:-1]

    child.expect_exact("you> ")
    short = [system, user("What color is the sky?"), {"role": "assistant", "content": "."}, user(LONG)]
    assert len(prompt_ids(GPT2Tokenizer(), CHAT_TEMPLATE, short)) + 10 > BLOCK  # the second turn drops the oldest message, however short the first answer
    first = answer("What color is the sky?")
    assert say("/system You are terse.") == "(system message set)\n"
    second = answer(LONG)
    assert say("/reset") == "(the conversation starts over, with the system message)\n"
    third = answer("Hi, the sun?")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    conversations = [
        [user("What color is the sky?")],
        [system, user("What color is the sky?"), {"role": "assistant", "content": first[1]}, user(LONG)],
        [system, user("Hi, the sun?")],
    ]
    for i, (messages, streamed) in enumerate(zip(conversations, [first, second, third], strict=True)):
        sample.main([f"--out_dir={chat_run}", write(tmp_path / f"{i}.json", messages), "--num_samples=1", *settings])
        out, err = capsys.readouterr()
        assert (err, out) == (streamed[0], f"{streamed[1]}\n{sample.SEPARATOR}\n")  # the same answer, and the same note if turns dropped
    assert second[0].startswith("note: the conversation no longer fits")
    assert len({first[1], second[1], third[1]}) == 3
