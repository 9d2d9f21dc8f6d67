"""The document pipeline and the pubmed, azure_docs and text datasets, on small local data."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_entry
from gptsuite.datafiles import DocumentCorpus, load_meta
from gptsuite.errors import UserError
from gptsuite.pipeline import prepare_documents
from gptsuite.sources import load_dataset_module
from gptsuite.templates import format_document
from gptsuite.textscan import count_words
from gptsuite.tokenizer import GPT2_EOT, CharTokenizer, GPT2Tokenizer

PAPERS = [
    {
        "abstract": f"We study protein {i} in mice.\nIt binds.",
        "article": f"Introduction {i}.\nProtein {i} is known.\n\nMethods: we did things " * (i + 1),
        "section_names": "a\nb",
    }
    for i in range(12)
]


def prepare(dataset: str, out: Path, **options) -> dict:
    """Run a dataset's prepare in-process, as `python prepare.py <dataset> --key=value` does."""
    module = load_dataset_module(dataset)
    cfg = module.Config(data_dir=str(out), **options)
    corpus = module.corpus(cfg, out)
    assert isinstance(corpus, DocumentCorpus)
    meta, _ = prepare_documents(corpus, out, num_threads=2)
    return meta


def decode_documents(out: Path, split: str) -> list[str]:
    """The documents of a GPT-2 memmap: text between <|endoftext|> tokens, each of which must end one."""
    ids = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
    assert ids[-1] == GPT2_EOT
    tok, docs, start = GPT2Tokenizer(), [], 0
    for end in np.flatnonzero(ids == GPT2_EOT):
        docs.append(tok.decode(ids[start:end].tolist()))
        start = end + 1
    return docs


