"""FSDP2 through torchrun on CPU (gloo): the same training as one process, sharded checkpoints
written atomically, and resumed onto another number of processes by DCP's resharding."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sample
from conftest import ROOT, TINY_MODEL_ARGS, child_pids, rank_of, ranks
from eval import main as eval_main
from gptsuite.checkpoint import SLOW_SAVE_ENV, load_checkpoint
from gptsuite.errors import UserError
from tools.consolidate import main as consolidate_main
from train import main

pytestmark = pytest.mark.slow  # torchrun process groups

RUN = [*TINY_MODEL_ARGS, "--eval_iters=4", "--eval_interval=5", "--warmup_iters=2", "--lr_decay_iters=10", "--learning_rate=3e-3", "--dropout=0.0"]
RUN += ["--gradient_accumulation_steps=4", "--grad_clip=0.1"]  # 2 micro-steps per rank under 2 processes; clipping on every step


def torchrun(n: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """train.py on n ranks, started as torchrun starts them (conftest.ranks)."""
    return ranks(n, "train.py", *args, env=env)


def curve(out: Path) -> list[dict]:
    keep = ("iter", "loss", "train_loss", "val_loss")
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_curve(a: list[dict], b: list[dict]) -> None:
    assert [r["iter"] for r in a] == [r["iter"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in x.keys() - {"iter"}:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), (key, x, y)


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def test_two_process_fsdp_matches_one_process(tmp_path: Path, chat_dataset: Path):
    """From scratch (rank 0's initial weights on every rank), with activation checkpointing, on
    conversations with the loss on the answers. (Without recompute, on plain text, from a
    checkpoint: the resharding test's FSDP links.)"""
    args = [f"--data_dir={chat_dataset}", *RUN, "--block_size=64", "--max_iters=10", "--eval_iters=3"]  # odd: one rank evaluates a batch more
    proc = torchrun(2, *args, f"--out_dir={tmp_path / 'fsdp'}", "--parallel=fsdp", "--activation_checkpointing=True")
    assert "saved sharded checkpoint at iter 10" in proc.stdout
    assert re.search(r"memory per process \(estimate for 2 cpu processes.*: DDP [\d.]+ GiB, FSDP [\d.]+ GiB", proc.stdout)  # printed before renting GPUs
    main([*args, f"--out_dir={tmp_path / 'one'}"])  # one process, no sharding, no recompute

    assert_same_curve(curve(tmp_path / "fsdp"), curve(tmp_path / "one"))
    diff = max_weight_diff(tmp_path / "fsdp", tmp_path / "one")
    print(f"max weight difference, 2-process FSDP vs 1 process: {diff:.2e}")
    assert diff < 1e-5
    shards = sorted(p.name for p in (tmp_path / "fsdp" / "ckpt.dcp").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp", "checkpoint.json", "rng.pt"]


def test_resume_reshards_onto_other_process_counts(tmp_path: Path, char_dataset: Path, capsys):
    """One run handed on from layout to layout, each link resuming the last one's checkpoint:
    one process unsharded (a ckpt.pt) -> 2 FSDP processes -> 1, and from there on to 2 DDP
    processes, and to one plain process reading the sharded folder. Every link continues the
    uninterrupted run's curve and ends on its weights: DCP reshards the model and optimizer state
    onto more and fewer processes, and the optimizer state crosses between DDP and FSDP both ways."""
    args = [f"--data_dir={char_dataset}", *RUN, "--eval_interval=2"]  # each link stops at an evaluation
    main([*args, f"--out_dir={tmp_path / 'whole'}", "--max_iters=10"])
    whole = curve(tmp_path / "whole")

    def link(src: str | None, name: str, n: int, stop: int, *extra: str) -> Path:
        out = tmp_path / name
        if src is None:
            main([*args, f"--out_dir={out}", f"--max_iters={stop}"])
        else:
            subprocess.run(["cp", "-a", str(tmp_path / src), str(out)], check=True)
            resume = ["--init_from=resume", f"--out_dir={out}", f"--max_iters={stop}", *extra]
            torchrun(n, *resume) if n else main(resume)
        assert_same_curve(curve(out), [r for r in whole if r["iter"] <= stop])
        diff = max_weight_diff(out, tmp_path / "whole") if stop == 10 else 0.0
        with capsys.disabled():
            print(f"{name}: resumed to iter {stop}" + (f", max weight difference against the uninterrupted run {diff:.2e}" if stop == 10 else ""))
        assert diff < 1e-5, name
        return out

    link(None, "plain", 0, 2)  # one process, unsharded: a ckpt.pt
    link("plain", "ddp-to-fsdp", 2, 4, "--parallel=fsdp")  # and onto 2 processes
    link("ddp-to-fsdp", "2to1", 1, 6)  # written by 2 ranks, read by 1
    link("2to1", "fsdp-to-ddp", 2, 10, "--parallel=ddp")  # and onto 2 processes again
    link("2to1", "sharded-to-plain", 0, 10, "--parallel=ddp")

    # sample.py and eval.py read the sharded folder as it is, the same model as its consolidated file
    capsys.readouterr()
    eval_main([f"--out_dir={tmp_path / 'ddp-to-fsdp'}", "--device=cpu"])
    sample.main([f"--out_dir={tmp_path / 'ddp-to-fsdp'}", "--device=cpu", "--start=All:", "--max_new_tokens=5", "--num_samples=1"])
    out = capsys.readouterr().out
    assert "ddp-to-fsdp: val loss" in out and "All:" in out

    # one ckpt.pt of the sharded folder resumes in one process the same way
    consolidate_main([f"--out_dir={tmp_path / 'ddp-to-fsdp'}"])
    out = tmp_path / "ddp-to-fsdp-consolidated"
    assert not load_checkpoint(out).get("sharded") and isinstance(load_checkpoint(out)["optimizer"]["state"], dict)
    main(["--init_from=resume", f"--out_dir={out}", "--max_iters=10", "--parallel=ddp"])
    assert_same_curve(curve(out), [r for r in whole if r["iter"] > 4])
    assert max_weight_diff(out, tmp_path / "whole") < 1e-5
    with pytest.raises(UserError, match="exists; pass another --to=FILE"):
        consolidate_main([f"--out_dir={tmp_path / 'ddp-to-fsdp'}"])


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the torchrun workers through /proc (Linux)")
def test_sigterm_under_fsdp_saves_a_whole_sharded_checkpoint(tmp_path: Path, char_dataset: Path):
    out = tmp_path / "out"
    args = [f"--data_dir={char_dataset}", f"--out_dir={out}", *RUN, "--parallel=fsdp", "--max_iters=100000", "--eval_interval=100000"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("iter 3:"):
            rank1 = [p for p in child_pids(proc.pid) if rank_of(p) == 1]
            os.kill(rank1[0], signal.SIGTERM)  # one rank is told: both stop after the same step
            break
    stdout, stderr = proc.communicate(timeout=120)
    stdout = "".join(lines) + stdout
    assert proc.returncode == 0, stderr
    stopped_at = int(stdout.split("stopped at iter ")[1].split(";")[0])
    ckpt = load_checkpoint(out)
    assert ckpt["iter_num"] == stopped_at and len(ckpt["rng"]) == 2 and ckpt["sharded"]
    assert {p.name for p in (out / "ckpt.dcp").iterdir()} >= {"__0_0.distcp", "__1_0.distcp", ".metadata"}


def test_kill_9_mid_save_leaves_the_previous_sharded_checkpoint(tmp_path: Path, char_dataset: Path, capsys):
    out = tmp_path / "out"
    args = [f"--data_dir={char_dataset}", f"--out_dir={out}", *RUN, "--parallel=fsdp", "--max_iters=100", "--eval_interval=3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", SLOW_SAVE_ENV: "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("saved sharded checkpoint at iter 3"):
            break
    deadline = time.monotonic() + 60
    while not list(out.glob(".ckpt-000006.dcp.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside the write of iter 6
    for pid in [*child_pids(proc.pid), proc.pid]:  # the workers (torchrun starts them in their own sessions), then torchrun
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert list(out.glob(".ckpt-000006.dcp.*.tmp")) and not (out / "ckpt-000006.dcp").exists()

    ckpt = load_checkpoint(out)  # ckpt.dcp still points at iter 3, whole
    assert ckpt["iter_num"] == 3 and len(ckpt["model"]) > 0
    main(["--init_from=resume", f"--out_dir={out}", "--max_iters=4", "--parallel=ddp"])  # one plain process reads the sharded folder
    assert "removed" in capsys.readouterr().out and not list(out.glob(".*.tmp"))
    assert load_checkpoint(out)["iter_num"] == 4


def test_what_fsdp_cannot_do_is_refused(tmp_path: Path, char_dataset: Path):
    args = [f"--data_dir={char_dataset}", *RUN, f"--out_dir={tmp_path / 'out'}", "--parallel=fsdp", "--max_iters=1"]
    with pytest.raises(UserError, match="parallel=fsdp shards the model across torchrun's processes; run under torchrun"):
        main(args)
    with pytest.raises(
        UserError, match="parallel=fsdp: optimizer=muon"
    ):  # refused from the settings, before any process group (how a torchrun run says it once: test_runtime)
        main([*args, "--optimizer=muon"])


def test_bench_counts_what_each_rank_holds(tmp_path: Path, capsys):
    """bench.py between two micro-steps of a step: one process (as each DDP rank) holds every
    parameter, its gradient and AdamW's two moments; FSDP ranks under torchrun half of each (2
    processes): the gradients are reduce-scattered into shards every micro-step, not kept whole
    until the last."""
    import bench
    from model import GPT, GPTConfig

    shape = [
        "--n_layer=2",
        "--n_head=2",
        "--n_embd=64",
        "--block_size=32",
        "--batch_size=2",
        "--warmup_steps=1",
        "--timed_steps=1",
        "--device=cpu",
        "--compile=False",
    ]
    held = {}
    for parallel in ("ddp", "fsdp"):
        if parallel == "ddp":  # what a DDP rank holds is what one process holds: whole copies
            bench.main([*shape, "--gradient_accumulation_steps=2"])  # two micro-batches, held between them
            stdout = capsys.readouterr().out
        else:  # the count is over all processes, as in train.py: two micro-batches each
            stdout = ranks(2, "bench.py", *shape, "--parallel=fsdp", "--gradient_accumulation_steps=4").stdout
        line = next(line for line in stdout.splitlines() if line.startswith("held per rank"))
        held[parallel] = [float(v) for v in re.findall(r"([\d.]+) MiB", line)]
    n = sum(p.numel() for p in GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)).parameters())  # tied head counted once
    params, grads, optim, total = held["ddp"]
    assert (params, grads, optim) == (pytest.approx(4 * n / 2**20, abs=0.05), pytest.approx(4 * n / 2**20, abs=0.05), pytest.approx(8 * n / 2**20, abs=0.05))
    ratio = held["fsdp"][3] / total
    print(f"held per rank, FSDP / DDP: {ratio:.3f}")
    assert 0.49 < ratio <= 0.55


def test_two_nodes_that_do_not_share_out_dir_are_refused(tmp_path: Path, char_dataset: Path):
    """Two "nodes" on this machine (torchrun --nnodes=2, one process each), each with its own local
    folder where a cluster would have one shared path: refused at start on both, not a run that
    writes half of each checkpoint (FSDP) or resumes different states (DDP)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            f"--node_rank={node}",
            "--nproc_per_node=1",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
        ]
        cmd += ["train.py", f"--data_dir={char_dataset}", *RUN, "--max_iters=2", "--parallel=fsdp", f"--out_dir={tmp_path / f'node{node}'}"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for node, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode != 0, out
        assert "is not the same folder for all 2 processes" in out and "a filesystem they share" in out, (node, out)
    assert not list((tmp_path / "node0").glob("ckpt*")) and not (tmp_path / "node1").exists() or not list((tmp_path / "node1").glob("ckpt*"))
