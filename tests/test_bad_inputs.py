"""Every entry point refuses bad input the same way: exit code 2 for a bad setting (ConfigError), 1
for any other problem, one line on stderr that names it, no traceback, and the files of earlier runs
left exactly as they were.

The cases run each entry point's main() in-process through errors.cli (as `python X.py` does),
which takes milliseconds; a few run as real subprocesses to show the command line agrees.
"""

import hashlib
import json
import os
import pickle
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
import eval as evaluate
import export
import prepare
import sample
import serve
import train
from configurator import ConfigError
from conftest import ROOT, TEXT, run_entry
from gptsuite.datafiles import TextCorpus
from gptsuite.errors import cli
from gptsuite.lora import LoraConfig
from gptsuite.pipeline import prepare_text
from gptsuite.tokenizer import GPT2_META
from tools import arena, arena_voter, bench_generate, novelty, plot

ENTRIES = {
    "prepare": prepare.main,
    "train": train.main,
    "sample": sample.main,
    "eval": evaluate.main,
    "export": export.main,
    "bench": bench.main,
    "bench_generate": bench_generate.main,
    "novelty": novelty.main,
    "plot": plot.main,
    "serve": serve.main,
    "arena": arena.main,
    "arena_voter": arena_voter.main,
}
TINY = "--device=cpu --compile=False --n_layer=2 --n_head=2 --n_embd=32 --block_size=16 --batch_size=4 --gradient_accumulation_steps=1 --eval_iters=2".split()
TRAIN = ["--data_dir={data}", "--out_dir={new}", *TINY, "--max_iters=2", "--eval_interval=2"]  # a new run's folder; {out} holds the earlier run
SAMPLE = ["--out_dir={out}", "--device=cpu", "--max_new_tokens=2", "--num_samples=1"]
EVAL = ["--out_dir={out}", "--device=cpu"]
BENCH_GENERATE = "--device=cpu --n_layer=1 --n_head=2 --n_embd=32 --block_size=16 --vocab_size=10 --batch_sizes=(1,) --new_tokens=(2,)".split()
BENCH = "--device=cpu --compile=False --n_layer=1 --n_head=2 --n_embd=32 --block_size=16 --batch_size=2 --warmup_steps=0 --timed_steps=1".split()

