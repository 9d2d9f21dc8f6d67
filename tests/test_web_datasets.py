"""openwebtext and fineweb_edu: prepared from small local parquet shards (the hub is not reachable
here), against nanoGPT's algorithm and independent encodings."""

from pathlib import Path

import numpy as np
import pytest

from conftest import run_entry, write_shards
from gptsuite import sources
from gptsuite.errors import UserError
from gptsuite.pipeline import prepare_documents
from gptsuite.sources import load_dataset_module
from gptsuite.tokenizer import gpt2_encoding
from prepare import main as prepare_main


def test_openwebtext_writes_nanogpts_bytes(tmp_path: Path):
    """nanoGPT's data/openwebtext/prepare.py, step by step, on the same documents: datasets'
    train_test_split, then each document's encode_ordinary + <|endoftext|> in the split's order."""
    import datasets

    shards = write_shards(tmp_path / "owt", 2500)
    out = tmp_path / "data"
    prepare_main(["openwebtext", f"--data_files={','.join(map(str, shards))}", f"--data_dir={out}", "--num_threads=2"])

    dataset = datasets.load_dataset("parquet", data_files={"train": [str(p) for p in shards]}, cache_dir=str(tmp_path / "hf"))
    split = dataset["train"].train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    split["val"] = split.pop("test")
    enc = gpt2_encoding()
    assert len(split["val"]) == 2
    for name, docs in split.items():
        ids = [t for text in docs["text"] for t in (*enc.encode_ordinary(text), enc.eot_token)]
        assert (out / f"{name}.bin").read_bytes() == np.array(ids, dtype=np.uint16).tobytes(), name


@pytest.mark.parametrize("n", [2, 3, 1999, 2001, 10_000])
def test_openwebtext_split_is_datasets_train_test_split(n: int):
    import datasets

    split = datasets.Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    is_val, order = load_dataset_module("openwebtext").nanogpt_order(n)
    assert np.flatnonzero(is_val)[order["val"]].tolist() == split["test"]["i"]
    assert np.flatnonzero(~is_val)[order["train"]].tolist() == split["train"]["i"]


def test_a_budget_that_ends_on_a_document_boundary_takes_that_document_and_stops():
    """--max_tokens falling exactly where a train document (with its end token) ends: that
    document goes in, the next train document does not, and the budget is spent, so reading stops
    there, also when the boundary is the chunk's end (no further chunk is written)."""
    from gptsuite.pipeline import SPLITS, within_budget

    tr, va = SPLITS.index("train"), SPLITS.index("val")
    split, tokens = np.array([va, tr, tr, va, tr]), np.array([2, 3, 4, 1, 5])  # with end tokens, the train documents take 4, 5 and 6
    doc_stats = (split, 3 * tokens, tokens, tokens)  # split, chars, words, tokens of the documents kept
    kept = np.array([True, True, False, True, True, True])  # the chunk's records; the third was skipped (no text)
    splits = np.array([va, tr, tr, tr, va, tr])
    ids = {"train": np.arange(15), "val": np.arange(5)}

    out, stats, kept_now, splits_now, spent = within_budget(ids, doc_stats, kept, splits, 1, room=4 + 5)
    assert spent and len(out["train"]) == 9 and len(out["val"]) == 5  # the val document before the third train one goes too
    assert stats[0].tolist() == split[:4].tolist() and kept_now.tolist() == kept[:5].tolist() and len(splits_now) == 5

    out, stats, kept_now, _, spent = within_budget(ids, doc_stats, kept, splits, 1, room=15)
    assert spent and len(out["train"]) == 15 and len(stats[0]) == 5 and len(kept_now) == 6  # all of it, and no more chunks
    assert not within_budget(ids, doc_stats, kept, splits, 1, room=16)[-1]


def test_fineweb_edu_val_first_then_train_until_max_tokens(tmp_path: Path):
    shards = write_shards(tmp_path / "fw", 1200)
    import pyarrow.parquet as pq

    texts = [t for p in shards for t in pq.read_table(p)["text"].to_pylist()]
    enc = gpt2_encoding()
    encoded = [np.array([*enc.encode_ordinary(t), enc.eot_token], dtype=np.uint16) for t in texts if t.strip()]
    first_val = sum(1 for t in texts[:50] if t.strip())  # empty documents are skipped
    out = tmp_path / "data"
    module = load_dataset_module("fineweb_edu")
    whole = np.concatenate(encoded[first_val:])
    fits = np.cumsum([len(d) for d in encoded[first_val:]]) <= 20_000  # the documents train.bin can hold whole
    for chunk_chars in (10_000, 1 << 19):  # several chunks in flight; all the documents in one chunk
        cfg = module.Config(data_files=str(tmp_path / "fw" / "*.parquet"), val_documents=50, max_tokens=20_000)
        meta, stats = prepare_documents(module.corpus(cfg, out), out, num_threads=2, chunk_chars=chunk_chars, overwrite=True)
        assert (out / "val.bin").read_bytes() == np.concatenate(encoded[:first_val]).tobytes()
        train = np.fromfile(out / "train.bin", dtype=np.uint16)
        assert train.tobytes() == np.concatenate(encoded[first_val:][: fits.sum()]).tobytes(), chunk_chars  # whole documents, in order
        assert len(train) <= 20_000 < len(train) + len(encoded[first_val + fits.sum()]) and meta["train_tokens"] == len(train)
        assert meta["documents"]["train"] == fits.sum() and stats.skipped == 2  # the documents read: not those after the cap

    cfg = module.Config(data_files=str(tmp_path / "fw" / "*.parquet"), val_documents=50, max_tokens=len(encoded[first_val]) - 1)
    with pytest.raises(UserError, match=rf"^the first train document is longer than --max_tokens={len(encoded[first_val]) - 1} tokens .*; raise --max_tokens$"):
        prepare_documents(module.corpus(cfg, out), out, num_threads=2, overwrite=True)

    run = prepare_main, ["fineweb_edu", f"--data_files={tmp_path / 'fw' / '*.parquet'}", "--val_documents=50", "--num_threads=1"]
    run[0]([*run[1], f"--data_dir={tmp_path / 'all1'}"])
    run[0]([*run[1], f"--data_dir={tmp_path / 'all2'}", "--num_threads=3"])
    assert (tmp_path / "all1" / "train.bin").read_bytes() == (tmp_path / "all2" / "train.bin").read_bytes() == whole.tobytes()


