"""Chat data and loss masks: prepare.py chat reads the common formats into the chat template, the
loss mask marks exactly the assistant's words (and a template's response), rows start at
documents, and bad records are refused with their place or skipped and counted."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_datasets import PAPERS, prepare, write_papers

import prepare as prepare_cli
from conftest import TINY_MODEL_ARGS
from gptsuite.batches import Batches, DataConfig, open_training_data
from gptsuite.chat import CHAT_TEMPLATE, BadRecord, check_messages, render
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import GPT2_EOT, CharTokenizer, GPT2Tokenizer
from train import main as train_main

END = CHAT_TEMPLATE["end"]


def conversation(i: int) -> list[dict]:
    turns = [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"It is {2 * i}."}]
    if i % 3 == 0:
        turns = [{"role": "system", "content": "Answer in one sentence."}, *turns]
    if i % 4 == 0:
        turns += [{"role": "user", "content": "  And doubled?\n"}, {"role": "assistant", "content": f"\n{4 * i}, naïvely 🎉 "}]
    return turns


CONVERSATIONS = [conversation(i) for i in range(24)]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read(out: Path, split: str, name: str, dtype) -> np.ndarray:
    return np.fromfile(out / f"{split}.{name}.bin" if name else out / f"{split}.bin", dtype=dtype)


def documents(out: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each document's tokens and loss mask, cut at the starts file."""
    ids, mask, starts = read(out, split, "", np.uint16), read(out, split, "mask", np.uint8), read(out, split, "starts", np.int64)
    assert len(mask) == len(ids) and starts[0] == 0 and (np.diff(starts) > 0).all()
    bounds = [*starts.tolist(), len(ids)]
    return [(ids[a:b], mask[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def said(messages: list[dict]) -> str:
    """What the assistant says in a conversation, with its end markers: the text the loss counts."""
    return "".join(m["content"].strip() + END for m in messages if m["role"] == "assistant")


def test_the_loss_counts_exactly_what_the_assistant_says(tmp_path: Path):
    meta = prepare("chat", tmp_path / "out", input=str(write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in CONVERSATIONS])))
    tok = GPT2Tokenizer()
    texts = {render(CHAT_TEMPLATE, m).text: m for m in CONVERSATIONS}
    seen = 0
    for split in ("train", "val"):
        for ids, mask in documents(tmp_path / "out", split):
            text = tok.decode(ids.tolist())
            messages = texts[text]  # each document is one conversation in the template, whole
            assert tok.decode(ids[mask == 1].tolist()) == said(messages)  # the counted tokens spell the answers and their end markers
            assert ids[-1] == GPT2_EOT and mask[-1] == 1  # a conversation ends with the assistant's end marker, no document end after it
            seen += 1
    assert seen == len(CONVERSATIONS) == sum(meta["documents"].values())
    assert meta["chat_template"] == CHAT_TEMPLATE and meta["format"] == "messages" and "loss_mask" in meta
    counted = sum(int(read(tmp_path / "out", s, "mask", np.uint8).sum()) for s in ("train", "val"))
    assert counted == sum(meta["loss_mask"]["counted_tokens"].values())


def test_every_format_gives_the_same_conversations(tmp_path: Path):
    pairs = [(f"Say {w}.", w) for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")]
    formats = {
        "messages.jsonl": [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs],
        "sharegpt.json": [{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in pairs],
        "alpaca.jsonl": [{"instruction": q, "input": "", "output": a} for q, a in pairs],
        "prompt.parquet": [{"prompt": q, "completion": a} for q, a in pairs],
        "trl.jsonl": [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]} for q, a in pairs],
    }
    names = {
        "messages.jsonl": "messages",
        "sharegpt.json": "sharegpt",
        "alpaca.jsonl": "alpaca",
        "prompt.parquet": "prompt/completion",
        "trl.jsonl": "prompt/completion",
    }
    bins = {}
    for name, records in formats.items():
        path = tmp_path / name
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(records), path)
        elif name.endswith(".json"):
            path.write_text(json.dumps(records), encoding="utf-8")
        else:
            write_jsonl(path, records)
        meta = prepare("chat", tmp_path / name.replace(".", "_"), input=str(path))
        assert meta["format"] == names[name] and f"({names[name]} format)" in meta["source"]
        bins[name] = [(tmp_path / name.replace(".", "_") / f).read_bytes() for f in ("train.bin", "val.bin", "train.mask.bin", "val.mask.bin")]
    assert all(b == bins["messages.jsonl"] for b in bins.values())  # the same conversations, the same bytes
    alpaca = render(CHAT_TEMPLATE, [{"role": "user", "content": "Translate\n\nhola"}, {"role": "assistant", "content": "hello"}]).text
    assert alpaca == "<|user|>\nTranslate\n\nhola<|endoftext|><|assistant|>\nhello<|endoftext|>"  # Alpaca's input follows its instruction


