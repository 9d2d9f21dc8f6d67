"""The GPU and MPS paths, checked on a CPU: GPUs the driver describes (monkeypatched), float16
with a GradScaler and fused AdamW, the host syncs per training step and per decoded token.
The tests marked gpu run the same paths on a real GPU (pytest -m gpu)."""

import math
import socket
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import TINY_MODEL_ARGS, train_step
from gptsuite import runtime
from gptsuite import tokenizer as tokenizers
from gptsuite.checkpoint import rng_state, set_rng_state
from gptsuite.datafiles import load_meta
from gptsuite.errors import UserError
from gptsuite.evaluation import evaluate
from gptsuite.generate import generate_texts
from gptsuite.objectives import MicroBatches, Objective, Stepper
from gptsuite.optim import OptimConfig, build_optimizer
from gptsuite.runtime import Runtime, setup_runtime, teardown_runtime
from gptsuite.settings import TrainConfig
from hostsync import HostSyncs
from model import GPT, GPTConfig
from train import main, train

# what torch.cuda reports for each GPU: name, compute capability; what a run on it should use:
# dtype=auto's choice and the vendor's dense peak TFLOPS at that precision
GPUS = [
    ("Tesla T4", (7, 5), "float16", 65.0),
    ("Tesla V100-SXM2-16GB", (7, 0), "float16", 125.0),
    ("NVIDIA GeForce RTX 2080 Ti", (7, 5), "float16", None),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bfloat16", 312.0),
    ("NVIDIA H100 PCIe", (9, 0), "bfloat16", 756.0),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bfloat16", 989.0),  # SXM
    ("NVIDIA H100 NVL", (9, 0), "bfloat16", 835.0),
    ("NVIDIA H200 NVL", (9, 0), "bfloat16", 835.0),
    ("NVIDIA L4", (8, 9), "bfloat16", 121.0),
]


class FakeGPUs:
    """torch.cuda as a machine with these GPUs shows it: torch.cuda.is_bf16_supported() says yes
    for all of them, as PyTorch 2.13 does for GPUs that only emulate bfloat16."""

    def __init__(self, monkeypatch, gpus: list[tuple[str, tuple[int, int]]]):
        self.gpus, self.current, self.set_calls, self.synced = gpus, 0, [], []
        index = lambda d=None: self.current if d is None or torch.device(d).index is None else torch.device(d).index  # noqa: E731
        for name, fn in {
            "is_available": lambda: True,
            "device_count": lambda: len(gpus),
            "current_device": lambda: self.current,
            "get_device_name": lambda d=None: gpus[index(d)][0],
            "get_device_capability": lambda d=None: gpus[index(d)][1],
            "is_bf16_supported": lambda including_emulation=True: True,
            "set_device": self._set_device,
            "synchronize": lambda d=None: self.synced.append(str(d)),
        }.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def _set_device(self, device) -> None:
        self.set_calls.append(str(device))
        self.current = torch.device(device).index


@pytest.fixture(autouse=True)
def keep_tf32():
    """setup_runtime turns TF32 on for CUDA runs: give the settings back afterwards (by hand:
    monkeypatch cannot restore these properties under every pytest)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize("name, capability, dtype, peak", GPUS, ids=[g[0] for g in GPUS])
def test_the_gpu_in_use_decides_dtype_and_peak(monkeypatch, name, capability, dtype, peak):
    """GPU 1 is this one; GPU 0 is of the other kind, so looking at the wrong GPU gives the wrong answer."""
    other = ("NVIDIA A100-SXM4-80GB", (8, 0)) if capability < (8, 0) else ("Tesla T4", (7, 5))
    gpus = FakeGPUs(monkeypatch, [other, (name, capability)])
    rt = setup_runtime("cuda:1", "auto")
    assert (rt.device, rt.dtype) == ("cuda:1", dtype)
    assert gpus.set_calls == ["cuda:1"]  # the current device: bare .cuda() calls and torch's own checks see GPU 1
    assert rt.peak_flops() == (peak * 1e12 if peak else None)
    rt.synchronize()
    assert gpus.synced == ["cuda:1"]  # timers wait for the GPU that does the work

    if capability < (8, 0):
        with pytest.raises(UserError) as e:
            setup_runtime("cuda:1", "bfloat16")
        msg = str(e.value)
        assert name in msg and f"{capability[0]}.{capability[1]}" in msg and "--dtype=float16" in msg and "\n" not in msg
    else:
        assert setup_runtime("cuda:1", "bfloat16").dtype == "bfloat16"
    assert setup_runtime("cuda:1", "float16").dtype == "float16"


def test_bare_cuda_is_the_current_gpu(monkeypatch):
    gpus = FakeGPUs(monkeypatch, [("Tesla T4", (7, 5)), ("NVIDIA L4", (8, 9))])
    rt = setup_runtime("cuda", "auto")
    assert (rt.device, rt.dtype, gpus.set_calls) == ("cuda:0", "float16", ["cuda:0"])
    with pytest.raises(UserError, match="cuda:2.*2 CUDA device"):
        setup_runtime("cuda:2", "auto")
    with pytest.raises(UserError, match="cuda:N"):
        setup_runtime("cuda:x", "auto")


# float16 with a GradScaler and fused AdamW: what a T4 runs, on the CPU's fused AdamW kernel

CPU_FP16 = Runtime("cpu", "cpu", "float16")


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=32, n_layer=1, n_head=2, n_embd=16))


def batch(seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 32, (2, 8), generator=g)
    return x, x.roll(-1, 1)


def test_float16_overflow_with_fused_adamw_skips_the_update_and_lowers_the_scale():
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(), "cpu")
    assert optimizer.defaults["fused"]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    ok = train_step(model, optimizer, scaler, [batch(1), batch(2)], 1, 1.0, CPU_FP16)[0].stepped
    assert ok and scaler.get_scale() == 2.0**16  # a good step: the Adam state exists now
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    adam = {(i, k): v.clone() for i, s in optimizer.state_dict()["state"].items() for k, v in s.items()}

    handle = model.lm_head.weight.register_hook(lambda g: g * math.inf)  # the scaled gradient overflows
    result = train_step(model, optimizer, scaler, [batch(3), batch(4)], 1, 1.0, CPU_FP16)[0]
    loss, ok = result.loss, result.stepped
    handle.remove()
    assert math.isfinite(loss) and ok  # a finite loss: not a bad step for the NaN guard
    assert scaler.get_scale() == 2.0**15  # the scaler lowered its scale
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k  # and the fused kernel skipped the update
    for (i, k), v in adam.items():
        assert torch.equal(optimizer.state_dict()["state"][i][k], v), (i, k)


def test_a_bad_float16_step_keeps_the_loss_scale():
    """A non-finite loss is the NaN guard's: the scale it saves is the one from before."""
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(), "cpu")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    train_step(model, optimizer, scaler, [batch(1), batch(2)], 1, 1.0, CPU_FP16)
    before = scaler.state_dict()
    forward = model.forward
    model.forward = lambda x, y: (None, forward(x, y)[1] * math.nan)
    ok = train_step(model, optimizer, scaler, [batch(3), batch(4)], 1, 1.0, CPU_FP16)[0].stepped
    assert not ok and scaler.state_dict() == before


