"""
A local page to try models in a browser: write with up to four models side by side, chat with a
model tuned on conversations (its chat template, the same sampling and seeds), vote blind between
two models' answers in the Arena (every vote appended to --arena_file, a leaderboard), see which spans of a
sample occur in the training data, and watch the loss curves of runs as they train.

    python serve.py --out_dir=out-shakespeare-char-small            # then open the address it prints
    python serve.py out-pubmed gpt2 out-pubmed-scratch               # three models side by side
    python serve.py out-pubmed --max_new_tokens_limit=2000 --port=8000
    python serve.py out-pubmed --host=0.0.0.0                        # reachable from other machines: on purpose only
    python serve.py out-chat out-dpo --arena_prompts=data/tasks/test.jsonl --arena_file=votes.jsonl   # blind votes
    python serve.py out-chat gguf-chat/model.q8_0.gguf               # the checkpoint beside its GGUF export
    python serve.py out-chat --weights=fp32                          # on a CPU the page decodes from bf16 weights unless told

The models are named like eval.py's --compare: a training run's folder (its newest checkpoint;
a newer one saved while the page is open is loaded before the next generation), a .pt file,
gpt2 ... gpt2-xl, or a Hugging Face folder, or a GGUF file (export.py --to=gguf, run by llama.cpp
through llama-cpp-python: what quantization did to a model's answers, beside the checkpoint); with none, --init_from / --out_dir name one as in
sample.py. A model whose weights would not fit the device's free memory (or --memory_limit) is
refused with a message, here and when loaded from the page. A checkpoint trained on a dataset
with a prompt template (pubmed) asks for its prompt field (the abstract) and writes the article;
the other models on the page get the same formatted prompt.

Generation is sample.py's (gptsuite/generate.py): the same prompt, seed and settings give the same
sample as `python sample.py --num_samples=1`. Requests queue for one worker, in arrival order
(--queue_size of them wait at most); no request may ask for more than --max_new_tokens_limit
tokens. The page binds to 127.0.0.1 unless --host says otherwise.
"""

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path

from configurator import option, parse_config
from gptsuite.arena import DEFAULT_FILE
from gptsuite.atomic import check_folder
from gptsuite.errors import UserError, cli
from gptsuite.generate import SamplingConfig
from gptsuite.playground import MAX_MODELS, Playground
from gptsuite.playground_arena import Arena, read_prompts
from gptsuite.runtime import DTYPE_CHOICES, setup_runtime
from gptsuite.weights import WEIGHTS

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig(SamplingConfig):  # the sampling settings are the page's starting values (max_new_tokens at most the limit)
    init_from: str = "resume"  # with no models named: 'resume' (the newest checkpoint in out_dir) or GPT-2 weights, as in sample.py
    out_dir: str = "out"
    host: str = "127.0.0.1"  # the address the page listens on; 0.0.0.0 exposes it to the network
    port: int = option(7860, ge=0, le=65535)  # 0: any free port
    max_new_tokens_limit: int = option(1000, gt=0)  # no request may ask for more tokens than this
    memory_limit: float = option(0.0, ge=0)  # GB the page's model weights may take in all; 0: what the device has free
    queue_size: int = option(64, gt=0)  # requests that may wait for the worker; more are turned away
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = option("auto", choices=DTYPE_CHOICES)
    arena_file: str = DEFAULT_FILE  # the Arena tab appends every vote here (in the current folder unless a path says otherwise)
    arena_prompts: str = ""  # prompts the Arena tab draws from: a .jsonl of conversations (python -m tools.chat_tasks writes one) or a .txt, one a line
    weights: str = option(
        "auto", choices=("auto", *WEIGHTS)
    )  # the checkpoints' weights on a CPU: fp32, bf16, int8 (compiled at load) or int4 (gptsuite/weights.py); auto: bf16 on a CPU (twice fp32's speed, measured: docs/deploy.md), fp32 elsewhere