def test_rows_without_text_are_skipped_and_counted(tmp_path: Path):
    """A null text is no document: fineweb_edu and openwebtext (whose empty documents are lone
    end-of-text tokens, as nanoGPT writes them) skip it and count it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"Document {i} has some words." for i in range(2500)]
    texts[7] = texts[100] = texts[2000] = None
    texts[9] = ""
    pq.write_table(pa.table({"text": texts}), tmp_path / "rows.parquet")
    enc = gpt2_encoding()

    def encoded(docs) -> bytes:
        return np.array([t for text in docs if text is not None for t in (*enc.encode_ordinary(text), enc.eot_token)], dtype=np.uint16).tobytes()

    module = load_dataset_module("fineweb_edu")
    out = tmp_path / "fw"
    meta, stats = prepare_documents(module.corpus(module.Config(data_files=str(tmp_path / "rows.parquet"), val_documents=5), out), out, num_threads=2)
    assert stats.skipped == 4 and meta["documents"] == {"train": 2491, "val": 5}
    assert (out / "val.bin").read_bytes() == encoded(texts[:5]) and (out / "train.bin").read_bytes() == encoded(t for t in texts[5:] if t)

    module = load_dataset_module("openwebtext")
    out = tmp_path / "owt"
    meta, stats = prepare_documents(module.corpus(module.Config(data_files=str(tmp_path / "rows.parquet")), out), out, num_threads=2, chunk_chars=5_000)
    is_val, order = module.nanogpt_order(len(texts))
    for split, mask in (("val", is_val), ("train", ~is_val)):
        docs = [texts[i] for i in np.flatnonzero(mask)[order[split]]]  # nanoGPT's order; "" is a lone <|endoftext|>
        assert (out / f"{split}.bin").read_bytes() == encoded(docs), split
    assert stats.skipped == 3 and sum(meta["documents"].values()) == 2497


def test_a_stopped_prepare_leaves_nothing_that_looks_complete_and_the_rerun_cleans_up(tmp_path: Path, monkeypatch):
    write_shards(tmp_path / "fw", 800)
    out = tmp_path / "data"
    args = ["fineweb_edu", f"--data_files={tmp_path / 'fw' / '*.parquet'}", f"--data_dir={out}", "--val_documents=20"]
    real = sources.read_records

    def dies_midway(path, fields, fix):  # Ctrl-C in the middle of the second shard
        for i, row in enumerate(real(path, fields, fix)):
            if path.name == "part-1.parquet" and i == 100:
                raise KeyboardInterrupt
            yield row

    with monkeypatch.context() as m:
        m.setattr(sources, "read_records", dies_midway)  # the dataset module is loaded afresh, and takes this one
        with pytest.raises(KeyboardInterrupt):
            prepare_main(args)
    assert not (out / "meta.json").exists() and not (out / "train.bin").exists() and not list(out.glob(".*.tmp"))

    out.mkdir(exist_ok=True)
    stale = out / ".train.bin.999999999.tmp"  # what a kill -9 leaves: a dead process's temp file
    stale.write_bytes(b"\0" * 1000)
    proc = run_entry("prepare.py", *args)
    assert "removed" in proc.stdout and not stale.exists()
    assert (out / "meta.json").exists() and (out / "train.bin").stat().st_size > 0


def test_without_network_the_hub_routes_name_the_local_one(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(datasets, "load_dataset_builder", offline)
    for name in ("openwebtext", "fineweb_edu"):
        module = load_dataset_module(name)
        with pytest.raises(UserError) as e:
            module.corpus(module.Config(), Path("unused"))
        assert "--data_files=" in str(e.value) and "\n" not in str(e.value)


def test_an_unprepared_built_in_dataset_names_its_prepare(tmp_path: Path):
    from gptsuite.datafiles import load_meta

    folder = tmp_path / "data" / "fineweb_edu"  # like the plugin's own folder, data/fineweb_edu/prepare.py
    folder.mkdir(parents=True)
    (folder / "prepare.py").write_text("")
    with pytest.raises(UserError, match=r"prepare it first: `python prepare.py fineweb_edu`"):
        load_meta(folder)
