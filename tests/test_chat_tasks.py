"""The synthetic chat tasks (tools/chat_tasks.py), scoring answers to them (eval.py --task=chat,
gptsuite/chat_eval.py), and the response-only loss of masked data (eval.py on a chat dataset)."""

import json
import math
import re
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from eval import main as eval_main
from gptsuite import chat_eval
from gptsuite.chat import CHAT_TEMPLATE
from gptsuite.checkpoint import save_checkpoint
from gptsuite.datafiles import load_meta, open_split
from gptsuite.errors import UserError
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import CharTokenizer
from model import GPT, GPTConfig
from tools import chat_tasks

END = "<|endoftext|>"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def question(item: dict) -> str:
    return item["messages"][0]["content"]


def answer(item: dict) -> str:
    return item["messages"][1]["content"]


def test_same_seed_same_bytes_and_no_test_question_in_train(tmp_path: Path, capsys):
    args = ["--train=600", "--test=120", "--seed=3"]
    chat_tasks.main([f"--out={tmp_path / 'a'}", *args])
    chat_tasks.main([f"--out={tmp_path / 'b'}", *args])
    chat_tasks.main([f"--out={tmp_path / 'c'}", "--train=600", "--test=120", "--seed=4"])
    for split in ("train", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() != (tmp_path / "c" / f"{split}.jsonl").read_bytes()
    train, test = read_jsonl(tmp_path / "a" / "train.jsonl"), read_jsonl(tmp_path / "a" / "test.jsonl")
    assert len(train) == 600 and len(test) == 120
    test_questions = [question(t) for t in test]
    assert len(set(test_questions)) == len(test)  # distinct
    assert not set(test_questions) & {question(t) for t in train}  # none in train
    names = list(chat_tasks.TASKS)
    assert [t["task"] for t in test] == [names[i % len(names)] for i in range(120)]  # the tasks take turns
    assert all(t["messages"][0]["role"] == "user" and t["messages"][1]["role"] == "assistant" for t in train + test)
    assert "120 conversations" in capsys.readouterr().out


def recomputed(task: str, q: str) -> str:
    """The answer to a question, worked out from its text alone."""
    quoted = re.findall(r"'([^']*)'", q)
    if task == "add":
        a, b = map(int, re.findall(r"\d+", q))
        return str(a + b)
    if task == "next_letter":
        c = quoted[0] if quoted else re.search(r"\b([A-Za-z])\b[?.]?$", q).group(1)
        return chr(ord(c) + 1)
    if task == "count":
        c, w = (
            re.search(r"(?:'(\w)' (?:appear )?in|How many (\w)'s are in the word) '(\w+)'", q).group(1, 3)
            if "'s are" not in q
            else re.search(r"How many (\w)'s are in the word '(\w+)'", q).groups()
        )
        return str(sum(1 for x in w if x == c))
    w = quoted[0] if quoted else re.search(r"(?:Write|of|Spell out) ([a-z]+)[ ,]", q).group(1)
    if task == "reverse":
        return "".join(reversed(w))
    if task == "sort":
        return "".join(sorted(w, key=ord))
    assert task == "spell"
    return ("-" if "dashes" in q else " ").join(list(w))


def test_answers_are_right(tmp_path: Path):
    chat_tasks.main([f"--out={tmp_path}", "--train=600", "--test=300", "--seed=11"])
    items = read_jsonl(tmp_path / "train.jsonl") + read_jsonl(tmp_path / "test.jsonl")
    for item in items:
        assert answer(item) == recomputed(item["task"], question(item)), item
    assert {item["task"] for item in items} == set(chat_tasks.TASKS)
    assert any(answer(i) == "0" for i in items if i["task"] == "count")  # a letter the word lacks
    assert {answer(i) for i in items if i["task"] == "next_letter"} <= set(string.ascii_letters[1:26] + string.ascii_letters[27:])


def test_task_choice_and_existing_files(tmp_path: Path):
    chat_tasks.main([f"--out={tmp_path}", "--train=10", "--test=4", "--tasks=add,reverse"])
    assert {t["task"] for t in read_jsonl(tmp_path / "train.jsonl")} == {"add", "reverse"}
    before = (tmp_path / "train.jsonl").read_bytes()
    with pytest.raises(UserError, match=r"already exist; pass another --out, or --overwrite=True"):
        chat_tasks.main([f"--out={tmp_path}", "--train=10", "--test=4", "--seed=9"])
    assert (tmp_path / "train.jsonl").read_bytes() == before
    chat_tasks.main([f"--out={tmp_path}", "--train=10", "--test=4", "--seed=9", "--overwrite=True"])
    assert (tmp_path / "train.jsonl").read_bytes() != before
    with pytest.raises(UserError, match="unknown task 'mul'"):
        chat_tasks.main([f"--out={tmp_path / 'x'}", "--tasks=add,mul"])
    with pytest.raises(UserError, match="no more distinct questions"):  # 50 letters x 5 phrasings
        chat_tasks.main([f"--out={tmp_path / 'y'}", "--tasks=next_letter", "--test=251"])
    assert not list(tmp_path.glob(".*.tmp"))


# --- scoring answers ---------------------------------------------------------------------------


def chat_tokenizer() -> CharTokenizer:
    return CharTokenizer(sorted(set(string.ascii_letters + string.digits + " \n?'.-+=" + "".join(CHAT_TEMPLATE["roles"].values()) + END)))


def tiny_chat_model(tok: CharTokenizer, block_size: int = 128) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=block_size, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)).eval()


