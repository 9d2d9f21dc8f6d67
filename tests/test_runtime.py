"""Scaling up: DDP through torchrun, mixed precision, torch.compile, the attention kernel."""

import contextlib
import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL_ARGS, ranks, run_entry, train_config
from gptsuite.checkpoint import load_checkpoint
from gptsuite.errors import UserError, cli
from gptsuite.runtime import Runtime, native_bf16, setup_runtime
from model import GPT, GPTConfig
from train import main, train

TINY = [
    *TINY_MODEL_ARGS,
    "--eval_iters=4",
    "--eval_interval=5",
    "--max_iters=5",
    "--warmup_iters=2",
    "--lr_decay_iters=10",
    "--learning_rate=3e-3",
    "--dropout=0.0",
]


def metrics(out: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("time", "ms_per_iter", "tokens_per_s")}
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]


MODERN_MUON = ["--arch=modern", "--optimizer=muon", "--lr_schedule=wsd", "--muon_lr=0.02"]


CHAT = ["--data_dir={chat}", "--block_size=64"]  # conversations, the loss on the answers only: rows from conversation starts, targets -1 elsewhere


LORA = ["--init_from={base}", "--lora_rank=4", "--lora_dropout=0"]
DPO = [*LORA, "--data_dir={pairs}"]  # preference pairs: DPO against the base (the adapters switched off)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [CHAT, MODERN_MUON, LORA, DPO], ids=["gpt2-adamw-chat", "modern-muon", "lora", "lora-dpo"])
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(
    tmp_path: Path, char_dataset: Path, chat_dataset: Path, tiny_checkpoint: Path, pair_dataset: Path, variant: list[str]
):
    variant = [v.format(base=tiny_checkpoint, chat=chat_dataset, pairs=pair_dataset) for v in variant]
    args = [f"--data_dir={char_dataset}", *TINY, "--gradient_accumulation_steps=4", *variant]
    proc = ranks(2, "train.py", *args, f"--out_dir={tmp_path / 'ddp'}")  # as torchrun starts them
    assert (
        f"(2 x 2 x 4{' x 2' if f'--data_dir={pair_dataset}' in variant else ''} x {64 if '--block_size=64' in variant else 16})" in proc.stdout
        and proc.stdout.count("step 5:") == 1
    )  # rank 0 alone prints
    main([*args, f"--out_dir={tmp_path / 'one'}"])

    ddp, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "one")
    assert [r.keys() for r in ddp] == [r.keys() for r in one] and len(one) == 5 + 2
    assert ("val_rewards/accuracies" in one[0]) == (f"--data_dir={pair_dataset}" in variant)  # DPO's own metrics, on pairs
    for a, b in zip(ddp, one, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
    w_ddp, w_one = load_checkpoint(tmp_path / "ddp")["model"], load_checkpoint(tmp_path / "one")["model"]
    assert w_ddp.keys() == w_one.keys()
    for name in w_one:
        if "--optimizer=muon" not in variant:
            torch.testing.assert_close(w_ddp[name], w_one[name], rtol=1e-5, atol=1e-6)
            continue
        # torch.optim.Muon orthogonalizes in bfloat16: the float32 rounding by which the all-reduced
        # gradient differs from the one-process sum flips bf16 roundings, so weights agree only to
        # ~2% of each tensor's norm after 5 steps (measured: at most 2.4%, on the zero-initialized
        # c_proj). A real DDP fault is far off: each rank stepping on its own half of the batch
        # gives 17-82% on every matrix (and the losses above differ by 1e-3).
        diff = (w_ddp[name] - w_one[name]).norm() / w_one[name].norm()
        assert diff < 0.1, (name, diff.item())


def test_nccl_on_a_cpu_under_torchrun_is_one_line(monkeypatch):
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("LOCAL_RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"--backend=nccl connects CUDA GPUs, but this run is on cpu; pass --backend=gloo \(or auto\)"):
        setup_runtime("cpu", backend="nccl")


@pytest.mark.parametrize("local_rank, printed", [(None, True), ("0", True), ("1", False)])
def test_the_error_line_is_printed_by_one_process_per_node(monkeypatch, capsys, local_rank, printed):
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)

    def main(argv):
        raise UserError("no dataset here")

    with pytest.raises(SystemExit) as e:
        cli(main)
    assert e.value.code == 1 and capsys.readouterr().err == ("error: no dataset here\n" if printed else "")


@pytest.mark.slow
def test_a_mistake_under_torchrun_is_said_once(tmp_path: Path, char_dataset: Path):
    args = [f"--data_dir={char_dataset}", *TINY, f"--out_dir={tmp_path / 'o'}", "--backend=nccl"]
    proc = run_entry("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args, check=False)
    assert proc.returncode != 0 and proc.stderr.count("error: ") == 1 and "error: --backend=nccl connects CUDA GPUs" in proc.stderr, proc.stderr
    assert "gptsuite" not in proc.stderr and 'train.py", line' not in proc.stderr  # no traceback of ours (torchrun prints its own summary)


def test_the_start_line_of_a_cpu_torchrun_run_says_processes_and_where_wandb_logs(capsys):
    from train import describe_run

    cfg = train_config(dataset="podcasts_char", wandb_log=True, wandb_project="shakespeare-char", wandb_run_name="mini-gpt", block_size=16)
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=16))
    describe_run(cfg, Runtime("cpu", "cpu", "float32", distributed=True, world_size=2), model, False, "64 tokens per iteration")
    out = capsys.readouterr().out
    assert "memory per process (estimate for 2 cpu processes: " in out and "GPU" not in out, out
    assert "wandb: project 'shakespeare-char', run 'mini-gpt', on podcasts_char; --wandb_project and --wandb_run_name change them" in out


