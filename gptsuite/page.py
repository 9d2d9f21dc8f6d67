"""The playground page (serve.py): Gradio Blocks over a Playground, which does the work.

Three tabs: Write (a prompt, or the template's prompt field, the sampling settings, and up to four
models writing side by side as the tokens come, with a stop button), Seen in training? (a sample
with the spans that occur in the model's train.bin highlighted) and Runs (the loss curves of the
loaded runs' metrics.jsonl, refreshed every few seconds while they train, and the dataset report
of their data). A bad request is a message on the page (gr.Error), never a stopped server.
Requests that use the models queue for one worker: one generation at a time, in arrival order.
"""

import time

import gradio as gr
import pandas as pd

from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig
from gptsuite.playground import MAX_MODELS, Column, Playground

STREAM_EVERY = 0.1  # seconds between the page's updates while the models write; tokens in between arrive together (an update costs ~10 ms of CPU)
REFRESH_EVERY = 5.0  # seconds between looks at the runs' metrics.jsonl
MODELS = "models"  # the queue of the requests that use the models: one at a time
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts: the page works offline
# a new request closes the messages of earlier ones: an error stays until the user acts again, not after a later success
CLOSE_MESSAGES = "(...args) => { document.querySelectorAll('.toast-close').forEach((b) => b.click()); return args; }"  # runs before the request, in its event
# the plot's legend (a line per run and curve) goes below the chart, outside the box Gradio sizes for it: let the box grow
CSS = "#curves, #curves * { overflow: visible !important; } #curves { padding-bottom: 90px; }"
# a request that fails says so once, in its message: no "Error" badge left on every box it would have filled
QUIET = dict(show_progress="hidden")


def refuse(e: Exception) -> gr.Error:
    return gr.Error(str(e), duration=None, print_exception=False)


def number(value, what: str, kind=float, empty=None):
    """A number field's value (`empty` when it is empty), or a message naming the field."""
    if value is None or value == "":
        return empty
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None


