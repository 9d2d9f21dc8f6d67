"""A BPE trained on the corpus (prepare.py --tokenizer=bpe), reused by a second prepare, and carried
with the model to eval, sampling and the Hugging Face export; checked against `tokenizers` itself,
transformers' AutoTokenizer and values counted by hand."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEXT
from gptsuite import bpe, chat
from gptsuite.checkpoint import save_checkpoint
from gptsuite.datafiles import DocumentCorpus, TextCorpus, load_meta
from gptsuite.errors import UserError
from gptsuite.evaluation import token_byte_lengths
from gptsuite.loading import load_model, padded_vocab_size
from gptsuite.pipeline import prepare_documents, prepare_text
from gptsuite.report import build_report, format_report
from gptsuite.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, BPETokenizer, GPT2Tokenizer, from_meta
from model import GPT, GPTConfig

VAL_ONLY = "qzqz"  # a word only the val split has, many times over: learned if the tokenizer saw val
CORPUS = TEXT * 2 + "Café naïve 日本語 — ✓ tabs\tand  spaces\n" * 5 + f" {VAL_ONLY}" * 250


def prepare_bpe(out: Path, text: str = CORPUS, tokenizer: str = "bpe", vocab_size: int = 300) -> dict:
    meta, _ = prepare_text(TextCorpus(text, "a test text", tokenizer=tokenizer), out, num_threads=2, vocab_size=vocab_size)
    return meta


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bpe") / "data"
    prepare_bpe(out)
    return out


def test_trains_on_the_train_split_only_and_encodes_as_tokenizers_does(bpe_data: Path):
    meta = json.loads((bpe_data / "meta.json").read_text())
    spec = (bpe_data / TOKENIZER_FILE).read_text()
    assert meta["tokenizer"] == {"kind": "bpe", "vocab_size": 300, "sha256": hashlib.sha256(spec.encode()).hexdigest(), "file": TOKENIZER_FILE}
    assert meta["dtype"] == "uint16" and meta["prepared_from"]["vocab_size"] == 300
    vocab = json.loads(spec)["model"]["vocab"]
    assert len(vocab) == 300 and all(s in vocab for s in SPECIAL_TOKENS)
    assert not any("qz" in t for t in vocab), "the val split's word was learned: the tokenizer saw val"
    assert any("Citizen" in t for t in vocab)  # frequent in train: merged into one token
    # the library that wrote tokenizer.json, on each split whole, gives the ids of the memmaps
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(bpe_data / TOKENIZER_FILE))
    cut = int(len(CORPUS) * 0.9)
    for split, text in (("train", CORPUS[:cut]), ("val", CORPUS[cut:])):
        ids = np.fromfile(bpe_data / f"{split}.bin", dtype=np.uint16)
        assert ids.tolist() == reference.encode(text).ids
        assert from_meta(load_meta(bpe_data)["tokenizer"]).decode(ids) == text


def test_training_is_deterministic(tmp_path: Path):
    texts = [CORPUS[i : i + 500] for i in range(0, len(CORPUS), 500)]
    first = bpe.train_bpe(iter(texts), 320)
    assert bpe.train_bpe(iter(texts), 320) == first
    assert bpe.train_bpe(iter(texts), 310) != first  # another size is another tokenizer
    prepare_bpe(tmp_path / "a")
    prepare_bpe(tmp_path / "b")
    for name in ("train.bin", "val.bin", TOKENIZER_FILE, "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_training_counts_texts_on_a_bar_that_redraws(monkeypatch):
    # tqdm's update() returns True when it redraws (as often as its interval allows): the texts
    # the trainer reads must still be the texts
    class Redrawing:
        def __init__(self, **kwargs):
            self.n = 0

        def update(self, n):
            self.n += n
            return True

        def close(self):
            pass

    bars = []
    monkeypatch.setattr(bpe, "progress", lambda **kwargs: bars.append(Redrawing()) or bars[-1])
    texts = [CORPUS[i : i + 500] for i in range(0, 5000, 500)]
    assert bpe.train_bpe(iter(texts), 300, total=len(texts)) == bpe.train_bpe(iter(texts), 300)
    assert bars[0].n == len(texts)


@pytest.mark.slow
def test_training_is_the_same_in_another_process_with_other_threads(tmp_path: Path):
    """Hash seeds and thread counts differ between processes (Rust's HashMap, rayon's pool)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    code = "import sys; from gptsuite.bpe import train_bpe; sys.stdout.write(train_bpe(iter(open(sys.argv[1]).read().split('\\n\\n')), 320))"
    outs = [
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "corpus.txt")], cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, **env}
        ).stdout
        for env in ({"RAYON_NUM_THREADS": "1", "PYTHONHASHSEED": "1"}, {"RAYON_NUM_THREADS": "2", "PYTHONHASHSEED": "2"})
    ]
    assert outs[0] == outs[1] == bpe.train_bpe(iter(CORPUS.split("\n\n")), 320)