def test_accumulation_steps_must_divide_across_ranks(tmp_path: Path):
    rt = Runtime("cpu", "cpu", "float32", distributed=True, rank=0, world_size=4)
    with pytest.raises(UserError, match="gradient_accumulation_steps=6 .* multiple of 4"):
        train(train_config(gradient_accumulation_steps=6, out_dir=str(tmp_path)), rt)


def test_mixed_precision_training_on_cpu(tmp_path: Path, char_dataset: Path):
    """bf16 autocast, and fp16 with a gradient scaler whose state goes into the checkpoint."""
    for dtype in ("float32", "bfloat16", "float16"):
        main([f"--data_dir={char_dataset}", *TINY, "--gradient_accumulation_steps=1", f"--out_dir={tmp_path / dtype}", f"--dtype={dtype}"])
    full = metrics(tmp_path / "float32")
    for dtype in ("bfloat16", "float16"):
        half = metrics(tmp_path / dtype)
        assert half[-1]["val_loss"] < half[0]["val_loss"] - 0.15  # it learns
        assert half[-1]["val_loss"] == pytest.approx(full[-1]["val_loss"], abs=0.05)
        assert half[-1]["val_loss"] != full[-1]["val_loss"]  # and really ran in lower precision
        ckpt = load_checkpoint(tmp_path / dtype)
        assert all(v.dtype == torch.float32 for v in ckpt["model"].values())  # autocast keeps fp32 weights
    assert load_checkpoint(tmp_path / "float16")["scaler"]["scale"] > 0
    assert load_checkpoint(tmp_path / "bfloat16")["scaler"] == {}  # no loss scaling needed: a disabled scaler saves nothing


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_compile_flag_trains_the_same_on_cpu(tmp_path: Path, char_dataset: Path, arch: str):
    args = [f"--data_dir={char_dataset}", *TINY, "--gradient_accumulation_steps=1", f"--arch={arch}"]
    main([*args, f"--out_dir={tmp_path / 'eager'}"])
    main([*args, f"--out_dir={tmp_path / 'compiled'}", "--compile=True"])
    eager, compiled = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    assert compiled[-1]["val_loss"] == pytest.approx(eager[-1]["val_loss"], abs=1e-3)
    assert not any(k.startswith("_orig_mod.") for k in torch.load(tmp_path / "compiled" / "ckpt.pt", weights_only=True)["model"])


def sdpa_ops(model: GPT, x: torch.Tensor) -> set[str]:
    """The attention kernels that forward + backward actually ran, from the profiler."""
    with torch.profiler.profile() as prof:
        _, loss = model(x, x)
        loss.backward()
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name and e.name != "aten::scaled_dot_product_attention"}