class Page:
    """The page's components and what its events do; build() lays them out and wires them."""

    def __init__(self, playground: Playground, defaults: SamplingConfig):
        self.playground, self.defaults = playground, defaults

    def build(self, notes: str = "") -> gr.Blocks:
        with gr.Blocks(title="gpt-suite playground", analytics_enabled=False) as page:
            gr.Markdown("## gpt-suite playground")
            self.note = gr.Markdown(notes, elem_id="notes")
            self.last = gr.State({})  # each model's last sample, for the Seen in training? tab
            with gr.Tab("Write"):
                self.write_tab()
            with gr.Tab("Seen in training?"):
                self.seen_tab()
            with gr.Tab("Runs"):
                self.curves = gr.LinePlot(x="iteration", y="loss", color="curve", label="loss", height=420, elem_id="curves")
                self.reports = gr.Markdown(elem_id="reports")
                timer = gr.Timer(REFRESH_EVERY)
            self.wire(page, timer)
        return page

    def write_tab(self) -> None:
        playground, defaults, names = self.playground, self.defaults, list(self.playground.models)
        with gr.Row():
            self.prompt = gr.Textbox(label=playground.prompt_label(), lines=5, scale=3, elem_id="prompt")
            with gr.Column(scale=2):
                self.chosen = gr.CheckboxGroup(names, value=names[:MAX_MODELS], label=f"models side by side (up to {MAX_MODELS})", elem_id="chosen")
                with gr.Row():
                    self.other = gr.Textbox(
                        label="load a model", placeholder="a run folder (out-pubmed), a .pt file, gpt2 ... gpt2-xl", scale=3, elem_id="other"
                    )
                    self.load_button = gr.Button("Load", scale=1, elem_id="load")
        with gr.Row():  # a slider's label shares its line with the number box: wide enough for both
            self.settings = [
                gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="temperature (0: greedy)", scale=2, min_width=300),
                gr.Number(defaults.top_k or 0, precision=0, label="top-k (0: every token)", scale=1),
                gr.Number(defaults.top_p or 1.0, label="top-p, in (0, 1] (1: off)", scale=1),
                gr.Slider(
                    1,
                    playground.max_new_tokens,
                    value=min(defaults.max_new_tokens, playground.max_new_tokens),
                    step=1,
                    label="max new tokens",
                    scale=2,
                    min_width=300,
                ),
                gr.Number(defaults.seed, precision=0, label="seed", scale=1),
                gr.Textbox(defaults.stop.replace("\n", "\\n"), label="stop text (\\n: newline)", scale=1, min_width=170),
            ]
        with gr.Row():
            self.go = gr.Button("Generate", variant="primary", elem_id="generate")
            self.halt = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Row(equal_height=True):  # a pane per chosen model, named by it; each shows the prompt and what its model wrote
            self.outs = [gr.Textbox(**self.pane(names[:MAX_MODELS], i), lines=14, elem_id=f"out{i}") for i in range(MAX_MODELS)]
        self.stats = gr.Markdown(elem_id="stats")

    @staticmethod
    def pane(names: list[str], i: int) -> dict:
        """The i-th output pane's label and visibility for these models side by side."""
        return {"label": names[i] if i < len(names) else f"model {i + 1}", "visible": i < len(names)}

    def seen_tab(self) -> None:
        names = list(self.playground.models)
        gr.Markdown("The spans of a sample that also occur in the model's training data (train.bin): in 8-grams found there, and the longest such span.")
        with gr.Row():
            self.which = gr.Dropdown(names, value=names[0] if names else None, label="model")
            self.check = gr.Button("Check its last sample", elem_id="check")
        self.sample = gr.Textbox(label="text to check (empty: the model's last sample)", lines=5)
        self.marked = gr.HighlightedText(label="seen in training", color_map={"seen": "orange", "longest": "red"}, show_legend=True, elem_id="marked")
        self.verdict = gr.Markdown()

    def wire(self, page: gr.Blocks, timer: gr.Timer) -> None:
        models = dict(concurrency_id=MODELS, concurrency_limit=1)  # one request at a time uses the models
        event = self.go.click(
            self.write,
            [self.prompt, self.chosen, *self.settings, self.last],
            [*self.outs, self.stats, self.note, self.last],
            api_name="generate",
            js=CLOSE_MESSAGES,
            **models,
            **QUIET,
        )
        self.halt.click(None, None, None, cancels=[event], api_name=False)
        self.load_button.click(
            self.load,
            [self.other, self.chosen],
            [self.chosen, self.which, self.prompt, self.other, self.note, *self.outs],
            api_name="load",
            js=CLOSE_MESSAGES,
            **models,
            **QUIET,
        )
        self.chosen.input(self.panes, [self.chosen], self.outs, api_name=False, show_progress="hidden")
        self.check.click(self.seen, [self.which, self.sample, self.last], [self.marked, self.verdict], api_name="seen", js=CLOSE_MESSAGES, **models, **QUIET)
        gr.on([page.load, timer.tick], self.runs, None, [self.curves, self.reports], api_name="runs", concurrency_limit=4, show_progress="hidden")

    def write(self, text, models, temperature, top_k, top_p, max_new, seed, stop, last):
        """Generate: the columns as they grow, an update every STREAM_EVERY seconds."""
        playground, defaults = self.playground, self.defaults
        try:
            top_p = number(top_p, "top-p", float, 1.0)
            cfg = playground.settings(
                defaults,
                temperature=number(temperature, "temperature", float, defaults.temperature),
                top_k=number(top_k, "top-k", int) or None,  # 0 or empty: every token
                top_p=None if top_p == 1.0 else top_p,  # 1 or empty: off, as sample.py's None
                max_new_tokens=number(max_new, "max new tokens", int, defaults.max_new_tokens),
                seed=number(seed, "seed", int, defaults.seed),
                stop=(stop or "").replace("\\n", "\n"),
            )
            refreshed = [playground.refresh(playground.models[n]) for n in models or [] if n in playground.models]
            stream = playground.generate(models or [], text or "", cfg)
            columns = next(stream)  # every check is made before this first round
        except UserError as e:
            raise refuse(e) from None
        notes = "\n\n".join(n for n in refreshed if n)
        yield self.updates(columns, notes, last, first=True)
        shown = time.perf_counter()
        for columns in stream:
            if time.perf_counter() - shown >= STREAM_EVERY:
                yield self.updates(columns, notes, None)
                shown = time.perf_counter()
        yield self.updates(columns, notes, last)

    @staticmethod
    def updates(columns: list[Column], notes: str, last: dict | None, first: bool = False) -> list:
        """The outputs for the columns so far: on the first round also each box's model name
        and visibility, after that only the texts; the samples are kept (`last`) at the start
        and the end, not at every update."""
        hidden = MAX_MODELS - len(columns)
        if first:
            boxes = [gr.Textbox(value=c.prompt + c.text, label=c.name, visible=True) for c in columns] + [gr.Textbox(value="", visible=False)] * hidden
        else:
            boxes = [c.prompt + c.text for c in columns] + [gr.skip()] * hidden
        if last is not None:
            last.update({c.name: c.text for c in columns})
        return [*boxes, "\n\n".join(c.stats() for c in columns), notes, gr.skip() if last is None else last]

    def panes(self, models) -> list:
        """The output panes for the models now chosen: named by them, emptied (what they showed was another choice's)."""
        names = [n for n in models or [] if n in self.playground.models][:MAX_MODELS]
        return [gr.Textbox(value="", **self.pane(names, i)) for i in range(MAX_MODELS)]

    def load(self, name, models):
        try:
            model = self.playground.load(name or "")
        except UserError as e:
            raise refuse(e) from None
        choices = list(self.playground.models)
        chosen = [*(models or []), model.name][-MAX_MODELS:]
        note = f"loaded {model.name} ({model.nbytes / 2**20:,.0f} MB of weights)"
        boxes = (gr.CheckboxGroup(choices=choices, value=chosen), gr.Dropdown(choices=choices), gr.Textbox(label=self.playground.prompt_label()), "", note)
        return *boxes, *self.panes(chosen)

    def seen(self, name, text, last):
        try:
            if not name:
                raise UserError("choose a model")
            pieces, line = self.playground.seen_in_training(name, text or last.get(name, ""))
        except UserError as e:
            raise refuse(e) from None
        return pieces, line.replace("\n", "  \n")

    def runs(self):
        return pd.DataFrame(self.playground.loss_rows(), columns=["iteration", "loss", "curve"]), self.playground.dataset_reports()


def build_page(playground: Playground, defaults: SamplingConfig, notes: str = "") -> gr.Blocks:
    return Page(playground, defaults).build(notes)
