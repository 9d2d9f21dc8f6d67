"""The models of the playground page (serve.py) and what it does with them, without the page:
load up to four models by name (checking first that they fit in memory), reload a run's newer
checkpoint, check a request, generate with every chosen model side by side, mark the spans of a
text that occur in the training data, and gather the runs' loss curves and dataset reports.

Generation goes through generate.sample_rows, as sample.py does (KV cache, <|endoftext|> and stop
text, templates). Every model draws from its own random stream, seeded with the request's seed
right before its first token: a model gives the same sample for a prompt and a seed on the page
as `python sample.py --seed=S --num_samples=1`, whichever models run beside it.
"""

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from configurator import ConfigError, check_bounds
from gptsuite import templates
from gptsuite import tokenizer as tokenizers
from gptsuite.checkpoint import load_checkpoint
from gptsuite.datafiles import resolve_data_dir
from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig, encode_prompt, sample_rows, visible
from gptsuite.loading import Loaded, checkpoint_file, load_model
from gptsuite.memory import parameter_counts
from gptsuite.metrics import METRICS_FILE, SERIES, loss_curves, read_metrics
from gptsuite.pretrained import HUB_MODELS, fetch, gpt_config, is_pretrained
from gptsuite.runtime import CpuThreads, Runtime
from gptsuite.weights import COMPILED, use_weights
from model import GPTConfig

MAX_MODELS = 4  # side by side on one page


def model_config(name: str) -> GPTConfig:
    """The shape of the model a name stands for, without loading its weights."""
    path = checkpoint_file(name)
    if path is not None:
        ckpt = load_checkpoint(path, mmap=True)
        return GPTConfig(**ckpt["model_args"])
    if Path(name).is_dir() and not (Path(name) / "config.json").exists():
        raise UserError(f"{name} holds no checkpoint yet; wait for its run's first save (every eval_interval), or name another run")
    if not is_pretrained(name):
        raise UserError(
            f"no model '{name}': name a training run's folder (out-pubmed), a .pt checkpoint, one of {', '.join(HUB_MODELS)}, or a Hugging Face folder"
        )
    config_json = fetch(name)[0]
    return gpt_config(json.loads(config_json.read_text(encoding="utf-8")), 0.0, name)


def free_memory(device: str) -> int:
    """Bytes that can still be allocated on the device (on the CPU: the host's available memory)."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    import psutil

    return psutil.virtual_memory().available


@dataclass
class Model:
    """One model of the page: what it was loaded from and what it is."""

    name: str  # as the user gave it: a run folder, a .pt file, a GPT-2 name or a Hugging Face folder
    loaded: Loaded
    checkpoint: Path | None  # the checkpoint file it came from (None: GPT-2's weights)
    stamp: tuple | None  # that file's (resolved path, mtime, size) when it was loaded
    nbytes: int  # its weights' bytes
    loaded_at: float = field(default_factory=time.time)

    @property
    def tok(self):
        return tokenizers.from_meta(self.loaded.tokenizer)

    @property
    def block_size(self) -> int:
        return self.loaded.model.config.block_size


def file_stamp(path: Path) -> tuple:
    st = path.resolve().stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


@dataclass
class Column:
    """One model's answer to a request, as it grows."""

    name: str
    prompt: str  # the text the model was given (the template filled in)
    text: str = ""  # what it wrote so far (safe to show)
    tokens: int = 0
    first_token: float | None = None  # seconds from the request to the first token
    seconds: float = 0.0  # from the request to the last token so far
    done: bool = False

    def stats(self) -> str:
        if self.first_token is None:
            return f"**{self.name}**: waiting"
        rate = (self.tokens - 1) / (self.seconds - self.first_token) if self.tokens > 1 and self.seconds > self.first_token else 0.0
        state = "done" if self.done else "writing"
        return f"**{self.name}**: {self.tokens} tokens, first after {self.first_token:.2f} s, {rate:.1f} tokens/s ({state})"