def write_papers(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_pubmed_from_local_parquet_and_jsonl(tmp_path: Path):
    train = write_papers(tmp_path / "train.parquet", PAPERS[:9])
    val = write_papers(tmp_path / "val.jsonl", PAPERS[9:])
    meta = prepare("pubmed", tmp_path / "out", data_files=str(train), val_files=str(val))
    template = load_dataset_module("pubmed").TEMPLATE
    expected = [f"ABSTRACT:\n{p['abstract']}\n\nARTICLE:\n{p['article'].strip()}" for p in PAPERS]
    assert decode_documents(tmp_path / "out", "train") == expected[:9]
    assert decode_documents(tmp_path / "out", "val") == expected[9:]
    assert [format_document(template, p) for p in PAPERS] == expected
    assert meta["template"] == template and meta["documents"] == {"train": 9, "val": 3}
    assert load_meta(tmp_path / "out")["template"]["prompt_field"] == "abstract"


def test_pubmed_max_docs_and_article_truncation(tmp_path: Path):
    train = write_papers(tmp_path / "train.jsonl", PAPERS[:9])
    val = write_papers(tmp_path / "val.jsonl", PAPERS[9:])
    meta = prepare("pubmed", tmp_path / "out", data_files=str(train), val_files=str(val), max_docs=4, max_article_tokens=7)
    docs = decode_documents(tmp_path / "out", "train")
    assert len(docs) == 4 and meta["max_article_tokens"] == 7 and meta["max_docs"] == 4
    tok = GPT2Tokenizer()
    for doc, paper in zip(docs, PAPERS, strict=False):
        article = doc.split("\n\nARTICLE:\n", 1)[1]
        assert paper["article"].startswith(article) and tok.encode(article) == tok.encode(paper["article"])[: len(tok.encode(article))]
        assert len(tok.encode(article)) == min(7, len(tok.encode(paper["article"].strip())))


def test_truncation_never_splits_a_character():
    tok = GPT2Tokenizer()
    text = "数据" * 20  # CJK characters are split over several byte-level tokens
    for n in range(1, 12):
        cut = tok.truncate(text, n)
        assert text.startswith(cut) and n - 3 <= len(tok.encode(cut)) <= n


def test_pubmed_errors(tmp_path: Path):
    train = write_papers(tmp_path / "train.jsonl", [{"abstract": "a", "body": "b"}] * 3)
    with pytest.raises(UserError, match="no field 'article'.*'body'"):
        prepare("pubmed", tmp_path / "o", data_files=str(train), val_files=str(train))
    with pytest.raises(UserError, match="--val_files"):
        prepare("pubmed", tmp_path / "o", data_files=str(train))
    with pytest.raises(UserError, match="no file matches"):
        prepare("pubmed", tmp_path / "o", data_files=str(tmp_path / "nope*.parquet"), val_files=str(train))
    assert not (tmp_path / "o" / "train.bin").exists()
    # without network (here: offline mode, so it fails at once) the error says how to use local files
    proc = run_entry(
        "prepare.py",
        "pubmed",
        f"--data_dir={tmp_path / 'o'}",
        f"--cache_dir={tmp_path / 'hf'}",
        check=False,
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "--data_files" in proc.stderr


def test_azure_docs_strips_front_matter_and_comments(tmp_path: Path):
    docs = tmp_path / "articles"
    (docs / "b" / "c").mkdir(parents=True)
    (docs / "a.md").write_text("---\ntitle: A\nms.date: 01/01/2024\n---\n# Storage\n<!-- note\nto self -->Blobs store data.\n", encoding="utf-8")
    (docs / "b" / "c" / "z.md").write_text("\ufeff---\r\ntitle: Z\r\n---\r\n## Compute\r\nVMs run --- code.\r\n", encoding="utf-8")
    (docs / "b" / "x.md").write_text("Plain **markdown** <!-- gone --> kept.\n\n| a | b |\n", encoding="utf-8")
    (docs / "b" / "notes.txt").write_text("not markdown")
    for i in range(5):
        (docs / f"m{i}.md").write_text(f"Doc {i}.\n")
    meta = prepare("azure_docs", tmp_path / "out", docs_dir=str(docs), val_fraction=0.25)
    got = decode_documents(tmp_path / "out", "train") + decode_documents(tmp_path / "out", "val")
    assert sorted(got) == sorted(
        ["# Storage\nBlobs store data.", "## Compute\nVMs run --- code.", "Plain **markdown**  kept.\n\n| a | b |"] + [f"Doc {i}." for i in range(5)]
    )
    assert meta["documents"] == {"train": 6, "val": 2}
    again = prepare("azure_docs", tmp_path / "again", docs_dir=str(docs), val_fraction=0.25)  # deterministic: same split, same bytes
    assert again["sha256"] == meta["sha256"]
    assert (tmp_path / "out" / "val.bin").read_bytes() == (tmp_path / "again" / "val.bin").read_bytes()


def test_azure_docs_errors(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no markdown here")
    with pytest.raises(UserError, match="no .md files"):
        prepare("azure_docs", tmp_path / "o", docs_dir=str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.md").write_text("fine")
    (bad / "latin1.md").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(UserError, match=r"latin1\.md is not UTF-8"):
        prepare("azure_docs", tmp_path / "o", docs_dir=str(bad), val_fraction=0.5)
    assert not list((tmp_path / "o").glob("*.bin")) and not list((tmp_path / "o").glob(".*.tmp"))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_azure_docs_sparse_shallow_clone(tmp_path: Path):
    """The clone path, against a local repository instead of GitHub: only articles/ is checked out."""
    import subprocess

    remote = tmp_path / "azure-docs"
    (remote / "articles" / "storage").mkdir(parents=True)
    (remote / "includes").mkdir()
    (remote / "articles" / "storage" / "blobs.md").write_text("---\ntitle: Blobs\n---\nBlobs store data.\n")
    (remote / "articles" / "vms.md").write_text("<!-- draft -->VMs run code.\n")
    (remote / "includes" / "snippet.md").write_text("An include, not an article.\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", "-C", str(remote)]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "docs"]):
        subprocess.run(git + cmd, check=True, capture_output=True)
    module = load_dataset_module("azure_docs")
    module.REPO = remote.as_uri()
    cfg = module.Config(cache_dir=str(tmp_path / "cache"), val_fraction=0.5)
    meta, _ = prepare_documents(module.corpus(cfg, tmp_path / "out"), tmp_path / "out", num_threads=2)
    assert sorted(decode_documents(tmp_path / "out", "train") + decode_documents(tmp_path / "out", "val")) == ["Blobs store data.", "VMs run code."]
    assert not (tmp_path / "cache" / "includes").exists() and not (tmp_path / "cache.partial").exists()
    module.REPO = (tmp_path / "gone").as_uri()  # the clone is reused, not fetched again
    assert module.corpus(cfg, tmp_path / "out").num_documents == 2
    with pytest.raises(UserError, match="--docs_dir"):
        module.corpus(module.Config(cache_dir=str(tmp_path / "other")), tmp_path / "out")


def test_text_from_jsonl_csv_and_folder(tmp_path: Path):
    rows = [{"id": i, "abstract": f"Abstract number {i}, with words.\nSecond line."} for i in range(10)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["id", "abstract"])
        w.writeheader()
        w.writerows(rows)
    folder = tmp_path / "transcripts"
    (folder / "s2").mkdir(parents=True)
    for i, r in enumerate(rows):
        (folder / ("s2" if i % 2 else "") / f"ep{i}.{'md' if i % 3 else 'txt'}").write_text(r["abstract"], encoding="utf-8")
    texts = sorted(r["abstract"] for r in rows)
    outs = {}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for name, inp in (("jsonl", tmp_path / "a.jsonl"), ("csv", tmp_path / "a.csv"), ("parquet", tmp_path / "a.parquet"), ("folder", folder)):
        outs[name] = tmp_path / name
        meta = prepare("text", outs[name], input=str(inp), field="abstract" if name != "folder" else "", val_fraction=0.2)
        docs = decode_documents(outs[name], "train") + decode_documents(outs[name], "val")
        assert sorted(docs) == texts and meta["documents"] == {"train": 8, "val": 2}
    for name in ("csv", "parquet"):  # same rows, same order, same split
        assert (outs["jsonl"] / "train.bin").read_bytes() == (outs[name] / "train.bin").read_bytes()


def test_text_char_level_documents_end_with_a_blank_line(tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = ["first doc\nline", "second", "third one", "4th"]
    for i, t in enumerate(texts):
        (folder / f"{i}.txt").write_text(t)
    meta = prepare("text", tmp_path / "out", input=str(folder), tokenizer="char", val_fraction=0.25)
    tok = CharTokenizer(meta["tokenizer"]["vocab"])
    train = tok.decode(np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16).tolist())
    val = tok.decode(np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16).tolist())
    assert meta["document_end"] == "\n\n" and meta["tokenizer"]["kind"] == "char"
    assert sorted(train.split("\n\n")[:-1] + val.split("\n\n")[:-1]) == sorted(texts)
    assert train.endswith("\n\n") and val.endswith("\n\n") and set(meta["tokenizer"]["vocab"]) == set("".join(texts) + "\n")


def test_streaming_in_chunks_equals_one_shot_encoding(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "\n", "  indented", "é", "数", "<|endoftext|>", "12345"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 400)))) for _ in range(300)]
    pulled, pulled_at_write = [0], []

    def documents():
        for i, t in enumerate(texts):
            pulled[0] += 1
            yield ("val" if i % 10 == 0 else "train"), t

    from gptsuite.datafiles import TokenWriter

    write, written = TokenWriter.write, [0]

    def counting_write(self, ids):
        written[0] += int((np.asarray(ids) == GPT2_EOT).sum())  # documents written so far (each ends with one)
        pulled_at_write.append(pulled[0] - written[0])  # documents read from the source but not yet written
        write(self, ids)

    monkeypatch.setattr(TokenWriter, "write", counting_write)
    meta, stats = prepare_documents(DocumentCorpus(documents, "generated"), tmp_path, num_threads=2, chunk_chars=2000)
    # the same bytes as encoding every document at once, whatever the chunking
    enc = GPT2Tokenizer().enc
    for split, keep in (("train", lambda i: i % 10), ("val", lambda i: i % 10 == 0)):
        expected = [t for ids in enc.encode_ordinary_batch([t for i, t in enumerate(texts) if keep(i)]) for t in [*ids, GPT2_EOT]]
        assert np.fromfile(tmp_path / f"{split}.bin", dtype=np.uint16).tolist() == expected
    # written chunk by chunk while documents were still being read: at most a few chunks (2 per
    # thread, ~2 documents each here) are ever held, however long the corpus
    assert len(pulled_at_write) > 20 and max(pulled_at_write) < len(texts) / 10
    assert meta["documents"] == {"train": 270, "val": 30}
    assert stats.column("tokens").tolist() == [len(ids) for ids in enc.encode_ordinary_batch(texts)]
    assert stats.column("words").tolist() == [len(t.split()) for t in texts]
    assert stats.column("chars").tolist() == [len(t) for t in texts]