def test_a_second_prepare_reuses_the_tokenizer(tmp_path: Path, bpe_data: Path):
    sha = load_meta(bpe_data)["tokenizer"]["sha256"]
    for spec in (str(bpe_data), str(bpe_data / TOKENIZER_FILE)):  # a dataset folder, a tokenizer.json
        out = tmp_path / Path(spec).name
        meta = prepare_bpe(out, "Other text, for another dataset. " * 50, tokenizer=spec)
        assert meta["tokenizer"]["sha256"] == sha and (out / TOKENIZER_FILE).read_text() == (bpe_data / TOKENIZER_FILE).read_text()
        assert meta["prepared_from"] == {
            "text_sha256": meta["source_sha256"],
            "tokenizer": "bpe",
            "tokenizer_sha256": sha,
            "val_fraction": 0.1,
            "dtype": "uint16",
        }


def test_documents_end_with_the_end_of_text_token(tmp_path: Path):
    docs = [("train", f"Document {i} about protein kinase {i % 3}.") for i in range(30)] + [("val", "A held-out document.")] * 3
    meta, _ = prepare_documents(DocumentCorpus(lambda: iter(docs), "test documents", tokenizer="bpe"), tmp_path, num_threads=2, vocab_size=300)
    tok = from_meta(load_meta(tmp_path)["tokenizer"])
    ids = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    assert (ids == tok.eot_token).sum() == 30 and meta["document_end"] == "<|endoftext|>"
    assert tok.decode(ids) == "".join(text + "<|endoftext|>" for _, text in docs[:30])


def test_bad_settings_and_files_are_refused(tmp_path: Path, bpe_data: Path):
    for size, words in ((bpe.MIN_VOCAB - 1, "too small"), (bpe.MAX_VOCAB + 1, "too large for uint32")):
        with pytest.raises(UserError, match=words):
            prepare_bpe(tmp_path / "small", vocab_size=size)
    assert not (tmp_path / "small").exists() or not any((tmp_path / "small").iterdir())
    assert bpe.ids_dtype(70_000, "uint16") == "uint32" and bpe.ids_dtype(50_000, "uint16") == "uint16"
    (tmp_path / "notjson.json").write_text("not json")
    (tmp_path / "wordpiece.json").write_text(json.dumps(json.loads((bpe_data / TOKENIZER_FILE).read_text()) | {"pre_tokenizer": None}))
    for spec, words in (
        (tmp_path / "notjson.json", "not a Hugging Face tokenizer.json"),
        (tmp_path / "wordpiece.json", "not a byte-level BPE with GPT-2's pre-tokenizer"),
        (tmp_path / "nosuch", "is not gpt2, char, bpe, a tokenizer.json file, or a prepared dataset"),
    ):
        with pytest.raises(UserError, match=words):
            prepare_bpe(tmp_path / "out", tokenizer=str(spec))
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in bpe_data.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    (changed / TOKENIZER_FILE).write_text((bpe_data / TOKENIZER_FILE).read_text().replace('"Ġ', '"Ġ ', 1))
    with pytest.raises(UserError, match="tokenizer.json has changed since the data was prepared"):
        load_meta(changed)
    (changed / TOKENIZER_FILE).unlink()
    with pytest.raises(UserError, match="tokenizer.json cannot be read"):
        load_meta(changed)