class Playground:
    """The page's models on one device, and the checks and work of its requests."""

    def __init__(self, rt: Runtime, max_new_tokens: int, memory_limit: float = 0.0, weights: str = "fp32"):
        self.rt, self.max_new_tokens, self.weights = rt, max_new_tokens, weights
        self.memory_limit = int(memory_limit * 2**30)  # bytes the page's weights may take in all; 0: what the device has free
        self.models: dict[str, Model] = {}
        if rt.device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # a core for the web server: with torch's threads spinning on every core, the page's
            # event loop and its clients wait for them and streaming slows by a third (tools.bench_serve)
            torch.set_num_threads(max(1, torch.get_num_threads() - 1))
        self.threads = CpuThreads(adaptive=rt.device_type == "cpu")  # and fewer while other processes need the cores

    # --- models --------------------------------------------------------------------------------

    def fits(self, name: str, config: GPTConfig) -> int:
        """The bytes of the model's weights, after refusing a model that would not fit."""
        nbytes = 4 * parameter_counts(config)[0]  # fp32 weights; autocast computes in bf16/fp16 on GPUs
        used = sum(m.nbytes for m in self.models.values())
        if self.memory_limit and used + nbytes > self.memory_limit:
            raise UserError(
                f"{name} needs {nbytes / 2**30:.2f} GB for its weights, but the page's models may take {self.memory_limit / 2**30:.2f} GB "
                f"and {used / 2**30:.2f} GB are in use; start serve.py with a larger --memory_limit, or fewer or smaller models"
            )
        need = 2 * nbytes if self.rt.device == "cpu" else nbytes  # on the CPU the loaded state dict and the model coexist for a moment
        free = free_memory(self.rt.device)
        if need > free:
            raise UserError(
                f"{name} needs {need / 2**30:.2f} GB to load but {self.rt.device} has {free / 2**30:.2f} GB free; close other models or programs, or use a smaller model"
            )
        return nbytes

    def load(self, name: str) -> Model:
        """Load a model by name (a run folder or .pt checkpoint, or GPT-2's weights) onto the device,
        or refuse it with one line: unknown, missing, too many, too big."""
        name = name.strip()
        if not name:
            raise UserError("type a model to load: a training run's folder (out-pubmed), a .pt checkpoint, gpt2 ... gpt2-xl, or a Hugging Face folder")
        if name in self.models:
            raise UserError(f"{name} is loaded already")
        if name.endswith(".gguf"):  # a GGUF file (export.py --to=gguf), run by llama.cpp beside our checkpoints
            return self.load_gguf(name)
        config = model_config(name)  # a name that names no model is told so first, whatever else holds
        if len(self.models) >= MAX_MODELS:
            raise UserError(f"the page holds {MAX_MODELS} models already; restart serve.py with the ones you want side by side")
        nbytes = self.fits(name, config)
        path = checkpoint_file(name)
        loaded = load_model("resume", name) if path is not None else load_model(name)
        self.place(loaded)
        self.models[name] = Model(name, loaded, path, file_stamp(path) if path else None, nbytes)
        return self.models[name]

    def place(self, loaded: Loaded) -> None:
        """The model onto the device, in the page's --weights (compiled if they are slow eager)."""
        use_weights(loaded.model.to(self.rt.device), self.weights, self.rt.device)
        if self.weights in COMPILED:
            loaded.model.compile()

    def load_gguf(self, name: str) -> Model:
        from gptsuite.llamacpp import load_gguf

        if len(self.models) >= MAX_MODELS:
            raise UserError(f"the page holds {MAX_MODELS} models already; restart serve.py with the ones you want side by side")
        loaded = load_gguf(name)
        loaded.model.to(self.rt.device)
        self.models[name] = Model(name, loaded, None, None, Path(name).stat().st_size)
        return self.models[name]

    def refresh(self, model: Model) -> str:
        """Reload a run's checkpoint when a newer one was saved since it was loaded (a run still
        going); a note for the page when it was reloaded, or when it is gone from disk."""
        if model.checkpoint is None:
            return ""
        when = time.strftime("%H:%M:%S", time.localtime(model.loaded_at))
        path = checkpoint_file(model.name)
        try:
            stamp = file_stamp(path) if path is not None else None
        except FileNotFoundError:  # deleted between the two looks
            stamp = None
        if stamp is None:
            return f"{model.name}: its checkpoint is no longer on disk (deleted or moved?); writing with the weights loaded at {when}"
        if stamp == model.stamp:
            return ""
        try:
            loaded = load_model("resume", model.name)
        except UserError as e:  # e.g. caught half-written by a copy that does not write atomically
            return f"{model.name}: a newer checkpoint is there but could not be loaded ({e}); writing with the weights loaded at {when}"
        self.place(loaded)
        model.loaded, model.checkpoint, model.stamp, model.loaded_at = loaded, path, stamp, time.time()
        return f"{model.name}: loaded its newer checkpoint {Path(stamp[0]).name}"

    def template(self) -> dict | None:
        """The prompt template of the page: the first loaded model's that has one. Models without a
        template of their own are prompted with it too, so that all answer the same question."""
        return next((m.loaded.template for m in self.models.values() if m.loaded.template), None)

    def prompt_label(self) -> str:
        t = self.template()
        if not t:
            return "prompt"
        names = templates.fields(t)
        following = names[names.index(t["prompt_field"]) + 1 :]
        return f"{t['prompt_field']} (the models write the {following[0]})" if following else t["prompt_field"]

    # --- requests ------------------------------------------------------------------------------

    def settings(self, defaults: SamplingConfig, **values) -> SamplingConfig:
        """`defaults` with a request's values, checked against the same
        bounds as sample.py's flags and against the server's cap on new tokens."""
        cfg = replace(defaults, **values)
        try:
            check_bounds(cfg)
        except ConfigError as e:
            raise UserError(str(e)) from None
        if cfg.max_new_tokens > self.max_new_tokens:
            raise UserError(f"max_new_tokens must be at most {self.max_new_tokens} on this page (serve.py --max_new_tokens_limit), got {cfg.max_new_tokens}")
        return cfg

    def chosen(self, names: list[str]) -> list[Model]:
        if not names:
            raise UserError("choose at least one model to write with")
        if len(names) > MAX_MODELS:
            raise UserError(f"choose at most {MAX_MODELS} models to compare, got {len(names)}")
        missing = [n for n in names if n not in self.models]
        if missing:
            raise UserError(f"{', '.join(missing)} is not loaded; load it first")
        return [self.models[n] for n in names]

    def prompt_ids(self, model: Model, text: str) -> tuple[str, list[int]]:
        """The text model is prompted with and its tokens, refusing one that leaves no room to write."""
        template = model.loaded.template or self.template()
        prompt = templates.format_prompt(template, text) if template else text
        return prompt, encode_prompt(model.tok, prompt, model.block_size, model.name)

    def generate(self, names: list[str], text: str, cfg: SamplingConfig) -> Iterator[list[Column]]:
        """Every chosen model's answer to the prompt, one token of each in turn, yielded after every
        round; all checks are made before the first token."""
        if not text.strip():
            raise UserError("the prompt is empty; type some text for the models to continue")
        models = self.chosen(names)
        prompts = [self.prompt_ids(m, text) for m in models]
        columns = [Column(m.name, p) for m, (p, _) in zip(models, prompts, strict=True)]
        streams = [SeededStream(self, m, ids, cfg) for m, (_, ids) in zip(models, prompts, strict=True)]
        start = time.perf_counter()
        while not all(c.done for c in columns):
            self.threads.adjust()
            for col, model, stream in zip(columns, models, streams, strict=True):
                if col.done:
                    continue
                row = next(stream, None)
                now = time.perf_counter() - start
                if row is None:
                    col.done = True
                    continue
                col.text, col.tokens, col.seconds = visible(model.tok, row, cfg.stop), len(row), now
                if col.first_token is None and row:
                    col.first_token = now
            yield columns
        for col, model, stream in zip(columns, models, streams, strict=True):  # what was held back at the end
            col.text = visible(model.tok, stream.last, cfg.stop, final=True)
        yield columns

    # --- seen in training? ---------------------------------------------------------------------

    def data_dir(self, model: Model) -> Path:
        if not model.loaded.train_config:
            raise UserError(f"{model.name} is GPT-2's pretrained weights: its training data (WebText) is not here; choose a model trained with train.py")
        return resolve_data_dir(trained_on=model.loaded.train_config)

    def seen_in_training(self, name: str, text: str) -> tuple[list[tuple[str, str | None]], str]:
        """The text in pieces labelled by whether they lie in an n-gram that occurs in the model's
        train.bin ('seen'), the longest such span marked 'longest', and the novelty report's line."""
        from gptsuite import novelty

        if not text.strip():
            raise UserError("there is no text to check; generate a sample first, or paste some text")
        model = self.chosen([name])[0]
        index = novelty.open_index(self.data_dir(model), model.loaded.tokenizer)
        tok = model.tok
        ids = tok.encode(text)  # re-encoded: train.bin holds the text's canonical tokenization
        report = index.report(ids)
        found = index.found(ids)
        labels = np.zeros(len(ids), dtype=np.int8)
        for i in np.flatnonzero(found):
            labels[i : i + index.n] = 1
        if report.longest:
            labels[report.longest_start : report.longest_start + report.longest] = 2
        pieces, names = [], (None, "seen", "longest")
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or labels[i] != labels[start]:
                pieces.append((tok.decode(ids[start:i]), names[labels[start]]))
                start = i
        return pieces, novelty.format_report(report, tok)

    # --- the runs ------------------------------------------------------------------------------

    def loss_rows(self) -> list[dict]:
        """The loss curves of every loaded run's metrics.jsonl, as rows for a plot."""
        rows = []
        for model in list(self.models.values()):
            if model.checkpoint is None:
                continue
            path = (Path(model.name) if Path(model.name).is_dir() else Path(model.name).parent) / METRICS_FILE
            try:
                curves = loss_curves(read_metrics(path))
            except UserError:
                continue
            for key, (iters, values) in curves.items():
                rows += [{"iteration": i, "loss": v, "curve": f"{model.name}: {SERIES[key][0]}"} for i, v in zip(iters, values, strict=True)]
        return rows

    def dataset_reports(self) -> str:
        """The dataset report of the data the loaded runs were trained on, as markdown."""
        from gptsuite.report import format_report

        parts, trained_on = [], {}
        for model in list(self.models.values()):
            if not model.loaded.train_config:
                continue
            try:
                trained_on.setdefault(self.data_dir(model), []).append(model.name)
            except UserError as e:
                parts.append(f"**{model.name}**: {e}")
        for data_dir, names in trained_on.items():
            who = ", ".join(f"**{n}**" for n in names) + (" was" if len(names) == 1 else " were")
            try:
                text = format_report(json.loads((data_dir / "report.json").read_text(encoding="utf-8")), data_dir)
            except (OSError, ValueError, KeyError):
                parts.append(f"{who} trained on {data_dir}, which has no dataset report (prepare.py writes report.json)")
                continue
            parts.append(f"{who} trained on {data_dir}:\n\n```\n{text}\n```")
        return "\n\n".join(parts) or "no loaded model was trained here: load a training run's folder to see its data"