def overfit(model: GPT, tok: CharTokenizer, items: list[dict], steps: int = 50) -> GPT:
    """The model trained on the conversations (written out by hand) until it says their answers and ends them."""
    rows = [tok.encode(f"<|user|>\n{question(i)}{END}<|assistant|>\n{answer(i)}{END}") for i in items]
    x = torch.zeros(len(rows), max(map(len, rows)) - 1, dtype=torch.long)
    y = torch.full_like(x, -1)
    for r, ids in enumerate(rows):
        x[r, : len(ids) - 1], y[r, : len(ids) - 1] = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        _, loss = model.train()(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@torch.no_grad()
def greedy_reply(model: GPT, tok: CharTokenizer, user: str, max_new: int) -> tuple[str, bool]:
    """The model's greedy answer, by hand: the template written out, one full forward per token;
    and whether it ended at the end marker."""
    ids = tok.encode(f"<|user|>\n{user.strip()}{END}<|assistant|>\n")
    new = []
    for _ in range(max_new):
        logits, _ = model(torch.tensor([ids + new]))
        new.append(int(logits[0, -1].argmax()))
        if END in tok.decode(new):
            return tok.decode(new).split(END)[0], True
    return tok.decode(new), False


def test_exact_match_counts_the_replies_that_equal_the_expected(tmp_path: Path):
    tok = chat_tokenizer()
    _, test = chat_tasks.make_items(["add", "reverse"], 0, 6, seed=5)
    model = overfit(tiny_chat_model(tok), tok, test[:4])  # items 4 and 5 it was not trained on
    right = {0, 2, 3}  # add: items 0, 2 (of 0, 2, 4); reverse: item 3 (of 1, 3, 5)
    lines = []
    for i, item in enumerate(test):
        reply, ended = greedy_reply(model, tok, question(item), 30)
        assert ended and reply.strip()  # within the answer budget (longest expected + end marker + margin); not empty
        expected = reply if i in right else reply + "x"
        lines.append(json.dumps({"messages": [item["messages"][0], {"role": "assistant", "content": expected}], "task": item["task"]}))
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = chat_eval.load_items(path, CHAT_TEMPLATE)
    rt = setup_runtime("cpu", "float32")
    r = chat_eval.evaluate_chat(model, tok, CHAT_TEMPLATE, items, rt)
    assert (r.correct, r.items, r.accuracy) == (3, 6, 0.5)
    assert {t: (s.correct, s.items) for t, s in r.tasks.items()} == {"add": (2, 3), "reverse": (1, 3)}
    r = chat_eval.evaluate_chat(model, tok, CHAT_TEMPLATE, items, rt, max_items=2)  # --chat_items=2
    assert {t: (s.correct, s.items) for t, s in r.tasks.items()} == {"add": (1, 1), "reverse": (0, 1)}


def test_answer_budget_is_the_longest_answer_its_end_and_a_margin():
    tok = chat_tokenizer()
    items = [chat_eval.ChatItem((), a, "t", "") for a in ("12", " abcde ", "x")]
    assert chat_eval.answer_budget(tok, CHAT_TEMPLATE, items) == 5 + len(END) + chat_eval.MARGIN


def write_chat_checkpoint(out: Path, model: GPT, tok: CharTokenizer, chat_template: dict | None) -> None:
    state = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": tok.meta(), "config": {}}
    save_checkpoint(state | ({"chat_template": chat_template} if chat_template else {}), out / "ckpt.pt")


def test_eval_task_chat_prints_scores_and_a_table(tmp_path: Path, capsys):
    tok = chat_tokenizer()
    write_chat_checkpoint(tmp_path / "tuned", tiny_chat_model(tok), tok, CHAT_TEMPLATE)
    write_chat_checkpoint(tmp_path / "plain", tiny_chat_model(tok), tok, None)
    chat_tasks.main([f"--out={tmp_path / 'tasks'}", "--train=0", "--test=4", "--tasks=add,sort"])
    capsys.readouterr()
    test_file = tmp_path / "tasks" / "test.jsonl"
    eval_main([f"--out_dir={tmp_path / 'tuned'}", "--device=cpu", "--task=chat", f"--chat_file={test_file}", "--chat_items=3"])
    out = capsys.readouterr().out
    assert re.search(r"tuned: chat exact match 0\.0000 \(0 of 3 answers of .*test\.jsonl", out), out  # an untrained model
    assert re.search(r"^  add +0\.0000 \(0 of 2\)$", out, re.M) and re.search(r"^  sort +0\.0000 \(0 of 1\)$", out, re.M), out
    eval_main(["--compare", str(tmp_path / "tuned"), str(tmp_path / "plain"), "--device=cpu", "--task=chat", f"--chat_file={test_file}"])
    out = capsys.readouterr().out
    assert "plain was not tuned on conversations (it has no chat template), so its answers may not follow the chat template it is given" in out
    assert "| model | exact match | add | sort |" in out and f"| {tmp_path / 'plain'} | 0.0000 (0/4) | 0.0000 (0/2) | 0.0000 (0/2) |" in out
    with pytest.raises(UserError, match="--task=chat needs the conversations to answer: pass --chat_file="):
        eval_main([f"--out_dir={tmp_path / 'tuned'}", "--device=cpu", "--task=chat"])


def test_a_plain_text_model_that_cannot_spell_the_template_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    chat_tasks.main([f"--out={tmp_path / 'tasks'}", "--train=0", "--test=2"])
    with pytest.raises(UserError, match="was not tuned on conversations, and its vocabulary lacks .* which the chat template spells"):
        eval_main([f"--out_dir={tiny_checkpoint}", "--device=cpu", "--task=chat", f"--chat_file={tmp_path / 'tasks' / 'test.jsonl'}"])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"messages": [{"role": "user", "content": "Hi"}]}', "has no assistant message"),
        ('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "?"}]}', "does not end in"),
        ('{"prompt": "Hi"}', "is not a"),
        ("{", "is not JSON"),
    ],
)
def test_bad_test_files_name_the_line(tmp_path: Path, line: str, problem: str):
    path = tmp_path / "t.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"t.jsonl line 2.*{re.escape(problem)}"):
        chat_eval.load_items(path, CHAT_TEMPLATE)