# (entry point, arguments, words the error line must contain); {x} are paths made by `earlier` below
CASES = [
    ("prepare", [], ["usage", "prepare.py"]),
    ("prepare", ["nosuch"], ["unknown dataset", "nosuch", "shakespeare_char"]),
    ("prepare", ["shakespeare_char", "--input={bad}/missing.txt"], ["missing.txt", "not found", "--input"]),
    ("prepare", ["shakespeare_char", "--input={bad}/empty.txt", "--data_dir={new}"], ["empty"]),
    (
        "prepare",
        ["shakespeare_char", "--out_dir={new}"],
        ["writes to --data_dir", "write --data_dir=DIR"],
    ),  # a run's folder is --out_dir; a dataset's, --data_dir
    ("prepare", ["shakespeare_char", "--input={bad}/latin1.txt", "--data_dir={new}"], ["latin1.txt", "UTF-8"]),
    ("prepare", ["text", "--input={bad}/latin1.txt", "--data_dir={new}"], ["latin1.txt", "not UTF-8"]),
    ("prepare", ["shakespeare_char", "--input={bad}"], ["cannot read", "Is a directory"]),
    ("prepare", ["shakespeare_char", "--inptu={text}"], ["unknown key 'inptu'", "input"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--dtype=int8"], ["dtype", "int8"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--data_dir={bad}/afile/sub"], ["afile is a file"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--dtype=16"], ["dtype", "16"]),
    (
        "prepare",
        ["shakespeare_char", "--input={text}", "--data_dir={new}", "--tokenizer=bpe", "--vocab_size=100"],
        ["--vocab_size=100", "too small", "--vocab_size=8192"],
    ),
    ("prepare", ["shakespeare_char", "--input={text}", "--data_dir={new}", "--tokenizer=bpe", "--vocab_size=5000000000"], ["too large for uint32"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--data_dir={new}", "--vocab_size=500"], ["--vocab_size", "--tokenizer=bpe"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--data_dir={new}", "--tokenizer={bad}/afile"], ["afile is not a Hugging Face tokenizer.json"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--data_dir={new}", "--tokenizer={bad}/nowhere"], ["not gpt2, char, bpe", "tokenizer.json"]),
    ("prepare", ["shakespeare_char", "--input={text}", "--data_dir={new}", "--tokenizer={data}"], ["is tokenized with char", "--tokenizer=char"]),
    (
        "prepare",
        ["shakespeare_char", "--input={text}", "--data_dir={new}", "--tokenizer={bad}/bpechanged"],
        ["tokenizer.json has changed since the data was prepared"],
    ),
    ("train", [*TRAIN, "--data_dir={bad}/bpe", "--init_from=gpt2"], ["init_from=gpt2 needs a dataset tokenized with GPT-2 BPE", "bpe tokenizer"]),
    ("train", [*TRAIN, "--data_dir={bad}/bpechanged"], ["tokenizer.json has changed since the data was prepared", "prepare the dataset again"]),
    ("train", [*TRAIN, "--n_layers=3"], ["unknown key 'n_layers'", "n_layer"]),
    ("train", [*TRAIN, "--batch_size=abc"], ["batch_size", "int"]),
    ("train", [*TRAIN, "--compile=maybe"], ["compile", "maybe"]),
    ("train", [*TRAIN, "--max_iters"], ["--max_iters", "needs a value"]),
    ("train", [*TRAIN, "--batch_size=0"], ["batch_size must be positive"]),
    ("train", [*TRAIN, "--block_size=-16"], ["block_size must be positive"]),
    ("train", [*TRAIN, "--max_iters=-1"], ["max_iters must not be negative"]),
    ("train", [*TRAIN, "--keep_last=-2"], ["keep_last must not be negative"]),
    ("train", [*TRAIN, "--n_embd=30", "--n_head=4"], ["n_embd=30", "not divisible", "n_head=4"]),
    ("train", [*TRAIN, "--dropout=1.5"], ["dropout", "1.5"]),
    ("train", [*TRAIN, "--beta2=1.0"], ["beta2"]),
    ("train", [*TRAIN, "--learning_rate=0"], ["learning_rate"]),
    ("train", [*TRAIN, "--seed=-1"], ["seed"]),
    ("train", [*TRAIN, "--init_from=gpt7"], ["unknown init_from 'gpt7'"]),
    ("train", [*TRAIN, "--init_from=gpt2"], ["GPT-2 BPE", "char"]),
    ("train", [*TRAIN, "--device=cuda:3"], ["cuda:3", "CUDA is not available"]),
    ("train", [*TRAIN, "--device=mps"], ["mps", "not available"]),
    ("train", [*TRAIN, "--device=tpu"], ["unknown device 'tpu'"]),
    ("train", [*TRAIN, "--dtype=float8"], ["dtype must be one of", "float8"]),
    ("train", [*TRAIN, "--checkpoint_minutes=-1"], ["checkpoint_minutes must not be negative"]),
    ("train", ["{bad}/syntax.py", *TRAIN], ["syntax.py", "SyntaxError"]),
    ("train", ["{bad}/unknown_key.py", *TRAIN], ["unknown_key.py", "unknown key 'n_layers'"]),
    ("train", ["{bad}/nope.py", *TRAIN], ["nope.py", "not found"]),
    ("train", [*TRAIN, "--out_dir={bad}/afile"], ["afile is a file"]),
    ("train", [*TRAIN, "--data_dir={bad}/nodata"], ["no prepared dataset", "nodata", "prepare.py"]),
    ("train", [*TRAIN, "--data_dir={bad}/empty"], ["empty/train.bin", "0 tokens"]),
    ("train", [*TRAIN, "--data_dir={bad}/short"], ["short/val.bin", "fewer than the 17"]),
    ("train", [*TRAIN, "--block_size=100000"], ["train.bin", "fewer than the 100001", "block_size"]),
    ("train", [*TRAIN, "--data_dir={bad}/odd"], ["odd/train.bin", "not a whole number of uint16"]),
    ("train", [*TRAIN, "--data_dir={bad}/bigid"], ["bigid/train.bin", "token id 60000", "34 ids"]),
    ("train", [*TRAIN, "--data_dir={bad}/badmeta"], ["meta.json", "not valid JSON"]),
    ("train", [*TRAIN, "--data_dir={bad}/badvocab"], ["meta.json", "corrupt", "vocab_size"]),
    ("train", [*TRAIN, "--init_from=resume", "--out_dir={bad}/noout"], ["no checkpoint", "noout"]),
    (
        "train",
        ["--init_from=resume", "--out_dir={bad}/nowhere", "--device=cpu"],
        ["no checkpoint in", "nowhere", "to resume"],
    ),  # no dataset either: the checkpoint is what is missing
    ("train", [*TRAIN, "--init_from=resume", "--out_dir={bad}/truncated"], ["truncated/ckpt.pt", "corrupt or truncated"]),
    ("train", [*TRAIN, "--init_from=resume", "--out_dir={bad}/evil"], ["refusing to load", "evil/ckpt.pt", "a reference to posix.system", "could run code"]),
    ("train", [*TRAIN, "--init_from=resume", "--out_dir={bad}/noopt"], ["noopt/ckpt.pt cannot be resumed", "optimizer"]),
    (
        "train",
        [*TRAIN, "--init_from=resume", "--out_dir={out}", "--data_dir={other}"],
        ["out/ckpt.pt was trained with a char tokenizer of 34 ids", "other uses a char tokenizer of 6 ids"],
    ),
    ("train", [*TRAIN, "--init_from=resume", "--out_dir={out}", "--n_layer=3"], ["ckpt.pt has n_layer=2", "this run asks for n_layer=3"]),
    ("train", [*TRAIN, "--out_dir={out}"], ["out holds a run's checkpoint ckpt.pt", "--init_from=resume", "another --out_dir", "--overwrite=True"]),
    ("sample", [*SAMPLE, "--out_dir={bad}/noout"], ["no checkpoint", "noout"]),
    ("sample", [*SAMPLE, "--start=FILE:{bad}/latin1.txt"], ["prompt file", "latin1.txt", "not UTF-8"]),
    ("sample", [*SAMPLE, "--start=ab\udcff"], ["--start is not UTF-8"]),
    ("sample", [*SAMPLE, "--start=FILE:{bad}/missing.txt"], ["prompt file", "missing.txt", "not found"]),
    ("sample", [*SAMPLE, "--start=FILE:{bad}"], ["cannot read prompt file", "Is a directory"]),
    ("sample", [*SAMPLE, "--start="], ["prompt is empty"]),
    ("sample", [*SAMPLE, "--start=Zebra€"], ["'Z' is not in this model's vocabulary"]),
    ("sample", [*SAMPLE, "--num_samples=0"], ["num_samples", "positive"]),
    ("sample", [*SAMPLE, "--temperature=-1"], ["temperature"]),
    ("sample", [*SAMPLE, "--top_k=0"], ["top_k"]),
    ("sample", [*SAMPLE, "--init_from=gpt7"], ["unknown init_from 'gpt7'"]),
    ("sample", [*SAMPLE, "--device=cuda"], ["CUDA is not available"]),
    ("sample", [*SAMPLE, "--out_dir={bad}/evil"], ["refusing to load", "posix.system", "could run code"]),
    ("sample", [*SAMPLE, "--out_dir={bad}/evil5"], ["refusing to load", "weights_only"]),
    ("sample", [*SAMPLE, "--out_dir={bad}/truncated"], ["corrupt or truncated"]),
    ("sample", [*SAMPLE, "--out_dir={bad}/shapes"], ["weights do not match its model_args"]),
    ("eval", [*EVAL, "--out_dir={bad}/noout"], ["no checkpoint", "noout"]),
    ("eval", [*EVAL, "--out_dir={bad}/evil"], ["refusing to load", "posix.system"]),
    ("eval", [*EVAL, "--split=test"], ["split", "test"]),
    ("eval", [*EVAL, "--batch_size=-1"], ["batch_size must not be negative"]),
    ("eval", [*EVAL, "--stride=-1"], ["stride must not be negative"]),
    ("eval", [*EVAL, "--stride=100"], ["stride=100", "larger than the block size 16"]),
    ("eval", [*EVAL, "--block_size=100000"], ["block_size=100000", "larger than", "16"]),
    ("eval", [*EVAL, "--data_dir={bad}/nodata"], ["no prepared dataset"]),
    ("eval", [*EVAL, "--data_dir={bad}/bigval"], ["bigval/val.bin", "token id 60000"]),
    ("eval", [*EVAL, "--data_dir={other}"], ["uses a char tokenizer of 34 ids", "other uses a char tokenizer of 6 ids"]),
    ("eval", [*EVAL, "--compare"], ["--compare needs the models"]),
    ("eval", [*EVAL, "--init_from=gpt7"], ["unknown init_from 'gpt7'"]),
    ("eval", [*EVAL, "--in_context_docs=3", "--block_size=4"], ["no room for 3 in-context documents"]),
    ("export", ["--out_dir={out}"], ["pass the folder to write"]),
    ("export", ["--out_dir={out}", "--to=onnx", "{new}"], ["to must be one of hf", "onnx"]),
    ("export", ["--out_dir={out}", "{new}"], ["char tokenizer", "GPT-2 BPE"]),
    ("export", ["--out_dir={bad}/evil", "{new}"], ["refusing to load"]),
    ("export", ["--out_dir={out}", "--hf_dir={new}", "{bad}/elsewhere"], ["two destinations"]),
    ("export", ["--out_dir={out}", "--to=gguf", "{new}"], ["char tokenizer", "no GGUF tokenizer", "sample.py"]),
    ("export", ["--out_dir={out}", "--to=gguf", "--quant=q3_k", "{new}"], ["quant must be one of", "q3_k"]),
    ("export", ["--out_dir={out}", "--to=gguf", "{bad}"], ["bad exists and is not an empty folder"]),
    *[  # a LoRA run whose Hugging Face base folder was deleted: one line naming the base and the fix, wherever it is read
        (entry, args, ["lostbase is a LoRA adapter for the base", "hf-base", "which is gone", "put the base weights back at"])
        for entry, args in [
            ("sample", [*SAMPLE, "--out_dir={bad}/lostbase"]),
            ("eval", [*EVAL, "--out_dir={bad}/lostbase"]),
            ("export", ["--out_dir={bad}/lostbase", "--to=hf", "{new}"]),
            ("export", ["--out_dir={bad}/lostbase", "--to=peft", "{new}"]),
            ("export", ["--out_dir={bad}/lostbase", "--to=gguf", "{new}"]),
            ("serve", ["{bad}/lostbase"]),
        ]
    ],
    ("bench_generate", [*BENCH_GENERATE, "--prompt_tokens=0"], ["prompt_tokens"]),
    ("bench_generate", [*BENCH_GENERATE, "--batch_sizes=5"], ["batch_sizes", "tuple"]),
    ("bench_generate", [*BENCH_GENERATE, "--n_embd=30", "--n_head=4"], ["not divisible"]),
    ("bench_generate", [*BENCH_GENERATE, "--out_dir={bad}/truncated"], ["corrupt or truncated"]),
    ("novelty", [], ["--dataset", "--data_dir"]),
    ("novelty", ["--data_dir={data}"], ["--text", "--build"]),
    ("novelty", ["--data_dir={data}", "--text=x", "--ngram=1"], ["ngram must be at least 2"]),
    ("novelty", ["--data_dir={bad}/odd", "--text=First"], ["odd/train.bin", "not a whole number"]),
    ("novelty", ["--data_dir={data}", "--text=FILE:{bad}/latin1.txt"], ["not UTF-8"]),
    ("novelty", ["--data_dir={data}", "--text=Zebra€"], ["not in this model's vocabulary"]),
    ("novelty", ["--data_dir={data}", "--text=First", "--index_dir={bad}/afile"], ["--index_dir", "afile is a file"]),
    ("bench", [*BENCH, "--init_from=gpt2"], ["freshly initialized"]),
    ("bench", [*BENCH, "--timed_steps=0"], ["timed_steps"]),
    ("bench", [*BENCH, "--n_embd=30", "--n_head=4"], ["not divisible"]),
    ("bench", [*BENCH, "--vocab_size=0"], ["vocab_size"]),
    ("bench", [*BENCH, "--real_data=True", "--data_dir={bad}/nodata"], ["no prepared dataset"]),
    ("bench", [*BENCH, "--real_data=True", "--data_dir={bad}/odd"], ["not a whole number"]),
    ("bench", [*BENCH, "--real_dta=True"], ["unknown key 'real_dta'", "real_data"]),
    ("serve", ["{out}", "--arena_prompts={bad}/missing.jsonl"], ["--arena_prompts=", "missing.jsonl not found", "tools.chat_tasks"]),
    ("serve", ["{out}", "--arena_prompts={bad}/latin1.txt"], ["cannot read", "UTF-8"]),
    ("serve", ["{out}", "--arena_prompts={bad}/empty.txt"], ["holds no prompts"]),
    ("serve", ["{out}", "--arena_file={bad}/afile/votes.jsonl"], ["--arena_file's folder", "afile is a file"]),
    ("arena", ["{bad}/missing.jsonl"], ["missing.jsonl not found", "--arena_file"]),
    ("arena", ["{bad}/empty.txt"], ["holds no votes yet"]),
    ("arena", ["{bad}/latin1.txt"], ["line 1 is not JSON"]),
    ("arena", [], ["pass one votes file"]),
    ("arena_voter", ["--url=http://127.0.0.1:9"], ["cannot reach the page at http://127.0.0.1:9", "--url"]),
    ("arena_voter", ["--rounds=0"], ["rounds must be positive"]),
    ("plot", [], ["usage", "tools.plot"]),
    ("plot", ["{bad}/noout"], ["no metrics", "noout"]),
    ("plot", ["{bad}/badmetrics"], ["line 2 is not JSON"]),
    ("plot", ["{bad}/latin1metrics"], ["not UTF-8"]),
    ("serve", ["{bad}/noout"], ["no model", "noout", "a training run's folder"]),
    ("serve", ["{bad}/afile"], ["no model", "afile"]),
    ("serve", ["{bad}/missing.gguf"], ["no GGUF file at", "missing.gguf", "--to=gguf"]),
    ("serve", ["{bad}/truncated"], ["corrupt or truncated"]),
    ("serve", ["{bad}/evil"], ["refusing to load"]),
    ("serve", ["{out}", "{out}", "{out}", "{out}", "{out}"], ["at most 4 models"]),
    ("serve", ["{out}", "--port=abc"], ["port", "int"]),
    ("serve", ["{out}", "--port=70000"], ["port must be in [0, 65535]"]),
    ("serve", ["{out}", "--top_p=2"], ["top_p must be in (0, 1]"]),
    ("serve", ["{out}", "--memory_limit=0.000001"], ["needs", "--memory_limit"]),
    ("serve", ["{out}", "--max_new_tokens_limit=0"], ["max_new_tokens_limit must be positive"]),
    ("serve", ["{out}", "--host=256.256.256.256"], ["--host=256.256.256.256 is not an IPv4 address", "--host=127.0.0.1"]),
    ("serve", ["{out}", "--host=192.0.2.1", "--port=0"], ["--host=192.0.2.1 is not an address of this machine", "--host=0.0.0.0"]),
]


class Evil:
    """Unpickling this runs a shell command that creates a file: a checkpoint that attacks its reader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def dataset(folder: Path, text: str) -> Path:
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    module = load_dataset_module("shakespeare_char")
    (folder.parent / f"{folder.name}.txt").write_text(text, encoding="utf-8")
    prepare_text(module.corpus(module.Config(input=str(folder.parent / f"{folder.name}.txt")), folder), folder)
    return folder


def bad_dataset(bad: Path, name: str, good: Path, change) -> None:
    shutil.copytree(good, bad / name)
    change(bad / name)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> dict[str, Path]:
    """An earlier run (a dataset, a trained out_dir with keep_last checkpoints and metrics) and a
    folder of broken files. Nothing under `root` may change while the bad inputs run."""
    root = tmp_path_factory.mktemp("earlier")
    data, out, bad = dataset(root / "data", TEXT), root / "out", root / "bad"
    train.main(["--data_dir=" + str(data), "--out_dir=" + str(out), *TINY, "--max_iters=4", "--eval_interval=2", "--keep_last=2"])
    bad.mkdir()
    (bad / "empty.txt").write_text("")
    (bad / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    (bad / "afile").write_text("a file, not a folder")
    (bad / "syntax.py").write_text("n_layer = (\n")
    (bad / "unknown_key.py").write_text("n_layers = 4\n")
    bad_dataset(bad, "empty", data, lambda d: (d / "train.bin").write_bytes(b""))
    bad_dataset(bad, "short", data, lambda d: np.zeros(10, dtype=np.uint16).tofile(d / "val.bin"))
    bad_dataset(bad, "odd", data, lambda d: open(d / "train.bin", "ab").write(b"\1"))
    bad_dataset(bad, "bigid", data, lambda d: np.full(100, 60000, dtype=np.uint16).tofile(d / "train.bin"))
    bad_dataset(bad, "bigval", data, lambda d: np.full(100, 60000, dtype=np.uint16).tofile(d / "val.bin"))
    bad_dataset(bad, "badmeta", data, lambda d: (d / "meta.json").write_text('{"tokenizer": '))
    meta = json.loads((data / "meta.json").read_text())
    bad_dataset(bad, "badvocab", data, lambda d: (d / "meta.json").write_text(json.dumps({**meta, "tokenizer": {**meta["tokenizer"], "vocab_size": -1}})))
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    for name, obj, protocol in [
        ("truncated", None, 2),
        ("evil", {"model": Evil(root / "PWNED"), "model_args": {}}, 2),
        ("evil5", {"model": Evil(root / "PWNED"), "model_args": {}}, pickle.HIGHEST_PROTOCOL),
        ("noopt", {k: v for k, v in ckpt.items() if k != "optimizer"}, 2),
        ("shapes", {**ckpt, "model_args": {**ckpt["model_args"], "n_embd": 64}}, 2),
    ]:
        (bad / name).mkdir()
        if obj is None:
            (bad / name / "ckpt.pt").write_bytes((out / "ckpt.pt").read_bytes()[:5000])
        else:
            torch.save(obj, bad / name / "ckpt.pt", pickle_protocol=protocol)
    lora = LoraConfig(rank=2).record() | {
        "base": {"init_from": str(root / "hf-base"), "weights": str(root / "hf-base" / "model.safetensors"), "sha256": "0" * 64}
    }
    lostbase = {**ckpt, "model": {}, "lora": lora, "tokenizer": GPT2_META, "config": {**ckpt["config"], "init_from": str(root / "hf-base"), "lora_rank": 2}}
    (bad / "lostbase").mkdir()
    torch.save(lostbase, bad / "lostbase" / "ckpt.pt")
    (bad / "badmetrics").mkdir()
    (bad / "badmetrics" / "metrics.jsonl").write_text('{"iter": 1, "loss": 2.0}\n{"iter": 2, "lo')
    (bad / "latin1metrics").mkdir()
    (bad / "latin1metrics" / "metrics.jsonl").write_bytes(b'{"iter": 1, "loss": "\xe9"}\n')
    prepare_text(TextCorpus(TEXT, "a text", tokenizer="bpe"), bad / "bpe", vocab_size=300)  # a trained BPE, then one whose file changed since
    bad_dataset(bad, "bpechanged", bad / "bpe", lambda d: (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace('"Ġ', '"Ġ ', 1)))
    other = dataset(root / "other", "abcde\n" * 200)  # another text: another character vocabulary
    return {"root": root, "data": data, "out": out, "bad": bad, "other": other, "text": root / "data.txt", "new": root / "new"}


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(entry: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str, BaseException | None]:
    """Run `python {entry}.py argv` in-process: (exit code, stderr, the error main raised). A
    traceback is a failure."""
    monkeypatch.setattr(sys, "argv", [f"{entry}.py", *argv])
    capsys.readouterr()
    code, raised = 0, []

    def main(args: list[str]) -> None:
        try:
            ENTRIES[entry](args)
        except BaseException as e:
            raised.append(e)
            raise

    try:
        cli(main)
    except SystemExit as e:
        code = e.code
    except BaseException:
        pytest.fail(f"{entry} {argv} raised instead of a clear error:\n{traceback.format_exc()}")
    return code, capsys.readouterr().err, (raised[0] if raised else None)


@pytest.mark.parametrize("entry, args, words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(entry: str, args: list[str], words: list[str], earlier: dict, monkeypatch, capsys):
    monkeypatch.chdir(earlier["root"])  # default paths (data/openwebtext, out) resolve here, not in the repository
    argv = [a.format(**earlier) for a in args]
    before = snapshot(earlier["root"])
    code, err, raised = run_cli(entry, argv, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"{entry} {argv} succeeded"
    assert code == (2 if isinstance(raised, ConfigError) else 1), (code, raised)  # a bad setting exits 2, any other user error 1
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(earlier["root"]) == before, "an earlier run's files changed"
    assert not earlier["new"].exists()


def test_a_busy_port_is_said_in_our_words(earlier: dict, monkeypatch, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err, _ = run_cli("serve", [str(earlier["out"]), f"--port={port}"], monkeypatch, capsys)
    assert code == 1 and err == f"error: port {port} on 127.0.0.1 is in use by another program; pass another --port, or --port=0 for any free one\n"


def test_the_battery_is_big_enough():
    assert len(CASES) >= 30 and {c[0] for c in CASES} == set(ENTRIES)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code, words",
    [
        (["train.py", "--n_layers=3"], 2, ["unknown key 'n_layers'"]),
        (["sample.py", "--out_dir={bad}/evil", "--device=cpu"], 1, ["refusing to load"]),
        (["prepare.py", "shakespeare_char", "--input={bad}/latin1.txt"], 1, ["not UTF-8"]),
    ],
)
def test_bad_input_on_the_command_line(args: list[str], code: int, words: list[str], earlier: dict):
    before = snapshot(earlier["root"])
    proc = run_entry(str(ROOT / args[0]), *[a.format(**earlier) for a in args[1:]], cwd=earlier["root"], check=False)
    assert proc.returncode == code and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and all(w in proc.stderr for w in words), proc.stderr
    assert snapshot(earlier["root"]) == before and not (earlier["root"] / "PWNED").exists()