def test_rerun_is_idempotent_and_interrupt_leaves_no_train_bin(tmp_path: Path):
    texts = [f"doc {i}" for i in range(20)]

    def documents(fail_at: int | None = None):
        for i, t in enumerate(texts):
            if i == fail_at:
                raise KeyboardInterrupt
            yield ("val" if i < 2 else "train"), t

    first, _ = prepare_documents(DocumentCorpus(documents, "a"), tmp_path / "d", chunk_chars=10)
    data = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    prepare_documents(DocumentCorpus(documents, "a"), tmp_path / "d", chunk_chars=10)
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == data
    with pytest.raises(KeyboardInterrupt):
        prepare_documents(DocumentCorpus(lambda: documents(fail_at=15), "a"), tmp_path / "new", chunk_chars=10)
    assert not (tmp_path / "new").exists() or not list((tmp_path / "new").iterdir())
    with pytest.raises(KeyboardInterrupt):  # an interrupted re-run leaves the previous data as it was
        prepare_documents(DocumentCorpus(lambda: documents(fail_at=15), "a"), tmp_path / "d", chunk_chars=10)
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == data


def test_bad_text_inputs(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n{"text": "y"}\n')
    with pytest.raises(UserError, match="no field 'body'.*'text'"):
        prepare("text", tmp_path / "o", input=str(tmp_path / "a.jsonl"), field="body")
    with pytest.raises(UserError, match="--field"):
        prepare("text", tmp_path / "o", input=str(tmp_path / "a.jsonl"))
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match="0 documents"):
        prepare("text", tmp_path / "o", input=str(tmp_path / "e.jsonl"), field="text")
    (tmp_path / "blank.csv").write_text("text\n\n \n,\n")
    with pytest.raises(UserError, match="no documents with any text"):
        prepare("text", tmp_path / "o", input=str(tmp_path / "blank.csv"), field="text")
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "caf\xe9"}\n{"text": "b"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        prepare("text", tmp_path / "o", input=str(tmp_path / "bad.jsonl"), field="text")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="no .txt or .md files"):
        prepare("text", tmp_path / "o", input=str(tmp_path / "empty_dir"))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.bin"))