class SeededStream:
    """One model's sample_rows, drawing from its own random stream: torch's generator states (the
    CPU's and the device's, all that sampling draws from) are swapped in for each step and out
    again after it."""

    def __init__(self, playground: Playground, model: Model, ids: list[int], cfg: SamplingConfig):
        self.device = playground.rt.device
        outside = self._state()
        torch.manual_seed(cfg.seed)  # seeds the CPU's and the devices' generators, as sample.py's seed_everything
        self.state = self._state()
        self._set(outside)
        self.last: list[int] = []
        self.autocast = playground.rt.autocast
        self._steps = sample_rows(model.loaded.model, model.tok, ids, 1, cfg, playground.rt.device)

    def _state(self) -> tuple:
        if self.device.startswith("cuda"):
            return torch.get_rng_state(), torch.cuda.get_rng_state(self.device)
        if self.device == "mps":
            return torch.get_rng_state(), torch.mps.get_rng_state()
        return torch.get_rng_state(), None

    def _set(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        if self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state[1], self.device)
        elif self.device == "mps":
            torch.mps.set_rng_state(state[1])

    def __iter__(self):
        return self

    def __next__(self) -> list[int]:
        outside = self._state()
        self._set(self.state)
        try:
            with torch.no_grad(), self.autocast():  # per step: a context held across the yields of several streams would be left in the wrong state
                rows = next(self._steps)
            self.state = self._state()
        finally:
            self._set(outside)
        self.last = list(rows[0])
        return self.last