# host syncs: one read of the device per training step and per decoded token, no uploads


def per_step(run, n: int) -> tuple[Counter, Counter]:
    """Reads and uploads per step: a run of 2n steps minus a run of n (evals and saves cancel out)."""
    counts = []
    for steps in (n, 2 * n):
        with HostSyncs() as syncs:
            run(steps)
        counts.append((Counter(syncs.reads), Counter(syncs.uploads)))
    (r1, u1), (r2, u2) = counts
    return Counter({k: v / n for k, v in (r2 - r1).items()}), Counter({k: v / n for k, v in (u2 - u1).items()})


@pytest.fixture
def one_rank_group(monkeypatch):
    """A process group of one (gloo), so that the DDP branches run in this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("variant", [[], ["--dtype=float16"], ["--dtype=bfloat16", "--arch=modern", "--optimizer=muon"], "ddp"])
def test_one_read_of_the_device_per_training_step(tmp_path: Path, char_dataset: Path, variant, request):
    if variant == "ddp":
        request.getfixturevalue("one_rank_group")
        variant = ["--backend=gloo"]
    args = [f"--data_dir={char_dataset}", *TINY_MODEL_ARGS, "--gradient_accumulation_steps=2", "--eval_iters=1", "--eval_interval=1000"]
    args += ["--lr_decay_iters=1000", "--log_interval=1", "--checkpoint_minutes=60", *variant]

    def run(steps: int) -> None:
        from configurator import parse_config

        cfg = parse_config(TrainConfig(), [*args, f"--out_dir={tmp_path / str(steps)}", f"--max_iters={steps}"])
        rt = setup_runtime(cfg.system.device, cfg.system.dtype, cfg.system.seed, cfg.system.backend)
        try:
            train(cfg, rt)
        finally:
            teardown_runtime(rt)

    reads, uploads = per_step(run, 3)
    assert sum(reads.values()) == 1, reads  # the step's agreement: loss, NaN guard, stop signal, clock
    assert not uploads, uploads


@pytest.mark.parametrize(
    "sampling", [dict(temperature=0.8, top_k=5, top_p=None), dict(temperature=0.8, top_k=5, top_p=0.9), dict(temperature=0, top_k=None, top_p=None)]
)
def test_one_read_of_the_device_per_decoded_token(char_dataset: Path, sampling: dict):
    tok = tokenizers.from_meta(load_meta(char_dataset)["tokenizer"])
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()

    def run(tokens: int) -> None:
        cfg = SimpleNamespace(stop_at_eot=True, stop="", max_new_tokens=tokens, use_cache=True, **sampling)
        with torch.no_grad():
            generate_texts(model, tok, tok.encode("First"), 2, cfg, "cpu")

    reads, uploads = per_step(run, 8)
    assert sum(reads.values()) == 1, reads  # the new tokens, for the stop rules and the stream
    assert not uploads, uploads


# eval on MPS: no float64 on the device


class NoFloat64(TorchFunctionMode):
    """Fails any torch call that makes or takes a float64 tensor, as MPS would."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in (*args, *(kwargs or {}).values(), out) if isinstance(t, torch.Tensor)]
        if any(t.dtype == torch.float64 for t in tensors) or (kwargs or {}).get("dtype") == torch.float64:
            raise TypeError(f"{getattr(func, '__name__', func)}: MPS has no float64")
        return out