def test_sdpa_runs_a_fused_kernel_on_cpu():
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32))
    ops = sdpa_ops(model, torch.randint(0, 65, (2, 16)))
    assert ops and all("flash_attention" in op for op in ops), ops  # not the unfused math fallback


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sdpa_picks_a_fused_kernel_on_cuda():
    """flash, memory-efficient or cuDNN attention (torch may pick cuDNN's on recent GPUs): not the math fallback."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = GPT(GPTConfig(block_size=256, vocab_size=512, n_layer=2, n_head=4, n_embd=256)).cuda()
    x = torch.randint(0, 512, (4, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16 if native_bf16("cuda:0") else torch.float16):
        ops = sdpa_ops(model, x)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):  # raises if none can run
            model(x, x)[1].backward()
    assert ops and all(any(k in op for k in ("flash", "efficient", "cudnn")) for op in ops), ops


def test_a_worker_takes_its_local_rank_among_the_gpus_it_sees():
    from gptsuite.runtime import rank_device

    assert [rank_device(r, 8) for r in (0, 3, 7)] == ["cuda:0", "cuda:3", "cuda:7"]  # one node, every GPU visible to all
    assert [rank_device(r, 1) for r in (0, 3, 7)] == ["cuda:0"] * 3  # one GPU visible to each process
    assert rank_device(5, 4) == "cuda:1"  # 4 visible, LOCAL_RANK 5 (two groups of workers on a node)


def test_a_bare_cuda_is_the_current_device(monkeypatch):
    """--device=cuda after torch.cuda.set_device(1) runs on cuda:1, the device bare .cuda() calls
    and capability checks see, not cuda:0. torch.cuda's answers are stood in for: no GPU is used."""
    from gptsuite import runtime

    current, chosen = [1], []
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(runtime, "seed_everything", lambda seed: None)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", torch.backends.cuda.matmul.allow_tf32)  # restored after
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    assert setup_runtime("cuda", "float32").device == "cuda:1" and chosen == ["cuda:1"]
    assert setup_runtime("cuda:0", "float32").device == "cuda:0"  # a number given is kept
    current[0] = 0
    assert setup_runtime("cuda", "float32").device == "cuda:0"


def test_fsdp_refuses_float16_under_torchrun():
    from gptsuite.parallel import ParallelConfig, check_parallel

    fsdp, ddp = ParallelConfig(parallel="fsdp"), ParallelConfig(parallel="ddp")
    with pytest.raises(UserError, match="^parallel=fsdp: float16 needs a loss scaler"):
        check_parallel(fsdp, Runtime("cuda:0", "cuda", "float16", distributed=True, world_size=2))
    for dtype in ("bfloat16", "float32"):
        check_parallel(fsdp, Runtime("cuda:0", "cuda", dtype, distributed=True, world_size=2))
    check_parallel(ddp, Runtime("cuda:0", "cuda", "float16", distributed=True, world_size=2))  # DDP keeps its GradScaler


def test_ddp_reduces_gradients_on_the_last_micro_step_only():
    """Every micro-step but the last runs under DDP's no_sync (nothing reduced); a model that is
    not DDP-wrapped (one process, or FSDP, which reduce-scatters every micro-step) has no such context."""
    from torch.nn.parallel import DistributedDataParallel

    from gptsuite.parallel import accumulating

    no_sync = contextlib.nullcontext("no_sync")

    class DDPStandIn(DistributedDataParallel):
        def __init__(self):
            torch.nn.Module.__init__(self)  # no process group: only the type and no_sync matter here

        def no_sync(self):
            return no_sync

    ddp = DDPStandIn()
    assert accumulating(ddp, last=False) is no_sync
    assert accumulating(ddp, last=True) is not no_sync
    with accumulating(ddp, last=True) as ctx:
        assert ctx is None  # a nullcontext: this backward all-reduces
    plain = torch.nn.Linear(2, 2)
    assert all(accumulating(plain, last) is not no_sync for last in (False, True))


def test_fsdp_starts_every_rank_from_rank_0s_weights(monkeypatch):
    """Each rank initialized its own copy (seeded seed + rank): shard() sends rank 0's parameters
    and buffers to all before sharding, as DDP does. The collectives are stood in for."""
    import torch.distributed.fsdp as fsdp

    from gptsuite.parallel import shard

    events = []
    monkeypatch.setattr(torch.distributed, "broadcast", lambda t, src: events.append(("broadcast", t, src)))
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kw: events.append(("shard", module, None)))
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    shard(model, Runtime("cpu", "cpu", "float32", distributed=True, world_size=2), compile_blocks=False, activation_checkpointing=False)
    first_shard = next(i for i, e in enumerate(events) if e[0] == "shard")
    sent = [id(t) for kind, t, src in events[:first_shard] if kind == "broadcast" and src == 0]
    assert sorted(sent) == sorted(id(t) for t in [*model.parameters(), *model.buffers()])
    assert [m for kind, m, _ in events if kind == "shard"] == [*model.transformer.h, model]  # each block, then the root