BAD = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "has no assistant message", "no assistant message"),
    ({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "has the role 'robot'", "unknown role"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}, "empty assistant message", "empty assistant message"),
    ({"messages": [{"role": "user", "content": "a <|endoftext|> b"}, {"role": "assistant", "content": "x"}]}, "end-of-turn marker", "end marker in a message"),
    ({"messages": [{"role": "user", "content": "long " * 80}, {"role": "assistant", "content": "x"}]}, "longer than --block_size=64", "longer than block_size"),
    ({"conversation": []}, "has no field 'messages'", "not in the format"),
]


@pytest.mark.parametrize("bad,problem,reason", BAD, ids=[b[2] for b in BAD])
def test_a_bad_record_is_refused_with_its_place_or_skipped_and_counted(tmp_path: Path, bad: dict, problem: str, reason: str, capsys):
    good = [{"messages": m} for m in CONVERSATIONS[:6]]
    path = write_jsonl(tmp_path / "c.jsonl", [*good[:3], bad, *good[3:]])
    args = ["chat", f"--input={path}", f"--data_dir={tmp_path / 'out'}", "--block_size=64"]
    with pytest.raises(UserError, match=rf"^{path} line 4: .*{problem}.*; fix the record, or pass --skip_bad=True"):
        prepare_cli.main(args)
    assert not (tmp_path / "out" / "meta.json").exists() and not list((tmp_path / "out").glob("*.bin"))  # nothing written
    prepare_cli.main([*args, "--skip_bad=True"])
    assert f"6 (train 5, val 1), 1 bad records skipped (1 {reason})" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["skipped_records"] == {reason: 1} and sum(meta["documents"].values()) == 6


def test_character_level_chat_spells_the_markers(tmp_path: Path):
    prepare("chat", tmp_path / "out", input=str(write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in CONVERSATIONS])), tokenizer="char")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    tok = CharTokenizer(meta["tokenizer"]["vocab"])
    texts = {render(CHAT_TEMPLATE, m).text: m for m in CONVERSATIONS}
    for ids, mask in documents(tmp_path / "out", "train"):
        messages = texts[tok.decode(ids.tolist())]
        assert tok.decode(ids[mask == 1].tolist()) == said(messages)


def test_a_template_counts_the_response_and_its_end(tmp_path: Path):
    train, val = write_papers(tmp_path / "train.jsonl", PAPERS[:9]), write_papers(tmp_path / "val.jsonl", PAPERS[9:])
    meta = prepare("pubmed", tmp_path / "out", data_files=str(train), val_files=str(val))
    tok = GPT2Tokenizer()
    articles = {p["article"].strip() for p in PAPERS}
    docs = documents(tmp_path / "out", "train") + documents(tmp_path / "out", "val")
    assert len(docs) == len(PAPERS)
    for ids, mask in docs:
        counted = tok.decode(ids[mask == 1].tolist())
        assert counted.endswith("<|endoftext|>") and counted[: -len("<|endoftext|>")] in articles
        assert tok.decode(ids[mask == 0].tolist()).startswith("ABSTRACT:\n") and tok.decode(ids[mask == 0].tolist()).endswith("\n\nARTICLE:\n")
    assert meta["loss_mask"]["longest_prompt"] == max(int(np.argmax(m)) for _, m in docs)


def test_rows_start_at_documents_and_leave_out_what_does_not_count(tmp_path: Path):
    out = tmp_path / "out"
    prepare("chat", out, input=str(write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in CONVERSATIONS])))
    docs = documents(out, "train")
    firsts = {tuple(ids[:8].tolist()) for ids, _ in docs}
    rt = setup_runtime("cpu", "float32", 1337)
    for loss_on in ("response", "all"):
        cfg = DataConfig(data_dir=str(out), batch_size=8, loss_on=loss_on)
        batches = Batches(open_training_data(cfg, 48), cfg, 48, 1337, rt)
        x, y = batches.eval("train", 0)
        ids, mask = read(out, "train", "", np.uint16), read(out, "train", "mask", np.uint8)
        for r in range(len(x)):
            assert tuple(x[r, :8].tolist()) in firsts  # every row begins with a conversation
            row = x[r].numpy()
            start = next(
                s for s in read(out, "train", "starts", np.int64).tolist() if (ids[s : s + min(48, len(ids) - s - 1)] == row[: min(48, len(ids) - s - 1)]).all()
            )
            n = min(48, len(ids) - start - 1)  # a row that reaches the end of the split is padded
            expect = torch.from_numpy(ids[start + 1 : start + 1 + n].astype(np.int64))
            if loss_on == "response":
                expect[torch.from_numpy(mask[start + 1 : start + 1 + n]) == 0] = -1
            assert torch.equal(y[r, :n], expect) and (y[r, n:] == -1).all()
        if loss_on == "response":
            assert (y != -1).any() and (y == -1).any()