def test_text_prepare_prints_and_writes_the_report(tmp_path: Path, capsys):
    import prepare as prepare_cli

    folder = tmp_path / "podcasts"
    folder.mkdir()
    for i in range(6):
        (folder / f"ep{i}.txt").write_text(f"Host: welcome to episode {i}.\nGuest: thanks! " * (i + 1))
    prepare_cli.main(["text", f"--input={folder}", f"--data_dir={tmp_path / 'out'}"])
    stdout = capsys.readouterr().out
    assert "dataset report" in stdout and "gpt2-1.5B" in stdout and "H100" in stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    tokens = [len(GPT2Tokenizer().encode(p.read_text())) for p in sorted(folder.iterdir())]
    assert report["documents"]["total"] == 6 and report["per_document"]["tokens"]["sum"] == sum(tokens)
    assert report["per_document"]["tokens"]["max"] == max(tokens) and report["per_document"]["tokens"]["median"] == np.median(tokens)
    assert report["tokens_per_split"]["train"] + report["tokens_per_split"]["val"] == sum(tokens) + 6
    epoch = report["epoch"]
    assert epoch["tokens"] == report["tokens_per_split"]["train"]
    m = epoch["models"]["gpt2-124M"]
    assert m["hours"]["A100"] == pytest.approx(m["flops"] / (312e12 * 0.4) / 3600)
    assert (tmp_path / "out" / "doc_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_count_words_matches_split_on_ascii():
    for text in ["", " ", "a", " a b  c ", "one\ttwo\nthree\r\n", "x" * 10 + "\n\n y", "naïve café 数据 ok"]:
        assert count_words(text) == len(text.split())


@pytest.mark.parametrize("name", ["finetune_pubmed", "train_azure_docs", "finetune_azure_docs"])
def test_dataset_configs_parse(name: str):
    from configurator import parse_config
    from gptsuite.settings import TrainConfig

    cfg = parse_config(TrainConfig(), [str(Path(__file__).resolve().parents[1] / "config" / f"{name}.py")])
    assert cfg.data.dataset in ("pubmed", "azure_docs") and cfg.model.block_size == 1024
    assert cfg.init_from == ("scratch" if name.startswith("train") else "gpt2")


def test_shakespeare_char_prepare_reports_too(tmp_path: Path, text_file: Path, capsys):
    import prepare as prepare_cli
    from conftest import TEXT

    prepare_cli.main(["shakespeare_char", f"--input={text_file}", f"--data_dir={tmp_path}"])
    assert "dataset report" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["documents"]["total"] == 1 and report["per_document"]["characters"]["sum"] == len(TEXT)
    assert report["per_document"]["words"]["sum"] == len(TEXT.split()) and report["per_document"]["tokens"]["sum"] == len(TEXT)
    assert report["tokens_per_split"] == {"train": int(len(TEXT) * 0.9), "val": len(TEXT) - int(len(TEXT) * 0.9)}


def test_text_file_streams_in_blocks_and_encodes_like_the_whole(tmp_path: Path):
    from gptsuite.datafiles import TextFileCorpus
    from gptsuite.pipeline import prepare_text

    text = "".join(f"Line {i}: the quick brown fox\tjumps.\r\n{'  ' * (i % 3)}indented, {i * 7}\n\n" for i in range(3000))
    path = tmp_path / "book.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a byte-order mark and \r\n line ends, as read_text() reads them
    text = text.replace("\r\n", "\n")
    meta, stats = prepare_text(TextFileCorpus(path, "a file"), tmp_path / "out", num_threads=2, chunk_chars=1000)
    cut = int(len(text) * 0.9)
    enc = GPT2Tokenizer().enc
    assert np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16).tolist() == enc.encode_ordinary(text[:cut])
    assert np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16).tolist() == enc.encode_ordinary(text[cut:])
    assert meta["characters"] == len(text) and stats.column("words").tolist() == [len(text.split())]
    char_meta, _ = prepare_text(TextFileCorpus(path, "a file", tokenizer="char"), tmp_path / "char", chunk_chars=333)
    tok = CharTokenizer(char_meta["tokenizer"]["vocab"])
    assert tok.decode(np.fromfile(tmp_path / "char" / "train.bin", dtype=np.uint16).tolist()) == text[:cut]
    assert char_meta["tokenizer"]["vocab"] == sorted(set(text))


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_peak_memory_stays_flat_as_the_corpus_doubles(tmp_path: Path, suffix: str):
    """The peak of Python's allocations while a corpus prepares does not grow with the corpus.

    What is measured is the growth from 1x to 2x the corpus (+1.5 MB of text), against a bound of a
    quarter of the added text: holding the text, its token ids or its documents adds about the
    text's size or more (reading the file whole: +3 MB; every document read first: +1.6 MB), while
    what varies from run to run (how many chunks are in flight, at most 2 per thread + 1, of 5,000
    characters each) stays under ~20 KB, and the statistics kept per document add ~50 KB (measured:
    -6 KB for .txt, +38 to +53 KB for .jsonl). A first prepare of a small corpus, not measured,
    makes the one-time allocations (GPT-2's tables, compiled patterns, the first threads), which
    made the 1x peak the larger of the two before."""
    import tracemalloc

    from gptsuite.pipeline import prepare_text

    module, words = load_dataset_module("text"), ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]

    def prepare_copies(copies: float, measure: bool) -> tuple[int, int]:
        """Write a corpus of `copies` times ~1.5 MB (800 documents) and prepare it; the peak of
        Python's allocations while it prepares and the corpus' size."""
        path, out = tmp_path / f"corpus{copies}{suffix}", tmp_path / f"out{copies}"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(int(copies * 800)):
                doc = f"Document {i}. " + " ".join(words[(i * j) % 6] for j in range(300))
                f.write(json.dumps({"text": doc}) + "\n" if suffix == ".jsonl" else doc + "\n")
        corpus = module.corpus(module.Config(input=str(path), field="text" if suffix == ".jsonl" else ""), out)
        prepare_corpus = prepare_documents if isinstance(corpus, DocumentCorpus) else prepare_text
        tracemalloc.start() if measure else None
        try:
            prepare_corpus(corpus, out, num_threads=2, chunk_chars=5_000)
            return (tracemalloc.get_traced_memory()[1] if measure else 0), path.stat().st_size
        finally:
            tracemalloc.stop()

    prepare_copies(0.1, measure=False)
    (peak1, size1), (peak2, size2) = prepare_copies(1, measure=True), prepare_copies(2, measure=True)
    assert peak1 < size1 / 2 and peak2 - peak1 < (size2 - size1) / 4, f"peaks {peak1:,} and {peak2:,} bytes for {size1:,} and {size2:,} bytes of text"


def test_document_statistics_cost_bytes_a_document_not_a_chunk():
    """DocStats keeps 13 bytes a document; the small arrays of each chunk's part (~1 KB) are merged."""
    import tracemalloc

    from gptsuite.report import DocStats

    two = np.ones(2, dtype=np.int64)
    tracemalloc.start()
    try:
        stats = DocStats()
        for _ in range(10_000):  # 10,000 chunks of 2 documents
            stats.add(two, two, two, two)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(stats) == 20_000 and stats.column("tokens").sum() == 20_000
    assert held < 40 * 20_000, f"{held:,} bytes for 20,000 documents"
