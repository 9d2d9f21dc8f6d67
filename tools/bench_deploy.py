"""
Benchmark where a model will run on CPUs: this project's own decoding from fp32, bf16, int8 and
int4 weights (--weights, gptsuite/weights.py) against llama.cpp (through llama-cpp-python) from the
f16, q8_0 and q4_0 GGUF files export.py --to=gguf writes, on one model, back to back.

    python -m tools.bench_deploy                                   # GPT-2 124M's shape, random weights
    python -m tools.bench_deploy --out_dir=out-chat                # a trained GPT-2 BPE run
    python -m tools.bench_deploy --batch_sizes=(1,4) --price_per_vcpu_hour=0.05

What it measures, in order:
1. Greedy agreement: --prompts prompts (--prompt_tokens each, from the data's val.bin) continued
   by --greedy_tokens tokens, ours (fp32) against llama.cpp's own greedy sampler per file:
   prompts equal token for token, and where the first difference falls.
2. Perplexity on the first --eval_tokens tokens of val.bin, in eval.py's windows (--stride tokens
   scored per window of the model's context): ours (gptsuite/evaluation.py) per --weights, and
   llama.cpp's logits per file (gptsuite/llamacpp.score); each one's ratio to fp32's.
3. Decode speed and memory, each variant in a process of its own (so its peak RSS is its own):
   tokens/s after the prompt at each of --batch_sizes sequences decoded together (ours: one
   batch through the KV cache; llama.cpp: one llama_decode of a token per sequence, as
   llama-server batches concurrent requests), the process's peak RSS, and what a million tokens
   cost at --price_per_vcpu_hour for the machine's vCPUs.
Random weights (no --out_dir) have their position embeddings scaled up (--spread) so greedy
continuations change token at every step; a random GPT-2's otherwise repeat one token.
CPU numbers move with load: the tool prints `uptime`'s load average; run it on a quiet machine.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from configurator import option, parse_config, part, print_config
from gptsuite.checkpoint import save_checkpoint
from gptsuite.errors import UserError, cli
from gptsuite.evaluation import evaluate, token_byte_lengths
from gptsuite.gguf_export import export_gguf
from gptsuite.llamacpp import greedy, llama_cpp, open_gguf, score
from gptsuite.loading import load_model
from gptsuite.runtime import setup_runtime
from gptsuite.tokenizer import GPT2_META, GPT2_VOCAB_SIZE, GPT2Tokenizer
from gptsuite.weights import COMPILED, WEIGHTS, use_weights
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
QUANTS = ("f16", "q8_0", "q4_0")


@dataclass
class BenchDeployConfig:
    out_dir: str = ""  # a trained GPT-2 BPE run to measure instead of a random model of the shape below
    model: GPTConfig = part(GPTConfig, hide=("dropout", "vocab_size", "arch"), bias=True)  # GPT-2 124M's by default
    spread: float = option(30.0, gt=0)  # random weights: position embeddings times this, so greedy continuations vary
    data_dir: str = "data/shakespeare"  # a GPT-2 BPE dataset (python prepare.py shakespeare) whose val.bin gives prompts and the perplexity text
    prompts: int = option(20, gt=0)
    prompt_tokens: int = option(16, gt=0)
    greedy_tokens: int = option(64, gt=0)
    eval_tokens: int = option(4096, gt=1)
    stride: int = option(512, gt=0)
    new_tokens: int = option(64, gt=1)  # tokens decoded per speed measurement
    batch_sizes: tuple = (1, 4, 8)
    price_per_vcpu_hour: float = option(0.045, ge=0)  # USD; on-demand compute-optimized x86 instances cost about this per vCPU
    work_dir: str = ""  # where the checkpoint and GGUF files go (default: a temporary folder, removed after)
    seed: int = option(1337, ge=0)
    measure: str = ""  # internal: measure one variant's speed in this process and print it as JSON


def ours_rate(model: GPT, batch: int, prompt_tokens: int, new_tokens: int) -> float:
    """Decode tokens/s of our KV-cache loop after the prompt, `batch` sequences together."""
    x = torch.randint(0, GPT2_VOCAB_SIZE, (batch, prompt_tokens))
    with torch.no_grad():
        steps = model.generate_stream(x, new_tokens, temperature=0, vocab_limit=GPT2_VOCAB_SIZE)
        next(steps)  # the prompt's pass and the first token
        t0 = time.perf_counter()
        for _ in steps:
            pass
    return batch * (new_tokens - 1) / (time.perf_counter() - t0)


def llama_rate(llm, batch: int, prompt_tokens: int, new_tokens: int, n_threads: int) -> float:
    """Decode tokens/s of llama.cpp after the prompt, `batch` sequences in one llama_decode per
    step (a context of its own with a sequence each, as llama-server's parallel slots)."""
    lc = llama_cpp()
    params = lc.llama_context_default_params()
    params.n_ctx = batch * (prompt_tokens + new_tokens) + 256
    params.n_batch = params.n_ubatch = max(512, batch * prompt_tokens)
    params.n_seq_max, params.kv_unified = batch, True
    params.n_threads = params.n_threads_batch = n_threads
    ctx = lc.llama_init_from_model(llm.model, params)
    b = lc.llama_batch_init(batch * prompt_tokens, 0, batch)
    vocab = llm.n_vocab()

    def step(items: list[tuple[int, int, int, bool]]) -> list[int]:
        b.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        if lc.llama_decode(ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        rows = [i for i, item in enumerate(items) if item[3]]
        return [int(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(vocab,)).argmax()) for i in rows]

    try:
        prompts = np.random.default_rng(0).integers(0, GPT2_VOCAB_SIZE, (batch, prompt_tokens)).tolist()
        tokens = step([(t, j, s, j == prompt_tokens - 1) for s in range(batch) for j, t in enumerate(prompts[s])])
        t0 = time.perf_counter()
        for k in range(new_tokens - 1):
            tokens = step([(tokens[s], prompt_tokens + k, s, True) for s in range(batch)])
        return batch * (new_tokens - 1) / (time.perf_counter() - t0)
    finally:
        lc.llama_batch_free(b)
        lc.llama_free(ctx)


def measure(cfg: BenchDeployConfig) -> dict:
    """One variant ('ours:bf16', 'llama:q8_0') loaded as a user loads it, its rate at each batch size."""
    kind, what = cfg.measure.split(":")
    work = Path(cfg.work_dir)
    rates, before = {}, rss()
    if kind == "ours":
        model = use_weights(load_model("resume", str(work / "out")).model, what)
        if what in COMPILED:  # as the page runs them (gptsuite/weights.py)
            model.compile()
            for batch in cfg.batch_sizes:
                ours_rate(model, batch, cfg.prompt_tokens, cfg.new_tokens)  # compiles for these shapes
        for batch in cfg.batch_sizes:
            rates[batch] = ours_rate(model, batch, cfg.prompt_tokens, cfg.new_tokens)
    else:
        llm = open_gguf(work / what / f"model.{what}.gguf")
        for batch in cfg.batch_sizes:
            rates[batch] = llama_rate(llm, batch, cfg.prompt_tokens, cfg.new_tokens, torch.get_num_threads())
    return {"rates": rates, "peak_rss": peak_rss(), "rss_before": before, "rss_after": rss()}


def peak_rss() -> int:
    """This process's peak resident memory: /proc's VmHWM (getrusage's ru_maxrss carries the parent's over exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(li for li in status.read_text().splitlines() if li.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def random_model(cfg: BenchDeployConfig) -> GPT:
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(**{**cfg.model.__dict__, "vocab_size": 50304, "arch": "gpt2"})).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(cfg.spread)
    return model


@torch.no_grad()
def margin(model: GPT, ids: list[int]) -> float:
    """Our logit gap between the first and second choice after ids: how near a tie the step was."""
    top = model(torch.tensor([ids]))[0][0, -1, :GPT2_VOCAB_SIZE].topk(2).values
    return float(top[0] - top[1])


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchDeployConfig(), argv)
    if cfg.measure:
        print(json.dumps(measure(cfg)))
        return
    print_config(cfg)
    val = Path(cfg.data_dir) / "val.bin"
    if not val.is_file():
        raise UserError(f"no {val}; prepare a GPT-2 BPE dataset first (python prepare.py shakespeare) or pass --data_dir")
    data = np.fromfile(val, dtype=np.uint16)[: cfg.eval_tokens].astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(cfg.work_dir or tmp)
        cfg.work_dir = str(work)
        if cfg.out_dir:
            loaded = load_model("resume", cfg.out_dir)
            model, tok_meta, chat_template = loaded.model, loaded.tokenizer, loaded.chat_template
            save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": tok_meta}, work / "out" / "ckpt.pt")
        else:
            model, tok_meta, chat_template = random_model(cfg), dict(GPT2_META), None
            save_checkpoint({"model": model.state_dict(), "model_args": model.model_args(), "tokenizer": tok_meta}, work / "out" / "ckpt.pt")
        files = {q: export_gguf(model, tok_meta, work / q, q, "bench", chat_template) for q in QUANTS}
        run(cfg, model, data, files)


def load_line() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores ({time.strftime('%H:%M:%S')})"


def run(cfg: BenchDeployConfig, model: GPT, data: np.ndarray, files: dict) -> None:
    block = model.config.block_size
    print(f"{model.get_num_params(non_embedding=False) / 1e6:.1f}M parameters, context {block}; {load_line()}", flush=True)

    rng = np.random.default_rng(cfg.seed)
    starts = rng.integers(0, len(data) - cfg.prompt_tokens, cfg.prompts)
    prompts = [data[s : s + cfg.prompt_tokens].tolist() for s in starts]
    with torch.no_grad():
        ours = model.generate(torch.tensor(prompts), cfg.greedy_tokens, temperature=0, vocab_limit=GPT2_VOCAB_SIZE)[:, cfg.prompt_tokens :].tolist()
    distinct = np.mean([len(set(row)) for row in ours])
    print(f"\ngreedy: {cfg.prompts} prompts x {cfg.greedy_tokens} tokens, ours fp32 against llama.cpp (ours: {distinct:.0f} distinct tokens a continuation)")
    for q, path in files.items():
        llm = open_gguf(path)
        firsts = [first_difference(greedy(llm, p, cfg.greedy_tokens), row) for p, row in zip(prompts, ours, strict=True)]
        differ = sorted((f, margin(model, p + row[:f])) for f, p, row in zip(firsts, prompts, ours, strict=True) if f is not None)
        where = "; first differences at tokens " + ", ".join(f"{f} (our top-2 logit gap there {m:.3f})" for f, m in differ) if differ else ""
        print(f"  {q}: {firsts.count(None)}/{cfg.prompts} equal token for token{where}  ({load_line()})", flush=True)

    tok = GPT2Tokenizer()
    rt = setup_runtime("cpu", "float32", cfg.seed)
    ppl = {}
    for w in WEIGHTS:
        m = use_weights(load_model("resume", str(Path(cfg.work_dir) / "out")).model, w)
        ppl[f"ours {w}"] = evaluate(m, data, block, cfg.stride, 4, rt, token_byte_lengths(tok), GPT2_VOCAB_SIZE).perplexity
    for q, path in files.items():
        nats, n = score(open_gguf(path, n_ctx=block, logits_all=True), data, block, cfg.stride)
        ppl[f"llama.cpp {q}"] = float(np.exp(nats / n))
    print(f"\nperplexity on {len(data)} tokens of {cfg.data_dir}/val.bin (context {block}, stride {cfg.stride}), ratio to ours fp32:")
    for name, p in ppl.items():
        print(f"  {name}: {p:.4f} ({p / ppl['ours fp32']:.5f})")

    sizes = {"ours fp32": 4, "ours bf16": 2}
    n_params = model.get_num_params(non_embedding=False)
    rows = []
    for variant in [*(f"ours:{w}" for w in WEIGHTS), *(f"llama:{q}" for q in files)]:
        args = [f"--{k}={v}" for k, v in (("work_dir", cfg.work_dir), ("measure", variant), ("batch_sizes", cfg.batch_sizes))]
        args += [f"--prompt_tokens={cfg.prompt_tokens}", f"--new_tokens={cfg.new_tokens}", f"--data_dir={cfg.data_dir}"]
        before = load_line()
        proc = subprocess.run([sys.executable, "-m", "tools.bench_deploy", *args], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"measuring {variant} failed: {proc.stderr.strip().splitlines()[-1:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        kind, what = variant.split(":")
        name = f"{'ours' if kind == 'ours' else 'llama.cpp'} {what}"
        size = files[what].stat().st_size if kind == "llama" else sizes.get(name, 0) * n_params or None
        rows.append((name, result, size, before))
        print(f"  measured {name}: {result['rates']}  ({before})", flush=True)
    vcpus = os.cpu_count() or 1
    print(
        f"\ndecode tokens/s after a {cfg.prompt_tokens}-token prompt, {cfg.new_tokens} tokens, at each batch (concurrent sequences); cost per million tokens at ${cfg.price_per_vcpu_hour}/vCPU-hour x {vcpus} vCPUs:"
    )
    heads = " | ".join(f"batch {b} tok/s" for b in cfg.batch_sizes)
    print(f"| weights | {heads} | peak RSS | file | perplexity ratio | $ / M tokens (batch 1, batch {cfg.batch_sizes[-1]}) |")
    print("| --- |" + " ---: |" * (len(cfg.batch_sizes) + 4))
    for name, result, size, _ in rows:
        rates = [result["rates"][str(b)] for b in cfg.batch_sizes]
        cost = [cfg.price_per_vcpu_hour * vcpus / (r * 3600) * 1e6 for r in (rates[0], rates[-1])]
        file = f"{size / 2**20:,.0f} MB" if size else "-"
        print(
            f"| {name} | {' | '.join(f'{r:,.1f}' for r in rates)} | {result['peak_rss'] / 2**20:,.0f} MB | {file} | {ppl[name] / ppl['ours fp32']:.4f} | {cost[0]:.2f}, {cost[1]:.2f} |"
        )
    print(f"\n{load_line()}")


if __name__ == "__main__":
    cli(main)