# --- the loss of the response tokens of masked data ---------------------------------------------


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> Path:
    """A character-level chat dataset of 40 task conversations, prepared through prepare.py chat."""
    import prepare

    folder = tmp_path_factory.mktemp("chat")
    train, _ = chat_tasks.make_items(list(chat_tasks.TASKS), 40, 0, seed=2)
    (folder / "tasks.jsonl").write_text(chat_tasks.jsonl(train), encoding="utf-8")
    prepare.main(["chat", f"--input={folder / 'tasks.jsonl'}", f"--data_dir={folder / 'data'}", "--tokenizer=char", "--block_size=128", "--val_fraction=0.2"])
    return folder / "data"


@torch.no_grad()
def response_nats(model: GPT, data_dir: Path, block: int) -> tuple[float, int]:
    """Summed loss and number of val's counted tokens, each predicted, by its own forward pass, from
    up to `block` tokens of its conversation before it."""
    val = open_split(data_dir, "val").astype(np.int64)
    mask = np.fromfile(data_dir / "val.mask.bin", dtype=np.uint8)
    starts = np.fromfile(data_dir / "val.starts.bin", dtype=np.int64)
    total, n = 0.0, 0
    for i in np.flatnonzero(mask):
        start = starts[starts <= i].max()
        context = torch.from_numpy(val[max(start, i - block) : i])
        logits, _ = model(context[None])
        total += F.cross_entropy(logits[0, -1].double()[None], torch.tensor([val[i]])).item()
        n += 1
    return total, n


def printed(out: str) -> tuple[float, float, int, int]:
    line = next(x for x in out.splitlines() if " val loss " in x)
    m = re.search(r"val loss ([\d.]+), perplexity [\d.]+, bits per byte ([\d.]+) of the response tokens \(([\d,]+) response tokens, ([\d,]+) bytes", line)
    assert m, line
    return float(m[1]), float(m[2]), int(m[3].replace(",", "")), int(m[4].replace(",", ""))


@pytest.mark.parametrize(("block", "stride"), [(128, 0), (16, 1)])
def test_masked_data_scores_the_response_tokens_only(chat_data: Path, tmp_path: Path, capsys, block: int, stride: int):
    meta = load_meta(chat_data)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=block, vocab_size=meta["vocab_size"], n_layer=2, n_head=2, n_embd=32)).eval()
    state = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": meta["tokenizer"], "config": {"data_dir": str(chat_data)}}
    save_checkpoint(state | {"chat_template": meta["chat_template"]}, tmp_path / "out" / "ckpt.pt")
    nats, n = response_nats(model, chat_data, block)
    assert n == meta["loss_mask"]["counted_tokens"]["val"] > 0
    eval_main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", f"--stride={stride}"])
    out = capsys.readouterr().out
    loss, bpb, tokens, n_bytes = printed(out)
    assert (tokens, n_bytes) == (n, n)  # ASCII: a byte a token
    assert loss == round(nats / n, 4)
    assert bpb == pytest.approx(nats / n / math.log(2), abs=1e-4)
    assert "only the response tokens count" in out
    eval_main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--loss_on=all"])  # every token, as for plain text
    out = capsys.readouterr().out
    assert "response" not in out and f"({len(open_split(chat_data, 'val')) - 1:,} tokens" in out