def test_byte_lengths_and_offsets_are_the_texts():
    tok = BPETokenizer(bpe.train_bpe(iter([CORPUS]), 400))
    text = "Café naïve 日本語 — ✓ First Citizen<|endoftext|>"  # multi-byte characters, the end token's spelling as text
    ids = tok.encode_array(text)
    assert token_byte_lengths(tok)[ids].sum() == len(text.encode("utf-8"))
    assert tok.eot_token not in ids.tolist()  # a document's text never becomes a special token
    assert tok.encode("a\ud800b") == tok.encode("a\ufffdb")  # a lone surrogate, which is not text
    assert GPT2Tokenizer().decode(GPT2Tokenizer().encode("a\ud800b")) == tok.decode(tok.encode("a\ud800b"))  # replaced as GPT-2's is
    ids, starts = chat.token_offsets(tok, text)
    reference = tok.tok.encode(text)  # `tokenizers`' own character offsets
    assert ids.tolist() == reference.ids and starts.tolist() == [a for a, _ in reference.offsets]


def test_chat_markers_are_special_tokens():
    tok = BPETokenizer(bpe.train_bpe(iter([CORPUS]), 400))
    marked = chat.render(chat.CHAT_TEMPLATE, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])
    ids, mask = chat.encode(tok, marked)
    s = tok.specials
    expected = [s["<|user|>"], *tok.encode("\nHi"), s["<|endoftext|>"], s["<|assistant|>"], *tok.encode("\nHello."), s["<|endoftext|>"]]
    assert ids.tolist() == expected
    answer = len(tok.encode("\nHello.")) + 1  # the answer's tokens after its newline, and its end token
    assert mask.tolist() == [0] * (len(expected) - answer) + [0] + [1] * (answer - 1)


def test_report_compares_with_gpt2_on_val(bpe_data: Path):
    meta = json.loads((bpe_data / "meta.json").read_text())
    from gptsuite.report import DocStats

    report = build_report("bpe", meta, DocStats(), bpe_data)
    c = report["tokenizers"]
    val = CORPUS[int(len(CORPUS) * 0.9) :]
    assert c["bytes"] == len(val.encode("utf-8"))
    assert c["bpe"]["tokens"] == meta["val_tokens"] and c["gpt2"]["tokens"] == len(GPT2Tokenizer().encode(val))
    assert c["bpe"]["bytes_per_token"] == pytest.approx(len(val.encode()) / meta["val_tokens"])
    assert c["bpe"]["top1000_share"] == 1.0  # 300 ids: all of them are the top 1,000
    assert "GPT-2 BPE" in format_report(report, bpe_data)