def test_training_on_chat_data_records_the_template_and_refuses_a_block_too_short(tmp_path: Path):
    data, out = tmp_path / "data", tmp_path / "out"
    meta = prepare("chat", data, input=str(write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in CONVERSATIONS])))
    longest = meta["loss_mask"]["longest_prompt"]
    args = [
        f"--data_dir={data}",
        f"--out_dir={out}",
        "--max_iters=2",
        "--eval_interval=2",
        "--eval_iters=2",
        "--gradient_accumulation_steps=1",
        *TINY_MODEL_ARGS,
    ]
    with pytest.raises(
        UserError, match=rf"block_size=16 is shorter than the longest prompt .*\({longest} tokens.*pass --block_size={longest} or more, or --loss_on=all"
    ):
        train_main(args)
    train_main([*args, f"--block_size={longest}"])
    assert load_checkpoint(out)["chat_template"] == CHAT_TEMPLATE


def test_messages_are_checked():
    with pytest.raises(BadRecord, match="message 2 is not an object"):
        check_messages([{"role": "user", "content": "x"}, "hi"], CHAT_TEMPLATE, "here")
    assert check_messages([{"role": "user", "content": "x"}], CHAT_TEMPLATE, "here", answered=False) == [{"role": "user", "content": "x"}]


def test_a_run_says_how_much_its_rows_reach(tmp_path: Path, capsys):
    train, val = write_papers(tmp_path / "train.jsonl", PAPERS[:9]), write_papers(tmp_path / "val.jsonl", PAPERS[9:])
    prepare("pubmed", tmp_path / "data", data_files=str(train), val_files=str(val))
    docs = documents(tmp_path / "data", "train")
    total = sum(len(ids) for ids, _ in docs)
    counted = sum(int(mask.sum()) for _, mask in docs) / total
    unreached = sum(max(len(ids) - 33, 0) for ids, _ in docs) / total  # a row holds 32 inputs and one more target
    train_main(
        [
            f"--data_dir={tmp_path / 'data'}",
            f"--out_dir={tmp_path / 'out'}",
            "--max_iters=0",
            "--eval_iters=1",
            "--gradient_accumulation_steps=1",
            *TINY_MODEL_ARGS,
            "--block_size=32",
        ]
    )
    assert f"the loss counts the responses: {counted:.0%} of train.bin's tokens; {unreached:.0%} lie more than block_size=32" in capsys.readouterr().out


@pytest.mark.slow  # builds GPT-2 weights with transformers
def test_tuning_on_chat_data_from_gpt2_weights_through_lora_and_with_the_modern_preset(tmp_path: Path, capsys):
    """From GPT-2's weights (a Hugging Face folder) through LoRA, the first evaluation's val loss is
    transformers' own loss of those weights on the answers' tokens; the modern preset trains on
    the same data; both checkpoints carry the chat template."""
    from test_pretrained import save_hf_model

    data = tmp_path / "data"
    prepare("chat", data, input=str(write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in CONVERSATIONS])), block_size=64)
    hf = save_hf_model(tmp_path / "gpt2", n_layer=2, n_head=2, n_embd=32)
    args = [
        f"--data_dir={data}",
        "--device=cpu",
        "--compile=False",
        "--block_size=64",
        "--batch_size=4",
        "--gradient_accumulation_steps=1",
        "--max_iters=2",
        "--eval_iters=1",
        "--eval_interval=2",
    ]
    train_main([*args, f"--out_dir={tmp_path / 'lora'}", f"--init_from={tmp_path / 'gpt2'}", "--lora_rank=4", "--lora_dropout=0", "--dropout=0"])
    first_eval = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step 0:"))
    cfg = DataConfig(data_dir=str(data), batch_size=4)
    x, y = Batches(open_training_data(cfg, 64), cfg, 64, 1337, setup_runtime("cpu", "float32", 1337)).eval("val", 0)
    with torch.no_grad():
        logits = hf(x).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1).item()
    assert f"val loss {expected:.4f}" in first_eval, (expected, first_eval)
    train_main([*args, f"--out_dir={tmp_path / 'modern'}", "--arch=modern", "--n_layer=2", "--n_head=2", "--n_embd=32"])
    for run in ("lora", "modern"):
        assert load_checkpoint(tmp_path / run)["chat_template"] == CHAT_TEMPLATE
