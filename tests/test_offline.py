"""--init_from=gpt2 and the hub datasets with no network: the error comes in seconds, not after
huggingface_hub's half minute of retries, and says what to do; weights already in the hub cache
still load.

huggingface_hub reads HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so each case
runs sample.py in a process of its own, with its environment (conftest.forked: torch is imported
already, huggingface_hub not yet). The endpoint is a closed local port: even on a machine with a
network, nothing is downloaded."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import forked
from gptsuite.hf_export import hf_config, hf_state_dict
from model import GPT, GPTConfig

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
# huggingface_hub's retries alone sleep 1 + 2 + 4 + 8 + 8 = 23 s; python and torch start in a few
BOUND = 15
# one process runs them all: the fork server conftest.forked starts (a torch import) serves every case
pytestmark = pytest.mark.xdist_group("test_offline")


def offline_run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """python <args> with an empty (or the test's) hub cache and no hub; how long it took."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    full = clean | {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": UNREACHABLE, "PYTHONUNBUFFERED": "1"} | env
    t0 = time.monotonic()
    [proc] = forked(*args, envs=[full], fresh=("huggingface_hub",), timeout=120)
    return proc, time.monotonic() - t0


def sample_gpt2(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """python sample.py --init_from=gpt2 with an empty (or the test's) hub cache and no hub."""
    return offline_run(tmp_path, "sample.py", "--init_from=gpt2", "--device=cpu", *args, **env)


@pytest.mark.parametrize("offline", ["hub unreachable", "HF_HUB_OFFLINE=1"])
def test_no_network_and_no_cache_fails_fast_with_the_fix(tmp_path: Path, offline: str):
    proc, seconds = sample_gpt2(tmp_path, **({"HF_HUB_OFFLINE": "1"} if offline.startswith("HF_") else {}))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert seconds < BOUND, f"took {seconds:.1f}s: {proc.stderr}"
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: could not get gpt2 from the Hugging Face hub (")
    assert "run `hf download openai-community/gpt2 config.json model.safetensors --local-dir gpt2`" in proc.stderr
    assert "pass --init_from=./gpt2" in proc.stderr
    assert ("HF_HUB_OFFLINE is set" if offline.startswith("HF_") else UNREACHABLE) in proc.stderr


def cache_tiny_gpt2(hf_home: Path) -> None:
    """What a download leaves in huggingface_hub's cache: blobs named by their hash, a snapshot of
    symlinks to them, refs/main naming the snapshot. The weights are a 1-layer GPT-2."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50257, n_layer=1, n_head=2, n_embd=8, bias=True))
    repo = hf_home / "hub" / "models--openai-community--gpt2"
    commit = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs" / "config").write_text(json.dumps(hf_config(model)))
    save_file(hf_state_dict(model), repo / "blobs" / "weights")
    for name, blob in (("config.json", "config"), ("model.safetensors", "weights")):
        (repo / "snapshots" / commit / name).symlink_to(Path("..", "..", "blobs", blob))


@pytest.mark.parametrize("offline", ["hub unreachable", "HF_HUB_OFFLINE=1"])
def test_a_cached_copy_loads_without_the_network(tmp_path: Path, offline: str):
    cache_tiny_gpt2(tmp_path / "hf")
    proc, seconds = sample_gpt2(
        tmp_path, "--start=Hello", "--num_samples=1", "--max_new_tokens=3", **({"HF_HUB_OFFLINE": "1"} if offline.startswith("HF_") else {})
    )
    assert proc.returncode == 0, proc.stderr
    assert "loading GPT-2 weights gpt2: 1 layers, 2 heads, 8 wide" in proc.stdout and "\nHello" in proc.stdout
    assert seconds < BOUND


@pytest.mark.parametrize("dataset", ["pubmed", "fineweb_edu", "openwebtext"])
def test_hub_datasets_fail_fast_offline_naming_the_local_route(tmp_path: Path, dataset: str):
    proc, seconds = offline_run(tmp_path, "prepare.py", dataset, f"--data_dir={tmp_path / 'out'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert seconds < BOUND and "Retrying" not in proc.stdout + proc.stderr, f"took {seconds:.1f}s: {proc.stderr}"
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: could not ") and "from the Hugging Face hub (" in proc.stderr
    assert UNREACHABLE in proc.stderr and "--data_files=" in proc.stderr
