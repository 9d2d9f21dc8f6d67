"""
Benchmark the playground page (serve.py) against sample.py on the same model: time to the first
token and tokens/s, then many clients at once.

    python -m tools.bench_serve --out_dir=out-shakespeare-char-small                 # the quickstart model
    python -m tools.bench_serve --out_dir=out-pubmed --start="We measured" --max_new_tokens=300
    python -m tools.bench_serve --out_dir=out-shakespeare-char-small --clients=8 --repeats=5

Both run as their users run them, in their own processes: `python sample.py --stream
--num_samples=1`, its stdout read as it comes (the prompt is printed just before generation
starts: the clock starts there), and `python serve.py` driven through gradio_client, the clock
started when the request is sent, so the page's time to first token includes the HTTP round trip
and the queue. tokens/s counts the tokens after the first over the time after it. The two
alternate, --repeats times each, and the medians are printed with their ratio. Then --clients
clients send a request each at the same moment: all must get a complete answer; the p50/p95 of
their latencies and the server's resident memory (before, and its peak while serving) are printed.
Run it on a quiet machine (uptime): on 2 cores another busy process slows both sides unevenly.
"""

import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from configurator import option, parse_config, print_config
from gptsuite.errors import UserError, cli

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n---------------"  # what sample.py prints after a sample


@dataclass
class BenchServeConfig:
    out_dir: str = "out-shakespeare-char-small"  # the training run whose model both serve
    start: str = "ROMEO:"  # the prompt
    max_new_tokens: int = option(500, gt=0)
    temperature: float = option(0.8, ge=0)
    top_k: int = option(200, gt=0)
    repeats: int = option(3, gt=0)  # timed generations per side
    clients: int = option(8, ge=0)  # clients at once in the load test; 0 skips it
    device: str = "cpu"


def per_second(tokens: int, seconds: float) -> float:
    """tokens/s, or nan when they all arrived in one read (too few tokens to time)."""
    return tokens / seconds if seconds > 0 else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def time_sample_py(cfg: BenchServeConfig, seed: int) -> tuple[float, float, float]:
    """(seconds to the first token from when the prompt is out, and from the command's start;
    tokens/s after it) of sample.py --stream, read from its stdout."""
    args = [f"--out_dir={cfg.out_dir}", f"--start={cfg.start}", "--num_samples=1", "--stream", f"--seed={seed}"]
    args += [f"--max_new_tokens={cfg.max_new_tokens}", f"--temperature={cfg.temperature}", f"--top_k={cfg.top_k}", f"--device={cfg.device}"]
    launch = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "sample.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    out, start, first, end = b"", None, None, None
    prompt = cfg.start.encode()
    while chunk := proc.stdout.read1(4096):
        now = time.perf_counter()
        out += chunk
        if start is None and len(out) >= len(prompt):
            start = now  # the prompt is out: generation starts
        if start is not None and first is None and len(out) > len(prompt):
            first = now
        if end is None and SEPARATOR.encode() in out:
            end = now
    if proc.wait() != 0 or None in (start, first, end):
        raise UserError(f"sample.py failed: {proc.stderr.read().decode(errors='replace').strip().splitlines()[-1:]}")
    return first - start, first - launch, per_second(cfg.max_new_tokens - 1, end - first)


def start_server(cfg: BenchServeConfig) -> tuple[subprocess.Popen, str]:
    args = [cfg.out_dir, "--port=0", f"--device={cfg.device}", f"--max_new_tokens_limit={cfg.max_new_tokens}", f"--queue_size={max(64, cfg.clients)}"]
    args += ["--weights=fp32"]  # the weights sample.py decodes from, so that the two sides compare like with like
    proc = subprocess.Popen([sys.executable, "serve.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("the playground is at "):
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.split()[4]
    raise UserError("serve.py did not start:\n" + "".join(lines))


def request(cfg: BenchServeConfig, seed: int) -> list:
    return [cfg.start, [cfg.out_dir], cfg.temperature, cfg.top_k, 1.0, cfg.max_new_tokens, seed, ""]


def time_page(cfg: BenchServeConfig, url: str, seed: int) -> tuple[float, float]:
    """(seconds to the first token, tokens/s after it) on the page, as a gradio_client sees it."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    start = time.perf_counter()
    job = client.submit(*request(cfg, seed), api_name="/generate")
    first = None
    for out in job:
        text = out[0]["value"] if isinstance(out[0], dict) else out[0]
        if first is None and text:
            first = time.perf_counter()
    end = time.perf_counter()
    stats = job.outputs()[-1][4]
    if f"{cfg.max_new_tokens} tokens" not in stats:
        raise UserError(f"the page did not write {cfg.max_new_tokens} tokens: {stats}")
    return first - start, per_second(cfg.max_new_tokens - 1, end - first)


def load_test(cfg: BenchServeConfig, url: str, pid: int) -> None:
    import psutil
    from gradio_client import Client

    server = psutil.Process(pid)
    before = server.memory_info().rss
    latencies, done, peak = [], [], before

    def one(i: int) -> None:
        client = Client(url, verbose=False)
        t0 = time.perf_counter()
        final = client.predict(*request(cfg, 100 + i), api_name="/generate")
        latencies.append(time.perf_counter() - t0)
        done.append(f"{cfg.max_new_tokens} tokens" in final[4])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(cfg.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, server.memory_info().rss)
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    print(
        f"{cfg.clients} clients at once: {sum(done)}/{cfg.clients} complete answers in {wall:.1f} s; latency p50 {statistics.median(latencies):.2f} s, p95 {q[-1]:.2f} s"
    )
    print(f"server memory (RSS): {before / 2**20:.0f} MB before, peak {peak / 2**20:.0f} MB while serving")


def main(argv: list[str]) -> None:
    cfg = parse_config(BenchServeConfig(), argv)
    print_config(cfg)
    if not Path(cfg.out_dir).is_dir():
        raise UserError(f"no training run at {cfg.out_dir}; train one first (python train.py config/train_shakespeare_char_small.py) or pass --out_dir")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    proc, url = start_server(cfg)
    try:
        time_page(cfg, url, 0)  # a warm-up request
        cli_runs, page_runs = [], []
        for r in range(cfg.repeats):
            cli_runs.append(time_sample_py(cfg, r))
            page_runs.append(time_page(cfg, url, r))
            (first, _, rate), (page_first, page_rate) = cli_runs[-1], page_runs[-1]
            print(f"  repeat {r + 1}: sample.py {first * 1e3:.0f} ms, {rate:.0f} tok/s; page {page_first * 1e3:.0f} ms, {page_rate:.0f} tok/s")
        cli_first, cli_cold, cli_rate = (statistics.median(x) for x in zip(*cli_runs, strict=True))
        page_first, page_rate = (statistics.median(x) for x in zip(*page_runs, strict=True))
        print(f"\n{cfg.out_dir}, {cfg.max_new_tokens} new tokens, medians of {cfg.repeats}:")
        print("| | first token, from the request | from the command | tokens/s |\n| --- | ---: | ---: | ---: |")
        print(f"| sample.py --stream | {cli_first * 1e3:.0f} ms (the prompt printed) | {cli_cold * 1e3:.0f} ms | {cli_rate:.0f} |")
        print(f"| the page (gradio_client) | {page_first * 1e3:.0f} ms | {page_first * 1e3:.0f} ms (loaded once) | {page_rate:.0f} |")
        print(f"| page / sample.py | {ratio(page_first, cli_first)} | {ratio(page_first, cli_cold)} | {ratio(page_rate, cli_rate)} |\n")
        if cfg.clients:
            load_test(cfg, url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    cli(main)