def test_eval_accumulates_without_float64(char_dataset: Path):
    tok = tokenizers.from_meta(load_meta(char_dataset)["tokenizer"])
    data = np.fromfile(char_dataset / "val.bin", dtype=np.uint16)
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    lengths = np.ones(tok.vocab_size, dtype=np.int64)
    cpu = Runtime("cpu", "cpu", "float32")
    with NoFloat64():
        result = evaluate(model, data, 16, 8, 4, cpu, lengths, tok.vocab_size)
    # an independent sum in float64, window by window
    nats = 0.0
    with torch.no_grad():
        for s in range(1, len(data), 8):
            e = min(s + 8, len(data))
            a = max(0, e - 1 - 16)
            x = torch.from_numpy(data[a : e - 1].astype(np.int64))[None]
            logits = model(x, x)[0][0, -(e - s) :].double()  # the training forward: every position's logits
            nats += torch.nn.functional.cross_entropy(logits, torch.from_numpy(data[s:e].astype(np.int64)), reduction="sum").item()
    assert result.tokens == len(data) - 1
    assert result.nats == pytest.approx(nats, rel=1e-6)


# on a real GPU (pytest -m gpu)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_cuda_rng_round_trip():
    torch.cuda.manual_seed(1)
    torch.rand(3, device="cuda")
    state = rng_state("cuda:0")
    expected = torch.rand(5, device="cuda")
    torch.cuda.manual_seed(1)  # reseeded: the stream starts over, it does not continue
    assert not torch.equal(torch.rand(5, device="cuda"), expected)
    set_rng_state(state, "cuda:0")
    assert torch.equal(torch.rand(5, device="cuda"), expected)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.slow
def test_three_iterations_with_compile_on_cuda(tmp_path: Path, char_dataset: Path):
    """compile is on by default on CUDA; so is bf16 or fp16 by the GPU."""
    args = [a for a in TINY_MODEL_ARGS if not a.startswith(("--device", "--compile"))]
    main([f"--data_dir={char_dataset}", f"--out_dir={tmp_path}", *args, "--device=cuda", "--max_iters=3", "--eval_iters=1", "--eval_interval=3"])
    assert (tmp_path / "ckpt.pt").exists()


@pytest.mark.gpu
@needs_cuda
def test_float16_overflow_on_cuda():
    rt = Runtime("cuda:0", "cuda", "float16")
    model = tiny_model().cuda()
    optimizer = build_optimizer(model, OptimConfig(), "cuda")
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**16)
    on_gpu = lambda b: tuple(t.cuda() for t in b)  # noqa: E731
    train_step(model, optimizer, scaler, [on_gpu(batch(1)), on_gpu(batch(2))], 1, 1.0, rt)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    handle = model.lm_head.weight.register_hook(lambda g: g * math.inf)
    ok = train_step(model, optimizer, scaler, [on_gpu(batch(3)), on_gpu(batch(4))], 1, 1.0, rt)[0].stepped
    handle.remove()
    assert ok and scaler.get_scale() == 2.0**15
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


@pytest.mark.gpu
@needs_cuda
def test_cache_and_no_cache_greedy_agree_on_cuda():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32)).cuda().eval()
    x = torch.randint(0, 64, (2, 5), device="cuda")
    a = model.generate(x, 40, temperature=0, use_cache=True)
    b = model.generate(x, 40, temperature=0, use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.gpu
@needs_cuda
def test_syncs_per_step_and_per_token_on_cuda(tmp_path: Path, char_dataset: Path):
    """torch's sync debug mode warns at every sync: one per training step, one per decoded token."""
    rt = Runtime("cuda:0", "cuda", "bfloat16" if runtime.native_bf16("cuda:0") else "float16")
    model = tiny_model().cuda()
    optimizer = build_optimizer(model, OptimConfig(), "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=rt.dtype == "float16")
    micro = MicroBatches(iter([tuple(t.cuda() for t in batch(i)) for i in range(20)]))
    stepper = Stepper(model, Objective(), optimizer, scaler, 1, 1.0, rt)
    stepper.step(micro)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(4):
                stepper.step(micro)
            steps = len(caught)
            tok = tokenizers.from_meta(load_meta(char_dataset)["tokenizer"])
            cfg = SimpleNamespace(stop_at_eot=True, stop="", max_new_tokens=10, use_cache=True, temperature=0.8, top_k=5, top_p=0.9)
            gen = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)).cuda().eval()
            with torch.no_grad():
                generate_texts(gen, tok, tok.encode("First"), 2, cfg, "cuda:0")
            tokens = len(caught) - steps
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert steps == 4, [str(w.message) for w in caught]
    assert tokens <= 10 + 1, [str(w.message) for w in caught[steps:]]  # one per token (and the prompt's upload)