def bpe_checkpoint(data: Path, out: Path) -> GPT:
    meta = load_meta(data)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=padded_vocab_size(meta["tokenizer"]), n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(
        {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": meta["tokenizer"], "config": {"data_dir": str(data)}}, out / "ckpt.pt"
    )
    return model


def test_the_checkpoint_carries_the_tokenizer_and_refuses_a_changed_one(tmp_path: Path, bpe_data: Path, capsys):
    import eval as evaluate
    import sample

    bpe_checkpoint(bpe_data, tmp_path / "out")
    loaded = load_model("resume", str(tmp_path / "out"))
    assert loaded.tokenizer == load_meta(bpe_data)["tokenizer"] and loaded.model.config.vocab_size == 320  # 300 padded to 64s
    sample.main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--start=First Citizen", "--max_new_tokens=5", "--num_samples=1"])
    evaluate.main([f"--out_dir={tmp_path / 'out'}", "--device=cpu"])
    out = capsys.readouterr().out
    assert out.count("First Citizen") >= 1 and "bits per byte" in out
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    ckpt["tokenizer"]["json"] = ckpt["tokenizer"]["json"].replace('"Ġ', '"Ġ ', 1)
    torch.save(ckpt, tmp_path / "out" / "ckpt.pt")
    with pytest.raises(UserError, match="does not match its sha256"):
        sample.main([f"--out_dir={tmp_path / 'out'}", "--device=cpu", "--max_new_tokens=2", "--num_samples=1"])


def test_gpt2_weights_keep_gpt2s_tokenizer(bpe_data: Path):
    from conftest import train_config
    from gptsuite.batches import TrainingData
    from gptsuite.start import fine_tune_run

    data = TrainingData(bpe_data, load_meta(bpe_data), 100)
    with pytest.raises(UserError, match="needs a dataset tokenized with GPT-2 BPE, but .* uses the bpe tokenizer"):
        fine_tune_run(train_config(init_from="gpt2"), data)


def test_hf_export_gives_our_ids_and_logits(tmp_path: Path, bpe_data: Path):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from gptsuite.hf_export import export_hf

    model = bpe_checkpoint(bpe_data, tmp_path / "out").eval()
    tok_meta = load_meta(bpe_data)["tokenizer"]
    export_hf(model, tok_meta, tmp_path / "hf")
    val = np.fromfile(bpe_data / "val.bin", dtype=np.uint16)
    text = from_meta(tok_meta).decode(val)
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok(text)["input_ids"] == val.tolist()  # the whole val text
    assert hf_tok("a<|endoftext|>b")["input_ids"][1] == from_meta(tok_meta).eot_token
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.tensor([val[:16].tolist()])
    with torch.no_grad():
        ours, _ = model(x, torch.zeros_like(x))
        theirs = hf(x).logits
    assert hf.config.vocab_size == 300 and hf.config.eos_token_id == from_meta(tok_meta).eot_token
    torch.testing.assert_close(theirs, ours[..., :300], atol=1e-4, rtol=1e-4)


def test_gguf_export_gives_our_ids_and_greedy_text(tmp_path: Path, bpe_data: Path):
    """llama.cpp (llama-cpp-python) runs the exported f16 file: its tokenizer gives our ids for
    each split's whole text and the chat template's markers, its greedy continuations are ours."""
    from test_chat_export import CONVERSATIONS
    from test_gguf import tiny_model

    import export
    from gptsuite.llamacpp import greedy, load_gguf, open_gguf

    tok_meta = load_meta(bpe_data)["tokenizer"]
    tok = from_meta(tok_meta)
    model = tiny_model(vocab_size=padded_vocab_size(tok_meta))  # 2 layers, 64 wide, 320 ids
    record = {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": tok_meta, "chat_template": chat.CHAT_TEMPLATE}
    save_checkpoint(record, tmp_path / "out" / "ckpt.pt")
    export.main([f"--out_dir={tmp_path / 'out'}", "--to=gguf", "--quant=f16", str(tmp_path / "g")])
    llm = open_gguf(tmp_path / "g" / "model.f16.gguf")
    assert llm.n_vocab() == tok.vocab_size == 300 and llm.token_eos() == llm.token_bos() == tok.eot_token
    for split in ("val", "train"):
        ids = np.fromfile(bpe_data / f"{split}.bin", dtype=np.uint16).tolist()
        assert llm.tokenize(tok.decode(ids).encode(), add_bos=False, special=False) == ids, split
    assert llm.tokenize(b"a<|user|>b", add_bos=False, special=False) == tok.encode("a<|user|>b")  # a document's spelling: ordinary text
    for messages in CONVERSATIONS:
        prompt = chat.render(chat.CHAT_TEMPLATE, messages, add_generation_prompt=True).text
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == chat.prompt_ids(tok, chat.CHAT_TEMPLATE, messages), messages
    for text in ("First Citizen:", "You are all resolved"):
        ids = tok.encode(text)
        ours = model.generate(torch.tensor([ids]), 16, temperature=0, vocab_limit=300)[0, len(ids) :].tolist()
        assert len(set(ours)) > 8 and greedy(llm, ids, 16) == ours, text
    loaded = load_gguf(tmp_path / "g" / "model.f16.gguf")  # the page: our tokenizer and template from the file
    assert loaded.tokenizer == tok.meta() and loaded.chat_template == chat.CHAT_TEMPLATE


def test_gguf_tokenizer_splits_text_as_gpt2s_regex(tmp_path: Path):
    """A BPE whose merges span what other pre-tokenizers cut (digit runs, contractions after a
    word, whitespace before a newline): llama.cpp's ids are ours only with GPT-2's regex."""
    from llama_cpp import Llama
    from test_gguf import tiny_model

    import export

    rng = np.random.default_rng(0)
    texts = [f"It's {n} and {n * 7}; they'll pay {n % 1000}.  \n\n\tDON'T  {n}\n" for n in rng.integers(10**4, 10**8, 400)]
    tok_meta = BPETokenizer(bpe.train_bpe(iter(texts), 400)).meta()
    model = tiny_model(vocab_size=padded_vocab_size(tok_meta))
    save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": tok_meta}, tmp_path / "out" / "ckpt.pt")
    export.main([f"--out_dir={tmp_path / 'out'}", "--to=gguf", "--quant=f16", str(tmp_path / "g")])
    llm = Llama(model_path=str(tmp_path / "g" / "model.f16.gguf"), vocab_only=True, verbose=False)
    tok = from_meta(tok_meta)
    for text in ["".join(texts[:20]), "It's 123456789 and 31415926; they'll pay 271.  \n\n\tDON'T  1618033\n"]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)


def test_the_page_samples_as_sample_py_and_marks_what_train_bin_holds(tmp_path: Path, bpe_data: Path, capsys):
    from test_playground import page, run, sample_py

    bpe_checkpoint(bpe_data, tmp_path / "out")
    pg = page()
    pg.load(str(tmp_path / "out"))
    flags = {"max_new_tokens": 12, "temperature": 0.9, "top_k": 20, "seed": 7}
    column = run(pg, [str(tmp_path / "out")], "First Citizen:", **flags)[0]
    assert column.prompt + column.text == sample_py(
        capsys, tmp_path / "out", "First Citizen:", "--max_new_tokens=12", "--temperature=0.9", "--top_k=20", "--seed=7"
    )
    text = "First Citizen:\nBefore we proceed any further, hear me speak. qzqz qzqz qzqz qzqz qzqz qzqz qzqz qzqz"
    pieces, line = pg.seen_in_training(str(tmp_path / "out"), text)
    assert "".join(p for p, _ in pieces) == text and "longest span also in train.bin" in line
    assert pieces[0][1] is not None and pieces[-1][1] is None  # Shakespeare's line is in train.bin, the val-only word is not


def test_preference_pairs_take_a_bpe_runs_tokenizer(tmp_path: Path, bpe_data: Path):
    from gptsuite.sources import load_dataset_module

    bpe_checkpoint(bpe_data, tmp_path / "out")
    records = [{"prompt": f"First Citizen {i}?", "chosen": "Speak, speak.", "rejected": "Resolved."} for i in range(20)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    module = load_dataset_module("preferences")
    out = tmp_path / "prefs"
    meta, _ = prepare_documents(module.corpus(module.Config(input=str(tmp_path / "pairs.jsonl"), base=str(tmp_path / "out")), out), out)
    tok = load_meta(bpe_data)["tokenizer"]
    assert load_meta(out)["tokenizer"] == tok and (out / TOKENIZER_FILE).read_text() == tok["json"]
    assert meta["prepared_from"]["tokenizer"] == json.loads((bpe_data / "meta.json").read_text())["tokenizer"]  # named by its sha256, not held whole
    ids = np.fromfile(out / "train.bin", dtype=np.uint16)
    assert (
        from_meta(tok).decode(ids).startswith("First Citizen") and (ids == from_meta(tok).eot_token).sum() == meta["documents"]["train"]
    )  # each answer ends with it