def split_models(argv: list[str]) -> tuple[list[str], list[str]]:
    """The model names among the arguments (anything that is neither a --key=value nor a .py config
    file), and the rest."""
    names = [a for a in argv if not a.startswith("--") and not a.endswith(".py")]
    return names, [a for a in argv if a not in names]


def check_address(host: str, port: int) -> None:
    """Refuse, before any model loads, an address the page cannot listen on, naming the part that is
    wrong: a host that is no address of this machine, or a port in use or reserved."""
    local = "pass --host=127.0.0.1 (this machine only) or --host=0.0.0.0 (every network interface)"
    if host.replace(".", "").isdigit():  # looks like IPv4: checked here, not sent to a name server
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UserError(f"--host={host} is not an IPv4 address (four numbers 0-255); {local}") from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--host={host} is neither an address nor a name this machine knows; {local}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a port in TIME_WAIT is free, one with a listener is not
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host={host} is not an address of this machine; {local}") from None
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use by another program; pass another --port, or --port=0 for any free one") from None
            if e.errno == errno.EACCES:
                raise UserError(f"port {port} is reserved for the system (below 1024); pass --port above 1023, or --port=0 for any free one") from None
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port, or --port=0 for any free one") from None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: list[str]) -> None:
    names, argv = split_models(argv)
    cfg = parse_config(ServeConfig(), argv)
    names = names or [cfg.out_dir if cfg.init_from == "resume" else cfg.init_from]
    if len(names) > MAX_MODELS:
        raise UserError(f"the page shows at most {MAX_MODELS} models side by side, got {len(names)}: {' '.join(names)}")
    check_address(cfg.host, cfg.port)
    check_folder(Path(cfg.arena_file).parent, "--arena_file's folder")
    Path(cfg.arena_file).parent.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(cfg.arena_prompts) if cfg.arena_prompts else []
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    weights = cfg.weights if cfg.weights != "auto" else "bf16" if rt.device_type == "cpu" else "fp32"
    pg = Playground(rt, cfg.max_new_tokens_limit, cfg.memory_limit, weights)
    refused = []
    for name in names:
        try:
            model = pg.load(name)
            print(f"loaded {name} ({model.nbytes / 2**20:,.0f} MB of weights) on {rt.device}", flush=True)
        except UserError as e:
            refused.append(str(e))
    if not pg.models:
        raise UserError(refused[0] if len(refused) == 1 else f"no model could be loaded: {'; '.join(refused)}")
    for reason in refused:  # the others are served; the page shows these too
        print(f"refused: {reason}", flush=True)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    from gptsuite.page import CSS, THEME, build_page  # gradio takes seconds to import: after the settings and models are checked

    defaults = SamplingConfig(**{f.name: getattr(cfg, f.name) for f in fields(SamplingConfig)})
    page = build_page(pg, defaults, Arena(pg, cfg.arena_file, prompts), notes="\n\n".join(f"refused: {r}" for r in refused))
    port = cfg.port or free_port(cfg.host)
    try:
        page.queue(default_concurrency_limit=1, max_size=cfg.queue_size).launch(
            server_name=cfg.host, server_port=port, theme=THEME, css=CSS, quiet=True, prevent_thread_lock=True, show_error=False
        )
    except OSError:  # taken since check_address (Gradio's own words advise arguments to launch(), which are not the user's)
        raise UserError(
            f"cannot listen on {cfg.host}:{port}: the port was taken while the models loaded; pass another --port, or --port=0 for any free one"
        ) from None
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"the playground is at http://{host}:{port} (Ctrl-C stops it)", flush=True)
    print(f"arena votes go to {Path(cfg.arena_file).resolve()}" + (f"; {len(prompts)} prompts to draw from {cfg.arena_prompts}" if prompts else ""), flush=True)
    if cfg.host not in LOCAL_HOSTS:
        print(f"note: --host={cfg.host} makes the page reachable from other machines; anyone who reaches it can run the models", flush=True)
    page.block_thread()


if __name__ == "__main__":
    cli(main)