def test_fsdp_compiles_each_block_and_what_follows_the_blocks(monkeypatch):
    """Under FSDP with compile on: each block, and the final norm, head and loss (a function of its
    own, which the root's forward calls), not the root's forward, which FSDP's hooks break up.
    The compile and the collectives are stood in for; the model computes what it did before."""
    import torch.distributed.fsdp as fsdp

    from gptsuite.parallel import shard

    compiled = []
    monkeypatch.setattr(torch.distributed, "broadcast", lambda t, src: None)
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kw: None)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: compiled.append(self))
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    x, y = torch.randint(0, 32, (2, 8)), torch.randint(0, 32, (2, 8))
    eager = model(x, y)[1]
    shard(model, Runtime("cpu", "cpu", "float32", distributed=True, world_size=2), compile_blocks=True, activation_checkpointing=False)
    assert compiled[:2] == list(model.transformer.h) and len(compiled) == 3
    assert compiled[2].__func__ is GPT.logits_and_loss and compiled[2].__self__ is model and model.logits_and_loss is compiled[2]
    assert torch.equal(model(x, y)[1], eager)


def fake_mps(monkeypatch, state: list) -> None:
    """This machine has no MPS: pretend it does, its generator a tensor in `state`."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: state[0].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda t: state.__setitem__(0, t.clone()))


def test_the_mps_generator_is_saved_and_restored_on_mps(monkeypatch):
    from gptsuite.checkpoint import rng_state, set_rng_state

    mps = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    fake_mps(monkeypatch, mps)
    saved = rng_state("mps")
    assert torch.equal(saved["mps"], torch.tensor([1, 2, 3], dtype=torch.uint8)) and "mps" not in rng_state("cpu")
    mps[0] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # the run draws on
    set_rng_state(saved, "mps")
    assert mps[0].tolist() == [1, 2, 3]
    set_rng_state(rng_state("cpu"), "mps")  # a checkpoint from a CPU run has none: MPS keeps its state
    assert mps[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mps_takes_half_precision_autocast_on_new_torch(monkeypatch, dtype: str):
    from gptsuite.runtime import resolve_dtype

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: True)
    assert resolve_dtype(dtype, "mps") == dtype and resolve_dtype("auto", "mps") == "float32"
    monkeypatch.setattr(torch, "__version__", "2.4.1")
    with pytest.raises(UserError, match=f"--dtype={dtype} autocast on MPS needs torch 2.5 or newer"):
        resolve_dtype(dtype, "mps")
    monkeypatch.setattr(torch, "__version__", "2.5.0")
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)  # a Mac before macOS 14: fp16 only
    assert resolve_dtype("float16", "mps") == "float16"
    with pytest.raises(UserError, match="macOS 14"):
        resolve_dtype("bfloat16", "mps")


@pytest.mark.parametrize("rank", [0, 1])
def test_the_token_files_are_scanned_by_rank_0_only_and_its_verdict_raised_everywhere(monkeypatch, char_dataset: Path, rank: int):
    import numpy as np

    import gptsuite.batches as batches
    from gptsuite.batches import DataConfig, check_model_fits_data, open_training_data
    from gptsuite.datafiles import check_token_ids

    data = open_training_data(DataConfig(data_dir=str(char_dataset)), 16)
    vocab = data.tokenizer["vocab_size"]
    (char_dataset / "val.bin").write_bytes(np.array([0, 1, 500] * 20, dtype=np.uint16).tobytes())  # an id past the characters
    scanned, sent = [], []
    monkeypatch.setattr(batches, "check_token_ids", lambda *a: scanned.append(a[2]) or check_token_ids(*a))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
    verdict = f"{char_dataset / 'val.bin'} holds token id 500, but the vocabulary has {vocab} ids; the file is corrupt or from another tokenizer: prepare the dataset again"

    def broadcast(objects, src):  # rank 0 sends what it found; the others receive it
        sent.append(objects[0])
        if rank:
            objects[0] = verdict

    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast)
    with pytest.raises(UserError) as e:
        check_model_fits_data(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16, vocab_size=vocab)), 16, data)
    assert str(e.value) == verdict
    assert (scanned, sent) == (([char_dataset / "train.bin", char_dataset / "val.bin"], [verdict]) if rank == 0 else ([], [None]))
